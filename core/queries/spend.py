"""The Costs page: spend per month, GPU type, model and job; the month against the budget;
Serverless against always-on pods at the utilisation the actor actually had.

A month is written `2026-11`; anything else is `InvalidInput`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import Session

from core import planner
from core.db import repo
from core.db.tables import CostRecord, Job, utcnow
from core.errors import InvalidInput
from core.queries.jobs import live_cost_usd
from core.settings import Settings
from core.users import Actor


def budget_share(spent_usd: float, budget_usd: float) -> float:
    """The share of a monthly budget used. A $0 budget (an admin may set one to stop a
    user's GPU spend) counts as used up: 100%, or more once anything was spent."""
    if budget_usd > 0:
        return spent_usd / budget_usd
    return 1.0 if spent_usd <= 0 else float("inf")


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
        return budget_share(self.month_spend_usd, self.monthly_budget_usd)

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


def _by_model(session: Session, in_month: ColumnElement[bool]) -> dict[str, float]:
    """The month's spend per base model, largest first."""
    rows = session.execute(
        select(Job.base_model, func.sum(CostRecord.usd))
        .join(Job, Job.id == CostRecord.job_id)
        .where(in_month)
        .group_by(Job.base_model)
        .order_by(func.sum(CostRecord.usd).desc())
    )
    return {str(k): float(v) for k, v in rows}


def _top_jobs(session: Session, in_month: ColumnElement[bool], top_jobs: int) -> list[JobSpend]:
    """The month's `top_jobs` most expensive jobs."""
    rows = session.execute(
        select(
            CostRecord.job_id,
            Job.base_model,
            func.max(CostRecord.gpu_type),
            func.sum(CostRecord.seconds),
            func.sum(CostRecord.usd),
        )
        .join(Job, Job.id == CostRecord.job_id)
        .where(in_month)
        .group_by(CostRecord.job_id, Job.base_model)
        .order_by(func.sum(CostRecord.usd).desc())
        .limit(top_jobs)
    )
    return [JobSpend(j, m, g, float(s), float(u)) for j, m, g, s, u in rows]


def _comparison(
    settings: Settings, gpu: str, busy_h: float, period_h: float
) -> planner.PodComparison | None:
    """Serverless against pods for the month's busy hours (None when nothing ran)."""
    if busy_h <= 0 or period_h <= 0:
        return None
    return planner.compare_for_gpu(
        gpu,
        busy_h,
        tier=settings.price_tier,
        pod_hours_on=period_h,
        overrides=settings.gpu_prices,
        pods=planner.pods_needed(busy_h, period_h),
    )


def spend_view(
    actor: Actor,
    session: Session,
    settings: Settings,
    month: str | None = None,
    now: dt.datetime | None = None,
    top_jobs: int = 50,
) -> SpendView:
    """Spend for `month` (default: this month) and the actor's whole history by month."""
    now = now or utcnow()
    month = month or repo.month_of(now)
    start, end = _month_bounds(month)
    in_month = and_(CostRecord.owner_id == actor.user_id, CostRecord.month == month)
    group = lambda col: {  # noqa: E731
        str(k): float(v)
        for k, v in session.execute(
            select(col, func.sum(CostRecord.usd))
            .where(in_month)
            .group_by(col)
            .order_by(func.sum(CostRecord.usd).desc())
        )
    }
    by_gpu = group(CostRecord.gpu_type)
    by_model = _by_model(session, in_month)
    by_job = _top_jobs(session, in_month, top_jobs)
    busy_s = session.execute(
        select(func.coalesce(func.sum(CostRecord.seconds), 0.0)).where(in_month)
    ).scalar_one()
    period_h = max(0.0, (min(now, end) - start).total_seconds() / 3600)
    busy_h = float(busy_s) / 3600
    gpu = next((g for g in by_gpu if g in planner.GPU_TYPES), settings.gpu_type)
    comparison = _comparison(settings, gpu, busy_h, period_h)
    limits = repo.user_limits(actor, session, settings)
    return SpendView(
        month=month,
        month_spend_usd=month_spend_live(actor, session, month, now),
        monthly_budget_usd=limits.monthly_budget_usd,
        by_month=repo.spend_by(actor, session, "month"),
        by_gpu=by_gpu,
        by_model=by_model,
        by_job=by_job,
        busy_hours=busy_h,
        period_hours=period_h,
        compared_gpu=gpu,
        comparison=comparison,
    )


def month_spend_live(
    actor: Actor, session: Session, month: str, now: dt.datetime | None = None
) -> float:
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


def user_limits(actor: Actor, session: Session, settings: Settings) -> repo.Limits:
    """The actor's monthly budget and concurrent-job limit: what an admin set for them,
    else the deployment's defaults (the Settings page shows them)."""
    return repo.user_limits(actor, session, settings)
