"""The Jobs page's table: one page of the actor's jobs, filtered, sorted and counted in the
database (the table stays fast with thousands of jobs), and the choices its filters offer.

`job_page` raises `InvalidInput` for an unknown sort key (see `JOB_SORTS`), status or page
size. `live_cost_usd` is what a job has cost so far, as every page shows it.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, case, func, literal, or_, select
from sqlalchemy.orm import Session

from core import planner
from core.db.tables import ACTIVE_STATUSES, JOB_STATUSES, Dataset, Job, utcnow
from core.errors import InvalidInput
from core.users import Actor

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
        raise InvalidInput(
            f"unknown job status {sorted(unknown)}; one of {', '.join(JOB_STATUSES)}"
        )
    if f.statuses:
        clauses.append(Job.status.in_(list(f.statuses)))
    if f.model:
        clauses.append(Job.base_model == f.model)
    if f.dataset_id:
        clauses.append(Job.dataset_id == f.dataset_id)
    if f.search.strip():
        needle = f"%{f.search.strip().lower()}%"
        clauses.append(
            or_(func.lower(Job.id).like(needle), func.lower(Job.adapter_name).like(needle))
        )
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
    rows = [_job_row(job, ds_name, dur, now) for job, ds_name, dur in session.execute(stmt)]
    return JobPage(rows=rows, total=total, page=page, pages=pages, page_size=page_size)


def _job_row(job: Job, dataset: str | None, duration_s: Any, now: dt.datetime) -> JobRow:
    return JobRow(
        id=job.id,
        status=job.status,
        model=job.base_model,
        dataset=dataset or "",
        adapter=job.adapter_name,
        started=job.started_at or job.created_at,
        duration_s=None if duration_s is None else max(0.0, float(duration_s)),
        cost_usd=live_cost_usd(job, now),
        final_loss=job.final_loss,
        progress=float(job.progress or 0.0),
    )


@dataclass(frozen=True)
class JobFilterOptions:
    models: list[str]
    datasets: dict[str, str]  # id -> name (deleted datasets too: old jobs still name them)


def job_filter_options(actor: Actor, session: Session) -> JobFilterOptions:
    models = session.execute(
        select(Job.base_model)
        .where(Job.owner_id == actor.user_id)
        .distinct()
        .order_by(Job.base_model)
    ).scalars()
    datasets = session.execute(
        select(Dataset.id, Dataset.name)
        .where(
            Dataset.owner_id == actor.user_id,
            Dataset.id.in_(select(Job.dataset_id).where(Job.owner_id == actor.user_id)),
        )
        .order_by(Dataset.name)
    )
    return JobFilterOptions(models=list(models), datasets={i: n for i, n in datasets})


def live_cost_usd(job: Job, now: dt.datetime | None = None) -> float:
    """Recorded cost once a job has ended; while it runs, elapsed since start × rate."""
    if job.status not in ACTIVE_STATUSES or job.started_at is None:
        return float(job.cost_usd or 0.0)
    elapsed = ((now or utcnow()) - job.started_at).total_seconds()
    prior = float((job.result or {}).get("prior_cost_usd", 0.0)) if job.attempt else 0.0
    return max(float(job.cost_usd or 0.0), prior + planner.live_cost_usd(elapsed, job.rate_per_s))
