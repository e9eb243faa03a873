"""The launch preflight: one place that decides whether a training job may launch.

`LaunchRequest` is what a launch asks for (model, dataset, `LoraSpec`, `TrainingSpec`,
quantisation, eval fraction, budget, GPU type, adapter name, a version to continue);
`LaunchRequest.build(...)` makes one from plain settings, a setting the spec refuses
being `InvalidInput` naming the field. `preflight(request, actor, session, settings)`
returns a `Preflight`: the spec, pricing, the planner's plan (memory, fit per GPU, time,
cost on the job's GPU), the execution limits and upload window the job would be sent
with, the notes to show, and the `problems` (typed errors) that block it.

A job is blocked, in this order, when: its GPU type is unknown; the budget is not a
positive number of dollars or buys under a minute; the base model is refused
(`core.validation.check_base_model`); no dataset is chosen or it has no valid rows; the
dataset has tool calls the model's chat template cannot render (`template_check`); a
setting or the adapter name is refused; the max length is beyond the model's context;
the plan does not fit the GPU the job is priced as (`PlanRefused`); even the low cost
estimate is over the budget (`PlanRefused`); the store's upload URLs would expire before
the job can end (`UploadUrlsExpire`); the concurrent-job limit or the month's budget
leaves no room (`QuotaExceeded`). A model the planner cannot describe gets a note, not a
block (the budget cap still stops the job). Times rest on the median tokens/s of the
actor's finished jobs of this model and quantisation per GPU type where there are any
(`repo.measured_throughput`), else on the default utilisation; `time.basis_text` says
which.

`core.jobs.submit` raises the first problem; the Train page, `brightrun plan` and
`brightrun train` only show them. The presets and defaults they offer are in
`core.jobs.presets`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from core import planner, validation
from core.clients.storage import BlobStore, upload_url_limit_s
from core.datasets import eval_key
from core.datasets.methods import data_kind, methods_for, untrainable_reason
from core.db import repo
from core.deploy.catalog import gpu_market, priced
from core.errors import BrightRunError, InvalidInput, QuotaExceeded
from core.jobs.errors import PlanRefused, UploadUrlsExpire
from core.jobs.presets import DEFAULT_QUANTIZATION
from core.jobs.pricing import Pricing, device_for, pricing_for, trainer_endpoint
from core.jobs.quotas import check_quotas
from core.jobs.spec import PLACEHOLDER_URL, build_spec, default_adapter_name, spec_errors
from core.jobs.template_check import template_problem
from core.jobs.window import UploadWindow, upload_window
from core.settings import Settings
from core.users import Actor
from trainer.shared.methods import Method, info
from trainer.shared.spec import JobSpec, LoraSpec, TrainingSpec

PREVIEW_JOB_ID = "job-preview"


@dataclass(frozen=True)
class LaunchRequest:
    """What a training launch asks for. None budget/GPU: the settings' JOB_BUDGET_USD and
    GPU_TYPE; None adapter name: `<model>-<dataset>`."""

    model: str
    dataset_id: str | None
    lora: LoraSpec = field(default_factory=LoraSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    quantization: str = DEFAULT_QUANTIZATION
    eval_fraction: float = 0.0
    budget_usd: float | None = None
    gpu_type: str | None = None
    adapter_name: str | None = None
    resume_from_version_id: str | None = None  # continued training from this version
    method: Method = Method.SFT  # `trainer.shared.methods`
    preference: Mapping[str, Any] | None = None  # the method's settings (its table row)
    grading: Mapping[str, Any] | None = None  # method grpo: graders and sampling (`GrpoSpec`)
    gpus: int = 1  # GPUs the job trains on (`trainer.shared.parallel`); billed per GPU

    @classmethod
    def build(
        cls,
        *,
        model: str,
        dataset_id: str | None = None,
        lora: Mapping[str, Any] | LoraSpec | None = None,
        training: Mapping[str, Any] | TrainingSpec | None = None,
        **rest: Any,
    ) -> LaunchRequest:
        """A request from plain settings; a refused setting is `InvalidInput` naming it."""
        try:
            method = info(rest.pop("method", None) or Method.SFT).method
        except ValueError as e:
            raise InvalidInput(str(e)) from None
        return cls(
            model=model,
            dataset_id=dataset_id,
            lora=_typed(LoraSpec, lora, "lora."),
            training=_typed(TrainingSpec, training, "training."),
            method=method,
            **rest,
        )

    def budget(self, settings: Settings) -> float:
        return settings.job_budget_usd if self.budget_usd is None else float(self.budget_usd)

    def spec_settings(self, has_eval_split: bool) -> dict[str, Any]:
        """What the request puts in its `JobSpec` (`build_spec`'s settings keywords); a
        dataset with its own eval split takes no eval fraction."""
        return {
            "lora": self.lora.model_dump(exclude_unset=True),
            "training": self.training.model_dump(exclude_unset=True),
            "quantization": self.quantization,
            "eval_fraction": 0.0 if has_eval_split else self.eval_fraction,
            "resume_from": PLACEHOLDER_URL + "parent" if self.resume_from_version_id else None,
            "method": self.method,
            "preference": self.preference,
            "grading": self.grading,
            "gpus": self.gpus,
        }


def _typed(kind: Any, given: Any, prefix: str) -> Any:
    if isinstance(given, kind):
        return given
    try:
        return kind(**dict(given or {}))
    except ValidationError as e:
        raise InvalidInput(f"invalid job settings: {spec_errors(e, prefix)}") from None


@dataclass(frozen=True)
class BudgetVerdict:
    """The plan's time and cost on one GPU against a budget, and the `executionTimeout`
    that budget gives there (capped by the planner's bound on a healthy run)."""

    time: Any  # core.planner.TimeEstimate
    cost: Any  # core.planner.CostEstimate
    check: planner.BudgetCheck
    timeout_ms: int


def budget_verdict(
    plan: Any, gpu: str, budget_usd: float, time: Any = None, cost: Any = None
) -> BudgetVerdict | None:
    """`BudgetVerdict` of `plan` on `gpu` (None when the plan has no cost there), or of the
    `time` and `cost` given (the local endpoint's CPU, which the plan does not list)."""
    cost = cost or next((c for c in plan.costs if c.gpu == gpu), None)
    time = time or next((t for t in plan.times if t.gpu == gpu), None)
    if cost is None or time is None:
        return None
    check = planner.check_budget(cost, budget_usd)
    return BudgetVerdict(
        time, cost, check, planner.execution_timeout_ms(time, budget_usd, cost.rate_per_s)
    )


@dataclass(frozen=True)
class Preflight:
    """What a launch would do, and what stops it (see the module docstring)."""

    request: LaunchRequest
    gpu: str  # the GPU type the job is priced as (and runs on, in the cloud)
    pricing: Pricing | None
    spec: JobSpec | None = None
    adapter_name: str | None = None  # as the user knows it (the spec holds the served name)
    dataset_keys: tuple[str, str | None] | None = None  # train (and eval split) storage keys
    plan: Any | None = None  # core.planner.Plan; None when it cannot be planned
    time: Any | None = None  # core.planner.TimeEstimate on `gpu`
    cost: Any | None = None  # core.planner.CostEstimate on `gpu`
    budget_message: str = ""
    limits: planner.ExecutionLimits | None = None
    upload_window: UploadWindow | None = None
    problems: list[BrightRunError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    price_source: str = ""  # RunPod's catalog (read when) or the built-in table (of when)
    scarcity: str = ""  # the endpoint's GPU types RunPod has little or none of now

    @property
    def blockers(self) -> list[str]:
        """Why Launch is disabled; empty: it may launch."""
        return [str(p) for p in self.problems]

    @property
    def can_launch(self) -> bool:
        return not self.problems

    @property
    def pricing_note(self) -> str:
        return self.pricing.note if self.pricing is not None else ""

    @property
    def price_range(self) -> str:
        """The price range over the endpoint's GPU types, one line ("" for one price)."""
        return self.pricing.range_text if self.pricing is not None else ""

    @property
    def memory_terms(self) -> list[tuple[str, float]]:
        """(label, GiB) of the plan's peak memory."""
        if self.plan is None:
            return []
        return [(t.label, t.bytes / 2**30) for t in self.plan.memory.terms if t.bytes > 0]

    def raise_first(self) -> None:
        """Raise the first problem, if any (what `submit` refuses with)."""
        if self.problems:
            raise self.problems[0]

    def summary(self) -> dict[str, Any]:
        """What the planner said, for the job's log line."""
        if self.plan is None:
            return {"estimate": "not available", "notes": self.notes}
        v = self.plan.verdict(self.gpu)
        said: dict[str, Any] = {
            "gpu": self.gpu,
            "verdict": v.verdict,
            "need_gib": round(v.need_bytes / 2**30, 2),
        }
        if self.cost is not None:
            said.update(
                usd_low=round(self.cost.usd_low, 4),
                usd_high=round(self.cost.usd_high, 4),
                time_basis=self.time.basis_text if self.time is not None else None,
            )
        return said


@dataclass
class _Check:
    """The preflight being worked out, step by step."""

    request: LaunchRequest
    settings: Settings
    pricing: Pricing
    budget: float | None = None  # None: refused
    spec: JobSpec | None = None
    adapter_name: str | None = None
    facts: Any = None
    dataset: Any = None
    fields: dict[str, Any] = field(default_factory=dict)
    problems: list[BrightRunError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def refuse(self, e: BrightRunError) -> None:
        self.problems.append(e)


def preflight(
    request: LaunchRequest,
    actor: Actor,
    session: Session,
    settings: Settings,
    *,
    job_id: str = PREVIEW_JOB_ID,
    store: BlobStore | None = None,
) -> Preflight:
    """Check `request` for `actor` (see the module docstring). `job_id` names the spec (a
    preview's by default); the upload window is that of `store` (default: of the store the
    settings configure, without building it)."""
    market = gpu_market(settings)
    settings = priced(settings, market)
    try:
        c = _Check(request, settings, pricing_for(settings, request.gpu_type, request.gpus))
    except InvalidInput as e:
        return Preflight(request, request.gpu_type or settings.gpu_type, None, problems=[e])
    _check_budget(c)
    _check_model(c)
    _check_dataset(c, actor, session)
    _check_template(c)
    _build_spec(c, job_id)
    try:
        trainer_endpoint(settings, request.gpus)
    except InvalidInput as e:
        c.refuse(e)
    if c.spec is not None:
        _check_plan(c, actor, session)
    url_s = store.max_upload_url_s if store is not None else upload_url_limit_s(settings)
    _check_window(c, url_s)
    if c.budget is not None:
        try:
            check_quotas(actor, session, settings, c.budget)
        except QuotaExceeded as e:
            c.refuse(e)
    keys = (c.dataset.normalized_key, eval_key(c.dataset)) if c.dataset is not None else None
    return Preflight(
        request,
        c.pricing.priced_as,
        c.pricing,
        spec=c.spec,
        adapter_name=c.adapter_name,
        dataset_keys=keys,
        problems=c.problems,
        notes=c.notes,
        price_source=market.source,
        scarcity=market.scarcity_note(c.pricing.gpu_types),
        **c.fields,
    )


def _check_budget(c: _Check) -> None:
    budget = c.request.budget(c.settings)
    if not (math.isfinite(budget) and budget > 0):
        c.refuse(
            InvalidInput(
                f"budget must be a positive number of dollars (got {c.request.budget_usd})"
            )
        )
        return
    try:
        planner.execution_limits(budget, c.pricing.cap_rate_per_s)
    except ValueError as e:  # BudgetTooSmall, or a rate of zero
        c.refuse(InvalidInput(f"budget: {e}"))
        return
    c.budget = budget


def _check_model(c: _Check) -> None:
    """No URL, no folder outside MODEL_DIRS; the planner's facts when it can describe it."""
    try:
        validation.check_base_model(c.settings, c.request.model)
    except InvalidInput as e:
        c.refuse(e)
        return
    try:
        c.facts = planner.describe(c.request.model, local_models_dir=c.settings.data_dir / "models")
    except planner.ModelNotDescribable as e:  # launching stays possible: the budget cap holds
        c.notes.append(f"no memory or time estimate: {e}")


def _check_dataset(c: _Check, actor: Actor, session: Session) -> None:
    if not c.request.dataset_id:
        c.refuse(InvalidInput("choose a dataset (upload one on the Datasets page)"))
        return
    ds = repo.get_dataset(actor, session, c.request.dataset_id)  # NotFound: not the actor's
    if ds.valid_rows <= 0 or not ds.normalized_key:
        c.refuse(InvalidInput(f"dataset {ds.name!r} has no valid rows to train on"))
        return
    c.dataset = ds
    split = (ds.stats or {}).get("split") or {}
    if split.get("eval_rows") and split.get("eval_key"):
        c.notes.append(
            f"eval loss is measured on the dataset's own eval split ({split['eval_rows']} rows)"
        )


def _check_template(c: _Check) -> None:
    problem, note = template_problem(c.request.model, c.dataset, c.settings.data_dir / "models")
    if problem is not None:
        c.refuse(problem)
    if note:
        c.notes.append(note)


def _build_spec(c: _Check, job_id: str) -> None:
    r = c.request
    has_split = c.dataset is not None and bool(eval_key(c.dataset))
    name = r.adapter_name or default_adapter_name(
        r.model, c.dataset.name if c.dataset is not None else "preview"
    )
    c.adapter_name = name
    try:
        c.spec = build_spec(
            job_id=job_id,
            model=r.model,
            adapter_name=validation.served_adapter_name(name, job_id),
            device=device_for(c.settings, c.pricing),
            with_eval_url=has_split,
            **r.spec_settings(has_split),
        )
    except InvalidInput as e:
        c.refuse(e)
    _check_method(c)


def _check_method(c: _Check) -> None:
    """The method must train the dataset's kind of data (`core.datasets.methods`)."""
    layout = (c.dataset.layout or "") if c.dataset is not None else ""
    if not layout:
        return
    fits = methods_for(layout)
    if not fits:
        c.refuse(
            InvalidInput(
                f"dataset {c.dataset.name!r} cannot be trained: {untrainable_reason(layout)}"
            )
        )
    elif c.request.method not in fits:
        c.refuse(
            InvalidInput(
                f"method {c.request.method} trains on {info(c.request.method).data} data; "
                f"dataset {c.dataset.name!r} is {layout} ({data_kind(layout)} data): train it "
                f"with method {' or '.join(fits)}, or upload a dataset for "
                f"{c.request.method}"
            )
        )


def _check_plan(c: _Check, actor: Actor, session: Session) -> None:
    spec, facts, ds = c.spec, c.facts, c.dataset
    if facts is None or spec is None:
        return
    if facts.context_length and spec.training.max_length > facts.context_length:
        c.refuse(
            InvalidInput(
                f"max length {spec.training.max_length} is beyond {c.request.model}'s context of "
                f"{facts.context_length} tokens; use {facts.context_length} or less"
            )
        )
    tokens = planner.token_stats_from_report(ds.stats, ds.valid_rows) if ds is not None else None
    if ds is not None and tokens is None:
        c.notes.append(
            "no time or cost estimate: the dataset's tokens were not measured (choose a model "
            "whose tokenizer is available when uploading)"
        )
    elif ds is not None and (ds.stats.get("tokens") or {}).get("model") not in (
        None,
        c.request.model,
    ):
        c.notes.append(f"token counts were measured with {ds.stats['tokens']['model']}'s tokenizer")
    measured = (
        repo.measured_throughput(actor, session, c.request.model, spec.quantization)
        if tokens
        else None
    )
    try:
        p = planner.plan(
            spec,
            facts,
            tokens=tokens,
            measured=measured,
            tier=c.settings.price_tier,
            price_overrides=c.settings.gpu_prices,
        )
    except InvalidInput as e:
        c.refuse(e)
        return
    _judge_plan(c, p, tokens)


def _local_estimate(c: _Check, tokens: Any) -> tuple[Any, Any]:
    """Time and cost on the local endpoint's CPU, at the rate the job is billed at."""
    if tokens is None:
        return None, None
    t = planner.estimate_local_time(c.spec, c.facts, tokens)
    lo, hi = t.seconds_low + t.cold_start_low_s, t.seconds_high + t.cold_start_high_s
    rate = c.pricing.rate_per_s
    lo_b, hi_b = planner.billed_seconds(lo * 1000), planner.billed_seconds(hi * 1000)
    return t, planner.CostEstimate(t.gpu, c.pricing.tier, rate, lo_b * rate, hi_b * rate, lo, hi)


def _judge_plan(c: _Check, p: Any, tokens: Any = None) -> None:
    """Fit on the job's GPU, and time and cost where it runs against the budget."""
    gpu = c.pricing.priced_as
    c.fields["plan"] = p
    v = p.verdict(gpu)
    if v.verdict == "does_not_fit":
        c.refuse(
            PlanRefused(
                f"it does not fit {v.a_name}: needs {v.need_bytes / 2**30:.1f} GiB of "
                f"{v.memory_bytes / 2**30:.0f} GiB"
                + (f"; try {v.suggestion}" if v.suggestion else "")
            )
        )
    if c.pricing.is_local:  # it runs on this machine's CPU, not on the GPU it fits
        time, cost = _local_estimate(c, tokens)
    else:
        time = next((t for t in p.times if t.gpu == gpu), None)
        cost = next((x for x in p.costs if x.gpu == gpu), None)
    c.fields["time"], c.fields["cost"] = time, cost
    if c.budget is not None and cost is not None:
        bv = budget_verdict(p, gpu, c.budget, time, cost)
        if bv is not None:
            c.fields["budget_message"] = bv.check.message
            c.fields["cap_s"] = bv.timeout_ms / 1000
            if not bv.check.ok:
                c.refuse(PlanRefused(bv.check.message))
    c.notes += list(p.notes)


def _check_window(c: _Check, max_url_s: int | None) -> None:
    """The limits the job is sent with (the planner's cap on a cloud GPU) and whether its
    upload URLs outlive it (`core.jobs.upload_window`)."""
    cap_s = c.fields.pop("cap_s", None)
    if c.budget is None:
        return
    try:
        limits = planner.execution_limits(
            c.budget, c.pricing.cap_rate_per_s, max_s=None if c.pricing.is_local else cap_s
        )
    except ValueError:  # refused above
        return
    c.fields["limits"] = limits
    try:
        c.fields["upload_window"] = upload_window(limits, max_url_s)
    except UploadUrlsExpire as e:
        c.refuse(e)
