"""The `adapters` and `adapter_versions` tables: a user's named adapters and what each job
registered under them (numbered versions, and checkpoints that get a number only when
promoted). Version numbers are never reused, even after a version is deleted; deletion is
soft, so every version's lineage stays readable."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db.repo.common import insert_ignore, new_id
from core.db.repo.datasets import get_dataset
from core.db.repo.jobs import get_job
from core.db.repo.scope import get_owned, owned, require_admin
from core.db.repo.users import ensure_user
from core.db.tables import Adapter, AdapterVersion, utcnow
from core.errors import Conflict, InvalidInput, NotFound
from core.users import Actor
from core.validation import check_adapter_name

# The fields `update_version` may set.
_VERSION_UPDATABLE = frozenset(
    """
    eval_scores status size_bytes hub_repo volume_path final_loss eval_loss loss_curve
    settings storage_prefix storage_bucket
    """.split()
)

# Tries at numbering a version before giving up, when other processes keep taking the
# next number first.
_NUMBERING_TRIES = 20


def get_or_create_adapter(
    actor: Actor, session: Session, name: str, description: str = ""
) -> Adapter:
    ensure_user(actor, session)
    name = check_adapter_name(name)
    stmt = owned(actor, Adapter).where(Adapter.name == name)
    adapter = session.execute(stmt).scalar_one_or_none()
    if adapter is None:
        row = {
            "id": new_id("ad"),
            "owner_id": actor.user_id,
            "name": name,
            "description": description,
            "created_at": utcnow(),
        }
        insert_ignore(session, Adapter, row, ["owner_id", "name"])
        adapter = session.execute(stmt).scalar_one()
    if adapter.deleted_at is not None:  # a name comes back to life with its history
        adapter.deleted_at = None
        session.flush()
    return adapter


def get_adapter(actor: Actor, session: Session, name_or_id: str) -> Adapter:
    adapter = session.execute(
        owned(actor, Adapter).where(
            (Adapter.id == name_or_id) | (Adapter.name == name_or_id),
            Adapter.deleted_at.is_(None),
        )
    ).scalar_one_or_none()
    if adapter is None:
        raise NotFound(f"adapter {name_or_id!r} not found")
    return adapter


def list_adapters(actor: Actor, session: Session) -> list[Adapter]:
    stmt = owned(actor, Adapter).where(Adapter.deleted_at.is_(None)).order_by(Adapter.name)
    return list(session.execute(stmt).scalars())


def delete_adapter(actor: Actor, session: Session, name_or_id: str) -> Adapter:
    """Soft-delete an adapter and all its versions (the caller removes stored files)."""
    adapter = get_adapter(actor, session, name_or_id)
    versions = list_versions(actor, session, adapter.id)  # before the adapter reads as deleted
    now = utcnow()
    adapter.deleted_at = now
    for v in versions:
        v.deleted_at = now
    session.flush()
    return adapter


# --------------------------------------------------------------------------- versions


def _next_version(session: Session, adapter_id: str) -> int:
    top = session.execute(
        select(func.max(AdapterVersion.version)).where(AdapterVersion.adapter_id == adapter_id)
    ).scalar_one()
    return (top or 0) + 1


def _version_of_job(
    actor: Actor, session: Session, job_id: str, is_checkpoint: bool, step: int | None
) -> AdapterVersion | None:
    """The version (or the checkpoint at `step`) a job already registered, if any."""
    stmt = owned(actor, AdapterVersion).where(
        AdapterVersion.job_id == job_id,
        AdapterVersion.is_checkpoint.is_(is_checkpoint),
        *([AdapterVersion.step == step] if is_checkpoint else []),
    )
    return session.execute(stmt).scalars().first()


def create_adapter_version(
    actor: Actor,
    session: Session,
    *,
    adapter_name: str,
    base_model: str,
    job_id: str | None = None,
    dataset_id: str | None = None,
    parent_version_id: str | None = None,
    settings: Mapping[str, Any] | None = None,
    final_loss: float | None = None,
    eval_loss: float | None = None,
    loss_curve: list[Any] | None = None,
    size_bytes: int | None = None,
    storage_bucket: str = "adapters",
    storage_prefix: str = "",
    volume_path: str | None = None,
    is_checkpoint: bool = False,
    step: int | None = None,
    status: str = "ready",
    version_id: str | None = None,
) -> AdapterVersion:
    """Register what a job produced, under the actor's adapter `adapter_name` (created if new).

    A final adapter (is_checkpoint False) gets the next version number (v1, v2, ...); a
    checkpoint gets none until `promote_checkpoint`. Idempotent per job: registering the
    final adapter of a job again, or the same checkpoint step, returns the existing row.
    Job, dataset and parent version must be the actor's own (else NotFound).
    """
    if is_checkpoint and step is None:
        raise InvalidInput("a checkpoint needs its training step")
    if job_id is not None:
        get_job(actor, session, job_id)
        existing = _version_of_job(actor, session, job_id, is_checkpoint, step)
        if existing is not None:
            return existing
    _check_lineage(actor, session, dataset_id, parent_version_id)
    adapter = get_or_create_adapter(actor, session, adapter_name)
    row = {
        "adapter_id": adapter.id,
        "owner_id": actor.user_id,
        "is_checkpoint": is_checkpoint,
        "step": step,
        "job_id": job_id,
        "base_model": base_model,
        "dataset_id": dataset_id,
        "parent_version_id": parent_version_id,
        "settings": dict(settings or {}),
        "final_loss": final_loss,
        "eval_loss": eval_loss,
        "loss_curve": loss_curve,
        "size_bytes": size_bytes,
        "storage_bucket": storage_bucket,
        "storage_prefix": storage_prefix,
        "volume_path": volume_path,
        "status": status,
    }
    return _insert_version(actor, session, adapter, row, version_id)


def _check_lineage(
    actor: Actor, session: Session, dataset_id: str | None, parent_version_id: str | None
) -> None:
    """A new version's dataset (deleted or not) and parent version must be the actor's own
    (else NotFound)."""
    if dataset_id is not None:
        get_dataset(actor, session, dataset_id, include_deleted=True)
    if parent_version_id is not None:
        get_version(actor, session, parent_version_id)


def _insert_version(
    actor: Actor,
    session: Session,
    adapter: Adapter,
    row: dict[str, Any],
    version_id: str | None,
) -> AdapterVersion:
    """Insert `row` as a new version of `adapter`, numbered (unless a checkpoint) with the
    next free number. When another process takes that number, or registers the same job
    (or checkpoint step) first, look again: the other process's row wins."""
    job_id, is_checkpoint, step = row["job_id"], row["is_checkpoint"], row["step"]
    for _ in range(_NUMBERING_TRIES):
        version = AdapterVersion(
            id=version_id or new_id("av"),
            version=None if is_checkpoint else _next_version(session, adapter.id),
            created_at=utcnow(),
            **row,
        )
        try:
            with session.begin_nested():
                session.add(version)
                session.flush()
            return version
        except IntegrityError:
            if job_id is not None:
                again = _version_of_job(actor, session, job_id, is_checkpoint, step)
                if again is not None:
                    return again
    raise Conflict(f"could not number a new version of adapter {adapter.name!r}; try again")


def get_version(actor: Actor, session: Session, version_id: str) -> AdapterVersion:
    return get_owned(actor, session, AdapterVersion, version_id, "adapter version")


def get_version_by_number(
    actor: Actor, session: Session, adapter_name: str, version: int
) -> AdapterVersion:
    adapter = get_adapter(actor, session, adapter_name)
    v = session.execute(
        owned(actor, AdapterVersion).where(
            AdapterVersion.adapter_id == adapter.id,
            AdapterVersion.version == version,
            AdapterVersion.deleted_at.is_(None),
        )
    ).scalar_one_or_none()
    if v is None:
        raise NotFound(f"adapter {adapter_name!r} has no version {version}")
    return v


def list_versions(
    actor: Actor,
    session: Session,
    adapter_name_or_id: str | None = None,
    include_checkpoints: bool = True,
    job_id: str | None = None,
) -> list[AdapterVersion]:
    """The actor's versions (of one adapter, or of one job, or all), oldest first; numbered
    versions by number, then checkpoints by step."""
    stmt = owned(actor, AdapterVersion).where(AdapterVersion.deleted_at.is_(None))
    if adapter_name_or_id is not None:
        stmt = stmt.where(
            AdapterVersion.adapter_id == get_adapter(actor, session, adapter_name_or_id).id
        )
    if job_id is not None:
        stmt = stmt.where(AdapterVersion.job_id == job_id)
    if not include_checkpoints:
        stmt = stmt.where(AdapterVersion.version.is_not(None))
    stmt = stmt.order_by(
        AdapterVersion.version.is_(None),
        AdapterVersion.version,
        AdapterVersion.step,
        AdapterVersion.created_at,
    )
    return list(session.execute(stmt).scalars())


def latest_version(actor: Actor, session: Session, adapter_name_or_id: str) -> AdapterVersion:
    versions = list_versions(actor, session, adapter_name_or_id, include_checkpoints=False)
    if not versions:
        raise NotFound(f"adapter {adapter_name_or_id!r} has no versions yet")
    return versions[-1]


def promote_checkpoint(actor: Actor, session: Session, version_id: str) -> AdapterVersion:
    """Give a checkpoint the next version number of its adapter. Idempotent."""
    v = get_version(actor, session, version_id)
    if v.version is not None:
        return v
    for _ in range(_NUMBERING_TRIES):
        try:
            with session.begin_nested():
                v.version = _next_version(session, v.adapter_id)
                session.flush()
            return v
        except IntegrityError:
            session.refresh(v)
            if v.version is not None:
                return v
    raise Conflict("could not number the promoted checkpoint; try again")


def update_version(
    actor: Actor, session: Session, version_id: str, **fields: Any
) -> AdapterVersion:
    unknown = set(fields) - _VERSION_UPDATABLE
    if unknown:
        raise InvalidInput(f"adapter version fields {sorted(unknown)} cannot be set")
    v = get_version(actor, session, version_id)
    for key, value in fields.items():
        setattr(v, key, value)
    session.flush()
    return v


def delete_version(actor: Actor, session: Session, version_id: str) -> AdapterVersion:
    """Soft-delete one version (its number is never reused)."""
    v = get_version(actor, session, version_id)
    v.deleted_at = utcnow()
    session.flush()
    return v


def version_lineage(actor: Actor, session: Session, version_id: str) -> list[AdapterVersion]:
    """The version and its ancestors (parent, grandparent, ...), newest first. A deleted
    ancestor still appears: the lineage is history."""
    chain = [get_version(actor, session, version_id)]
    seen = {chain[0].id}
    while chain[-1].parent_version_id and chain[-1].parent_version_id not in seen:
        parent = session.execute(
            owned(actor, AdapterVersion).where(AdapterVersion.id == chain[-1].parent_version_id)
        ).scalar_one_or_none()
        if parent is None:
            break
        seen.add(parent.id)
        chain.append(parent)
    return chain


def admin_list_evaluations_in_flight(actor: Actor, session: Session) -> list[AdapterVersion]:
    """Every user's versions whose evaluation is `pending` or `running` (the syncer's list)."""
    require_admin(actor)
    rows = session.execute(
        select(AdapterVersion)
        .where(AdapterVersion.eval_scores.is_not(None), AdapterVersion.deleted_at.is_(None))
        .order_by(AdapterVersion.created_at, AdapterVersion.id)
    ).scalars()
    return [v for v in rows if (v.eval_scores or {}).get("status") in ("pending", "running")]
