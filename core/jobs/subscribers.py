"""The parts that act on an ended job, subscribed to `core.jobs.bus` in this order:

1. `notify_owner`: the end-of-job webhook (`core.notify`), once per job, when
   NOTIFY_WEBHOOK_URL is set.
2. `evaluate_adapter`: a completed training job's adapter version is evaluated in the
   background (`core.evaluate.start_after_job`), once per job.
3. `relaunch_lighter`: with AUTO_RELAUNCH_OOM, a job that ran out of memory is launched
   again with lighter settings (`core.jobs.oom`).
"""

from __future__ import annotations

from core import evaluate, notify
from core.db.tables import JobStatus
from core.jobs import bus
from core.jobs.oom import relaunch_after_oom


def notify_owner(e: bus.JobEnded) -> None:
    if e.first and e.settings.notify_webhook_url.get_secret_value():
        notify.job_ended(e.settings, e.job)


def evaluate_adapter(e: bus.JobEnded) -> None:
    if e.first and e.job.status == JobStatus.COMPLETED and e.job.action == "train":
        evaluate.start_after_job(e.actor, e.settings, e.job.id)  # in the background; never raises


def relaunch_lighter(e: bus.JobEnded) -> None:
    job = e.job
    if (
        e.settings.auto_relaunch_oom
        and job.status == JobStatus.FAILED
        and job.failure_kind == "out_of_memory"
    ):
        relaunch_after_oom(e.actor, e.settings, job.id, store=e.store)


def subscribe_all() -> None:
    for handler in (notify_owner, evaluate_adapter, relaunch_lighter):
        bus.subscribe(handler)
