"""Users and their limits: the row created on first sign-in, the monthly budget and
concurrent-job limit (an admin's setting, else the deployment default), roles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.repo.common import insert_ignore
from core.db.repo.scope import require_admin
from core.db.tables import User, utcnow
from core.errors import InvalidInput, NotFound
from core.settings import Settings
from core.users import ROLES, Actor


@dataclass(frozen=True)
class Limits:
    monthly_budget_usd: float
    max_concurrent_jobs: int


def ensure_user(actor: Actor, session: Session) -> User:
    """The actor's user row, created on first use (with the actor's email and role)."""
    user = session.get(User, actor.user_id)
    if user is None:
        insert_ignore(
            session,
            User,
            {"id": actor.user_id, "email": actor.email, "role": actor.role, "created_at": utcnow()},
            ["id"],
        )
        user = session.get(User, actor.user_id)
        assert user is not None
    return user


def sign_in_actor(
    session: Session, user_id: str, email: str, default_role: str = "member"
) -> Actor:
    """The `Actor` for a user the identity provider has just vouched for.

    Creates the user row on first sign-in (with `default_role`); afterwards the role stored
    here wins, so an admin is made only by `admin_set_role`. The email is kept current.
    """
    if default_role not in ROLES:
        raise InvalidInput(f"unknown role {default_role!r}")
    user = ensure_user(Actor(user_id=user_id, email=email, role=default_role), session)  # type: ignore[arg-type]
    if email and user.email != email:
        user.email = email
        session.flush()
    return _actor_of(user)


def get_user(actor: Actor, session: Session) -> User:
    return ensure_user(actor, session)


def user_limits(actor: Actor, session: Session, settings: Settings) -> Limits:
    """The actor's monthly budget and concurrent-job limit; what an admin has not set for
    the user is the deployment's default (`settings.monthly_budget_usd`,
    `settings.max_concurrent_jobs`)."""
    user = ensure_user(actor, session)
    budget = user.monthly_budget_usd
    limit = user.max_concurrent_jobs
    return Limits(
        monthly_budget_usd=budget if budget is not None else settings.monthly_budget_usd,
        max_concurrent_jobs=limit if limit is not None else settings.max_concurrent_jobs,
    )


# --------------------------------------------------------------------------- admin


def _actor_of(user: User) -> Actor:
    return Actor(user_id=user.id, email=user.email, role=user.role)  # type: ignore[arg-type]


def _user(session: Session, user_id: str) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id!r} not found")
    return user


def admin_actor_for(actor: Actor, session: Session, user_id: str) -> Actor:
    """The `Actor` of another user, for an admin or the syncer to act on their data with
    that user's own scope."""
    require_admin(actor)
    return _actor_of(_user(session, user_id))


def admin_set_user_hub_namespaces(
    actor: Actor, session: Session, user_id: str, namespaces: list[str]
) -> User:
    """Set the Hub namespaces a user may push to with the deployment's token ([]: none)."""
    require_admin(actor)
    user = _user(session, user_id)
    user.hub_namespaces = ",".join(namespaces) or None
    session.flush()
    return user


def admin_list_users(actor: Actor, session: Session) -> list[User]:
    require_admin(actor)
    return list(session.execute(select(User).order_by(User.created_at, User.id)).scalars())


_UNSET: Any = object()


def admin_set_user_limits(
    actor: Actor,
    session: Session,
    user_id: str,
    *,
    monthly_budget_usd: float | None = _UNSET,
    max_concurrent_jobs: int | None = _UNSET,
) -> User:
    """Set a user's monthly budget and/or concurrent-job limit (None: the deployment default)."""
    require_admin(actor)
    user = _user(session, user_id)
    if monthly_budget_usd is not _UNSET:
        if monthly_budget_usd is not None and monthly_budget_usd < 0:
            raise InvalidInput("monthly budget cannot be negative")
        user.monthly_budget_usd = monthly_budget_usd
    if max_concurrent_jobs is not _UNSET:
        if max_concurrent_jobs is not None and max_concurrent_jobs < 0:
            raise InvalidInput("concurrent-job limit cannot be negative")
        user.max_concurrent_jobs = max_concurrent_jobs
    session.flush()
    return user


def admin_set_role(actor: Actor, session: Session, user_id: str, role: str) -> User:
    require_admin(actor)
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    user = _user(session, user_id)
    user.role = role
    session.flush()
    return user
