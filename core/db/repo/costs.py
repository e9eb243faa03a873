"""The `cost_records` table: the billed GPU time of each job attempt (one row per job and
attempt, month 'YYYY-MM' in UTC), and the spend read from it. While an attempt runs, its
live cost is `jobs.cost_usd`; `month_spend` adds it for the current month."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db.repo.common import check_month, insert_ignore, month_of
from core.db.repo.jobs import get_job
from core.db.repo.scope import owned, require_admin
from core.db.tables import ACTIVE_STATUSES, CostRecord, Job, User, utcnow
from core.errors import InvalidInput
from core.users import Actor


def record_cost(
    actor: Actor,
    session: Session,
    *,
    job_id: str,
    seconds: float,
    usd: float,
    attempt: int | None = None,
    gpu_type: str | None = None,
    price_tier: str | None = None,
    month: str | None = None,
) -> CostRecord:
    """The billed time of one attempt of the actor's job; recording it again replaces the
    figures (one row per job and attempt). Month defaults to the job's finish month."""
    if seconds < 0 or usd < 0:
        raise InvalidInput("cost seconds and dollars cannot be negative")
    job = get_job(actor, session, job_id)
    attempt = job.attempt if attempt is None else attempt
    figures = {
        "gpu_type": gpu_type or job.gpu_type,
        "price_tier": price_tier or job.price_tier,
        "seconds": float(seconds),
        "usd": float(usd),
        "month": check_month(month)
        if month
        else month_of(job.finished_at or job.started_at or job.created_at),
    }
    row = {"owner_id": actor.user_id, "job_id": job.id, "attempt": attempt, **figures}
    values = {**row, "created_at": utcnow()}
    inserted = insert_ignore(session, CostRecord, values, ["job_id", "attempt"])
    rec = session.execute(
        owned(actor, CostRecord).where(CostRecord.job_id == job.id, CostRecord.attempt == attempt)
    ).scalar_one()
    session.refresh(rec)
    if inserted != 1:
        for key, value in figures.items():
            setattr(rec, key, value)
        session.flush()
    return rec


def list_cost_records(actor: Actor, session: Session, month: str | None = None) -> list[CostRecord]:
    stmt = owned(actor, CostRecord)
    if month:
        stmt = stmt.where(CostRecord.month == check_month(month))
    return list(session.execute(stmt.order_by(CostRecord.created_at, CostRecord.id)).scalars())


def month_spend(
    actor: Actor, session: Session, month: str | None = None, include_running: bool = True
) -> float:
    """Dollars the actor spent in `month` (default: this month): recorded costs, plus, for
    the current month and `include_running`, the live `cost_usd` of unfinished jobs (a job
    attempt's cost is recorded with `record_cost` when it ends; until then `jobs.cost_usd`
    holds the running attempt's live cost)."""
    month = check_month(month) if month else month_of()
    recorded = session.execute(
        owned(actor, CostRecord, func.coalesce(func.sum(CostRecord.usd), 0.0)).where(
            CostRecord.month == month
        )
    ).scalar_one()
    running = 0.0
    if include_running and month == month_of():
        running = session.execute(
            owned(actor, Job, func.coalesce(func.sum(Job.cost_usd), 0.0)).where(
                Job.status.in_(ACTIVE_STATUSES)
            )
        ).scalar_one()
    return float(recorded) + float(running)


def spend_by(
    actor: Actor, session: Session, group: str = "month", month: str | None = None
) -> dict[str, float]:
    """Recorded dollars of the actor grouped by `month`, `gpu_type` or `job_id`."""
    columns = {
        "month": CostRecord.month,
        "gpu_type": CostRecord.gpu_type,
        "job_id": CostRecord.job_id,
    }
    if group not in columns:
        raise InvalidInput(f"group must be one of {', '.join(columns)}")
    col = columns[group]
    stmt = owned(actor, CostRecord, col, func.sum(CostRecord.usd))
    if month:
        stmt = stmt.where(CostRecord.month == check_month(month))
    return {k: float(v) for k, v in session.execute(stmt.group_by(col).order_by(col))}


def admin_spend_by_user(
    actor: Actor, session: Session, month: str | None = None
) -> dict[str, float]:
    """Recorded dollars per user id in `month` (default: this month); every user appears."""
    require_admin(actor)
    month = check_month(month) if month else month_of()
    out = {uid: 0.0 for uid in session.execute(select(User.id).order_by(User.id)).scalars()}
    rows = session.execute(
        select(CostRecord.owner_id, func.sum(CostRecord.usd))
        .where(CostRecord.month == month)
        .group_by(CostRecord.owner_id)
    )
    for uid, usd in rows:
        out[uid] = float(usd)
    return out


def cost_by_day(
    actor: Actor, session: Session, start: dt.datetime, end: dt.datetime, *, all_users: bool
) -> dict[dt.date, float]:
    """Recorded job dollars per UTC day of recording in [start, end): the actor's, or every
    user's (`all_users`, admins only)."""
    if all_users:
        require_admin(actor)
        stmt = select(CostRecord.created_at, CostRecord.usd)
    else:
        stmt = owned(actor, CostRecord, CostRecord.created_at, CostRecord.usd)
    stmt = stmt.where(CostRecord.created_at >= start, CostRecord.created_at < end)
    out: dict[dt.date, float] = {}
    for created, usd in session.execute(stmt):
        day = created.date()
        out[day] = out.get(day, 0.0) + float(usd)
    return out
