"""The user's quotas (concurrent jobs, monthly budget) and the row lock they are checked under.

`check_quotas` is called by every launch (`submit`, `retry`, `core.actions.send_action`)
with the user's row locked (`lock_row`), so two launches at once cannot both squeeze under
a limit; the launch preflight calls it unlocked to show the same message.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from core.db import repo
from core.errors import QuotaExceeded
from core.jobs.billing import reserved_usd
from core.settings import Settings
from core.users import Actor


def lock_row(session: Session, model: type, row_id: str) -> None:
    """Take the row's write lock for the rest of the transaction (PostgreSQL: a row lock;
    SQLite: the database write lock, taken before anything is read)."""
    session.execute(
        update(model)
        .where(model.id == row_id)
        .values(id=model.id)
        .execution_options(synchronize_session=False)
    )


def check_quotas(
    actor: Actor,
    session: Session,
    settings: Settings,
    budget_usd: float,
    exclude_job: str | None = None,
) -> None:
    """Raise `QuotaExceeded` unless the concurrent-job limit and the month's committed spend
    (recorded costs plus the budgets of unfinished jobs) leave room for a job with this
    budget."""
    limits = repo.user_limits(actor, session, settings)
    active = [j for j in repo.list_unfinished_jobs(actor, session) if j.id != exclude_job]
    if len(active) >= limits.max_concurrent_jobs:
        raise QuotaExceeded(
            f"you have {len(active)} unfinished job(s) and may run {limits.max_concurrent_jobs} "
            "at once; wait for one to finish or cancel one"
        )
    spent = repo.month_spend(actor, session, include_running=False)
    committed = spent + sum(reserved_usd(j) for j in active)
    if committed + budget_usd > limits.monthly_budget_usd + 1e-9:
        room = max(0.0, limits.monthly_budget_usd - committed)
        raise QuotaExceeded(
            f"this job's budget ${budget_usd:.2f} would take this month's spend and reserved "
            f"budgets to ${committed + budget_usd:.2f}, over your monthly budget "
            f"${limits.monthly_budget_usd:.2f}; lower the budget to ${room:.2f} or less"
        )
