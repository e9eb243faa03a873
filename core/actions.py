"""Jobs that are not training: sending a `merge` or `cache_model` job, and the model cache.

`send_action(actor, settings, spec, ...)` stores the job (QUEUED, `action` set, the spec
without signed URLs), checks the user's quotas as a training launch does, signs what the
job needs at send time (`sign(payload, store, ttl_s)` fills in the URLs, plus the upload
URLs of `events.jsonl`/`result.json`) and sends `/run` with `executionTimeout` derived from
the job's budget. From then on the job is an ordinary job: `core.jobs.sync` follows it,
records its cost and its result (no adapter version is registered for it).

`cache_model(actor, settings, model, ...)` launches a `cache_model` job: the worker
downloads the model into the network volume's model cache once (optionally also a copy
quantised as `quantization`), so later jobs start without downloading; its `started`
event records the cold start. `cache_status(actor, settings, model)` tells the Train page
whether the model is cached: `cached` when this machine sees the cache folder complete
(the local stack's volume) or one of the actor's `cache_model` jobs for it completed,
`caching` while one runs, else `not cached` (a local folder or the tiny demo model is
`local`).

Errors: as `core.jobs.submit` (`InvalidInput`, `QuotaExceeded`, `SubmitFailed`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core import jobs, repo
from core.db import session_scope
from core.errors import InvalidInput
from core.models import ACTIVE_STATUSES, Job, User, utcnow
from core.runpod import RunPodClient, RunPodError, SubmitUncertain
from core.settings import Settings
from core.storage import BlobStore, job_key, make_blob_store
from core.users import Actor
from trainer.shared.spec import JobSpec

__all__ = ["send_action", "cache_model", "cache_status", "cold_start_s", "device_for"]

log = logging.getLogger("brightrun.jobs")

Signer = Callable[[dict[str, Any], BlobStore, int], dict[str, Any]]


def device_for(settings: Settings, pricing: jobs.Pricing) -> str:
    return settings.local_device if pricing.gpu_type == jobs.LOCAL_GPU else "cuda"


def send_action(
    actor: Actor,
    settings: Settings,
    spec: JobSpec,
    *,
    base_model: str,
    pricing: jobs.Pricing,
    adapter_name: str = "",
    budget_usd: float | None = None,
    sign: Signer | None = None,
    client: RunPodClient | None = None,
    store: BlobStore | None = None,
) -> Job:
    """Store and send a non-training job (see the module docstring). Returns the job."""
    budget = settings.job_budget_usd if budget_usd is None else float(budget_usd)
    if not budget > 0:
        raise InvalidInput(f"budget must be a positive number of dollars (got {budget_usd})")
    limits = jobs._limits(budget, pricing.rate_per_s)
    store = store or make_blob_store(settings)
    window = jobs.upload_window(limits, store.max_upload_url_s)  # refused before anything is stored
    with session_scope(settings) as s:
        repo.ensure_user(actor, s)
        jobs._lock_row(s, User, actor.user_id)
        jobs.check_quotas(actor, s, settings, budget)
        repo.create_job(
            actor, s, job_id=spec.job_id, base_model=base_model, spec=spec.model_dump(mode="json"),
            gpu_type=pricing.gpu_type, price_tier=pricing.tier, rate_per_s=pricing.rate_per_s,
            budget_usd=budget, adapter_name=adapter_name, action=spec.action,
        )  # fmt: skip
    log.info("%s job %s for %s: %s; budget $%.2f -> executionTimeout %d ms; spec %s",
             spec.action, spec.job_id, actor.user_id, pricing.note, budget, limits.execution_timeout_ms,
             json.dumps(repo.redact_spec(spec.model_dump(mode="json"))))  # fmt: skip
    ttl = window.url_s
    payload = spec.model_dump(mode="json")
    if sign is not None:
        payload = sign(payload, store, ttl)
    if payload.get("output") is not None:
        for name in jobs.LOG_FILES:
            key = job_key(actor.user_id, spec.job_id, name)
            payload["output"]["upload_urls"][name] = store.signed_upload_url("adapters", key, ttl)
    own = client is None
    client = client or RunPodClient.from_settings(settings)
    try:
        sub = client.run(payload, execution_timeout_ms=limits.execution_timeout_ms, ttl_ms=window.ttl_ms)
    except SubmitUncertain as e:
        jobs._fail_submit(actor, settings, spec.job_id, "submit_uncertain", str(e),
                          "look for the job on the endpoint before launching it again")  # fmt: skip
        raise jobs.SubmitFailed(f"job {spec.job_id}: {e}") from e
    except RunPodError as e:
        jobs._fail_submit(actor, settings, spec.job_id, "submit_failed", str(e),
                          "check GPU_CLUSTER_API_URL and GPU_CLUSTER_API_KEY and that the endpoint is up")  # fmt: skip
        raise jobs.SubmitFailed(f"job {spec.job_id} could not be sent: {e}") from e
    finally:
        if own:
            client.close()
    with session_scope(settings) as s:
        jobs._lock_row(s, Job, spec.job_id)
        job = repo.get_job(actor, s, spec.job_id)
        status = job.status if job.status not in ACTIVE_STATUSES else "IN_QUEUE"
        return repo.update_job(actor, s, spec.job_id, status=status, runpod_job_id=sub.id, submitted_at=utcnow())


def cache_model(
    actor: Actor,
    settings: Settings,
    model: str,
    *,
    revision: str | None = None,
    quantized_copy: bool = False,
    quantization: str = "nf4",
    budget_usd: float | None = None,
    gpu_type: str | None = None,
    client: RunPodClient | None = None,
    store: BlobStore | None = None,
) -> Job:
    """Launch a `cache_model` job for a hub model (see the module docstring)."""
    from pydantic import ValidationError

    pricing = jobs.pricing_for(settings, gpu_type)
    job_id = repo.new_id("job")
    try:
        spec = JobSpec(
            job_id=job_id, action="cache_model", model={"name_or_path": model, "revision": revision},
            quantization=quantization, cache={"quantized_copy": quantized_copy},
            output={"adapter_name": "model-cache"}, device=device_for(settings, pricing),
        )  # fmt: skip
    except ValidationError as e:
        raise InvalidInput(f"invalid cache_model settings: {jobs._spec_errors(e)}") from None
    return send_action(actor, settings, spec, base_model=model, pricing=pricing, budget_usd=budget_usd,
                       client=client, store=store)  # fmt: skip


def _local_cache_folder(settings: Settings, model: str, revision: str | None) -> Path:
    name = model.replace("/", "--") + (("@" + revision.replace("/", "--")) if revision else "")
    return (settings.data_dir / "volume" / "models" / name).resolve()


def cache_status(actor: Actor, settings: Settings, model: str, revision: str | None = None) -> str:
    """`local`, `cached`, `caching` or `not cached` (see the module docstring)."""
    from core.catalog import TINY_ID

    if model.lower() == TINY_ID or Path(model).expanduser().is_dir() or model.count("/") != 1:
        return "local"
    if (_local_cache_folder(settings, model, revision) / ".brightrun-complete").is_file():
        return "cached"
    with session_scope(settings) as s:
        for job in repo.list_jobs(actor, s, limit=500):
            if job.action != "cache_model" or job.base_model != model:
                continue
            if job.status == "COMPLETED":
                return "cached"
            if job.status in ACTIVE_STATUSES:
                return "caching"
    return "not cached"


def cold_start_s(actor: Actor, settings: Settings, job_id: str) -> float | None:
    """The job's cold start as its worker reported it in `started` (seconds)."""
    with session_scope(settings) as s:
        started = repo.list_events(actor, s, job_id, types=["started"])
    value = (started[-1].data or {}).get("cold_start_s") if started else None
    return float(value) if isinstance(value, int | float) else None


