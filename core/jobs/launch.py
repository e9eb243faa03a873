"""Launching a training job: `submit`.

`submit(actor, settings, request)` runs the launch preflight (`core.jobs.preflight`) and
raises its first problem (`InvalidInput`, `PlanRefused`, `UploadUrlsExpire`,
`QuotaExceeded`, ...) before anything is stored; then, under the user's row lock, checks
the quotas again (two launches at once cannot both squeeze under a limit), stores the job
(QUEUED), signs the dataset download URL and the upload URLs (adapter files,
`events.jsonl`, `result.json`) and sends it (`core.jobs.dispatch`) with
`policy.executionTimeout` = the job's budget at its GPU's rate, so the platform stops an
overspending job even with nothing of BrightRun running. The worker's own
`training.time_limit_s` sits below that (`core.planner.execution_limits`): a job that
reaches its budget stops itself, saves what it trained, and ends COMPLETED with stop
reason `time_limit`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from core.adapters import parent_source
from core.clients.runpod import RunPodClient
from core.clients.storage import BlobStore
from core.db import repo, session_scope
from core.db.tables import Job, User
from core.jobs.dispatch import blob_store, dispatch, sign_training
from core.jobs.preflight import LaunchRequest, Preflight, preflight
from core.jobs.pricing import worker_model
from core.jobs.quotas import check_quotas, lock_row
from core.jobs.spec import with_time_limit
from core.settings import Settings
from core.users import Actor

log = logging.getLogger("brightrun.jobs")


def submit(
    actor: Actor,
    settings: Settings,
    request: LaunchRequest | None = None,
    *,
    parent_job_id: str | None = None,
    auto_relaunch_of: str | None = None,
    client: RunPodClient | None = None,
    store: BlobStore | None = None,
    **settings_given: Any,
) -> Job:
    """Launch a training job for the actor (see the module doc). Returns the stored job.
    Without `request`, one is built from the settings given as keywords
    (`LaunchRequest.build`). `auto_relaunch_of` marks the job as the one automatic
    relaunch of that failed job; a request's `resume_from_version_id` starts from that
    adapter version's weights (continued training), recorded as the parent."""
    if request is not None and settings_given:
        raise TypeError(
            f"give a LaunchRequest or its settings, not both ({', '.join(settings_given)})"
        )
    request = request or LaunchRequest.build(**settings_given)
    store = blob_store(settings, store)
    job_id = repo.new_id("job")
    with session_scope(settings) as s:
        pre = preflight(request, actor, s, settings, job_id=job_id, store=store)
    pre.raise_first()
    spec = with_time_limit(pre.spec, pre.limits.time_limit_s)
    spec = spec.model_copy(
        update={
            "model": spec.model.model_copy(
                update={"name_or_path": worker_model(settings, request.model, pre.pricing)}
            )
        }
    )
    _store_job(
        actor, settings, pre, spec, parent_job_id=parent_job_id, auto_relaunch_of=auto_relaunch_of
    )
    payload = sign_training(
        spec.model_dump(mode="json"),
        store,
        actor.user_id,
        pre.dataset_keys,
        pre.upload_window.url_s,
    )
    if spec.resume_from:  # the parent adapter of a continued training, signed afresh
        payload["resume_from"] = parent_source(actor, settings, job_id, store)
    return dispatch(actor, settings, job_id, payload, pre.limits, pre.upload_window, client=client)


def _store_job(
    actor: Actor,
    settings: Settings,
    pre: Preflight,
    spec: Any,
    *,
    parent_job_id: str | None,
    auto_relaunch_of: str | None,
) -> None:
    """Store the job (QUEUED) after checking the quotas under the user's row lock."""
    r, pricing, limits, window = pre.request, pre.pricing, pre.limits, pre.upload_window
    budget = r.budget(settings)
    with session_scope(settings) as s:
        repo.ensure_user(actor, s)
        lock_row(s, User, actor.user_id)
        check_quotas(actor, s, settings, budget)
        repo.create_job(
            actor,
            s,
            job_id=spec.job_id,
            base_model=r.model,
            spec=spec.model_dump(mode="json"),
            dataset_id=r.dataset_id,
            gpu_type=pricing.gpu_type,
            price_tier=pricing.tier,
            rate_per_s=pricing.rate_per_s,
            budget_usd=budget,
            adapter_name=pre.adapter_name,
            parent_job_id=auto_relaunch_of or parent_job_id,
            resume_from_version_id=r.resume_from_version_id,
        )
        if auto_relaunch_of:
            repo.update_job(actor, s, spec.job_id, auto_relaunched=True)
    log.info(
        "job %s for %s: %s; budget $%.2f -> executionTimeout %d ms, training time limit "
        "%.0f s, queue allowance %.0f s, upload URLs %d s; plan %s; spec %s",
        spec.job_id,
        actor.user_id,
        pricing.note,
        budget,
        limits.execution_timeout_ms,
        limits.time_limit_s,
        window.queue_s,
        window.url_s,
        json.dumps(pre.summary(), default=str),
        json.dumps(repo.redact_spec(spec.model_dump(mode="json"))),
    )
