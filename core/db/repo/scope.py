"""Owner scoping: the one place that decides which rows an actor may touch.

Every owner-scoped query of `core.db.repo` starts from `owned(actor, Table)`, which limits
it to the actor's rows; `get_owned` fetches one row by id through it. Another user's row
then behaves exactly like a row that does not exist: `NotFound`, never `Forbidden`.
Reads and writes across users are the `admin_*` functions, which call `require_admin`
first and use no scope.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from core.db.tables import Adapter, AdapterVersion, CostRecord, Dataset, Job
from core.errors import Forbidden, NotFound
from core.users import Actor

# The tables that carry `owner_id`.
Owned = TypeVar("Owned", Dataset, Job, Adapter, AdapterVersion, CostRecord)


def owned(actor: Actor, table: type[Owned], *columns: Any) -> Select[Any]:
    """SELECT `columns` (default: whole rows of `table`) FROM `table`, limited to the
    actor's own rows. Add further conditions with `.where(...)`."""
    return select(*(columns or (table,))).select_from(table).where(table.owner_id == actor.user_id)


def get_owned(
    actor: Actor,
    session: Session,
    table: type[Owned],
    row_id: str,
    what: str,
    *,
    include_deleted: bool = False,
    for_update: bool = False,
) -> Owned:
    """The actor's row `row_id` of `table`, else `NotFound("<what> '<id>' not found")`.
    A soft-deleted row (`deleted_at` set) counts as missing unless `include_deleted`."""
    stmt = owned(actor, table).where(table.id == row_id)
    if not include_deleted and hasattr(table, "deleted_at"):
        stmt = stmt.where(table.deleted_at.is_(None))
    if for_update:
        stmt = stmt.with_for_update()
    row = session.execute(stmt).scalar_one_or_none()
    if row is None:
        raise NotFound(f"{what} {row_id!r} not found")
    return row


def require_admin(actor: Actor) -> None:
    if not actor.is_admin:
        raise Forbidden("this needs an admin account")
