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
`local`). `model_cache_state` gives the Train page that answer within
`CACHE_STATUS_TIMEOUT_S`; a database or volume that does not answer in time, or fails, is
`unknown` with the reason.

Errors: as `core.jobs.submit` (`InvalidInput`, `QuotaExceeded`, `SubmitFailed`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from core import jobs
from core.clients.runpod import RunPodClient
from core.clients.storage import BlobStore, make_blob_store
from core.db import repo, session_scope
from core.db.tables import ACTIVE_STATUSES, Job, JobStatus, User
from core.errors import InvalidInput
from core.planner import TINY_ID
from core.settings import Settings
from core.users import Actor
from trainer.shared.spec import JobSpec

__all__ = [
    "send_action",
    "cache_model",
    "cache_status",
    "model_cache_state",
    "CacheState",
    "cold_start_s",
]

log = logging.getLogger("brightrun.jobs")

Signer = Callable[[dict[str, Any], BlobStore, int], dict[str, Any]]


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
    limits = jobs.execution_limits(budget, pricing.rate_per_s)
    store = store or make_blob_store(settings)
    window = jobs.upload_window(limits, store.max_upload_url_s)  # refused before anything is stored
    with session_scope(settings) as s:
        repo.ensure_user(actor, s)
        jobs.lock_row(s, User, actor.user_id)
        jobs.check_quotas(actor, s, settings, budget)
        repo.create_job(
            actor,
            s,
            job_id=spec.job_id,
            base_model=base_model,
            spec=spec.model_dump(mode="json"),
            gpu_type=pricing.gpu_type,
            price_tier=pricing.tier,
            rate_per_s=pricing.rate_per_s,
            budget_usd=budget,
            adapter_name=adapter_name,
            action=spec.action,
        )
    log.info(
        "%s job %s for %s: %s; budget $%.2f -> executionTimeout %d ms; spec %s",
        spec.action,
        spec.job_id,
        actor.user_id,
        pricing.note,
        budget,
        limits.execution_timeout_ms,
        json.dumps(repo.redact_spec(spec.model_dump(mode="json"))),
    )
    payload = spec.model_dump(mode="json")
    if sign is not None:
        payload = sign(payload, store, window.url_s)
    if payload.get("output") is not None:
        payload["output"]["upload_urls"].update(
            jobs.log_upload_urls(store, actor.user_id, spec.job_id, window.url_s)
        )
    return jobs.dispatch(actor, settings, spec.job_id, payload, limits, window, client=client)


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
    pricing = jobs.pricing_for(settings, gpu_type)
    job_id = repo.new_id("job")
    try:
        spec = JobSpec(
            job_id=job_id,
            action="cache_model",
            model={"name_or_path": model, "revision": revision},
            quantization=quantization,
            cache={"quantized_copy": quantized_copy},
            output={"adapter_name": "model-cache"},
            device=jobs.device_for(settings, pricing),
        )
    except ValidationError as e:
        raise InvalidInput(f"invalid cache_model settings: {jobs.spec_errors(e)}") from None
    return send_action(
        actor,
        settings,
        spec,
        base_model=model,
        pricing=pricing,
        budget_usd=budget_usd,
        client=client,
        store=store,
    )


def _local_cache_folder(settings: Settings, model: str, revision: str | None) -> Path:
    name = model.replace("/", "--") + (("@" + revision.replace("/", "--")) if revision else "")
    return (settings.data_dir / "volume" / "models" / name).resolve()


def cache_status(actor: Actor, settings: Settings, model: str, revision: str | None = None) -> str:
    """`local`, `cached`, `caching` or `not cached` (see the module docstring)."""
    if model.lower() == TINY_ID or Path(model).expanduser().is_dir() or model.count("/") != 1:
        return "local"
    if (_local_cache_folder(settings, model, revision) / ".brightrun-complete").is_file():
        return "cached"
    with session_scope(settings) as s:
        for job in repo.list_jobs(actor, s, limit=500):
            if job.action != "cache_model" or job.base_model != model:
                continue
            if job.status == JobStatus.COMPLETED:
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


MODEL_SOURCES = {
    "runpod_cached": "RunPod's cached models on the worker's host (its download not billed)",
    "cache": "the network volume's model cache",
    "hub": "downloaded from the Hugging Face hub into the volume's model cache",
    "local": "a folder on the worker",
}


def model_source(actor: Actor, settings: Settings, job_id: str) -> str | None:
    """Where the job's worker got the base model, as its `started` event says (words)."""
    with session_scope(settings) as s:
        started = repo.list_events(actor, s, job_id, types=["started"])
    source = ((started[-1].data or {}).get("model") or {}).get("source") if started else None
    return MODEL_SOURCES.get(source, source) if source else None


CACHE_STATUS_TIMEOUT_S = 2.0
# Cache checks run here so a page waits at most CACHE_STATUS_TIMEOUT_S; two workers, so
# checks stuck on an unanswering database cannot pile up threads (later ones time out).
_cache_checks = ThreadPoolExecutor(max_workers=2, thread_name_prefix="brightrun-cache-status")


@dataclass(frozen=True)
class CacheState:
    state: str  # local | cached | caching | not cached | unknown
    reason: str = ""  # why `unknown`


def model_cache_state(
    actor: Actor, settings: Settings, model: str, timeout_s: float | None = None
) -> CacheState:
    """`cache_status` of `model`, or `unknown` when it has no answer within `timeout_s`
    (default `CACHE_STATUS_TIMEOUT_S`; the check finishes in the background and its answer
    is dropped) or cannot read the database or the volume."""
    timeout_s = CACHE_STATUS_TIMEOUT_S if timeout_s is None else timeout_s
    future = _cache_checks.submit(cache_status, actor, settings, model)
    try:
        return CacheState(future.result(timeout=timeout_s))
    except TimeoutError:
        future.cancel()  # still queued behind stuck checks: never runs
        return CacheState("unknown", f"no answer within {timeout_s:g}s")
    except SQLAlchemyError as e:
        log.warning("cache status of %s: database error %s", model, type(e).__name__)
        return CacheState("unknown", "the database could not be read")
    except OSError as e:
        log.warning("cache status of %s: %s", model, e)
        return CacheState("unknown", "the model cache folder could not be read")
