"""The automatic relaunch after running out of memory (AUTO_RELAUNCH_OOM).

A training job that failed with `out_of_memory` is launched again, once, as a new job
(its child) with lighter settings as the planner suggests them
(`core.planner.oom_suggestion`) and the budget it has left; everything else (the method
and its settings, the version it continues) as stored (`core.jobs.again`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import update

from core import planner
from core.clients.runpod import RunPodClient
from core.clients.storage import BlobStore
from core.db import repo, session_scope
from core.db.tables import Job
from core.errors import InvalidInput, QuotaExceeded
from core.jobs.again import request_for_job
from core.jobs.errors import SubmitFailed
from core.jobs.launch import submit
from core.jobs.spec import without_time_limit
from core.planner import oom_suggestion
from core.settings import Settings
from core.users import Actor

log = logging.getLogger("brightrun.jobs")


def oom_settings(spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """Lighter settings after an out-of-memory failure, as the planner suggests them
    ({"training": ..., "quantization": ...}), or None when nothing lighter is left."""
    return oom_suggestion(spec)


def _lighter(spec: Mapping[str, Any], lighter: Mapping[str, Any]) -> dict[str, Any]:
    """The settings `oom_settings` changes, as `LaunchRequest` fields."""
    return {
        "training": without_time_limit(lighter.get("training", spec.get("training"))),
        "quantization": lighter.get("quantization", spec.get("quantization", "nf4")),
    }


def _claim(actor: Actor, settings: Settings, job_id: str) -> tuple[bool, Job]:
    with session_scope(settings) as s:
        claimed = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.owner_id == actor.user_id, Job.auto_relaunched.is_(False))
            .values(auto_relaunched=True)
            .execution_options(synchronize_session=False)
        ).rowcount
        return claimed == 1, repo.get_job(actor, s, job_id)


def relaunch_after_oom(
    actor: Actor,
    settings: Settings,
    job_id: str,
    *,
    client: RunPodClient | None = None,
    store: BlobStore | None = None,
) -> Job | None:
    """Launch the failed job again, once, with lighter settings and the budget it has left.
    Returns the new job, or None when it was already relaunched or nothing is left."""
    claimed, job = _claim(actor, settings, job_id)
    if not claimed:
        return None  # already relaunched, or itself the relaunch
    left = (job.budget_usd or 0.0) - (job.cost_usd or 0.0)
    if left <= planner.MIN_BUDGET_GPU_S * job.rate_per_s:
        log.info("job %s: no budget left to relaunch after running out of memory", job_id)
        return None
    spec = job.spec or {}
    lighter = oom_settings(spec)
    if lighter is None:
        log.info("job %s ran out of memory with the lightest settings; not relaunched", job_id)
        return None
    try:
        request = request_for_job(job, **_lighter(spec, lighter), budget_usd=left)
        new = submit(actor, settings, request, auto_relaunch_of=job.id, client=client, store=store)
    except (QuotaExceeded, InvalidInput, SubmitFailed) as e:
        log.warning(
            "job %s: automatic relaunch after running out of memory not possible: %s", job_id, e
        )
        return None
    log.info(
        "job %s ran out of memory; relaunched as %s with %s", job_id, new.id, json.dumps(lighter)
    )
    return new
