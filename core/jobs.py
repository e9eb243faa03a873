"""The life of a training job: submit, sync, cancel, retry, reconcile.

Contract (every function takes the acting user and scopes to them; another user's job is
`NotFound`):

- `submit(actor, settings, ...)` builds the `JobSpec`, refuses what the planner says cannot
  fit or costs more than the budget (`PlanRefused`), enforces the user's concurrent-job
  and monthly-budget quotas (`QuotaExceeded`; checked under a per-user lock, so two
  launches at once cannot both squeeze under a limit), stores the job (QUEUED), signs the
  dataset download URL and the upload URLs (adapter files, `events.jsonl`, `result.json`),
  and sends `/run` with `policy.executionTimeout` = the job's budget at its GPU's rate:
  the platform stops an overspending job even with nothing of BrightRun running. The
  worker's own `training.time_limit_s` sits below that (`core.costs.execution_limits`), so
  a job that reaches its budget stops itself, saves and uploads what it trained, and ends
  COMPLETED with stop reason `time_limit`. Before anything is stored, the job must be able
  to end while its upload URLs still work (`upload_window`): a store whose upload URLs are
  short-lived (Supabase without S3 keys: 2 h) gets a shorter queue allowance through
  `policy.ttl`, and a job that cannot fit even then is refused (`UploadUrlsExpire`, naming
  the S3 settings and the largest budget that fits). If `/run` fails the job is FAILED and
  `SubmitFailed` is raised; if its outcome is unknown (sent, no answer) the job is FAILED
  with kind `submit_uncertain`, because sending it again could start it twice.
- `sync(actor, settings, job_id)` pulls `/stream` then `/status` and appends the events
  by sequence number (idempotent: the database's unique (job, seq) decides), updates
  status, step, progress, ETA and live cost. When the job ends it backfills every event
  from the final output (the aggregated stream) and, when RunPod no longer knows the job
  (404 once its 30-minute retention passed) or the output lacks the final event, from
  the `events.jsonl`/`result.json` the worker uploaded; then it records the billed cost,
  registers the adapter version (COMPLETED), and notifies. Any number of processes may
  sync the same job at once: each holds the job's row lock while it writes, a finished job
  is never reopened, and the end-of-job notification is claimed once.
- Status precedence when sources disagree: a job never leaves a terminal status (except
  through `retry`); on a finished RunPod job the worker's last `completed`/`failed` event
  decides COMPLETED/FAILED; RunPod's own CANCELLED/TIMED_OUT win over a missing event.
- Cost: billed seconds (`executionTime` plus the worker's reported cold start, rounded up)
  × the job's rate; while running, elapsed since the worker started × rate. Local jobs run
  on this machine's CPU but are priced at the configured GPU type's Serverless rate (as if
  they had run there); they are recorded with GPU type `LOCAL_CPU` and price tier `local`
  so they never skew the per-GPU history the planner learns from.
- `cancel` asks the endpoint to stop the job (checkpoints on the volume stay), `retry`
  sends the same job again (same job id, so the worker resumes from its last checkpoint and
  continues its event numbering) with fresh signed URLs and the budget that is left.
  RunPod's own `/retry` is not used: it reuses the original input, whose signed URLs and
  time limit may be stale, works only for 30 minutes, and not on CANCELLED jobs.
- `reconcile(settings)` syncs every user's unfinished jobs (the syncer's pass).

Errors: `core.errors` types (`NotFound`, `Conflict`, `InvalidInput`, `QuotaExceeded`),
`PlanRefused` (and its `UploadUrlsExpire`), `SubmitFailed`; `core.runpod.RunPodError` from `sync`/`cancel` when the
endpoint cannot be reached (nothing is changed then).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import update
from sqlalchemy.orm import Session

from core import costs, repo, validation
from core.adapters import register_checkpoints
from core.db import session_scope
from core.errors import BrightRunError, Conflict, InvalidInput, NotFound, QuotaExceeded
from core.models import TERMINAL_STATUSES, Job, User, utcnow
from core.runpod import JobNotFound as EndpointForgotJob
from core.runpod import RunPodClient, RunPodError, SubmitUncertain
from core.settings import Settings
from core.storage import (
    DOWNLOAD_URL_TTL_S,
    UPLOAD_URL_TTL_S,
    BlobStore,
    adapter_key,
    adapter_prefix,
    job_key,
    make_blob_store,
)
from core.users import SYSTEM_ACTOR, Actor
from trainer.shared.spec import Event, JobSpec

log = logging.getLogger("brightrun.jobs")

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json", "brightrun.json")
LOG_FILES = ("events.jsonl", "result.json")
LOCAL_GPU = costs.LOCAL_CPU.id
LOCAL_TIER = "local"
QUEUE_ALLOWANCE_S = DOWNLOAD_URL_TTL_S  # a job that waits longer would find its dataset URL expired
UNSUBMITTED_GRACE_S = 120.0  # a QUEUED job without a RunPod id older than this never got sent
MAX_TTL_S = 7 * 24 * 3600
# With short-lived upload URLs a job is given at least this long to find a worker...
MIN_QUEUE_ALLOWANCE_S = 30 * 60
# ...and its upload URLs outlive the moment the platform would drop it by this much.
UPLOAD_URL_MARGIN_S = 5 * 60
_PLACEHOLDER_URL = "https://signed-url.invalid/"  # replaced by a fresh signed URL at each send


class SubmitFailed(BrightRunError):
    """The endpoint refused the job or could not be reached; the job is stored as FAILED."""


class PlanRefused(InvalidInput):
    """The planner says the job cannot fit its GPU, or would cost more than its budget."""


class UploadUrlsExpire(PlanRefused):
    """The file store's upload URLs would expire before the job can end."""


@dataclass(frozen=True)
class UploadWindow:
    """How long a job may take, end to end, and how long its upload URLs live."""

    queue_s: float  # the wait for a worker the job is allowed
    ttl_ms: int  # RunPod `policy.ttl` (queue + execution): the platform drops the job after it
    url_s: int  # lifetime of the job's upload URLs


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.3g} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def upload_window(limits: costs.ExecutionLimits, max_url_s: int | None) -> UploadWindow:
    """The queue allowance, `policy.ttl` and upload URL lifetime for a job with `limits` on
    a store whose upload URLs live at most `max_url_s` (None: no limit).

    Upload URLs live until the job can no longer be running (queue allowance + budget + an
    hour, at least `UPLOAD_URL_TTL_S`). When the store cannot give that, the queue allowance
    shrinks so that queue + `executionTimeout` + `UPLOAD_URL_MARGIN_S` fits the URLs'
    lifetime, and `policy.ttl` makes the platform drop a job still waiting past it. Raises
    `UploadUrlsExpire` when even `MIN_QUEUE_ALLOWANCE_S` does not fit, naming the S3
    settings and the largest budget that does."""
    want = int(min(MAX_TTL_S, max(UPLOAD_URL_TTL_S, QUEUE_ALLOWANCE_S + limits.budget_s + 3600)))
    if max_url_s is None or want <= max_url_s:
        ttl_s = min(MAX_TTL_S, QUEUE_ALLOWANCE_S + limits.budget_s)
        return UploadWindow(QUEUE_ALLOWANCE_S, int(ttl_s * 1000), want)
    run_s = limits.execution_timeout_ms / 1000
    queue_s = min(QUEUE_ALLOWANCE_S, max_url_s - UPLOAD_URL_MARGIN_S - run_s)
    if queue_s < MIN_QUEUE_ALLOWANCE_S:
        most_s = max_url_s - UPLOAD_URL_MARGIN_S - MIN_QUEUE_ALLOWANCE_S
        usd = math.floor(most_s * limits.rate_per_s * 100) / 100
        raise UploadUrlsExpire(
            f"this job may run {_hours(run_s)} after up to {_hours(MIN_QUEUE_ALLOWANCE_S)} "
            f"waiting for a worker, but the file store's upload URLs last {_hours(max_url_s)}: "
            "its adapter, event log and result could not be stored. Set "
            "SUPABASE_S3_ACCESS_KEY_ID and SUPABASE_S3_SECRET_ACCESS_KEY (with "
            "SUPABASE_S3_REGION; see docs/supabase.md) for upload URLs of up to 7 days, or "
            f"lower the budget to at most ${usd:.2f} so the job ends within {_hours(max_url_s)}"
        )
    return UploadWindow(queue_s, int((queue_s + run_s) * 1000), int(max_url_s))


# --------------------------------------------------------------------------- pricing


@dataclass(frozen=True)
class Pricing:
    gpu_type: str  # what the job runs on (LOCAL_CPU on the local endpoint)
    tier: str  # flex | active | local
    rate_per_s: float
    priced_as: str  # the GPU type whose rate is used

    @property
    def note(self) -> str:
        if self.gpu_type == LOCAL_GPU:
            return (
                f"runs on this machine's CPU, priced at {self.priced_as} Serverless rates "
                f"(${self.rate_per_s * 3600:.2f}/h) as if it had run there"
            )
        return f"{self.priced_as} Serverless {self.tier} at ${self.rate_per_s * 3600:.2f}/h"


def pricing_for(settings: Settings, gpu_type: str | None = None) -> Pricing:
    """The GPU type and rate a new job is billed at under `settings`."""
    gpu = gpu_type or settings.gpu_type
    try:
        rate = costs.rate_per_second(gpu, settings.price_tier, settings.gpu_prices)
    except costs.UnknownGpuType as e:
        raise InvalidInput(f"gpu_type: {e}") from None
    if settings.is_local_endpoint or _is_loopback(settings.gpu_cluster_api_url):
        return Pricing(LOCAL_GPU, LOCAL_TIER, rate, gpu)
    return Pricing(gpu, settings.price_tier, rate, gpu)


def _is_loopback(url: str) -> bool:
    from urllib.parse import urlsplit

    return (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


# --------------------------------------------------------------------------- collaborators


@contextmanager
def _job_client(
    settings: Settings, client: RunPodClient | None, url: str | None = None
) -> Iterator[RunPodClient]:
    """The client to use: the given one, or one for the configured endpoint; for the endpoint
    at `url` when a job runs on another one than configured now (RunPod API keys belong to
    the account, so the configured key serves it). Closes the clients it made."""
    made: list[RunPodClient] = []
    if client is None:
        client = RunPodClient.from_settings(settings)
        made.append(client)
    if url and url.rstrip("/") != client.base_url:
        client = RunPodClient(url, settings.gpu_cluster_api_key)
        made.append(client)
    try:
        yield client
    finally:
        for c in made:
            c.close()


def _store(settings: Settings, store: BlobStore | None) -> BlobStore:
    return store if store is not None else make_blob_store(settings)


def version_id_for(job_id: str) -> str:
    """The adapter version a job produces gets an id derived from the job's (one per job)."""
    return "av-" + job_id.removeprefix("job-")


def _lock_row(session: Session, model: type, row_id: str) -> None:
    """Take the row's write lock for the rest of the transaction (PostgreSQL: a row lock;
    SQLite: the database write lock, taken before anything is read)."""
    session.execute(
        update(model)
        .where(model.id == row_id)
        .values(id=model.id)
        .execution_options(synchronize_session=False)
    )


# --------------------------------------------------------------------------- submit


def _spec_errors(e: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'spec'}: {err['msg']}" for err in e.errors()
    )


def build_spec(
    *,
    job_id: str,
    model: str,
    adapter_name: str,
    lora: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    quantization: str = "nf4",
    eval_fraction: float = 0.0,
    device: str = "auto",
    time_limit_s: float | None = None,
    with_eval_url: bool = False,
    resume_from: str | None = None,
    first_seq: int = 0,
) -> JobSpec:
    """The `JobSpec` for these settings; bad values raise `InvalidInput` naming the field.
    `resume_from` (continued training) is replaced by a fresh source at each send;
    `first_seq` is the first event number the controller has not stored (a retry's)."""
    training = dict(training or {})
    if time_limit_s is not None:
        given = training.get("time_limit_s")
        training["time_limit_s"] = min(float(given), time_limit_s) if given else time_limit_s
    try:
        return JobSpec(
            job_id=job_id,
            model={"name_or_path": model},
            data={
                "train_url": _PLACEHOLDER_URL,
                "eval_fraction": eval_fraction,
                **({"eval_url": _PLACEHOLDER_URL} if with_eval_url else {}),
            },
            lora=dict(lora or {}),
            quantization=quantization,
            training=training,
            output={"adapter_name": adapter_name},
            device=device,
            resume_from=resume_from,
            first_seq=first_seq,
        )
    except ValidationError as e:
        raise InvalidInput(f"invalid job settings: {_spec_errors(e)}") from None


def _plan_check(
    spec: JobSpec,
    dataset: Any,
    pricing: Pricing,
    budget_usd: float,
    settings: Settings,
    measured: Mapping[str, list[float]] | None = None,
) -> tuple[dict[str, Any], float | None]:
    """Ask the planner about this spec on the job's GPU type. Raises `PlanRefused` when it
    does not fit or even the low cost estimate is over the budget. `measured`: tokens/s of
    the user's finished jobs per GPU type (`repo.measured_throughput`), which replace the
    default utilisation in the time estimate. Returns what it said (for the job's log line)
    and the planner's bound on a healthy run's length in seconds (None for local jobs,
    whose CPU time says nothing about a GPU estimate)."""
    from core import catalog, estimate

    gpu = pricing.priced_as
    try:
        facts = catalog.describe(
            spec.model.name_or_path, local_models_dir=settings.data_dir / "models"
        )
    except catalog.ModelNotDescribable as e:
        log.warning(
            "job %s: the planner cannot estimate the model (%s); the budget cap still applies",
            spec.job_id,
            e,
        )
        return {"estimate": f"not available: {e}"}, None
    tokens = _token_stats(dataset)
    tier = settings.price_tier
    p = estimate.plan(
        spec, facts, tokens=tokens, gpus=[gpu], measured=measured, tier=tier,
        price_overrides=settings.gpu_prices,
    )
    verdict = p.verdict(gpu)
    if verdict.verdict == "does_not_fit":
        raise PlanRefused(
            f"{spec.model.name_or_path} needs about {verdict.need_bytes / 2**30:.1f} GiB on "
            f"{verdict.name} ({verdict.memory_bytes / 2**30:.0f} GiB): it does not fit. "
            f"Try: {verdict.suggestion}"
        )
    said: dict[str, Any] = {
        "gpu": gpu,
        "verdict": verdict.verdict,
        "need_gib": round(verdict.need_bytes / 2**30, 2),
    }
    cap_s = None
    if p.costs:
        check = estimate.check_budget(p.costs[0], budget_usd)
        if not check.ok:
            raise PlanRefused(check.message)
        said.update(
            budget=check.level,
            usd_low=round(p.costs[0].usd_low, 4),
            usd_high=round(p.costs[0].usd_high, 4),
            time_basis=p.times[0].basis_text,
        )
        if pricing.gpu_type != LOCAL_GPU:
            cap_s = estimate.execution_timeout_ms(p.times[0], budget_usd, pricing.rate_per_s) / 1000
    return said, cap_s


def _token_stats(dataset: Any) -> Any:
    """The planner's token statistics from the dataset's inspection report, if measured."""
    from core.estimate import TokenStats

    stats = dataset.stats or {}
    per_row = (stats.get("tokens") or {}).get("per_row") or {}
    rows = (stats.get("split") or {}).get("train_rows") or dataset.valid_rows
    if not per_row.get("mean") or not rows:
        return None
    return TokenStats(rows=int(rows), mean_tokens=float(per_row["mean"]))


def _eval_key(dataset: Any) -> str | None:
    return ((dataset.stats or {}).get("split") or {}).get("eval_key")


def check_quotas(
    actor: Actor,
    session: Session,
    settings: Settings,
    budget_usd: float,
    exclude_job: str | None = None,
) -> None:
    """Raise `QuotaExceeded` unless the concurrent-job limit and the month's committed spend
    (recorded costs plus the budgets of unfinished jobs) leave room for a job with this
    budget. `submit`, `retry` and `core.actions.send_action` call it with the user's row
    locked; the Train page calls it to disable Launch with the same message."""
    limits = repo.user_limits(actor, session, settings)
    active = [j for j in repo.list_unfinished_jobs(actor, session) if j.id != exclude_job]
    if len(active) >= limits.max_concurrent_jobs:
        raise QuotaExceeded(
            f"you have {len(active)} unfinished job(s) and may run {limits.max_concurrent_jobs} "
            "at once; wait for one to finish or cancel one"
        )
    spent = repo.month_spend(actor, session, include_running=False)
    committed = spent + sum(_reserved_usd(j) for j in active)
    if committed + budget_usd > limits.monthly_budget_usd + 1e-9:
        room = max(0.0, limits.monthly_budget_usd - committed)
        raise QuotaExceeded(
            f"this job's budget ${budget_usd:.2f} would take this month's spend and reserved "
            f"budgets to ${committed + budget_usd:.2f}, over your monthly budget "
            f"${limits.monthly_budget_usd:.2f}; lower the budget to ${room:.2f} or less"
        )


def _reserved_usd(job: Job) -> float:
    """What an unfinished job may still spend this attempt (earlier attempts are recorded)."""
    prior = _prior_cost(job)
    return max((job.budget_usd or 0.0) - prior, (job.cost_usd or 0.0) - prior, 0.0)


def _signed_urls(
    store: BlobStore, owner: str, job_id: str, keys: tuple[str, str | None], upload_ttl: int
) -> tuple[str, str | None, dict[str, str]]:
    """Fresh signed URLs: dataset (and eval split) downloads; uploads of the adapter files to
    the job's version folder and of events.jsonl/result.json to the job's folder, living
    `upload_ttl` seconds (`UploadWindow.url_s`)."""
    train_url = store.signed_download_url("datasets", keys[0], DOWNLOAD_URL_TTL_S)
    eval_url = (
        store.signed_download_url("datasets", keys[1], DOWNLOAD_URL_TTL_S) if keys[1] else None
    )
    vid = version_id_for(job_id)
    urls = {
        name: store.signed_upload_url("adapters", adapter_key(owner, vid, name), upload_ttl)
        for name in ADAPTER_FILES
    }
    for name in LOG_FILES:
        urls[name] = store.signed_upload_url("adapters", job_key(owner, job_id, name), upload_ttl)
    return train_url, eval_url, urls


def submit(
    actor: Actor,
    settings: Settings,
    *,
    dataset_id: str,
    model: str,
    adapter_name: str | None = None,
    lora: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    quantization: str = "nf4",
    eval_fraction: float = 0.0,
    gpu_type: str | None = None,
    budget_usd: float | None = None,
    parent_job_id: str | None = None,
    client: RunPodClient | None = None,
    store: BlobStore | None = None,
    auto_relaunch_of: str | None = None,
    resume_from_version_id: str | None = None,
) -> Job:
    """Launch a training job for the actor (see the module doc). Returns the stored job.
    `auto_relaunch_of` marks the job as the one automatic relaunch of that failed job.
    `resume_from_version_id` starts from that adapter version's weights (continued
    training, see `core.adapters.continue_training`); it is recorded as the parent."""
    pricing = pricing_for(settings, gpu_type)
    budget = settings.job_budget_usd if budget_usd is None else float(budget_usd)
    if not (math.isfinite(budget) and budget > 0):
        raise InvalidInput(f"budget must be a positive number of dollars (got {budget_usd})")
    _limits(budget, pricing.rate_per_s)  # refuse a budget under a minute before anything else
    facts = validation.check_base_model(settings, model)  # no URL, no folder outside MODEL_DIRS
    job_id = repo.new_id("job")
    device = settings.local_device if pricing.gpu_type == LOCAL_GPU else "cuda"
    with session_scope(settings) as s:
        dataset = repo.get_dataset(actor, s, dataset_id)
        if not dataset.normalized_key or dataset.valid_rows <= 0:
            raise InvalidInput(f"dataset {dataset_id!r} has no valid rows to train on")
        keys = (dataset.normalized_key, _eval_key(dataset))
        name = adapter_name or _default_adapter_name(model, dataset.name)
        spec = build_spec(
            job_id=job_id, model=worker_model(settings, model, pricing),
            adapter_name=validation.served_adapter_name(name, job_id), lora=lora, training=training,
            quantization=quantization, eval_fraction=0.0 if keys[1] else eval_fraction,
            device=device, with_eval_url=bool(keys[1]),
            resume_from=_PLACEHOLDER_URL + "parent" if resume_from_version_id else None,
        )  # fmt: skip
        validation.check_max_length(facts, spec.training.max_length, model)
        measured = repo.measured_throughput(actor, s, model, spec.quantization)
        plan, cap_s = _plan_check(spec, dataset, pricing, budget, settings, measured)
    limits = _limits(budget, pricing.rate_per_s, cap_s)
    store = _store(settings, store)
    window = upload_window(limits, store.max_upload_url_s)  # refused before anything is stored
    spec = _with_time_limit(spec, limits.time_limit_s)
    with session_scope(settings) as s:
        repo.ensure_user(actor, s)
        _lock_row(s, User, actor.user_id)
        check_quotas(actor, s, settings, budget)
        repo.create_job(
            actor, s, job_id=job_id, base_model=model, spec=spec.model_dump(mode="json"),
            dataset_id=dataset_id, gpu_type=pricing.gpu_type, price_tier=pricing.tier,
            rate_per_s=pricing.rate_per_s, budget_usd=budget, adapter_name=name,
            parent_job_id=auto_relaunch_of or parent_job_id, resume_from_version_id=resume_from_version_id,
        )  # fmt: skip
        if auto_relaunch_of:
            repo.update_job(actor, s, job_id, auto_relaunched=True)
    log.info(
        "job %s for %s: %s; budget $%.2f -> executionTimeout %d ms, training time limit "
        "%.0f s, queue allowance %.0f s, upload URLs %d s; plan %s; spec %s",
        job_id, actor.user_id, pricing.note, budget, limits.execution_timeout_ms,
        limits.time_limit_s, window.queue_s, window.url_s, json.dumps(plan, default=str),
        json.dumps(repo.redact_spec(spec.model_dump(mode="json"))),
    )  # fmt: skip
    with _job_client(settings, client) as rp:
        return _send(actor, settings, job_id, spec, keys, limits, window, rp, store)


def worker_model(settings: Settings, model: str, pricing: Pricing) -> str:
    """What the worker is told to load. On the local endpoint the tiny demo model's id means
    its folder under the data directory (built there on first use, as `brightrun up` does
    for the local inference server); everything else is passed as given."""
    from core.catalog import TINY_DIR_NAME, TINY_ID

    if pricing.gpu_type != LOCAL_GPU or model.lower() != TINY_ID:
        return model
    folder = (settings.data_dir / "models" / TINY_DIR_NAME).resolve()
    if not (folder / "config.json").is_file():
        from trainer.shared.tiny import build_tiny_chat_model

        build_tiny_chat_model(folder, seed=0)
    return str(folder)


def _limits(budget: float, rate_per_s: float, cap_s: float | None = None) -> costs.ExecutionLimits:
    try:
        return costs.execution_limits(budget, rate_per_s, max_s=cap_s)
    except costs.BudgetTooSmall as e:
        raise InvalidInput(f"budget: {e}") from None


def _with_time_limit(spec: JobSpec, time_limit_s: float) -> JobSpec:
    """The spec with the worker's time limit set (a smaller one the user gave is kept)."""
    given = spec.training.time_limit_s
    limit = min(given, time_limit_s) if given else time_limit_s
    return spec.model_copy(
        update={"training": spec.training.model_copy(update={"time_limit_s": limit})}
    )


def _default_adapter_name(model: str, dataset_name: str) -> str:
    import re

    raw = f"{model.rstrip('/').split('/')[-1]}-{dataset_name}"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-._")[:100]
    return slug or "adapter"


def _send(
    actor: Actor,
    settings: Settings,
    job_id: str,
    spec: JobSpec,
    keys: tuple[str, str | None],
    limits: costs.ExecutionLimits,
    window: UploadWindow,
    client: RunPodClient,
    store: BlobStore,
) -> Job:
    """Sign fresh URLs, POST /run, record the RunPod id. The job row exists (QUEUED)."""
    train_url, eval_url, urls = _signed_urls(store, actor.user_id, job_id, keys, window.url_s)
    payload = spec.model_dump(mode="json")
    payload["data"]["train_url"] = train_url
    if eval_url:
        payload["data"]["eval_url"] = eval_url
    payload["output"]["upload_urls"] = urls
    if spec.resume_from:  # the parent adapter of a continued training, signed afresh
        from core.adapters import parent_source

        payload["resume_from"] = parent_source(actor, settings, job_id, store)
    try:
        sub = client.run(
            payload, execution_timeout_ms=limits.execution_timeout_ms, ttl_ms=window.ttl_ms
        )
    except SubmitUncertain as e:
        _fail_submit(actor, settings, job_id, "submit_uncertain", str(e),
                     "look for the job on the endpoint (RunPod console, Requests) before launching "
                     "again; if it is not there, retry it")  # fmt: skip
        raise SubmitFailed(f"job {job_id}: {e}") from e
    except RunPodError as e:
        _fail_submit(actor, settings, job_id, "submit_failed", str(e),
                     "check GPU_CLUSTER_API_URL and GPU_CLUSTER_API_KEY and that the endpoint is up, "
                     "then retry the job")  # fmt: skip
        raise SubmitFailed(f"job {job_id} could not be sent: {e}") from e
    with session_scope(settings) as s:
        _lock_row(s, Job, job_id)
        job = repo.get_job(actor, s, job_id)
        status = "IN_QUEUE" if job.status not in TERMINAL_STATUSES else job.status
        # Remember the endpoint: a job keeps being synced where it runs, even after
        # GPU_CLUSTER_API_URL moves to another endpoint.
        result = {**(job.result or {}), "endpoint_url": client.base_url}
        job = repo.update_job(
            actor, s, job_id, status=status, runpod_job_id=sub.id, submitted_at=utcnow(),
            result=result,
        )  # fmt: skip
        cancelled = job.cancel_requested_at is not None
    if cancelled:  # cancelled while /run was in flight: stop what was just started
        client.cancel(sub.id)
    return job


def _fail_submit(
    actor: Actor, settings: Settings, job_id: str, kind: str, message: str, suggestion: str
) -> None:
    with session_scope(settings) as s:
        _lock_row(s, Job, job_id)
        if repo.get_job(actor, s, job_id).status not in TERMINAL_STATUSES:
            repo.update_job(actor, s, job_id, status="FAILED", finished_at=utcnow(), failure_kind=kind,
                            failure_message=message, failure_suggestion=suggestion)  # fmt: skip


# --------------------------------------------------------------------------- sync


@dataclass
class _Pulled:
    outputs: list[Any]
    status: str | None = None  # RunPod status, None when the endpoint forgot the job
    delay_ms: int | None = None
    execution_ms: int | None = None
    error: Any = None
    final_output: Any = None
    stored_events: list[dict[str, Any]] | None = None
    stored_result: dict[str, Any] | None = None

    @property
    def gone(self) -> bool:
        return self.status is None


def _events(items: Iterable[Any]) -> list[Event]:
    out = []
    for item in items:
        try:
            out.append(Event.model_validate(item))
        except ValidationError:
            log.warning("ignoring a stream item that is not an event: %.200r", item)
    return out


def _read_stored_log(
    store: BlobStore, owner: str, job_id: str
) -> tuple[list[dict[str, Any]] | None, dict[str, Any] | None]:
    """The `events.jsonl` and `result.json` the worker uploaded (None where missing)."""
    events = result = None
    try:
        text = store.get_bytes("adapters", job_key(owner, job_id, "events.jsonl")).decode(
            "utf-8", "replace"
        )
        events = [json.loads(line) for line in text.splitlines() if line.strip()]
    except NotFound:
        log.debug("job %s: no events.jsonl stored (yet)", job_id)
    except json.JSONDecodeError:
        log.warning("job %s: stored events.jsonl is not valid JSON lines; ignored", job_id)
    try:
        loaded = json.loads(store.get_bytes("adapters", job_key(owner, job_id, "result.json")))
        result = loaded if isinstance(loaded, dict) else None
    except NotFound:
        log.debug("job %s: no result.json stored (yet)", job_id)
    except json.JSONDecodeError:
        log.warning("job %s: stored result.json is not valid JSON; ignored", job_id)
    return events, result


def _final_event(events: Iterable[Event | Any]) -> Any:
    last = None
    for e in events:
        if getattr(e, "type", None) in ("completed", "failed") and (
            last is None or e.seq > last.seq
        ):
            last = e
    return last


def sync(
    actor: Actor,
    settings: Settings,
    job_id: str,
    *,
    client: RunPodClient | None = None,
    store: BlobStore | None = None,
) -> Job:
    """Bring one job up to date with the endpoint (see the module doc). Returns the job."""
    with session_scope(settings) as s:
        job = repo.get_job(actor, s, job_id)
        status, rid, changed, attempt = job.status, job.runpod_job_id, job.updated_at, job.attempt
        endpoint_url = (job.result or {}).get("endpoint_url")
    if status in TERMINAL_STATUSES:
        return job
    if not rid:
        return _sync_unsent(actor, settings, job_id, changed)
    with _job_client(settings, client, endpoint_url) as rp:
        return _sync_run(actor, settings, job_id, rid, attempt, rp, _store(settings, store))


def _sync_run(
    actor: Actor,
    settings: Settings,
    job_id: str,
    rid: str,
    attempt: int,
    client: RunPodClient,
    store: BlobStore,
) -> Job:
    pulled = _pull(client, store, actor.user_id, job_id, rid)
    ended = False
    cancel_now = False
    with session_scope(settings) as s:
        _lock_row(s, Job, job_id)
        job = repo.get_job(actor, s, job_id)
        if job.status in TERMINAL_STATUSES or job.runpod_job_id != rid or job.attempt != attempt:
            return job  # another sync finished it, or it was retried meanwhile
        new = _events(pulled.outputs)
        if isinstance(pulled.final_output, list):
            new += _events(pulled.final_output)
        if pulled.stored_events:
            new += _events(pulled.stored_events)
        repo.append_events(actor, s, job_id, new)
        register_checkpoints(actor, s, job, new)
        fields = _progress_fields(actor, s, job)
        if pulled.gone or pulled.status in TERMINAL_STATUSES:
            fields.update(_finish(actor, s, settings, job, pulled, store))
            ended = True
        else:
            fields.update(_running_fields(job, pulled, fields))
            over = job.budget_usd is not None and fields.get("cost_usd", 0.0) >= job.budget_usd
            if over and job.cancel_requested_at is None:
                # The worker should have stopped at its time limit; the platform's timeout is
                # the last line. Stop it now: its checkpoints stay on the volume.
                fields.update(cancel_requested_at=utcnow(), stop_reason="budget")
                cancel_now = True
        fields["synced_at"] = utcnow()
        job = repo.update_job(actor, s, job_id, **fields)
    if cancel_now:
        log.warning("job %s reached its budget $%.2f; cancelling", job_id, job.budget_usd)
        try:
            client.cancel(rid)
        except EndpointForgotJob:
            log.info("job %s was already gone from the endpoint", job_id)
    if ended:
        _after_end(actor, settings, job_id, store=store)
        with session_scope(settings) as s:
            job = repo.get_job(actor, s, job_id)
    return job


def _pull(client: RunPodClient, store: BlobStore, owner: str, job_id: str, rid: str) -> _Pulled:
    """Read the endpoint (stream first: status is then at least as new) and, when the job has
    ended or been forgotten, the worker's uploaded log."""
    pulled = _Pulled(outputs=[])
    try:
        pulled.outputs = client.stream(rid).outputs
        st = client.status(rid)
        pulled.status, pulled.delay_ms, pulled.execution_ms = (
            st.status,
            st.delay_ms,
            st.execution_ms,
        )
        pulled.error, pulled.final_output = st.error, st.output
    except EndpointForgotJob:
        pulled.status = None
    if pulled.gone or pulled.status in TERMINAL_STATUSES:
        have_final = _final_event(_events(pulled.final_output or [])) is not None
        if pulled.gone or not have_final:
            pulled.stored_events, pulled.stored_result = _read_stored_log(store, owner, job_id)
    return pulled


def _progress_fields(actor: Actor, s: Session, job: Job) -> dict[str, Any]:
    """Step, total, losses, progress and ETA from the stored metrics and start events."""
    fields: dict[str, Any] = {}
    recent = max(-1, job.last_seq - 200)  # the latest events are enough for step, loss and ETA
    metrics = repo.list_events(actor, s, job.id, after_seq=recent, types=["metrics"])
    started = (
        repo.list_events(actor, s, job.id, after_seq=_attempt_seq(job) - 1, types=["started"])
        if job.started_at is None or not job.total_steps
        else []
    )
    if started and job.started_at is None:
        # The handler started `cold_start_s` (its setup) before it reported `started`.
        setup_s = float((started[-1].data or {}).get("cold_start_s") or 0.0)
        fields["started_at"] = dt.datetime.fromtimestamp(started[-1].ts - setup_s, dt.UTC)
    if started:
        plan = (started[-1].data or {}).get("plan") or {}
        if plan.get("total_steps"):
            fields["total_steps"] = int(plan["total_steps"])
    if not metrics:
        return fields
    last = metrics[-1].data or {}
    step, total = (
        last.get("step"),
        last.get("total_steps") or fields.get("total_steps") or job.total_steps,
    )
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
        # Seconds per step over this attempt's metrics (steps may restart after a resume).
        points = [(m.data.get("step"), m.data.get("elapsed_s")) for m in metrics[-50:]]
        points = [(a, b) for a, b in points if isinstance(a, int) and isinstance(b, int | float)]
        if len(points) >= 2 and points[-1][0] > points[0][0] and points[-1][1] > points[0][1]:
            per_step = (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])
            fields["eta_s"] = max(0.0, (total - step) * per_step)
    return fields


def _elapsed_s(job: Job, fields: Mapping[str, Any]) -> float | None:
    started = fields.get("started_at") or job.started_at
    if started is None:
        return None
    return max(0.0, (utcnow() - started).total_seconds())


def _running_fields(job: Job, pulled: _Pulled, progress: Mapping[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if pulled.status in ("IN_QUEUE", "IN_PROGRESS"):
        fields["status"] = pulled.status
    if pulled.status == "IN_PROGRESS" and job.started_at is None and "started_at" not in progress:
        fields["started_at"] = utcnow()
    elapsed = _elapsed_s(job, {**progress, **fields})
    if elapsed is not None:
        fields["cost_usd"] = _prior_cost(job) + costs.live_cost_usd(elapsed, job.rate_per_s)
    return fields


def _attempt_seq(job: Job) -> int:
    """The first event sequence number of the job's current attempt."""
    return int((job.result or {}).get("attempt_first_seq", 0)) if job.attempt else 0


def _prior_cost(job: Job) -> float:
    """Dollars recorded for this job's earlier attempts (kept in `result['prior_cost_usd']`)."""
    return float((job.result or {}).get("prior_cost_usd", 0.0)) if job.attempt else 0.0


def _billed_s(actor: Actor, s: Session, job: Job, pulled: _Pulled) -> float:
    """Billed seconds of this attempt.

    `executionTime` covers the handler (model loading included). The worker's boot before
    it took the job (container start, imports) is billed too but sits in `delayTime`; it is
    counted when the worker process started after the job was queued, i.e. this job woke
    it (process uptime minus setup time, at most `delayTime`). When the endpoint forgot the
    job, the worker's own clock is used: setup plus the span from its `started` event to its
    last event.
    """
    started = repo.list_events(actor, s, job.id, after_seq=_attempt_seq(job) - 1, types=["started"])
    data = (started[-1].data or {}) if started else {}
    setup_s = float(data.get("cold_start_s") or 0.0)
    boot_s = max(0.0, float(data.get("process_uptime_s") or 0.0) - setup_s)
    if pulled.execution_ms is not None:
        woke = pulled.delay_ms is not None and boot_s * 1000 <= pulled.delay_ms
        boot_ms = boot_s * 1000 if woke else 0.0
        return costs.billed_seconds(pulled.execution_ms, cold_start_ms=boot_ms)
    if started:
        later = repo.list_events(actor, s, job.id, after_seq=started[-1].seq - 1)
        last_ts = max(e.ts for e in later)
        return costs.billed_seconds((setup_s + last_ts - started[-1].ts) * 1000)
    if job.started_at is not None:
        return costs.billed_seconds((utcnow() - job.started_at).total_seconds() * 1000)
    return 0


def _finish(
    actor: Actor, s: Session, settings: Settings, job: Job, pulled: _Pulled, store: BlobStore
) -> dict[str, Any]:
    """The fields of a job that has ended; records its cost and registers its adapter."""
    fields: dict[str, Any] = {"finished_at": utcnow(), "eta_s": 0.0}
    events = repo.list_events(
        actor, s, job.id, after_seq=_attempt_seq(job) - 1, types=["completed", "failed"]
    )
    final = _final_event(events)
    if pulled.status == "CANCELLED":
        fields["status"] = "CANCELLED"
        fields["stop_reason"] = job.stop_reason or "user"
    elif pulled.status == "TIMED_OUT":
        fields.update(
            status="TIMED_OUT",
            stop_reason="budget",
            failure_kind="timed_out",
            failure_message=(
                "the endpoint stopped the job at its time limit, derived from its budget "
                f"${job.budget_usd or 0:.2f}; its checkpoints stay on the volume"
            ),
            failure_suggestion="retry with a larger budget to continue from the last checkpoint",
        )
    elif final is not None and final.type == "completed":
        fields["status"] = "COMPLETED"
        fields["stop_reason"] = (final.data or {}).get("reason") or "finished"
        fields["progress"] = 1.0 if fields["stop_reason"] == "finished" else job.progress
    elif final is not None:
        data = final.data or {}
        fields.update(
            status="CANCELLED" if data.get("kind") == "cancelled" else "FAILED",
            failure_kind=data.get("kind"),
            failure_message=data.get("message"),
            failure_suggestion=data.get("suggestion"),
        )
    elif pulled.gone:
        fields.update(
            status="FAILED",
            failure_kind="lost",
            failure_message="the endpoint no longer knows this job and the worker left no result",
            failure_suggestion="retry the job; it resumes from its last checkpoint on the volume",
        )
    else:
        fields.update(
            status="FAILED",
            failure_kind="internal",
            failure_message=f"the worker ended without reporting a result: {pulled.error or pulled.status}",
            failure_suggestion="retry the job; if it fails again, look at the endpoint's logs",
        )
    if pulled.delay_ms is not None:
        fields["delay_ms"] = pulled.delay_ms
    if pulled.execution_ms is not None:
        fields["execution_ms"] = pulled.execution_ms
    billed = _billed_s(actor, s, job, pulled)
    usd = costs.job_cost_usd(billed, job.rate_per_s)
    repo.record_cost(actor, s, job_id=job.id, seconds=billed, usd=usd, attempt=job.attempt)
    fields["billed_s"] = int(billed)
    fields["cost_usd"] = _prior_cost(job) + usd
    result = dict(job.result or {})
    if final is not None:
        result["final"] = {"seq": final.seq, "type": final.type, "data": final.data}
    if pulled.stored_result:
        result["stored"] = pulled.stored_result
    fields["result"] = result
    if fields["status"] == "COMPLETED" and job.action == "train":
        fields["tokens_per_s"] = _measured_rate(actor, s, job, final)
        version = _register_adapter(actor, s, job, final, store)
        if version is None:
            fields.update(
                status="FAILED",
                failure_kind="internal",
                failure_message="the worker reported success but its adapter files are not in storage",
                failure_suggestion="retry the job; it resumes from its last checkpoint",
            )
    return fields


def _measured_rate(actor: Actor, s: Session, job: Job, final: Any) -> float | None:
    """The tokens/s a completed train job achieved (`estimate.measured_tokens_per_s`): from
    its summary, else the median of its metrics events; what the planner learns from."""
    from core.estimate import measured_tokens_per_s

    summary = ((final.data or {}) if final is not None else {}).get("summary")
    rate = measured_tokens_per_s(summary)
    if rate is None:
        metrics = repo.list_events(actor, s, job.id, types=["metrics"])
        rate = measured_tokens_per_s(None, [m.data or {} for m in metrics])
    return rate


def _register_adapter(actor: Actor, s: Session, job: Job, final: Any, store: BlobStore) -> Any:
    vid = version_id_for(job.id)
    files = {
        b.key.rsplit("/", 1)[-1]: b.size
        for b in store.list("adapters", adapter_prefix(actor.user_id, vid))
    }
    if not {"adapter_config.json", "adapter_model.safetensors"} <= set(files):
        return None
    data = (final.data or {}) if final is not None else {}
    adapter = data.get("adapter") or {}
    summary = data.get("summary") or {}
    metrics = repo.list_events(actor, s, job.id, types=["metrics"])
    curve = [
        [m.data["step"], m.data["loss"]]
        for m in metrics
        if "step" in (m.data or {}) and "loss" in (m.data or {})
    ]
    spec = job.spec or {}
    return repo.create_adapter_version(
        actor, s, adapter_name=job.adapter_name, base_model=job.base_model, job_id=job.id,
        dataset_id=job.dataset_id, parent_version_id=job.resume_from_version_id,
        settings={"lora": spec.get("lora"), "training": spec.get("training"),
                  "quantization": spec.get("quantization")},
        final_loss=summary.get("final_loss", job.final_loss), eval_loss=summary.get("eval_loss", job.eval_loss),
        loss_curve=curve, size_bytes=sum(files.values()), storage_prefix=adapter_prefix(actor.user_id, vid),
        volume_path=adapter.get("adapter_dir"), version_id=vid,
    )  # fmt: skip


def _sync_unsent(actor: Actor, settings: Settings, job_id: str, changed: dt.datetime) -> Job:
    """A QUEUED job that has no RunPod id: being sent right now, or its sender died."""
    with session_scope(settings) as s:
        job = repo.get_job(actor, s, job_id)
        if (utcnow() - changed).total_seconds() < UNSUBMITTED_GRACE_S:
            return job
        _lock_row(s, Job, job_id)
        job = repo.get_job(actor, s, job_id)
        if job.status in TERMINAL_STATUSES or job.runpod_job_id:
            return job
        if job.cancel_requested_at is not None:
            return repo.update_job(actor, s, job_id, status="CANCELLED", finished_at=utcnow())
        return repo.update_job(
            actor, s, job_id, status="FAILED", finished_at=utcnow(), failure_kind="submit_uncertain",
            failure_message="the process sending this job stopped before recording the endpoint's answer",
            failure_suggestion="look for the job on the endpoint before retrying it",
        )  # fmt: skip


# --------------------------------------------------------------------------- after the end


def _after_end(actor: Actor, settings: Settings, job_id: str, *, store: BlobStore | None) -> None:
    """Notification (claimed once across processes) and the optional OOM relaunch."""
    from core import notify

    with session_scope(settings) as s:
        claimed = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.owner_id == actor.user_id, Job.notified_at.is_(None))
            .values(notified_at=utcnow())
            .execution_options(synchronize_session=False)
        ).rowcount
        job = repo.get_job(actor, s, job_id)
    if claimed == 1 and settings.notify_webhook_url.get_secret_value():
        notify.job_ended(settings, job)
    if claimed == 1 and job.status == "COMPLETED" and job.action == "train":
        from core.evaluate import start_after_job

        start_after_job(actor, settings, job_id)  # in the background; never raises
    if (
        settings.auto_relaunch_oom
        and job.status == "FAILED"
        and job.failure_kind == "out_of_memory"
    ):
        relaunch_after_oom(actor, settings, job_id, store=store)


def oom_settings(spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """Lighter settings after an out-of-memory failure, as the planner suggests them
    (`core.estimate.oom_suggestion`: {"training": ..., "quantization": ...}), or None when
    nothing lighter is left."""
    from core.estimate import oom_suggestion

    return oom_suggestion(spec)


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
    with session_scope(settings) as s:
        claimed = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.owner_id == actor.user_id, Job.auto_relaunched.is_(False))
            .values(auto_relaunched=True)
            .execution_options(synchronize_session=False)
        ).rowcount
        job = repo.get_job(actor, s, job_id)
    if claimed != 1:
        return None  # already relaunched, or itself the relaunch
    left = (job.budget_usd or 0.0) - (job.cost_usd or 0.0)
    if left <= costs.MIN_BUDGET_GPU_S * job.rate_per_s:
        log.info("job %s: no budget left to relaunch after running out of memory", job_id)
        return None
    spec = job.spec or {}
    lighter = oom_settings(spec)
    if lighter is None:
        log.info("job %s ran out of memory with the lightest settings; not relaunched", job_id)
        return None
    try:
        new = submit(
            actor, settings, dataset_id=job.dataset_id, model=job.base_model, adapter_name=job.adapter_name,
            lora=spec.get("lora"), training=_without_time_limit(lighter.get("training", spec.get("training"))),
            quantization=lighter.get("quantization", spec.get("quantization", "nf4")),
            eval_fraction=(spec.get("data") or {}).get("eval_fraction", 0.0),
            gpu_type=job.gpu_type if job.gpu_type != LOCAL_GPU else None,
            budget_usd=left, auto_relaunch_of=job.id, client=client, store=store,
        )  # fmt: skip
    except (QuotaExceeded, InvalidInput, SubmitFailed) as e:
        log.warning(
            "job %s: automatic relaunch after running out of memory not possible: %s", job_id, e
        )
        return None
    log.info(
        "job %s ran out of memory; relaunched as %s with %s", job_id, new.id, json.dumps(lighter)
    )
    return new


def _without_time_limit(training: Mapping[str, Any] | None) -> dict[str, Any]:
    t = dict(training or {})
    t.pop("time_limit_s", None)
    return t


# --------------------------------------------------------------------------- cancel / retry


def cancel(actor: Actor, settings: Settings, job_id: str, *, client: RunPodClient | None = None,
           store: BlobStore | None = None, reason: str = "user") -> Job:  # fmt: skip
    """Stop the job (queued or running). What it checkpointed stays on the volume."""
    with session_scope(settings) as s:
        job = repo.request_cancel(actor, s, job_id, reason=reason)
        rid, endpoint_url = job.runpod_job_id, (job.result or {}).get("endpoint_url")
    if not rid:
        return job  # being sent right now: `_send` cancels it once it has an id
    with _job_client(settings, client, endpoint_url) as rp:
        try:
            rp.cancel(rid)
        except EndpointForgotJob:
            log.info("job %s is no longer on the endpoint; syncing from storage", job_id)
        return sync(actor, settings, job_id, client=rp, store=store)


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
    with session_scope(settings) as s:
        job = repo.get_job(actor, s, job_id)
        if job.status not in ("FAILED", "CANCELLED", "TIMED_OUT"):
            raise Conflict(
                f"job {job_id} is {job.status}; only a failed, cancelled or timed-out job can be retried"
            )
        if not job.dataset_id:
            raise Conflict(f"job {job_id} has no dataset to train on")
        dataset = repo.get_dataset(actor, s, job.dataset_id, include_deleted=False)
        keys = (dataset.normalized_key, _eval_key(dataset))
    total = (
        float(budget_usd)
        if budget_usd is not None
        else float(job.budget_usd or settings.job_budget_usd)
    )
    if not (math.isfinite(total) and total > 0):
        raise InvalidInput(f"budget must be a positive number of dollars (got {budget_usd})")
    spent = float(job.cost_usd or 0.0)
    left = total - spent
    try:
        limits = costs.execution_limits(left, job.rate_per_s)
    except (costs.BudgetTooSmall, ValueError):
        raise QuotaExceeded(
            f"job {job_id} has spent ${spent:.2f} of its ${total:.2f} budget; retry with a larger budget"
        ) from None
    store = _store(settings, store)
    window = upload_window(limits, store.max_upload_url_s)  # refused before anything changes
    spec_dict = dict(job.spec or {})
    spec = build_spec(
        job_id=job.id, model=(spec_dict.get("model") or {}).get("name_or_path") or job.base_model,
        adapter_name=validation.served_adapter_name(job.adapter_name, job.id), lora=spec_dict.get("lora"),
        training=_without_time_limit(spec_dict.get("training")), quantization=spec_dict.get("quantization", "nf4"),
        eval_fraction=0.0 if keys[1] else (spec_dict.get("data") or {}).get("eval_fraction", 0.0),
        device=spec_dict.get("device", "auto"), time_limit_s=limits.time_limit_s,
        with_eval_url=bool(keys[1]), resume_from=spec_dict.get("resume_from"),
    )  # fmt: skip
    with session_scope(settings) as s:
        repo.ensure_user(actor, s)
        _lock_row(s, User, actor.user_id)
        _lock_row(s, Job, job_id)
        job = repo.get_job(actor, s, job_id)
        if job.status not in ("FAILED", "CANCELLED", "TIMED_OUT"):
            raise Conflict(f"job {job_id} is {job.status} now")
        check_quotas(actor, s, settings, total - spent, exclude_job=job_id)
        result = dict(job.result or {})
        result["prior_cost_usd"] = spent
        result["attempt_first_seq"] = job.last_seq + 1  # the worker continues the numbering
        spec = spec.model_copy(update={"first_seq": job.last_seq + 1})
        repo.update_job(
            actor, s, job_id, reopen=True, status="QUEUED", runpod_job_id=None, attempt=job.attempt + 1,
            budget_usd=total, spec=spec.model_dump(mode="json"), result=result, finished_at=None,
            started_at=None, submitted_at=None, delay_ms=None, execution_ms=None, billed_s=None,
            failure_kind=None, failure_message=None, failure_suggestion=None, stop_reason=None,
            cancel_requested_at=None, notified_at=None, eta_s=None,
        )  # fmt: skip
    log.info("job %s: retry (attempt %d) with $%.2f of budget left", job_id, job.attempt, left)
    with _job_client(settings, client) as rp:
        return _send(actor, settings, job_id, spec, keys, limits, window, rp, store)


# --------------------------------------------------------------------------- reconcile


@dataclass(frozen=True)
class SyncReport:
    synced: int
    ended: int
    errors: dict[str, str]


def reconcile(
    settings: Settings, *, client: RunPodClient | None = None, store: BlobStore | None = None
) -> SyncReport:
    """Sync every user's unfinished jobs once (on start, and on every syncer pass)."""
    with _job_client(settings, client) as rp:
        return _reconcile(settings, rp, _store(settings, store))


def _reconcile(settings: Settings, client: RunPodClient, store: BlobStore) -> SyncReport:
    with session_scope(settings) as s:
        pending = [(j.id, j.owner_id) for j in repo.admin_list_unfinished_jobs(SYSTEM_ACTOR, s)]
        owners = {
            uid: repo.admin_actor_for(SYSTEM_ACTOR, s, uid) for uid in {o for _, o in pending}
        }
    ended, errors = 0, {}
    for job_id, owner in pending:
        try:
            job = sync(owners[owner], settings, job_id, client=client, store=store)
        except (RunPodError, BrightRunError) as e:
            errors[job_id] = f"{type(e).__name__}: {e}"
            log.warning("sync of job %s failed: %s", job_id, errors[job_id])
            continue
        ended += job.status in TERMINAL_STATUSES
    return SyncReport(synced=len(pending) - len(errors), ended=ended, errors=errors)


# --------------------------------------------------------------------------- reads


def get(actor: Actor, settings: Settings, job_id: str) -> Job:
    with session_scope(settings) as s:
        return repo.get_job(actor, s, job_id)


def list_jobs(
    actor: Actor, settings: Settings, *, statuses: Iterable[str] | None = None, limit: int = 200
) -> list[Job]:
    with session_scope(settings) as s:
        return repo.list_jobs(actor, s, statuses=statuses, limit=limit)


def events(
    actor: Actor,
    settings: Settings,
    job_id: str,
    *,
    after_seq: int = -1,
    types: Iterable[str] | None = None,
) -> list[Any]:
    with session_scope(settings) as s:
        return repo.list_events(actor, s, job_id, after_seq=after_seq, types=types)


def live_cost_usd(job: Job, now: dt.datetime | None = None) -> float:
    """What the job has cost so far: its recorded cost once ended, else elapsed × rate."""
    if job.status in TERMINAL_STATUSES or job.started_at is None:
        return float(job.cost_usd or 0.0)
    elapsed = ((now or utcnow()) - job.started_at).total_seconds()
    return _prior_cost(job) + costs.live_cost_usd(elapsed, job.rate_per_s)


def eta_text(job: Job) -> str:
    if job.eta_s is None:
        return "-"
    m, s_ = divmod(int(math.ceil(job.eta_s)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s_:02d}s"
