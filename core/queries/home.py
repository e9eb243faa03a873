"""The Overview page: running jobs with their loss sparklines and live cost, the month's
spend against the budget, the newest adapter versions, and counts for the first-run guide."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db import repo
from core.db.tables import Dataset, Job, utcnow
from core.queries.adapters import AdapterRow, adapter_rows
from core.queries.job import metric_series
from core.queries.jobs import live_cost_usd
from core.queries.spend import budget_share
from core.settings import Settings
from core.users import Actor


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
class Overview:
    running: list[RunningJob]
    month: str
    month_spend_usd: float
    monthly_budget_usd: float
    recent_adapters: list[AdapterRow]
    datasets: int
    jobs: int

    @property
    def budget_share(self) -> float:
        return budget_share(self.month_spend_usd, self.monthly_budget_usd)

    @property
    def is_empty(self) -> bool:
        return not (self.datasets or self.jobs or self.recent_adapters)


def overview(
    actor: Actor,
    session: Session,
    settings: Settings,
    now: dt.datetime | None = None,
    sparkline_points: int = 60,
) -> Overview:
    now = now or utcnow()
    running = []
    for job in repo.list_unfinished_jobs(actor, session):
        series = metric_series(actor, session, job.id, max_points=sparkline_points)
        running.append(
            RunningJob(
                id=job.id,
                status=job.status,
                model=job.base_model,
                adapter=job.adapter_name,
                progress=float(job.progress or 0.0),
                step=job.step,
                total_steps=job.total_steps,
                eta_s=job.eta_s,
                live_cost_usd=live_cost_usd(job, now),
                budget_usd=job.budget_usd,
                loss=[v for v in series.loss if v is not None],
            )
        )
    limits = repo.user_limits(actor, session, settings)
    count = lambda model, *extra: session.execute(  # noqa: E731
        select(func.count()).select_from(model).where(model.owner_id == actor.user_id, *extra)
    ).scalar_one()
    return Overview(
        running=running,
        month=repo.month_of(now),
        month_spend_usd=repo.month_spend(actor, session, include_running=False)
        + sum(j.live_cost_usd for j in running),
        monthly_budget_usd=limits.monthly_budget_usd,
        recent_adapters=adapter_rows(actor, session, limit=5),
        datasets=count(Dataset, Dataset.deleted_at.is_(None)),
        jobs=count(Job),
    )
