"""Read models for the dashboard: what each page shows, as plain data, scoped to the actor.

Every function takes the acting user (`core.users.Actor`) and a SQLAlchemy session (or
the settings, for the few that open their own), reads through the same owner scope as
`core.repo` (another user's id is `NotFound`), and returns frozen dataclasses of plain
values, so a page only renders and a test can assert on the numbers.

- `job_page`: one page of the job table, filtered, sorted and counted in the database
  (the table stays fast with thousands of jobs). Sort keys: `JOB_SORTS`.
- `metric_series`: a job's training metrics downsampled in the database to at most
  `max_points` buckets of consecutive events (mean loss, learning rate, tokens/s and eval
  loss per bucket, at the bucket's last step), in one query: a chart of a job with 100,000
  logged steps gets 400 rows back.
- `overview`: running jobs with their loss sparklines and live cost, the month's spend
  against the budget, the newest adapter versions, and counts for the first-run guide.
- `spend_view`: spend per month, GPU type, model and job; the month against the budget;
  Serverless against an always-on pod at the utilisation the actor actually had.
- `adapter_rows`, `adapter_zip`: the Adapters page.
- `job_checkpoints`: the checkpoints a job registered, newest step first, each with the
  version number it was promoted to (None until then).
- `health`: whether each configured part answers (database, storage, GPU endpoint,
  inference), with what is configured; secrets are never part of the answer.

Times are UTC and timezone-aware; money is US dollars; durations are seconds.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, literal, or_, select
from sqlalchemy.orm import Session

from core import adapters, costs, repo
from core.errors import InvalidInput, NotFound
from core.models import (
    ACTIVE_STATUSES,
    JOB_STATUSES,
    AdapterVersion,
    CostRecord,
    Dataset,
    Job,
    JobEvent,
    utcnow,
)
from core.settings import Settings
from core.users import Actor

log = logging.getLogger("brightrun.views")

# --------------------------------------------------------------------------- job table

JOB_SORTS = ("started", "status", "model", "dataset", "duration", "cost", "final loss")
PAGE_SIZES = (10, 25, 50, 100)


@dataclass(frozen=True)
class JobFilter:
    """What the job table shows: empty fields filter nothing."""

    statuses: tuple[str, ...] = ()
    model: str = ""
    dataset_id: str = ""
    search: str = ""  # part of the job id or adapter name


@dataclass(frozen=True)
class JobRow:
    id: str
    status: str
    model: str
    dataset: str
    adapter: str
    started: dt.datetime | None
    duration_s: float | None
    cost_usd: float
    final_loss: float | None
    progress: float


@dataclass(frozen=True)
class JobPage:
    rows: list[JobRow]
    total: int  # rows matching the filter, over all pages
    page: int  # 1-based, clamped to the pages there are
    pages: int
    page_size: int


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _seconds_between(session: Session, start: Any, end: Any) -> ColumnElement[Any]:
    if _dialect(session) == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    return func.extract("epoch", end - start)


def _job_filter_clauses(actor: Actor, f: JobFilter) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = [Job.owner_id == actor.user_id]
    unknown = set(f.statuses) - set(JOB_STATUSES)
    if unknown:
        raise InvalidInput(f"unknown job status {sorted(unknown)}; one of {', '.join(JOB_STATUSES)}")
    if f.statuses:
        clauses.append(Job.status.in_(list(f.statuses)))
    if f.model:
        clauses.append(Job.base_model == f.model)
    if f.dataset_id:
        clauses.append(Job.dataset_id == f.dataset_id)
    if f.search.strip():
        needle = f"%{f.search.strip().lower()}%"
        clauses.append(or_(func.lower(Job.id).like(needle), func.lower(Job.adapter_name).like(needle)))
    return clauses


def job_page(
    actor: Actor,
    session: Session,
    *,
    filters: JobFilter = JobFilter(),
    sort: str = "started",
    descending: bool = True,
    page: int = 1,
    page_size: int = 25,
    now: dt.datetime | None = None,
) -> JobPage:
    """One page of the actor's jobs. Unknown sort keys or statuses raise InvalidInput."""
    if sort not in JOB_SORTS:
        raise InvalidInput(f"sort must be one of {', '.join(JOB_SORTS)} (got {sort!r})")
    if page_size < 1 or page_size > 500:
        raise InvalidInput(f"page size must be 1-500 (got {page_size})")
    now = now or utcnow()
    where = _job_filter_clauses(actor, filters)
    total = session.execute(select(func.count()).select_from(Job).where(*where)).scalar_one()
    pages = max(1, math.ceil(total / page_size))
    page = min(max(1, int(page)), pages)
    ended = func.coalesce(Job.finished_at, literal(now, Job.finished_at.type))
    duration = case(
        (Job.started_at.is_(None), None), else_=_seconds_between(session, Job.started_at, ended)
    )
    started = func.coalesce(Job.started_at, Job.created_at)
    key = {
        "started": started,
        "status": Job.status,
        "model": Job.base_model,
        "dataset": Dataset.name,
        "duration": duration,
        "cost": Job.cost_usd,
        "final loss": Job.final_loss,
    }[sort]
    order = [key.is_(None), key.desc() if descending else key.asc(), Job.created_at.desc(), Job.id]
    stmt = (
        select(Job, Dataset.name, duration)
        .outerjoin(Dataset, Dataset.id == Job.dataset_id)
        .where(*where)
        .order_by(*order)
        .limit(page_size)
        .offset((page - 1) * page_size)
    )
    rows = []
    for job, ds_name, dur in session.execute(stmt):
        rows.append(
            JobRow(
                id=job.id,
                status=job.status,
                model=job.base_model,
                dataset=ds_name or "",
                adapter=job.adapter_name,
                started=job.started_at or job.created_at,
                duration_s=None if dur is None else max(0.0, float(dur)),
                cost_usd=live_cost_usd(job, now),
                final_loss=job.final_loss,
                progress=float(job.progress or 0.0),
            )
        )
    return JobPage(rows=rows, total=total, page=page, pages=pages, page_size=page_size)


@dataclass(frozen=True)
class JobFilterOptions:
    models: list[str]
    datasets: dict[str, str]  # id -> name (deleted datasets too: old jobs still name them)


def job_filter_options(actor: Actor, session: Session) -> JobFilterOptions:
    models = session.execute(
        select(Job.base_model).where(Job.owner_id == actor.user_id).distinct().order_by(Job.base_model)
    ).scalars()
    datasets = session.execute(
        select(Dataset.id, Dataset.name)
        .where(Dataset.owner_id == actor.user_id, Dataset.id.in_(
            select(Job.dataset_id).where(Job.owner_id == actor.user_id)
        ))
        .order_by(Dataset.name)
    )  # fmt: skip
    return JobFilterOptions(models=list(models), datasets={i: n for i, n in datasets})


def live_cost_usd(job: Job, now: dt.datetime | None = None) -> float:
    """Recorded cost once a job has ended; while it runs, elapsed since start × rate."""
    if job.status not in ACTIVE_STATUSES or job.started_at is None:
        return float(job.cost_usd or 0.0)
    elapsed = ((now or utcnow()) - job.started_at).total_seconds()
    prior = float((job.result or {}).get("prior_cost_usd", 0.0)) if job.attempt else 0.0
    return max(float(job.cost_usd or 0.0), prior + costs.live_cost_usd(elapsed, job.rate_per_s))


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class MetricSeries:
    step: list[int] = field(default_factory=list)
    loss: list[float | None] = field(default_factory=list)
    lr: list[float | None] = field(default_factory=list)
    tokens_per_s: list[float | None] = field(default_factory=list)
    eval_step: list[int] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)
    points: int = 0  # metric events stored for the job
    downsampled: bool = False

    @property
    def empty(self) -> bool:
        return not self.step


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def metric_series(actor: Actor, session: Session, job_id: str, max_points: int = 400) -> MetricSeries:
    """The job's metrics for charts, at most `max_points` points (see the module doc).

    One query either way. Up to `max_points` events (by the job's highest sequence number)
    every metrics event is read as it is. Beyond, events are grouped in the database into
    buckets of consecutive sequence numbers: each bucket gives the mean loss, learning rate
    and tokens/s at its last step, and, where it holds evaluations, their mean at its last
    evaluated step (every evaluation is kept while there is at most one per bucket)."""
    job = repo.get_job(actor, session, job_id)
    if max_points < 2:
        raise InvalidInput("max_points must be at least 2")
    if job.last_seq < 0:
        return MetricSeries()
    data = JobEvent.data
    loss, lr, tps, ev = (data[k].as_float() for k in ("loss", "lr", "tokens_per_s", "eval_loss"))
    step = data["step"].as_integer()
    is_metric = and_(JobEvent.job_id == job_id, JobEvent.type == "metrics")
    downsampled = job.last_seq + 1 > max_points
    if not downsampled:
        stmt = select(step, loss, lr, tps, step, ev, literal(1)).where(is_metric).order_by(JobEvent.seq)
    else:
        bucket = JobEvent.seq // math.ceil((job.last_seq + 1) / max_points)
        stmt = (
            select(func.max(step), func.avg(loss), func.avg(lr), func.avg(tps),
                   func.max(case((ev.is_not(None), step))), func.avg(ev), func.count())
            .where(is_metric).group_by(bucket).order_by(func.min(JobEvent.seq))
        )  # fmt: skip
    rows = session.execute(stmt).all()
    points = sum(int(r[6]) for r in rows)
    rows = [r for r in rows if r[0] is not None]
    evals = [(int(r[4]), float(r[5])) for r in rows if r[4] is not None and _num(r[5]) is not None]
    return MetricSeries(
        step=[int(r[0]) for r in rows],
        loss=[_num(r[1]) for r in rows],
        lr=[_num(r[2]) for r in rows],
        tokens_per_s=[_num(r[3]) for r in rows],
        eval_step=[s for s, _ in evals],
        eval_loss=[v for _, v in evals],
        points=points,
        downsampled=downsampled,
    )


def last_metrics(actor: Actor, session: Session, job_id: str) -> dict[str, Any]:
    """The newest metrics event's data (learning rate, tokens/s, ...), or {}."""
    repo.get_job(actor, session, job_id)
    row = session.execute(
        select(JobEvent.data)
        .where(JobEvent.job_id == job_id, JobEvent.type == "metrics")
        .order_by(JobEvent.seq.desc())
        .limit(1)
    ).scalar_one_or_none()
    return dict(row or {})


@dataclass(frozen=True)
class EventLine:
    seq: int
    time: dt.datetime
    type: str
    summary: str


def _event_summary(type_: str, d: Mapping[str, Any]) -> str:
    if type_ == "metrics":
        parts = [f"step {d.get('step')}/{d.get('total_steps')}"]
        for k, label, fmt in (("loss", "loss", ".4f"), ("eval_loss", "eval loss", ".4f"),
                              ("lr", "lr", ".2e"), ("tokens_per_s", "tokens/s", ".1f")):  # fmt: skip
            if _num(d.get(k)) is not None:
                parts.append(f"{label} {d[k]:{fmt}}")
        return ", ".join(parts)
    if type_ == "started":
        plan = d.get("plan") or {}
        model = (d.get("model") or {}).get("name_or_path", "")
        resumed = d.get("resumed_from_step")
        text = f"started {model}: {plan.get('total_steps', '?')} steps"
        return text + (f", resumed from step {resumed}" if resumed else "")
    if type_ == "checkpoint":
        return f"checkpoint at step {d.get('step')}"
    if type_ == "completed":
        summary = d.get("summary") or {}
        loss = _num(summary.get("final_loss"))
        return f"completed ({d.get('reason') or 'finished'})" + (f", final loss {loss:.4f}" if loss is not None else "")
    if type_ == "failed":
        return f"failed ({d.get('kind')}): {d.get('message')}"
    return type_


def event_log(actor: Actor, session: Session, job_id: str, limit: int = 200) -> list[EventLine]:
    """The job's newest `limit` events, newest first, each as one line of text."""
    repo.get_job(actor, session, job_id)
    rows = session.execute(
        select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq.desc()).limit(limit)
    ).scalars()
    return [
        EventLine(e.seq, dt.datetime.fromtimestamp(e.ts, dt.UTC), e.type, _event_summary(e.type, e.data or {}))
        for e in rows
    ]


# --------------------------------------------------------------------------- job detail


@dataclass(frozen=True)
class JobDetail:
    job: Job
    dataset: str
    live_cost_usd: float
    last: dict[str, Any]  # newest metrics event
    can_cancel: bool
    can_retry: bool


def job_detail(actor: Actor, session: Session, job_id: str, now: dt.datetime | None = None) -> JobDetail:
    job = repo.get_job(actor, session, job_id)
    dataset = ""
    if job.dataset_id:
        try:
            dataset = repo.get_dataset(actor, session, job.dataset_id, include_deleted=True).name
        except NotFound:
            dataset = job.dataset_id
    return JobDetail(
        job=job,
        dataset=dataset,
        live_cost_usd=live_cost_usd(job, now),
        last=last_metrics(actor, session, job_id),
        can_cancel=job.status in ACTIVE_STATUSES,
        can_retry=job.status in ("FAILED", "CANCELLED", "TIMED_OUT"),
    )


def job_checkpoints(actor: Actor, session: Session, job_id: str) -> list[adapters.VersionInfo]:
    """The job's checkpoints, newest step first; a promoted one keeps its step and carries
    its version number."""
    repo.get_job(actor, session, job_id)  # another user's job is NotFound, not an empty list
    found = [v for v in repo.list_versions(actor, session, job_id=job_id) if v.is_checkpoint]
    return [adapters.info(actor, session, v) for v in sorted(found, key=lambda v: -(v.step or 0))]


# --------------------------------------------------------------------------- overview


@dataclass(frozen=True)
class RunningJob:
    id: str
    status: str
    model: str
    adapter: str
    progress: float
    step: int | None
    total_steps: int | None
    eta_s: float | None
    live_cost_usd: float
    budget_usd: float | None
    loss: list[float]  # downsampled, for a sparkline


@dataclass(frozen=True)
class AdapterRow:
    version_id: str
    adapter: str
    version: int | None
    label: str  # "support-bot v2" (as the playground lists it)
    base_model: str
    dataset: str
    settings: str  # one line: rank, alpha, quantisation, epochs, learning rate
    final_loss: float | None
    eval_loss: float | None
    size_bytes: int | None
    created_at: dt.datetime
    job_id: str | None
    status: str
    is_checkpoint: bool
    on_volume: bool  # the inference server can load it
    stored: bool  # its files are in storage (downloadable)

    @property
    def zip_name(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", self.label).strip("-") + ".zip"


@dataclass(frozen=True)
class Overview:
    running: list[RunningJob]
    month: str
    month_spend_usd: float
    monthly_budget_usd: float
    recent_adapters: list[AdapterRow]
    datasets: int
    jobs: int

    @property
    def is_empty(self) -> bool:
        return not (self.datasets or self.jobs or self.recent_adapters)


def overview(
    actor: Actor, session: Session, settings: Settings, now: dt.datetime | None = None, sparkline_points: int = 60
) -> Overview:
    now = now or utcnow()
    running = []
    for job in repo.list_unfinished_jobs(actor, session):
        series = metric_series(actor, session, job.id, max_points=sparkline_points)
        running.append(
            RunningJob(
                id=job.id, status=job.status, model=job.base_model, adapter=job.adapter_name,
                progress=float(job.progress or 0.0), step=job.step, total_steps=job.total_steps,
                eta_s=job.eta_s, live_cost_usd=live_cost_usd(job, now), budget_usd=job.budget_usd,
                loss=[v for v in series.loss if v is not None],
            )
        )  # fmt: skip
    limits = repo.user_limits(actor, session, settings)
    count = lambda model, *extra: session.execute(  # noqa: E731
        select(func.count()).select_from(model).where(model.owner_id == actor.user_id, *extra)
    ).scalar_one()
    return Overview(
        running=running,
        month=repo.month_of(now),
        month_spend_usd=repo.month_spend(actor, session, include_running=False) + sum(j.live_cost_usd for j in running),
        monthly_budget_usd=limits.monthly_budget_usd,
        recent_adapters=adapter_rows(actor, session, limit=5),
        datasets=count(Dataset, Dataset.deleted_at.is_(None)),
        jobs=count(Job),
    )


# --------------------------------------------------------------------------- adapters


def _settings_line(s: Mapping[str, Any]) -> str:
    lora = s.get("lora") or {}
    t = s.get("training") or {}
    parts = []
    if lora.get("r") is not None:
        parts.append(f"r={lora['r']} α={lora.get('alpha')}")
    if s.get("quantization"):
        parts.append(str(s["quantization"]))
    if t.get("max_steps"):
        parts.append(f"{t['max_steps']} steps")
    elif t.get("epochs") is not None:
        parts.append(f"{t['epochs']:g} epoch(s)")
    if t.get("learning_rate") is not None:
        parts.append(f"lr {t['learning_rate']:g}")
    return ", ".join(parts)


def adapter_rows(actor: Actor, session: Session, limit: int | None = None, include_checkpoints: bool = False) -> list[AdapterRow]:
    """The actor's adapter versions, newest first."""
    stmt = (
        select(AdapterVersion, Dataset.name, repo_adapter_name())
        .outerjoin(Dataset, Dataset.id == AdapterVersion.dataset_id)
        .where(AdapterVersion.owner_id == actor.user_id, AdapterVersion.deleted_at.is_(None))
        .order_by(AdapterVersion.created_at.desc(), AdapterVersion.id)
    )
    if not include_checkpoints:
        stmt = stmt.where(AdapterVersion.version.is_not(None))
    if limit is not None:
        stmt = stmt.limit(limit)
    out = []
    for v, ds_name, name in session.execute(stmt):
        if name is None:
            continue
        label = f"{name} v{v.version}" if v.version is not None else name
        if v.is_checkpoint:
            label += f" step {v.step}"
        out.append(
            AdapterRow(
                version_id=v.id, adapter=name, version=v.version, label=label, base_model=v.base_model,
                dataset=ds_name or "", settings=_settings_line(v.settings or {}), final_loss=v.final_loss,
                eval_loss=v.eval_loss, size_bytes=v.size_bytes, created_at=v.created_at, job_id=v.job_id,
                status=v.status, is_checkpoint=v.is_checkpoint, on_volume=bool(v.volume_path),
                stored=bool(v.storage_prefix),
            )
        )  # fmt: skip
    return out


def repo_adapter_name() -> Any:
    """The live adapter's name for a version row (a correlated subquery; NULL when deleted)."""
    from core.models import Adapter

    return (
        select(Adapter.name)
        .where(Adapter.id == AdapterVersion.adapter_id, Adapter.deleted_at.is_(None))
        .scalar_subquery()
    )


def zip_builder(actor: Actor, settings: Settings, store: Any, version_id: str) -> Callable[[], bytes]:
    """A function that builds the version's export zip (`core.export.export_zip`: PEFT
    files, brightrun.json, model card) when called: a download builds it on the click, not
    on every page view."""

    def build() -> bytes:
        from core import export
        from core.db import session_scope

        with session_scope(settings) as s:
            return export.export_zip(actor, s, store, version_id)[1]

    return build


# --------------------------------------------------------------------------- datasets


def model_options(settings: Settings) -> list[str]:
    """Base models a user can pick: the catalog, with the tiny demo model first when the
    local inference server serves it (the default local setup)."""
    from core.catalog import CATALOG, TINY_ID

    ids = list(CATALOG)
    local_demo = not settings.inference_base_model
    return [TINY_ID, *ids] if local_demo else [*ids, TINY_ID]


@dataclass(frozen=True)
class TemplateView:
    text: str | None  # the row exactly as the model's chat template renders it
    reason: str | None = None  # why it could not be rendered


def render_with_template(settings: Settings, model: str, row: Mapping[str, Any]) -> TemplateView:
    """A normalised row through `model`'s chat template (the text the trainer tokenizes)."""
    from core.datasets import load_tokenizer

    choice = load_tokenizer(model, settings.data_dir / "models")
    tok = choice.tokenizer
    if tok is None:
        return TemplateView(None, choice.reason)
    if "text" in row:
        eos = getattr(tok, "eos_token", None) or ""
        return TemplateView(str(row["text"]) + eos)
    if not getattr(tok, "chat_template", None):
        return TemplateView(None, f"the tokenizer of {model!r} has no chat template")
    return TemplateView(tok.apply_chat_template(list(row.get("messages", [])), tokenize=False))


def truncated_share(tokens: Mapping[str, Any], max_length: int) -> float | None:
    """Share of measured rows longer than `max_length` tokens: exact for the length the
    statistics were measured at, else read from the histogram (uniform within a bin)."""
    rows = tokens.get("measured_rows") or 0
    if not tokens.get("available") or not rows:
        return None
    if max_length == tokens.get("max_length") and tokens.get("truncated_rows") is not None:
        return tokens["truncated_rows"] / rows
    edges, counts = tokens["histogram"]["edges"], tokens["histogram"]["counts"]
    over = 0.0
    for lo, hi, n in zip(edges[:-1], edges[1:], counts, strict=True):
        if lo >= max_length:
            over += n
        elif hi > max_length:
            over += n * (hi - max_length) / (hi - lo)
    return min(1.0, over / rows)


# --------------------------------------------------------------------------- costs


@dataclass(frozen=True)
class JobSpend:
    job_id: str
    model: str
    gpu_type: str
    seconds: float
    usd: float


@dataclass(frozen=True)
class SpendView:
    month: str
    month_spend_usd: float  # recorded, plus what running jobs have cost so far (this month)
    monthly_budget_usd: float
    by_month: dict[str, float]
    by_gpu: dict[str, float]
    by_model: dict[str, float]
    by_job: list[JobSpend]  # the month's jobs, most expensive first
    busy_hours: float  # billed GPU hours in the month
    period_hours: float  # hours of the month so far (a pod would have been on)
    compared_gpu: str  # the GPU type whose rates the comparison uses
    comparison: costs.PodComparison | None  # None when nothing ran

    @property
    def budget_share(self) -> float:
        return self.month_spend_usd / self.monthly_budget_usd if self.monthly_budget_usd else 0.0

    @property
    def utilisation(self) -> float:
        return self.comparison.utilisation if self.comparison else 0.0


def _month_bounds(month: str) -> tuple[dt.datetime, dt.datetime]:
    try:
        y, m = (int(x) for x in month.split("-"))
        if not (len(month) == 7 and 1 <= m <= 12):
            raise ValueError
    except ValueError:
        raise InvalidInput(f"month {month!r} must look like 2026-11") from None
    start = dt.datetime(y, m, 1, tzinfo=dt.UTC)
    end = dt.datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=dt.UTC)
    return start, end


def spend_view(
    actor: Actor, session: Session, settings: Settings, month: str | None = None, now: dt.datetime | None = None,
    top_jobs: int = 50,
) -> SpendView:
    """Spend for `month` (default: this month) and the actor's whole history by month."""
    now = now or utcnow()
    month = month or repo.month_of(now)
    start, end = _month_bounds(month)
    in_month = and_(CostRecord.owner_id == actor.user_id, CostRecord.month == month)
    group = lambda col: {  # noqa: E731
        str(k): float(v)
        for k, v in session.execute(select(col, func.sum(CostRecord.usd)).where(in_month).group_by(col).order_by(func.sum(CostRecord.usd).desc()))
    }
    by_gpu = group(CostRecord.gpu_type)
    model_rows = session.execute(
        select(Job.base_model, func.sum(CostRecord.usd))
        .join(Job, Job.id == CostRecord.job_id)
        .where(in_month)
        .group_by(Job.base_model)
        .order_by(func.sum(CostRecord.usd).desc())
    )
    job_rows = session.execute(
        select(CostRecord.job_id, Job.base_model, func.max(CostRecord.gpu_type), func.sum(CostRecord.seconds), func.sum(CostRecord.usd))
        .join(Job, Job.id == CostRecord.job_id)
        .where(in_month)
        .group_by(CostRecord.job_id, Job.base_model)
        .order_by(func.sum(CostRecord.usd).desc())
        .limit(top_jobs)
    )  # fmt: skip
    busy_s = session.execute(select(func.coalesce(func.sum(CostRecord.seconds), 0.0)).where(in_month)).scalar_one()
    period_h = max(0.0, (min(now, end) - start).total_seconds() / 3600)
    busy_h = float(busy_s) / 3600
    gpu = next((g for g in by_gpu if g in costs.GPU_TYPES), settings.gpu_type)
    comparison = None
    if busy_h > 0 and period_h > 0:
        comparison = costs.compare_for_gpu(
            gpu, busy_h, tier=settings.price_tier, pod_hours_on=period_h, overrides=settings.gpu_prices,
            pods=costs.pods_needed(busy_h, period_h),
        )
    limits = repo.user_limits(actor, session, settings)
    return SpendView(
        month=month,
        month_spend_usd=month_spend_live(actor, session, month, now),
        monthly_budget_usd=limits.monthly_budget_usd,
        by_month=repo.spend_by(actor, session, "month"),
        by_gpu=by_gpu,
        by_model={str(k): float(v) for k, v in model_rows},
        by_job=[JobSpend(j, m, g, float(s), float(u)) for j, m, g, s, u in job_rows],
        busy_hours=busy_h,
        period_hours=period_h,
        compared_gpu=gpu,
        comparison=comparison,
    )


def month_spend_live(actor: Actor, session: Session, month: str, now: dt.datetime | None = None) -> float:
    """Recorded spend of `month`, plus, for the current month, what unfinished jobs have
    cost so far (elapsed × rate, as their pages show it)."""
    now = now or utcnow()
    recorded = repo.month_spend(actor, session, month, include_running=False)
    if month != repo.month_of(now):
        return recorded
    return recorded + sum(live_cost_usd(j, now) for j in repo.list_unfinished_jobs(actor, session))


def spend_months(actor: Actor, session: Session, now: dt.datetime | None = None) -> list[str]:
    """Months with recorded spend, and the current month, newest first."""
    recorded = session.execute(
        select(CostRecord.month).where(CostRecord.owner_id == actor.user_id).distinct()
    ).scalars()
    return sorted({repo.month_of(now), *recorded}, reverse=True)


def cost_per_busy_hour(
    serverless_rate_h: float, pod_rate_h: float, utilisations: Sequence[float]
) -> tuple[list[float], list[float]]:
    """Dollars per hour of actual GPU work at each utilisation: Serverless bills only busy
    time (flat), a pod bills every hour it is on (rate ÷ utilisation)."""
    return [serverless_rate_h] * len(utilisations), [pod_rate_h / u for u in utilisations]


# --------------------------------------------------------------------------- health


@dataclass(frozen=True)
class PartHealth:
    part: str
    ok: bool
    configured: str  # what is set up (URLs, backends; never a secret)
    detail: str  # what answered, or why not


def _check(part: str, configured: str, probe: Callable[[], str]) -> PartHealth:
    from core.errors import BrightRunError
    from core.runpod import RunPodError

    try:
        return PartHealth(part, True, configured, probe())
    except (BrightRunError, RunPodError, OSError, ValueError, RuntimeError) as e:
        return PartHealth(part, False, configured, f"{type(e).__name__}: {e}")


def health(settings: Settings, *, store: Any, runpod: Any, inference: Any) -> list[PartHealth]:
    """Probe each configured part; an unreachable part is reported, never raised."""
    from sqlalchemy.exc import SQLAlchemyError

    from core import db

    view = settings.public_view()

    def database() -> str:
        try:
            current = db.current_revision(settings)
        except SQLAlchemyError as e:
            raise RuntimeError(f"cannot connect ({type(e).__name__})") from None
        head = db.head_revision()
        if current != head:
            raise RuntimeError(f"schema at {current or 'nothing'}, code expects {head}: run `brightrun db upgrade`")
        return f"connected, schema {current} (up to date)"

    def storage() -> str:
        store.exists("datasets", "health-check/probe")
        return "reachable"

    def endpoint() -> str:
        h = runpod.health()
        jobs = ", ".join(f"{k} {v}" for k, v in sorted(h.jobs.items())) or "no jobs"
        workers = ", ".join(f"{k} {v}" for k, v in sorted(h.workers.items())) or "no workers"
        return f"answering: jobs {jobs}; workers {workers}"

    def serving() -> str:
        models = inference.models()
        base = [m.id for m in models if not m.is_adapter]
        return f"serving {', '.join(base) or 'no base model'} and {len(models) - len(base)} adapter(s)"

    storage_cfg = f"local folder {settings.data_dir / 'blobs'}" if settings.storage == "local" else f"Supabase Storage at {settings.supabase_url} (key {view['supabase_key']})"
    return [
        _check("database", view["database_url"], database),
        _check("storage", storage_cfg, storage),
        _check("GPU endpoint", f"{settings.gpu_cluster_api_url} (key {view['gpu_cluster_api_key']})", endpoint),
        _check("inference", f"{settings.inference_url} (key {view['inference_api_key']})", serving),
    ]  # fmt: skip


def as_records(items: Iterable[Any]) -> list[dict[str, Any]]:
    """Dataclass rows as dicts (for tables)."""
    from dataclasses import asdict

    return [asdict(i) for i in items]
