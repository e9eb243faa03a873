"""Train page and Jobs page actions over the planner and the job lifecycle.

- `train_plan`: what the Train page shows for its settings, and whether Launch is allowed.
- `model_cache_state`: whether the Train page's model is cached on the volume
  (`core.actions.cache_status`), given at most `CACHE_STATUS_TIMEOUT_S`; a database or
  volume that does not answer in time, or fails, is `unknown` with the reason.
- `relaunch_settings`, `relaunch`: a failed job launched again, by failure kind.
- `delete_adapter`: the Adapters page's delete.

The pages' read models are in `core.queries`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core import planner
from core.db import repo
from core.db.tables import Job
from core.errors import InvalidInput
from core.settings import Settings
from core.users import Actor

log = logging.getLogger("brightrun.views")


def relaunch_settings(job: Job) -> dict[str, Any] | None:
    """Settings to launch a failed job again with, following its failure's suggestion:
    lighter memory settings after running out of memory, a third of the learning rate with
    warmup after divergence, the same settings after a download failure or a cancel.
    None when a relaunch with changed settings would not help (bad input, unknown model)."""
    spec = dict(job.spec or {})
    lora = dict(spec.get("lora") or {})
    training = {k: v for k, v in dict(spec.get("training") or {}).items() if k != "time_limit_s"}
    quant = spec.get("quantization", "nf4")
    kind = job.failure_kind
    if job.status not in ("FAILED", "CANCELLED", "TIMED_OUT"):
        return None
    if kind == "out_of_memory":
        from core.jobs import oom_settings

        lighter = oom_settings(spec)
        if lighter is None:  # nothing lighter is left: a bigger GPU or a smaller model
            return None
        training = {k: v for k, v in dict(lighter.get("training") or training).items() if k != "time_limit_s"}
        quant = lighter.get("quantization", quant)
    elif kind == "diverged":
        training["learning_rate"] = float(training.get("learning_rate", 2e-4)) / 3
        training["warmup_ratio"] = max(0.1, float(training.get("warmup_ratio", 0.03)))
        training["max_grad_norm"] = 1.0
    elif kind in ("bad_input", "model_unavailable"):
        return None
    return {"lora": lora, "training": training, "quantization": quant}


def relaunch(actor: Actor, settings: Settings, job_id: str, *, client: Any = None, store: Any = None) -> Job:
    """Launch a failed job again as a new job (its child) with `relaunch_settings`, the
    same dataset, model, adapter name and budget. Raises Conflict when there is nothing to
    change that would help (the failure's message says what to fix instead)."""
    from core import jobs
    from core.db import session_scope
    from core.errors import Conflict

    with session_scope(settings) as s:
        job = repo.get_job(actor, s, job_id)
    changed = relaunch_settings(job)
    if changed is None or not job.dataset_id:
        raise Conflict(f"job {job_id} cannot be relaunched as it is: {job.failure_suggestion or 'change its settings on the Train page'}")
    spec = job.spec or {}
    return jobs.submit(
        actor, settings, dataset_id=job.dataset_id, model=job.base_model, adapter_name=job.adapter_name,
        lora=changed["lora"], training=changed["training"], quantization=changed["quantization"],
        eval_fraction=(spec.get("data") or {}).get("eval_fraction", 0.0),
        gpu_type=job.gpu_type if job.gpu_type in planner.GPU_TYPES else None,
        budget_usd=job.budget_usd, parent_job_id=job.id, client=client, store=store,
    )  # fmt: skip



def delete_adapter(actor: Actor, session: Session, store: Any, name_or_id: str) -> int:
    """Soft-delete the adapter and its versions and remove their stored files. Returns how
    many files were removed. The rows stay for the lineage of jobs."""
    versions = repo.list_versions(actor, session, name_or_id)
    repo.delete_adapter(actor, session, name_or_id)
    removed = 0
    for v in versions:
        if v.storage_prefix:
            removed += store.delete_prefix(v.storage_bucket, v.storage_prefix)
    return removed



# --------------------------------------------------------------------------- train


@dataclass(frozen=True)
class TrainPlan:
    """What the Train page shows for the current settings, and whether Launch is allowed."""

    gpu: str  # the GPU type the job is priced as (and runs on, in the cloud)
    pricing_note: str
    plan: Any | None  # core.planner.Plan; None when the model or settings cannot be planned
    memory_terms: list[tuple[str, float]]  # (label, GiB) of the peak
    time: Any | None  # core.planner.TimeEstimate on `gpu`
    cost: Any | None  # core.planner.CostEstimate on `gpu`
    budget_message: str
    blockers: list[str]  # why Launch is disabled; empty: it may launch
    notes: list[str]

    @property
    def can_launch(self) -> bool:
        return not self.blockers


def train_plan(
    actor: Actor,
    session: Session,
    settings: Settings,
    *,
    dataset_id: str | None,
    model: str,
    lora: Mapping[str, Any],
    training: Mapping[str, Any],
    quantization: str,
    eval_fraction: float,
    budget_usd: float,
    adapter_name: str = "preview",
) -> TrainPlan:
    """Plan a job with these settings against the planner, the budget and the quotas.

    Launch is blocked (with the reason) exactly where `core.jobs.submit` would refuse: no
    dataset or no valid rows; a setting the spec refuses; the plan does not fit the GPU the
    job is priced as; even the low cost estimate is over the budget; the budget buys under a
    minute; the month's budget or the concurrent-job limit leaves no room; the store's upload
    URLs would expire before the job can end (`core.jobs.upload_window`). A model the
    planner cannot describe gets a note, not a block (the budget cap still stops the job).
    Times rest on the median tokens/s of the actor's finished jobs of this model and
    quantisation per GPU type where there are any (`repo.measured_throughput`, as
    `core.jobs.submit` plans), else on the default utilisation; `time.basis_text` says which.
    """
    from core import jobs
    from core.errors import QuotaExceeded

    blockers: list[str] = []
    notes: list[str] = []
    try:
        pricing = jobs.pricing_for(settings)
    except InvalidInput as e:
        return TrainPlan(settings.gpu_type, "", None, [], None, None, "", [str(e)], [])
    gpu = pricing.priced_as
    ds = repo.get_dataset(actor, session, dataset_id) if dataset_id else None
    if ds is None:
        blockers.append("choose a dataset (upload one on the Datasets page)")
    elif ds.valid_rows <= 0 or not ds.normalized_key:
        blockers.append(f"dataset {ds.name!r} has no valid rows to train on")
    split = ((ds.stats or {}).get("split") or {}) if ds is not None else {}
    if split.get("eval_rows") and split.get("eval_key"):
        notes.append(f"eval loss is measured on the dataset's own eval split ({split['eval_rows']} rows)")
    try:
        planner.execution_limits(budget_usd, pricing.rate_per_s)
    except ValueError as e:  # BudgetTooSmall, or a rate of zero
        blockers.append(f"budget: {e}")
    try:
        jobs.check_quotas(actor, session, settings, budget_usd)
    except QuotaExceeded as e:
        blockers.append(str(e))
    p = time = cost = None
    budget_message = ""
    try:
        spec = jobs.build_spec(job_id="job-preview", model=model, adapter_name=adapter_name or "preview",
                               lora=lora, training=training, quantization=quantization, eval_fraction=eval_fraction)  # fmt: skip
        facts = planner.describe(model, local_models_dir=settings.data_dir / "models")
    except planner.ModelNotDescribable as e:  # launching stays possible: the budget cap holds
        notes.append(f"no memory or time estimate: {e}")
    except InvalidInput as e:
        blockers.append(str(e))
    else:
        if spec.training.max_length > facts.context_length:
            blockers.append(f"max length {spec.training.max_length} is beyond {model}'s context of {facts.context_length} tokens")
        tokens = planner.token_stats_from_report(ds.stats, ds.valid_rows) if ds is not None else None
        if ds is not None and tokens is None:
            notes.append("no time or cost estimate: the dataset's tokens were not measured (choose a model "
                         "whose tokenizer is available when uploading)")  # fmt: skip
        elif ds is not None and (ds.stats.get("tokens") or {}).get("model") not in (None, model):
            notes.append(f"token counts were measured with {ds.stats['tokens']['model']}'s tokenizer")
        measured = repo.measured_throughput(actor, session, model, spec.quantization) if tokens is not None else None
        try:
            p = planner.plan(spec, facts, tokens=tokens, measured=measured, tier=settings.price_tier,
                              price_overrides=settings.gpu_prices)  # fmt: skip
        except InvalidInput as e:
            blockers.append(str(e))
    if p is not None:
        verdict = p.verdict(gpu)
        if verdict.verdict == "does_not_fit":
            blockers.append(f"it does not fit a {verdict.name}: needs {verdict.need_bytes / 2**30:.1f} GiB of "
                            f"{verdict.memory_bytes / 2**30:.0f} GiB" + (f"; try {verdict.suggestion}" if verdict.suggestion else ""))  # fmt: skip
        time = next((t for t in p.times if t.gpu == gpu), None)
        cost = next((c for c in p.costs if c.gpu == gpu), None)
        if cost is not None:
            check = planner.check_budget(cost, budget_usd)
            budget_message = check.message
            if not check.ok:
                blockers.append(check.message)
        notes += list(p.notes)
    blockers += _upload_window_blockers(settings, pricing, budget_usd, time if cost is not None else None)
    terms = [(t.label, t.bytes / 2**30) for t in p.memory.terms if t.bytes > 0] if p is not None else []
    return TrainPlan(gpu, pricing.note, p, terms, time, cost, budget_message, blockers, notes)


def _upload_window_blockers(settings: Settings, pricing: Any, budget_usd: float, time: Any) -> list[str]:
    """`core.jobs.upload_window`'s refusal for this budget on the configured store, with the
    execution timeout `submit` would set (the planner's cap from `time` on a cloud GPU)."""
    from core import jobs
    from core.clients.storage import upload_url_limit_s

    cap_s = None
    if time is not None and pricing.gpu_type != jobs.LOCAL_GPU:
        cap_s = planner.execution_timeout_ms(time, budget_usd, pricing.rate_per_s) / 1000
    try:
        limits = planner.execution_limits(budget_usd, pricing.rate_per_s, max_s=cap_s)
        jobs.upload_window(limits, upload_url_limit_s(settings))
    except jobs.UploadUrlsExpire as e:
        return [str(e)]
    except ValueError:  # BudgetTooSmall or a zero rate: the budget is refused above
        return []
    return []


# --------------------------------------------------------------------------- model cache

CACHE_STATUS_TIMEOUT_S = 2.0
# Cache checks run here so a page waits at most CACHE_STATUS_TIMEOUT_S; two workers, so
# checks stuck on an unanswering database cannot pile up threads (later ones time out).
_cache_checks = ThreadPoolExecutor(max_workers=2, thread_name_prefix="brightrun-cache-status")


@dataclass(frozen=True)
class CacheState:
    state: str  # local | cached | caching | not cached | unknown
    reason: str = ""  # why `unknown`


def model_cache_state(actor: Actor, settings: Settings, model: str, timeout_s: float | None = None) -> CacheState:
    """`core.actions.cache_status` of `model`, or `unknown` when it has no answer within
    `timeout_s` (default `CACHE_STATUS_TIMEOUT_S`; the check finishes in the background and
    its answer is dropped) or cannot read the database or the volume."""
    from core import actions

    timeout_s = CACHE_STATUS_TIMEOUT_S if timeout_s is None else timeout_s
    future = _cache_checks.submit(actions.cache_status, actor, settings, model)
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

