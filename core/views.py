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
- `adapter_rows`, `adapter_zip`, `delete_adapter`: the Adapters page.
- `relaunch_settings`: the settings a failed job is launched again with, by failure kind.
- `job_checkpoints`: the checkpoints a job registered, newest step first, each with the
  version number it was promoted to (None until then).
- `model_cache_state`: whether the Train page's model is cached on the volume
  (`core.actions.cache_status`), given at most `CACHE_STATUS_TIMEOUT_S`; a database or
  volume that does not answer in time, or fails, is `unknown` with the reason.
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, literal, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core import adapters, planner, repo
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
    return max(float(job.cost_usd or 0.0), prior + planner.live_cost_usd(elapsed, job.rate_per_s))


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


# --------------------------------------------------------------------------- datasets


def model_options(settings: Settings) -> list[str]:
    """Base models a user can pick: the catalog, with the tiny demo model first when the
    local inference server serves it (the default local setup)."""
    from core.planner import CATALOG, TINY_ID

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
    from core.storage import upload_url_limit_s

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
    comparison: planner.PodComparison | None  # None when nothing ran

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
    gpu = next((g for g in by_gpu if g in planner.GPU_TYPES), settings.gpu_type)
    comparison = None
    if busy_h > 0 and period_h > 0:
        comparison = planner.compare_for_gpu(
            gpu, busy_h, tier=settings.price_tier, pod_hours_on=period_h, overrides=settings.gpu_prices,
            pods=planner.pods_needed(busy_h, period_h),
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
