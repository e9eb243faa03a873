"""The `datasets` table: one row per uploaded dataset, soft-deleted so that the lineage of
jobs and adapters stays readable. Names are unique among a user's live datasets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from core.db.repo.common import clean_name, new_id
from core.db.repo.scope import get_owned, owned
from core.db.repo.users import ensure_user
from core.db.tables import ACTIVE_STATUSES, Dataset, Job, utcnow
from core.errors import Conflict
from core.users import Actor


def _check_name_free(
    actor: Actor, session: Session, name: str, except_id: str | None = None
) -> None:
    stmt = owned(actor, Dataset, Dataset.id).where(
        Dataset.name == name, Dataset.deleted_at.is_(None)
    )
    if except_id:
        stmt = stmt.where(Dataset.id != except_id)
    if session.execute(stmt.limit(1)).first() is not None:
        raise Conflict(f"you already have a dataset named {name!r}; choose another name")


def create_dataset(
    actor: Actor,
    session: Session,
    *,
    name: str,
    file_format: str,
    layout: str,
    rows: int,
    valid_rows: int,
    original_filename: str = "",
    size_bytes: int = 0,
    sha256: str = "",
    stats: Mapping[str, Any] | None = None,
    original_key: str = "",
    normalized_key: str = "",
    dataset_id: str | None = None,
) -> Dataset:
    """A dataset row owned by the actor. Raises Conflict when the actor already has a
    dataset with this name."""
    ensure_user(actor, session)
    name = clean_name(name, "dataset", 200)
    _check_name_free(actor, session, name)
    ds = Dataset(
        id=dataset_id or new_id("ds"),
        owner_id=actor.user_id,
        name=name,
        original_filename=(original_filename or "")[:255],
        file_format=file_format,
        layout=layout,
        rows=rows,
        valid_rows=valid_rows,
        size_bytes=size_bytes,
        sha256=sha256,
        stats=dict(stats or {}),
        original_key=original_key,
        normalized_key=normalized_key,
        created_at=utcnow(),
    )
    session.add(ds)
    session.flush()
    return ds


def get_dataset(
    actor: Actor, session: Session, dataset_id: str, include_deleted: bool = False
) -> Dataset:
    return get_owned(
        actor, session, Dataset, dataset_id, "dataset", include_deleted=include_deleted
    )


def list_datasets(actor: Actor, session: Session, include_deleted: bool = False) -> list[Dataset]:
    stmt = owned(actor, Dataset)
    if not include_deleted:
        stmt = stmt.where(Dataset.deleted_at.is_(None))
    return list(session.execute(stmt.order_by(Dataset.created_at.desc(), Dataset.id)).scalars())


def rename_dataset(actor: Actor, session: Session, dataset_id: str, new_name: str) -> Dataset:
    ds = get_dataset(actor, session, dataset_id)
    new_name = clean_name(new_name, "dataset", 200)
    _check_name_free(actor, session, new_name, except_id=ds.id)
    ds.name = new_name
    session.flush()
    return ds


def mark_dataset_deleted(actor: Actor, session: Session, dataset_id: str) -> Dataset:
    """Soft-delete: the row stays for the lineage of jobs and adapters. Raises Conflict
    while an unfinished job uses the dataset. The caller removes the stored files."""
    ds = get_dataset(actor, session, dataset_id)
    busy = session.execute(
        owned(actor, Job, Job.id).where(Job.dataset_id == ds.id, Job.status.in_(ACTIVE_STATUSES))
    ).first()
    if busy is not None:
        raise Conflict(
            f"dataset {ds.name!r} is used by job {busy[0]} that has not finished; cancel it first"
        )
    ds.deleted_at = utcnow()
    session.flush()
    return ds
