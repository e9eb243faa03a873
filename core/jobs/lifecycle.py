"""A job after its launch: cancel, retry, relaunch, continued training.

- `cancel` asks the endpoint to stop the job (queued or running); what it checkpointed
  stays on the volume.
- `retry` sends a FAILED, CANCELLED or TIMED_OUT job again under the same id (so the
  worker resumes from its last checkpoint and continues its event numbering) with fresh
  signed URLs and the budget that is left. RunPod's own `/retry` is not used: it reuses
  the original input, whose signed URLs and time limit may be stale, works only for 30
  minutes, and not on CANCELLED jobs.
- `relaunch` launches a failed job again as a new job (its child) with
  `relaunch_settings` (everything else, the method and its settings included, as stored): lighter memory settings after running out of memory, a third of the
  learning rate with warmup after divergence, the same settings after a download failure
  or a cancel.
- `continue_training` launches a job that starts from an adapter version's weights (see
  its docstring).

Errors: `NotFound`, `Conflict` (a job in the wrong status), `InvalidInput`,
`QuotaExceeded`, `core.clients.runpod.RunPodError` when the endpoint cannot be reached.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from core import adapters, planner, validation
from core.clients.runpod import JobNotFound as EndpointForgotJob
from core.clients.runpod import RunPodClient
from core.clients.storage import BlobStore
from core.datasets import eval_key
from core.db import repo, session_scope
from core.db.tables import RETRYABLE_STATUSES, Job, JobStatus, User
from core.errors import Conflict, InvalidInput, QuotaExceeded
from core.jobs.again import request_for_job, request_from_spec
from core.jobs.dispatch import blob_store, dispatch, job_client, sign_training
from core.jobs.launch import submit
from core.jobs.oom import oom_settings
from core.jobs.quotas import check_quotas, lock_row
from core.jobs.spec import build_spec, without_time_limit
from core.jobs.sync import sync
from core.jobs.window import upload_window
from core.settings import Settings
from core.users import Actor
from trainer.shared.methods import Method
from trainer.shared.spec import JobSpec

log = logging.getLogger("brightrun.jobs")


def cancel(
    actor: Actor,
    settings: Settings,
    job_id: str,
    *,
    client: RunPodClient | None = None,
    store: BlobStore | None = None,
    reason: str = "user",
) -> Job:
    """Stop the job (queued or running). What it checkpointed stays on the volume."""
    with session_scope(settings) as s:
        job = repo.request_cancel(actor, s, job_id, reason=reason)
        rid, endpoint_url = job.runpod_job_id, (job.result or {}).get("endpoint_url")
    if not rid:
        return job  # being sent right now: `dispatch` cancels it once it has an id
    with job_client(settings, client, endpoint_url) as rp:
        try:
            rp.cancel(rid)
        except EndpointForgotJob:
            log.info("job %s is no longer on the endpoint; syncing from storage", job_id)
        return sync(actor, settings, job_id, client=rp, store=store)


# --------------------------------------------------------------------------- retry


def _retryable(actor: Actor, settings: Settings, job_id: str) -> tuple[Job, tuple[str, str | None]]:
    """The job and its dataset's storage keys; `Conflict` unless it can be retried."""
    with session_scope(settings) as s:
        job = repo.get_job(actor, s, job_id)
        if job.status not in RETRYABLE_STATUSES:
            raise Conflict(
                f"job {job_id} is {job.status}; only a failed, cancelled or timed-out job can be retried"
            )
        if not job.dataset_id:
            raise Conflict(f"job {job_id} has no dataset to train on")
        dataset = repo.get_dataset(actor, s, job.dataset_id, include_deleted=False)
        return job, (dataset.normalized_key, eval_key(dataset))


def _retry_limits(
    job: Job, settings: Settings, budget_usd: float | None
) -> tuple[float, planner.ExecutionLimits]:
    """The new total budget and the limits of what is left of it."""
    total = (
        float(budget_usd)
        if budget_usd is not None
        else float(job.budget_usd or settings.job_budget_usd)
    )
    if not (math.isfinite(total) and total > 0):
        raise InvalidInput(f"budget must be a positive number of dollars (got {budget_usd})")
    spent = float(job.cost_usd or 0.0)
    try:
        return total, planner.execution_limits(total - spent, job.rate_per_s)
    except (planner.BudgetTooSmall, ValueError):
        raise QuotaExceeded(
            f"job {job.id} has spent ${spent:.2f} of its ${total:.2f} budget; retry with a larger budget"
        ) from None


def _retry_spec(job: Job, keys: tuple[str, str | None], time_limit_s: float) -> JobSpec:
    """The job's stored spec, rebuilt (`core.jobs.again`), with a fresh time limit; the
    model path and device stay those the job was first sent with."""
    spec = dict(job.spec or {})
    return build_spec(
        job_id=job.id,
        model=(spec.get("model") or {}).get("name_or_path") or job.base_model,
        adapter_name=validation.served_adapter_name(job.adapter_name, job.id),
        device=spec.get("device", "auto"),
        time_limit_s=time_limit_s,
        with_eval_url=bool(keys[1]),
        **request_for_job(job).spec_settings(bool(keys[1])),
    )


def _reopen(
    actor: Actor, settings: Settings, job_id: str, spec: JobSpec, total: float
) -> tuple[Job, JobSpec]:
    """Put the job back to QUEUED for its next attempt (quotas checked under the lock)."""
    with session_scope(settings) as s:
        repo.ensure_user(actor, s)
        lock_row(s, User, actor.user_id)
        lock_row(s, Job, job_id)
        job = repo.get_job(actor, s, job_id)
        if job.status not in RETRYABLE_STATUSES:
            raise Conflict(f"job {job_id} is {job.status} now")
        spent = float(job.cost_usd or 0.0)
        check_quotas(actor, s, settings, total - spent, exclude_job=job_id)
        result = {**(job.result or {}), "prior_cost_usd": spent}
        result["attempt_first_seq"] = job.last_seq + 1  # the worker continues the numbering
        spec = spec.model_copy(update={"first_seq": job.last_seq + 1})
        job = repo.update_job(
            actor,
            s,
            job_id,
            reopen=True,
            status=JobStatus.QUEUED,
            runpod_job_id=None,
            attempt=job.attempt + 1,
            budget_usd=total,
            spec=spec.model_dump(mode="json"),
            result=result,
            finished_at=None,
            started_at=None,
            submitted_at=None,
            delay_ms=None,
            execution_ms=None,
            billed_s=None,
            failure_kind=None,
            failure_message=None,
            failure_suggestion=None,
            stop_reason=None,
            cancel_requested_at=None,
            notified_at=None,
            eta_s=None,
        )
        return job, spec


def retry(
    actor: Actor,
    settings: Settings,
    job_id: str,
    *,
    budget_usd: float | None = None,
    client: RunPodClient | None = None,
    store: BlobStore | None = None,
) -> Job:
    """Send a FAILED, CANCELLED or TIMED_OUT job again under the same id: the worker resumes
    from its last checkpoint. It gets what is left of its budget, or `budget_usd` as its new
    total budget."""
    job, keys = _retryable(actor, settings, job_id)
    total, limits = _retry_limits(job, settings, budget_usd)
    store = blob_store(settings, store)
    window = upload_window(limits, store.max_upload_url_s)  # refused before anything changes
    spec = _retry_spec(job, keys, limits.time_limit_s)
    job, spec = _reopen(actor, settings, job_id, spec, total)
    log.info(
        "job %s: retry (attempt %d) with $%.2f of budget left",
        job_id,
        job.attempt,
        total - float((job.result or {}).get("prior_cost_usd", 0.0)),
    )
    payload = sign_training(spec.model_dump(mode="json"), store, actor.user_id, keys, window.url_s)
    if spec.resume_from:
        payload["resume_from"] = adapters.parent_source(actor, settings, job_id, store)
    return dispatch(actor, settings, job_id, payload, limits, window, client=client)


# --------------------------------------------------------------------------- relaunch


def relaunch_settings(job: Job) -> dict[str, Any] | None:
    """Settings to launch a failed job again with, following its failure's suggestion
    (see the module docstring). None when a relaunch with changed settings would not help
    (bad input, unknown model)."""
    spec = dict(job.spec or {})
    lora = dict(spec.get("lora") or {})
    training = without_time_limit(spec.get("training"))
    quant = spec.get("quantization", "nf4")
    kind = job.failure_kind
    if job.status not in RETRYABLE_STATUSES:
        return None
    if kind == "out_of_memory":
        lighter = oom_settings(spec)
        if lighter is None:  # nothing lighter is left: a bigger GPU or a smaller model
            return None
        training = without_time_limit(lighter.get("training") or training)
        quant = lighter.get("quantization", quant)
    elif kind == "diverged":
        training["learning_rate"] = float(training.get("learning_rate", 2e-4)) / 3
        training["warmup_ratio"] = max(0.1, float(training.get("warmup_ratio", 0.03)))
        training["max_grad_norm"] = 1.0
    elif kind in ("bad_input", "model_unavailable"):
        return None
    return {"lora": lora, "training": training, "quantization": quant}


def relaunch(
    actor: Actor, settings: Settings, job_id: str, *, client: Any = None, store: Any = None
) -> Job:
    """Launch a failed job again as a new job (its child) with `relaunch_settings`, the
    same dataset, model, adapter name and budget. Raises Conflict when there is nothing to
    change that would help (the failure's message says what to fix instead)."""
    with session_scope(settings) as s:
        job = repo.get_job(actor, s, job_id)
    changed = relaunch_settings(job)
    if changed is None or not job.dataset_id:
        raise Conflict(
            f"job {job_id} cannot be relaunched as it is: "
            f"{job.failure_suggestion or 'change its settings on the Train page'}"
        )
    request = request_for_job(job, **changed)
    return submit(actor, settings, request, parent_job_id=job.id, client=client, store=store)


# --------------------------------------------------------------------------- continue


def _continued_method(
    parent: Mapping[str, Any], method: str | None, preference: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The method changes over the parent's settings: none, unless `method` names another
    method (then it comes with `preference`, or that method's defaults) or `preference` is
    given."""
    if method and method != (parent.get("method") or Method.SFT):
        return {"method": method, "preference": preference}
    return {"preference": preference} if preference is not None else {}


def continue_training(
    actor: Actor,
    settings: Settings,
    ref: str,
    *,
    dataset_id: str | None = None,
    training: Mapping[str, Any] | None = None,
    lora: Mapping[str, Any] | None = None,
    adapter_name: str | None = None,
    quantization: str | None = None,
    budget_usd: float | None = None,
    gpu_type: str | None = None,
    client: Any = None,
    store: BlobStore | None = None,
    method: str | None = None,
    preference: Mapping[str, Any] | None = None,
) -> Job:
    """Launch a job that continues training version `ref` (new data, more epochs) from its
    weights (`JobSpec.resume_from`, signed afresh at each send by
    `core.adapters.parent_source`), on the same base model with the same LoRA shape. The
    dataset defaults to the parent's, the adapter name to the parent's (so the result is
    its next version), LoRA settings to the parent's; training settings are the parent's
    with `training` applied over them (without its time limit, which the budget sets).
    The method and its preference settings are the parent's unless `method` names another
    one (then `preference`, or that method's defaults); `method` dpo on a preference
    dataset tunes the version's preferences with the version itself as the reference (see
    `trainer.preference_loss`). The request is rebuilt from the version's settings by
    `core.jobs.again`, as every launch from a stored spec is."""
    with session_scope(settings) as s:
        parent = adapters.resolve(actor, s, ref)
        if parent.status != "ready":
            raise InvalidInput(
                f"version {ref!r} is {parent.status}; only a ready version can be continued"
            )
        name = adapter_name or adapters.adapter_name_of(s, parent)
        base, parent_id, ps = parent.base_model, parent.id, parent.settings or {}
        dataset_id = dataset_id or parent.dataset_id
        if dataset_id is None:
            raise InvalidInput("the parent version has no dataset: name the dataset to continue on")
        if not parent.storage_prefix and not parent.volume_path:
            raise InvalidInput(
                f"version {ref!r} has neither stored files nor a folder on the volume"
            )
    changes = _continued_method(ps, method, preference)
    if quantization:
        changes["quantization"] = quantization
    request = request_from_spec(
        ps,
        model=base,
        dataset_id=dataset_id,
        adapter_name=name,
        budget_usd=budget_usd,
        gpu_type=gpu_type,
        resume_from_version_id=parent_id,
        lora=adapters.continued_lora(ps.get("lora"), lora),
        training={**without_time_limit(ps.get("training")), **dict(training or {})},
        **changes,
    )
    return submit(actor, settings, request, client=client, store=store)
