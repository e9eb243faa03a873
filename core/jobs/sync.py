"""Keeping a job in step with the endpoint.

`sync(actor, settings, job_id)` pulls `/stream` then `/status` (`core.jobs.pull`) and
appends the events by sequence number (idempotent: the database's unique (job, seq)
decides), registers the checkpoints they report, updates status, step, progress (a job
without training steps: from its `progress` events' stages), ETA and
live cost, and cancels a job that reached its budget. When the job ends it backfills
every event from the final output and the worker's uploaded log, records the billed cost
and registers the adapter (`core.jobs.finish`), then publishes `JobEnded`
(`core.jobs.bus`). Any number of processes may sync the same job at once: one at a time
reads the endpoint for it (a pull lease of PULL_LEASE_S on the job's row: RunPod's
`/stream` hands each item out once, so two readers would split the events, and the one
that stored first could end the job without the final event the other holds; a process
that finds the lease taken returns the job as stored), each holds the job's row lock
while it writes, a finished job is never reopened (a job leaves a terminal status only
through `retry`), and the end of a job is claimed once.

The lease is renewed while the pull runs: a thread moves it PULL_LEASE_S ahead every
quarter of that, from the moment it is taken until the pulled events are stored, then
gives it back. A pull is usually a second or two, but it is up to three requests
(`/stream`, `/status`, `/stream`), each retried up to five times with a 30 s read timeout
and backoff, then the uploaded log: minutes in the worst case. Bounding it below the lease
instead would abandon reads the endpoint is only slow to answer, and items a `/stream`
read has handed out exist nowhere else live, so whoever read them must hold the job until
they are stored. A process that dies stops renewing, so it holds the job up for
PULL_LEASE_S at most; one that cannot renew (the database unreachable for longer than the
lease) logs it and still stores what it read.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Mapping
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core import adapters
from core.clients.runpod import JobNotFound as EndpointForgotJob
from core.clients.runpod import RunPodClient
from core.clients.storage import BlobStore
from core.db import repo, session_scope
from core.db.tables import TERMINAL_STATUSES, Job, JobStatus, utcnow
from core.jobs import bus
from core.jobs.billing import attempt_seq, ran_on, running_cost_usd
from core.jobs.dispatch import blob_store, job_client
from core.jobs.finish import finish
from core.jobs.pull import Pulled, pull
from core.jobs.quotas import lock_row
from core.settings import Settings
from core.users import Actor

log = logging.getLogger("brightrun.jobs")

UNSUBMITTED_GRACE_S = 120.0  # a QUEUED job without a RunPod id older than this never got sent
# A pull takes a second or two, and the lease is renewed while it runs (module doc); a
# process that dies holding it holds the job up this long at most.
PULL_LEASE_S = 20.0


def sync(
    actor: Actor,
    settings: Settings,
    job_id: str,
    *,
    client: RunPodClient | None = None,
    store: BlobStore | None = None,
) -> Job:
    """Bring one job up to date with the endpoint (see the module doc). Returns the job."""
    lease = None
    with session_scope(settings) as s:
        job = repo.get_job(actor, s, job_id)
        status, rid, changed, attempt = job.status, job.runpod_job_id, job.updated_at, job.attempt
        endpoint_url = (job.result or {}).get("endpoint_url")
        if status not in TERMINAL_STATUSES and rid:
            lease = _take_pull_lease(actor, s, job_id)
    if status in TERMINAL_STATUSES:
        return job
    if not rid:
        return _sync_unsent(actor, settings, job_id, changed)
    if lease is None:  # another process is reading the endpoint for this job right now
        return job
    keeper = _LeaseKeeper(actor, settings, job_id, lease)
    keeper.start()
    try:
        with job_client(settings, client, endpoint_url) as rp:
            return _sync_run(actor, settings, job_id, rid, attempt, rp, blob_store(settings, store))
    finally:
        keeper.stop.set()
        keeper.join()
        _release_pull_lease(actor, settings, job_id, keeper.until)


def _take_pull_lease(actor: Actor, s: Session, job_id: str) -> dt.datetime | None:
    """The job's pull lease until when it is ours, or None when another process holds it."""
    now = utcnow()
    until = now + dt.timedelta(seconds=PULL_LEASE_S)
    free = (Job.pull_lease_until.is_(None)) | (Job.pull_lease_until < now)
    taken = s.execute(
        update(Job)
        .where(Job.id == job_id, Job.owner_id == actor.user_id, free)
        .values(pull_lease_until=until)
        .execution_options(synchronize_session=False)
    ).rowcount
    return until if taken == 1 else None


def _move_pull_lease(
    actor: Actor, settings: Settings, job_id: str, lease: dt.datetime, to: dt.datetime | None
) -> bool:
    """Move our lease (`lease`, the value we set) to `to` (None: give it back). False when
    it is not ours any more (it ran out and another process took it)."""
    with session_scope(settings) as s:
        moved = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.owner_id == actor.user_id, Job.pull_lease_until == lease)
            .values(pull_lease_until=to)
            .execution_options(synchronize_session=False)
        ).rowcount
    return moved == 1


def _release_pull_lease(actor: Actor, settings: Settings, job_id: str, lease: dt.datetime) -> None:
    """Give the lease back, unless it ran out and another process holds it now."""
    _move_pull_lease(actor, settings, job_id, lease, None)


class _LeaseKeeper(threading.Thread):
    """Renews the job's pull lease every PULL_LEASE_S / 4 until `stop` is set; `until` is
    the lease's current value (read it after `join`)."""

    def __init__(self, actor: Actor, settings: Settings, job_id: str, until: dt.datetime):
        super().__init__(name=f"pull-lease-{job_id}", daemon=True)
        self.actor, self.settings, self.job_id, self.until = actor, settings, job_id, until
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(PULL_LEASE_S / 4):
            to = utcnow() + dt.timedelta(seconds=PULL_LEASE_S)
            try:
                kept = _move_pull_lease(self.actor, self.settings, self.job_id, self.until, to)
            except SQLAlchemyError:
                log.warning(
                    "job %s: the pull lease could not be renewed; trying again",
                    self.job_id,
                    exc_info=True,
                )
                continue
            if not kept:
                log.warning(
                    "job %s: the pull lease ran out while pulling; another process holds it",
                    self.job_id,
                )
                return
            self.until = to


def _sync_run(
    actor: Actor,
    settings: Settings,
    job_id: str,
    rid: str,
    attempt: int,
    client: RunPodClient,
    store: BlobStore,
) -> Job:
    pulled = pull(client, store, actor.user_id, job_id, rid)
    with session_scope(settings) as s:
        lock_row(s, Job, job_id)
        job = repo.get_job(actor, s, job_id)
        if job.status in TERMINAL_STATUSES or job.runpod_job_id != rid or job.attempt != attempt:
            return job  # another sync finished it, or it was retried meanwhile
        new = pulled.events()
        repo.append_events(actor, s, job_id, new)
        adapters.register_checkpoints(actor, s, job, new)
        ran = ran_on(actor, s, job, settings)
        if ran:
            log.info("job %s runs on %s (priced as %s)", job_id, ran["gpu_type"], job.gpu_type)
            job = repo.update_job(actor, s, job_id, **ran)
        fields = _progress_fields(actor, s, job)
        if pulled.ended:
            fields.update(finish(actor, s, job, pulled, store))
        else:
            fields.update(_running_fields(job, pulled, fields))
        fields["synced_at"] = utcnow()
        job = repo.update_job(actor, s, job_id, **fields)
        cancel_now = fields.get("stop_reason") == "budget" and not pulled.ended
    if cancel_now:
        log.warning("job %s reached its budget $%.2f; cancelling", job_id, job.budget_usd)
        try:
            client.cancel(rid)
        except EndpointForgotJob:
            log.info("job %s was already gone from the endpoint", job_id)
    if pulled.ended:
        return _after_end(actor, settings, job_id, store)
    return job


def _sync_unsent(actor: Actor, settings: Settings, job_id: str, changed: dt.datetime) -> Job:
    """A QUEUED job that has no RunPod id: being sent right now, or its sender died."""
    with session_scope(settings) as s:
        job = repo.get_job(actor, s, job_id)
        if (utcnow() - changed).total_seconds() < UNSUBMITTED_GRACE_S:
            return job
        lock_row(s, Job, job_id)
        job = repo.get_job(actor, s, job_id)
        if job.status in TERMINAL_STATUSES or job.runpod_job_id:
            return job
        if job.cancel_requested_at is not None:
            return repo.update_job(
                actor, s, job_id, status=JobStatus.CANCELLED, finished_at=utcnow()
            )
        return repo.update_job(
            actor,
            s,
            job_id,
            status=JobStatus.FAILED,
            finished_at=utcnow(),
            failure_kind="submit_uncertain",
            failure_message="the process sending this job stopped before recording the endpoint's answer",
            failure_suggestion="look for the job on the endpoint before retrying it",
        )


def _after_end(actor: Actor, settings: Settings, job_id: str, store: BlobStore) -> Job:
    """Claim the job's end (once across processes) and tell the subscribers."""
    with session_scope(settings) as s:
        claimed = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.owner_id == actor.user_id, Job.notified_at.is_(None))
            .values(notified_at=utcnow())
            .execution_options(synchronize_session=False)
        ).rowcount
        job = repo.get_job(actor, s, job_id)
    bus.publish(bus.JobEnded(actor, settings, job, claimed == 1, store))
    with session_scope(settings) as s:
        return repo.get_job(actor, s, job_id)


def _progress_fields(actor: Actor, s: Session, job: Job) -> dict[str, Any]:
    """Step, total, losses, progress and ETA from the stored metrics and start events."""
    recent = max(-1, job.last_seq - 200)  # the latest events are enough for step, loss and ETA
    metrics = repo.list_events(actor, s, job.id, after_seq=recent, types=["metrics"])
    fields = _start_fields(actor, s, job)
    if not metrics:
        return fields | _stage_progress(actor, s, job, recent)
    last = metrics[-1].data or {}
    step = last.get("step")
    total = last.get("total_steps") or fields.get("total_steps") or job.total_steps
    if isinstance(step, int):
        fields["step"] = step
    if total:
        fields["total_steps"] = int(total)
    if isinstance(last.get("loss"), int | float):
        fields["final_loss"] = float(last["loss"])
    evals = [
        m.data["eval_loss"]
        for m in metrics
        if isinstance((m.data or {}).get("eval_loss"), int | float)
    ]
    if evals:
        fields["eval_loss"] = float(evals[-1])
    if isinstance(step, int) and total:
        fields["progress"] = min(1.0, step / total)
        per_step = _seconds_per_step(metrics[-50:])
        if per_step is not None:
            fields["eta_s"] = max(0.0, (total - step) * per_step)
    return fields


def _stage_progress(actor: Actor, s: Session, job: Job, after_seq: int) -> dict[str, Any]:
    """A job without training steps (a `gguf` export): its share done from its newest
    `progress` event, stage `step` of `steps` with `fraction` of that stage done."""
    staged = repo.list_events(actor, s, job.id, after_seq=after_seq, types=["progress"])
    d = (staged[-1].data or {}) if staged else {}
    step, steps, share = d.get("step"), d.get("steps"), d.get("fraction")
    if not (isinstance(step, int) and isinstance(steps, int) and steps > 0):
        return {}
    if not isinstance(share, int | float):
        return {}
    return {"progress": min(1.0, max(0.0, (step - 1 + share) / steps))}


def _start_fields(actor: Actor, s: Session, job: Job) -> dict[str, Any]:
    """When the worker started (its `started` event) and the total steps it planned."""
    if job.started_at is not None and job.total_steps:
        return {}
    started = repo.list_events(actor, s, job.id, after_seq=attempt_seq(job) - 1, types=["started"])
    fields: dict[str, Any] = {}
    if started and job.started_at is None:
        # The handler started `cold_start_s` (its setup) before it reported `started`.
        setup_s = float((started[-1].data or {}).get("cold_start_s") or 0.0)
        fields["started_at"] = dt.datetime.fromtimestamp(started[-1].ts - setup_s, dt.UTC)
    if started:
        plan = (started[-1].data or {}).get("plan") or {}
        if plan.get("total_steps"):
            fields["total_steps"] = int(plan["total_steps"])
    return fields


def _seconds_per_step(metrics: list[Any]) -> float | None:
    """Seconds per step over this attempt's metrics (steps may restart after a resume)."""
    points = [(m.data.get("step"), m.data.get("elapsed_s")) for m in metrics]
    points = [(a, b) for a, b in points if isinstance(a, int) and isinstance(b, int | float)]
    if len(points) >= 2 and points[-1][0] > points[0][0] and points[-1][1] > points[0][1]:
        return (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])
    return None


def _running_fields(job: Job, pulled: Pulled, progress: Mapping[str, Any]) -> dict[str, Any]:
    """Status and live cost of a running job; a request to stop it once over its budget."""
    fields: dict[str, Any] = {}
    if pulled.status in (JobStatus.IN_QUEUE, JobStatus.IN_PROGRESS):
        fields["status"] = pulled.status
    if (
        pulled.status == JobStatus.IN_PROGRESS
        and job.started_at is None
        and "started_at" not in progress
    ):
        fields["started_at"] = utcnow()
    cost = running_cost_usd(
        job, progress.get("started_at") or fields.get("started_at") or job.started_at
    )
    if cost is not None:
        fields["cost_usd"] = cost
    over = job.budget_usd is not None and fields.get("cost_usd", 0.0) >= job.budget_usd
    if over and job.cancel_requested_at is None:
        # The worker should have stopped at its time limit; the platform's timeout is the
        # last line. Stop it now: its checkpoints stay on the volume.
        fields.update(cancel_requested_at=utcnow(), stop_reason="budget")
    return fields
