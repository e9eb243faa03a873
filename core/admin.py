"""What an admin sees and sets: every user's spend and limits.

Every function takes the acting user and raises `Forbidden` unless they are an admin
(`core.db.repo`'s `admin_*` functions do the check). Users are named by id or by email.

- `user_rows(actor, session, settings, month=None)`: one row per user: email, role, the
  month's recorded spend (default: this month), unfinished jobs, and the monthly budget
  and concurrent-job limit in force (the user's own, or the deployment default from
  `MONTHLY_BUDGET_USD` / `MAX_CONCURRENT_JOBS`, marked as such).
- `set_limits(actor, session, user, monthly_budget_usd=..., max_concurrent_jobs=...)`:
  a number sets the user's own limit, `None` returns them to the default, leaving an
  argument out keeps it. Limits are checked: a budget is a finite number of dollars from 0
  to 1,000,000, a job limit an integer from 0 to 1000 (0 stops the user launching jobs).
  Submitting a job checks them (`core.jobs.submit`), so a new limit applies to the next
  launch; running jobs are not stopped.
- `set_role(actor, session, user, role)`: member or admin; the last admin cannot be
  demoted (nobody could set limits any more).
- `set_hub_namespaces(actor, session, user, namespaces)`: the Hugging Face Hub users or
  organisations the user may push versions to with the deployment's `HF_TOKEN` (a member
  with none set pushes only with their own token; admins push anywhere the token can).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db import repo
from core.db.tables import User
from core.errors import Conflict, InvalidInput, NotFound
from core.settings import Settings
from core.users import Actor

MAX_BUDGET_USD = 1_000_000.0
MAX_JOB_LIMIT = 1000
_UNSET: Any = object()


@dataclass(frozen=True)
class UserRow:
    user_id: str
    email: str
    role: str
    month: str
    month_spend_usd: float
    unfinished_jobs: int
    monthly_budget_usd: float
    budget_is_default: bool
    max_concurrent_jobs: int
    jobs_limit_is_default: bool
    hub_namespaces: tuple[str, ...] = ()


def find_user(actor: Actor, session: Session, user: str) -> User:
    """A user by id or email (case-insensitive); `NotFound` otherwise."""
    repo.admin_list_users(actor, session)  # the admin check
    found = session.get(User, user)
    if found is None:
        found = (
            session.execute(select(User).where(func.lower(User.email) == user.strip().lower()))
            .scalars()
            .first()
        )
    if found is None:
        raise NotFound(f"user {user!r} not found")
    return found


def user_rows(
    actor: Actor, session: Session, settings: Settings, month: str | None = None
) -> list[UserRow]:
    users = repo.admin_list_users(actor, session)
    month = month or repo.month_of()
    spend = repo.admin_spend_by_user(actor, session, month)
    busy = Counter(j.owner_id for j in repo.admin_list_unfinished_jobs(actor, session))
    return [
        UserRow(
            user_id=u.id,
            email=u.email,
            role=u.role,
            month=month,
            month_spend_usd=spend.get(u.id, 0.0),
            unfinished_jobs=busy.get(u.id, 0),
            monthly_budget_usd=u.monthly_budget_usd
            if u.monthly_budget_usd is not None
            else settings.monthly_budget_usd,
            budget_is_default=u.monthly_budget_usd is None,
            max_concurrent_jobs=u.max_concurrent_jobs
            if u.max_concurrent_jobs is not None
            else settings.max_concurrent_jobs,
            jobs_limit_is_default=u.max_concurrent_jobs is None,
            hub_namespaces=tuple(n for n in (u.hub_namespaces or "").split(",") if n),
        )
        for u in users
    ]


def _check_budget(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"monthly budget must be a number of dollars (got {value!r})")
    if not 0 <= value <= MAX_BUDGET_USD:
        raise InvalidInput(
            f"monthly budget must be between $0 and ${MAX_BUDGET_USD:,.0f} (got {value})"
        )
    return float(value)


def _check_jobs(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"concurrent-job limit must be a whole number (got {value!r})")
    if not 0 <= value <= MAX_JOB_LIMIT:
        raise InvalidInput(
            f"concurrent-job limit must be between 0 and {MAX_JOB_LIMIT} (got {value})"
        )
    return value


def set_limits(
    actor: Actor,
    session: Session,
    user: str,
    *,
    monthly_budget_usd: float | None = _UNSET,
    max_concurrent_jobs: int | None = _UNSET,
) -> User:
    """Set (a number), reset to the default (None) or keep (left out) a user's limits."""
    changes: dict[str, Any] = {}
    if monthly_budget_usd is not _UNSET:
        changes["monthly_budget_usd"] = _check_budget(monthly_budget_usd)
    if max_concurrent_jobs is not _UNSET:
        changes["max_concurrent_jobs"] = _check_jobs(max_concurrent_jobs)
    target = find_user(actor, session, user)
    return repo.admin_set_user_limits(actor, session, target.id, **changes)


HUB_NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def set_hub_namespaces(actor: Actor, session: Session, user: str, namespaces: list[str]) -> User:
    """Replace the user's allowed Hub namespaces (an empty list allows none)."""
    clean = sorted({n.strip() for n in namespaces if n.strip()})
    bad = [n for n in clean if not HUB_NAMESPACE.match(n)]
    if bad:
        raise InvalidInput(
            f"Hub namespace {bad[0]!r} is not a Hugging Face user or organisation name "
            "(letters, digits, '.', '_' and '-')"
        )
    target = find_user(actor, session, user)
    return repo.admin_set_user_hub_namespaces(actor, session, target.id, clean)


def set_role(actor: Actor, session: Session, user: str, role: str) -> User:
    target = find_user(actor, session, user)
    if target.role == "admin" and role != "admin":
        admins = [u for u in repo.admin_list_users(actor, session) if u.role == "admin"]
        if len(admins) <= 1:
            raise Conflict(
                f"{target.email or target.id} is the only admin; make another admin first"
            )
    return repo.admin_set_role(actor, session, target.id, role)
