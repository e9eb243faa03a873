"""What every repository module shares: ids, months, names, and the dialect-neutral
INSERT ... ON CONFLICT DO NOTHING."""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.db.tables import utcnow
from core.errors import InvalidInput

_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def new_id(prefix: str, length: int = 10) -> str:
    """A random id like `job-k3v9x0a2qd`: lowercase letters and digits, safe in paths."""
    return f"{prefix}-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def month_of(when: dt.datetime | None = None) -> str:
    return (when or utcnow()).astimezone(dt.UTC).strftime("%Y-%m")


def check_month(month: str) -> str:
    if not _MONTH.match(month):
        raise InvalidInput(f"month {month!r} must look like 2026-11")
    return month


def clean_name(name: str, what: str, max_len: int) -> str:
    """`name` with runs of whitespace made single spaces; InvalidInput when it is empty,
    longer than `max_len` or holds control characters."""
    cleaned = " ".join(str(name).split())
    if not cleaned:
        raise InvalidInput(f"{what} name is empty")
    if len(cleaned) > max_len:
        raise InvalidInput(f"{what} name is {len(cleaned)} characters; at most {max_len}")
    if any(ord(c) < 32 or ord(c) == 127 for c in cleaned):
        raise InvalidInput(f"{what} name contains control characters")
    return cleaned


def insert_ignore(
    session: Session, table: type, values: Mapping[str, Any], keys: Sequence[str]
) -> int:
    """INSERT ... ON CONFLICT (keys) DO NOTHING for the session's dialect; 1 if a row was
    inserted, 0 if one with the same keys existed."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        insert = postgresql.insert
    elif name == "sqlite":
        insert = sqlite.insert
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise NotImplementedError(f"database {name!r} is not supported")
    stmt = insert(table).values(**values).on_conflict_do_nothing(index_elements=list(keys))
    pk = list(table.__table__.primary_key.columns)  # type: ignore[attr-defined]
    return len(session.execute(stmt.returning(*pk)).all())
