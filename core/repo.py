"""Repository functions: every read and write of BrightRun's tables goes through here.

Contract:
- Every public function takes the acting user (`core.users.Actor`) first and the SQLAlchemy
  session second, and scopes every query to `actor.user_id`. Another user's id behaves
  exactly like an id that does not exist: `NotFound`, never `Forbidden`.
- Functions whose names start with `admin_` read or write across users; they raise
  `Forbidden` unless `actor.is_admin`. Nothing else crosses users.
- Functions flush but never commit: the caller owns the unit of work
  (`core.db.session_scope(settings)` commits when its block ends).
- `append_event(s)` is idempotent on (job, seq) and safe when several processes sync the
  same job at once, on SQLite and PostgreSQL (INSERT ... ON CONFLICT DO NOTHING).
- Job specs are stored without signed URLs (`redact_spec`): a URL with a signature is a
  credential while it lives.
- Errors are the typed ones in `core.errors`.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.errors import Conflict, Forbidden, InvalidInput, NotFound
from core.models import (
    ACTIVE_STATUSES,
    JOB_STATUSES,
    TERMINAL_STATUSES,
    Adapter,
    AdapterVersion,
    CostRecord,
    Dataset,
    Job,
    JobEvent,
    User,
    utcnow,
)
from core.planner import LOCAL_CPU
from core.settings import Settings
from core.users import ROLES, Actor

__all__ = [
    "Limits",
    "new_id",
    "redact_spec",
    "sign_in_actor",
    "ensure_user",
    "get_user",
    "user_limits",
    "create_dataset",
    "get_dataset",
    "list_datasets",
    "rename_dataset",
    "mark_dataset_deleted",
    "create_job",
    "get_job",
    "list_jobs",
    "list_unfinished_jobs",
    "count_active_jobs",
    "measured_throughput",
    "update_job",
    "request_cancel",
    "append_event",
    "append_events",
    "list_events",
    "missing_seqs",
    "record_cost",
    "list_cost_records",
    "month_spend",
    "spend_by",
    "get_or_create_adapter",
    "get_adapter",
    "list_adapters",
    "delete_adapter",
    "create_adapter_version",
    "get_version",
    "get_version_by_number",
    "list_versions",
    "latest_version",
    "promote_checkpoint",
    "update_version",
    "delete_version",
    "version_lineage",
    "admin_actor_for",
    "admin_list_users",
    "admin_set_user_limits",
    "admin_set_role",
    "admin_spend_by_user",
    "admin_list_unfinished_jobs",
]

_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def new_id(prefix: str, length: int = 10) -> str:
    """A random id like `job-k3v9x0a2qd`: lowercase letters and digits, safe in paths."""
    return f"{prefix}-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def month_of(when: dt.datetime | None = None) -> str:
    return (when or utcnow()).astimezone(dt.UTC).strftime("%Y-%m")


def _check_month(month: str) -> str:
    if not _MONTH.match(month):
        raise InvalidInput(f"month {month!r} must look like 2026-11")
    return month


def _require_admin(actor: Actor) -> None:
    if not actor.is_admin:
        raise Forbidden("this needs an admin account")


# --------------------------------------------------------------------------- users


@dataclass(frozen=True)
class Limits:
    monthly_budget_usd: float
    max_concurrent_jobs: int


def _insert_ignore(
    session: Session, model: type, values: Mapping[str, Any], keys: Sequence[str]
) -> int:
    """INSERT ... ON CONFLICT (keys) DO NOTHING for the session's dialect; 1 if a row was
    inserted, 0 if one with the same keys existed."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        stmt = (
            postgresql.insert(model)
            .values(**values)
            .on_conflict_do_nothing(index_elements=list(keys))
        )
    elif name == "sqlite":
        stmt = (
            sqlite.insert(model).values(**values).on_conflict_do_nothing(index_elements=list(keys))
        )
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise NotImplementedError(f"database {name!r} is not supported")
    pk = list(model.__table__.primary_key.columns)  # type: ignore[attr-defined]
    return len(session.execute(stmt.returning(*pk)).all())


def ensure_user(actor: Actor, session: Session) -> User:
    """The actor's user row, created on first use (with the actor's email and role)."""
    user = session.get(User, actor.user_id)
    if user is None:
        _insert_ignore(
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
    return Actor(user_id=user.id, email=user.email, role=user.role)  # type: ignore[arg-type]


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


# --------------------------------------------------------------------------- datasets


def _clean_name(name: str, what: str, max_len: int) -> str:
    cleaned = " ".join(str(name).split())
    if not cleaned:
        raise InvalidInput(f"{what} name is empty")
    if len(cleaned) > max_len:
        raise InvalidInput(f"{what} name is {len(cleaned)} characters; at most {max_len}")
    if any(ord(c) < 32 or ord(c) == 127 for c in cleaned):
        raise InvalidInput(f"{what} name contains control characters")
    return cleaned


def _dataset_name_taken(
    actor: Actor, session: Session, name: str, except_id: str | None = None
) -> bool:
    stmt = select(Dataset.id).where(
        Dataset.owner_id == actor.user_id, Dataset.name == name, Dataset.deleted_at.is_(None)
    )
    if except_id:
        stmt = stmt.where(Dataset.id != except_id)
    return session.execute(stmt.limit(1)).first() is not None


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
    name = _clean_name(name, "dataset", 200)
    if _dataset_name_taken(actor, session, name):
        raise Conflict(f"you already have a dataset named {name!r}; choose another name")
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
    stmt = select(Dataset).where(Dataset.id == dataset_id, Dataset.owner_id == actor.user_id)
    if not include_deleted:
        stmt = stmt.where(Dataset.deleted_at.is_(None))
    ds = session.execute(stmt).scalar_one_or_none()
    if ds is None:
        raise NotFound(f"dataset {dataset_id!r} not found")
    return ds


def list_datasets(actor: Actor, session: Session, include_deleted: bool = False) -> list[Dataset]:
    stmt = select(Dataset).where(Dataset.owner_id == actor.user_id)
    if not include_deleted:
        stmt = stmt.where(Dataset.deleted_at.is_(None))
    return list(session.execute(stmt.order_by(Dataset.created_at.desc(), Dataset.id)).scalars())


def rename_dataset(actor: Actor, session: Session, dataset_id: str, new_name: str) -> Dataset:
    ds = get_dataset(actor, session, dataset_id)
    new_name = _clean_name(new_name, "dataset", 200)
    if _dataset_name_taken(actor, session, new_name, except_id=ds.id):
        raise Conflict(f"you already have a dataset named {new_name!r}; choose another name")
    ds.name = new_name
    session.flush()
    return ds


def mark_dataset_deleted(actor: Actor, session: Session, dataset_id: str) -> Dataset:
    """Soft-delete: the row stays for the lineage of jobs and adapters. Raises Conflict
    while an unfinished job uses the dataset. The caller removes the stored files."""
    ds = get_dataset(actor, session, dataset_id)
    busy = session.execute(
        select(Job.id).where(
            Job.owner_id == actor.user_id,
            Job.dataset_id == ds.id,
            Job.status.in_(ACTIVE_STATUSES),
        )
    ).first()
    if busy is not None:
        raise Conflict(
            f"dataset {ds.name!r} is used by job {busy[0]} that has not finished; cancel it first"
        )
    ds.deleted_at = utcnow()
    session.flush()
    return ds


# --------------------------------------------------------------------------- jobs

_JOB_UPDATABLE = frozenset(
    {
        "status", "runpod_job_id", "gpu_type", "price_tier", "rate_per_s", "budget_usd",
        "submitted_at", "started_at", "finished_at", "synced_at", "delay_ms", "execution_ms",
        "billed_s", "cost_usd", "progress", "eta_s", "step", "total_steps", "final_loss",
        "eval_loss", "failure_kind", "failure_message", "failure_suggestion", "stop_reason",
        "cancel_requested_at", "attempt", "auto_relaunched", "result", "notified_at", "spec",
        "adapter_name", "tokens_per_s",
    }
)  # fmt: skip

_URL_FIELDS = (("data", "train_url"), ("data", "eval_url"))


def redact_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec as stored: signed URLs removed (they are credentials until they expire).

    `data.train_url`/`data.eval_url` become "<signed url>", `output.upload_urls` keeps only
    its keys, and a `resume_from` that is a URL is replaced the same way.
    """
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in spec.items()}
    for section, key in _URL_FIELDS:
        if isinstance(out.get(section), dict) and out[section].get(key):
            out[section][key] = "<signed url>"
    output = out.get("output")
    if isinstance(output, dict) and isinstance(output.get("upload_urls"), Mapping):
        output["upload_urls"] = {name: "<signed url>" for name in output["upload_urls"]}
    if isinstance(out.get("resume_from"), str) and "://" in out["resume_from"]:
        out["resume_from"] = "<signed url>"
    return out


def create_job(
    actor: Actor,
    session: Session,
    *,
    base_model: str,
    spec: Mapping[str, Any],
    dataset_id: str | None = None,
    gpu_type: str = "",
    price_tier: str = "flex",
    rate_per_s: float = 0.0,
    budget_usd: float | None = None,
    adapter_name: str = "",
    action: str = "train",
    parent_job_id: str | None = None,
    resume_from_version_id: str | None = None,
    job_id: str | None = None,
) -> Job:
    """A QUEUED job owned by the actor. Dataset, parent job and resume version must be the
    actor's own (else NotFound). The stored spec is `redact_spec(spec)`."""
    ensure_user(actor, session)
    if dataset_id is not None:
        get_dataset(actor, session, dataset_id)
    if parent_job_id is not None:
        get_job(actor, session, parent_job_id)
    if resume_from_version_id is not None:
        get_version(actor, session, resume_from_version_id)
    job = Job(
        id=job_id or new_id("job"),
        owner_id=actor.user_id,
        action=action,
        dataset_id=dataset_id,
        base_model=base_model,
        adapter_name=adapter_name,
        resume_from_version_id=resume_from_version_id,
        spec=redact_spec(spec),
        status="QUEUED",
        gpu_type=gpu_type,
        price_tier=price_tier,
        rate_per_s=rate_per_s,
        budget_usd=budget_usd,
        parent_job_id=parent_job_id,
        created_at=utcnow(),
        updated_at=utcnow(),
        last_seq=-1,
    )
    session.add(job)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict(f"a job with id {job.id!r} already exists") from None
    return job


def get_job(actor: Actor, session: Session, job_id: str, for_update: bool = False) -> Job:
    stmt = select(Job).where(Job.id == job_id, Job.owner_id == actor.user_id)
    if for_update:
        stmt = stmt.with_for_update()
    job = session.execute(stmt).scalar_one_or_none()
    if job is None:
        raise NotFound(f"job {job_id!r} not found")
    return job


def list_jobs(
    actor: Actor,
    session: Session,
    *,
    statuses: Iterable[str] | None = None,
    dataset_id: str | None = None,
    limit: int = 200,
    offset: int = 0,
) -> list[Job]:
    """The actor's jobs, newest first."""
    stmt = select(Job).where(Job.owner_id == actor.user_id)
    if statuses is not None:
        stmt = stmt.where(Job.status.in_(list(statuses)))
    if dataset_id is not None:
        stmt = stmt.where(Job.dataset_id == dataset_id)
    stmt = stmt.order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)
    return list(session.execute(stmt).scalars())


def list_unfinished_jobs(actor: Actor, session: Session) -> list[Job]:
    return list_jobs(actor, session, statuses=ACTIVE_STATUSES, limit=10_000)


MEASURED_JOBS_PER_GPU = 20


def measured_throughput(
    actor: Actor,
    session: Session,
    base_model: str,
    quantization: str | None = None,
    per_gpu: int = MEASURED_JOBS_PER_GPU,
) -> dict[str, list[float]]:
    """GPU type -> tokens/s (`Job.tokens_per_s`) of the actor's own COMPLETED train jobs of
    `base_model` (and `quantization`, when given: nf4 and bf16 run at different speeds), the
    `per_gpu` most recently finished per GPU type, newest first: what `core.planner.plan`
    takes as `measured`. Local jobs (GPU type LOCAL_CPU, price tier `local`) never count: a
    CPU's speed says nothing about a GPU's. One indexed query over two columns, no events.
    """
    stmt = select(
        Job.gpu_type,
        Job.tokens_per_s,
        func.row_number()
        .over(partition_by=Job.gpu_type, order_by=(Job.finished_at.desc(), Job.id.desc()))
        .label("rank"),
    ).where(
        Job.owner_id == actor.user_id,
        Job.base_model == base_model,
        Job.action == "train",
        Job.status == "COMPLETED",
        Job.tokens_per_s > 0,
        Job.gpu_type != LOCAL_CPU.id,
        Job.gpu_type != "",
        Job.price_tier != "local",
    )
    if quantization is not None:
        stmt = stmt.where(Job.spec["quantization"].as_string() == quantization)
    ranked = stmt.subquery()
    rows = session.execute(
        select(ranked.c.gpu_type, ranked.c.tokens_per_s)
        .where(ranked.c.rank <= per_gpu)
        .order_by(ranked.c.gpu_type, ranked.c.rank)
    )
    out: dict[str, list[float]] = {}
    for gpu, rate in rows:
        out.setdefault(gpu, []).append(float(rate))
    return out


def count_active_jobs(actor: Actor, session: Session) -> int:
    return session.execute(
        select(func.count())
        .select_from(Job)
        .where(Job.owner_id == actor.user_id, Job.status.in_(ACTIVE_STATUSES))
    ).scalar_one()


def update_job(
    actor: Actor, session: Session, job_id: str, *, reopen: bool = False, **fields: Any
) -> Job:
    """Set fields of the actor's job. Unknown fields raise InvalidInput.

    A finished job (COMPLETED, FAILED, CANCELLED, TIMED_OUT) does not go back to a running
    status unless `reopen=True` (a retry); a stale status from a slow syncer raises Conflict
    instead of overwriting the outcome.
    """
    unknown = set(fields) - _JOB_UPDATABLE
    if unknown:
        raise InvalidInput(f"job fields {sorted(unknown)} cannot be set")
    job = get_job(actor, session, job_id)
    status = fields.get("status")
    if status is not None:
        if status not in JOB_STATUSES:
            raise InvalidInput(f"unknown job status {status!r}; one of {', '.join(JOB_STATUSES)}")
        if job.status in TERMINAL_STATUSES and status not in TERMINAL_STATUSES and not reopen:
            raise Conflict(f"job {job.id} already ended as {job.status}")
    if "spec" in fields:
        fields["spec"] = redact_spec(fields["spec"])
    for key, value in fields.items():
        setattr(job, key, value)
    job.updated_at = utcnow()
    session.flush()
    return job


def request_cancel(actor: Actor, session: Session, job_id: str, reason: str = "user") -> Job:
    """Mark that the job should stop (the jobs module talks to the endpoint). Idempotent."""
    job = get_job(actor, session, job_id)
    if job.status in TERMINAL_STATUSES:
        raise Conflict(f"job {job.id} already ended as {job.status}")
    if job.cancel_requested_at is None:
        job.cancel_requested_at = utcnow()
        job.stop_reason = reason
        job.updated_at = utcnow()
        session.flush()
    return job


def append_event(
    actor: Actor,
    session: Session,
    job_id: str,
    seq: int,
    type: str,  # noqa: A002 - the event field's name
    data: Mapping[str, Any] | None = None,
    ts: float | None = None,
) -> bool:
    """Store event `seq` of the actor's job unless it is already stored. True when new.

    Safe under concurrent callers: the UNIQUE(job_id, seq) constraint decides, through
    INSERT ... ON CONFLICT DO NOTHING; the first writer's event wins and nothing is
    overwritten. `jobs.last_seq` only ever grows.
    """
    get_job(actor, session, job_id)
    return _append(session, job_id, seq, type, data, ts)


def _append(
    session: Session,
    job_id: str,
    seq: int,
    type_: str,
    data: Mapping[str, Any] | None,
    ts: float | None,
) -> bool:
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise InvalidInput(f"event seq must be a non-negative integer (got {seq!r})")
    if not type_ or len(type_) > 16:
        raise InvalidInput(f"event type {type_!r} must be 1-16 characters")
    values = {
        "job_id": job_id,
        "seq": seq,
        "type": type_,
        "ts": float(ts if ts is not None else utcnow().timestamp()),
        "data": dict(data or {}),
    }
    inserted = _insert_ignore(session, JobEvent, values, ["job_id", "seq"]) == 1
    if inserted:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(last_seq=case((Job.last_seq < seq, seq), else_=Job.last_seq))
            .execution_options(synchronize_session=False)
        )
        job = session.get(Job, job_id)
        if job is not None:
            session.refresh(job, ["last_seq"])
    return inserted


def append_events(actor: Actor, session: Session, job_id: str, events: Iterable[Any]) -> int:
    """Append many events (mappings or objects with seq/type/ts/data); returns how many
    were new. Same guarantees as `append_event`."""
    get_job(actor, session, job_id)
    added = 0
    for ev in events:
        if isinstance(ev, Mapping):
            seq, type_, ts, data = ev.get("seq"), ev.get("type"), ev.get("ts"), ev.get("data")
        else:
            seq, type_, ts, data = (
                ev.seq,
                ev.type,
                getattr(ev, "ts", None),
                getattr(ev, "data", None),
            )
        added += _append(session, job_id, seq, str(type_ or ""), data, ts)
    return added


def list_events(
    actor: Actor,
    session: Session,
    job_id: str,
    *,
    after_seq: int = -1,
    types: Iterable[str] | None = None,
    limit: int | None = None,
) -> list[JobEvent]:
    """The actor's job's events with seq > after_seq, in seq order."""
    get_job(actor, session, job_id)
    stmt = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.seq > after_seq)
    if types is not None:
        stmt = stmt.where(JobEvent.type.in_(list(types)))
    stmt = stmt.order_by(JobEvent.seq)
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.execute(stmt).scalars())


def missing_seqs(actor: Actor, session: Session, job_id: str) -> list[int]:
    """Sequence numbers below the highest stored one that are not stored (to backfill)."""
    job = get_job(actor, session, job_id)
    have = set(session.execute(select(JobEvent.seq).where(JobEvent.job_id == job_id)).scalars())
    return [s for s in range(job.last_seq + 1) if s not in have]


# --------------------------------------------------------------------------- costs


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
    month = (
        _check_month(month)
        if month
        else month_of(job.finished_at or job.started_at or job.created_at)
    )
    values = {
        "owner_id": actor.user_id,
        "job_id": job.id,
        "attempt": attempt,
        "gpu_type": gpu_type or job.gpu_type,
        "price_tier": price_tier or job.price_tier,
        "seconds": float(seconds),
        "usd": float(usd),
        "month": month,
        "created_at": utcnow(),
    }
    if _insert_ignore(session, CostRecord, values, ["job_id", "attempt"]) != 1:
        session.execute(
            update(CostRecord)
            .where(CostRecord.job_id == job.id, CostRecord.attempt == attempt, CostRecord.owner_id == actor.user_id)
            .values(seconds=values["seconds"], usd=values["usd"], gpu_type=values["gpu_type"],
                    price_tier=values["price_tier"], month=month)
            .execution_options(synchronize_session=False)
        )  # fmt: skip
    rec = session.execute(
        select(CostRecord).where(CostRecord.job_id == job.id, CostRecord.attempt == attempt)
    ).scalar_one()
    session.refresh(rec)
    return rec


def list_cost_records(actor: Actor, session: Session, month: str | None = None) -> list[CostRecord]:
    stmt = select(CostRecord).where(CostRecord.owner_id == actor.user_id)
    if month:
        stmt = stmt.where(CostRecord.month == _check_month(month))
    return list(session.execute(stmt.order_by(CostRecord.created_at, CostRecord.id)).scalars())


def month_spend(
    actor: Actor, session: Session, month: str | None = None, include_running: bool = True
) -> float:
    """Dollars the actor spent in `month` (default: this month): recorded costs, plus, for
    the current month and `include_running`, the live `cost_usd` of unfinished jobs (a job
    attempt's cost is recorded with `record_cost` when it ends; until then `jobs.cost_usd`
    holds the running attempt's live cost)."""
    month = _check_month(month) if month else month_of()
    recorded = session.execute(
        select(func.coalesce(func.sum(CostRecord.usd), 0.0)).where(
            CostRecord.owner_id == actor.user_id, CostRecord.month == month
        )
    ).scalar_one()
    running = 0.0
    if include_running and month == month_of():
        running = session.execute(
            select(func.coalesce(func.sum(Job.cost_usd), 0.0)).where(
                Job.owner_id == actor.user_id, Job.status.in_(ACTIVE_STATUSES)
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
    stmt = select(col, func.sum(CostRecord.usd)).where(CostRecord.owner_id == actor.user_id)
    if month:
        stmt = stmt.where(CostRecord.month == _check_month(month))
    return {k: float(v) for k, v in session.execute(stmt.group_by(col).order_by(col))}


# --------------------------------------------------------------------------- adapters

_VERSION_UPDATABLE = frozenset(
    {"eval_scores", "status", "size_bytes", "hub_repo", "volume_path", "final_loss",
     "eval_loss", "loss_curve", "settings", "storage_prefix", "storage_bucket"}
)  # fmt: skip


def _check_adapter_name(name: str) -> str:
    if not isinstance(name, str) or not _ADAPTER_NAME.match(name) or ".." in name:
        raise InvalidInput(
            f"adapter name {name!r} must be 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def get_or_create_adapter(
    actor: Actor, session: Session, name: str, description: str = ""
) -> Adapter:
    ensure_user(actor, session)
    name = _check_adapter_name(name)
    stmt = select(Adapter).where(Adapter.owner_id == actor.user_id, Adapter.name == name)
    adapter = session.execute(stmt).scalar_one_or_none()
    if adapter is None:
        _insert_ignore(
            session,
            Adapter,
            {"id": new_id("ad"), "owner_id": actor.user_id, "name": name,
             "description": description, "created_at": utcnow()},
            ["owner_id", "name"],
        )  # fmt: skip
        adapter = session.execute(stmt).scalar_one()
    if adapter.deleted_at is not None:  # a name comes back to life with its history
        adapter.deleted_at = None
        session.flush()
    return adapter


def get_adapter(actor: Actor, session: Session, name_or_id: str) -> Adapter:
    adapter = session.execute(
        select(Adapter).where(
            Adapter.owner_id == actor.user_id,
            (Adapter.id == name_or_id) | (Adapter.name == name_or_id),
            Adapter.deleted_at.is_(None),
        )
    ).scalar_one_or_none()
    if adapter is None:
        raise NotFound(f"adapter {name_or_id!r} not found")
    return adapter


def list_adapters(actor: Actor, session: Session) -> list[Adapter]:
    return list(
        session.execute(
            select(Adapter)
            .where(Adapter.owner_id == actor.user_id, Adapter.deleted_at.is_(None))
            .order_by(Adapter.name)
        ).scalars()
    )


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


def _next_version(session: Session, adapter_id: str) -> int:
    top = session.execute(
        select(func.max(AdapterVersion.version)).where(AdapterVersion.adapter_id == adapter_id)
    ).scalar_one()
    return (top or 0) + 1


def _version_of_job(
    actor: Actor, session: Session, job_id: str, is_checkpoint: bool, step: int | None
) -> AdapterVersion | None:
    """The version (or the checkpoint at `step`) a job already registered, if any."""
    return (
        session.execute(
            select(AdapterVersion).where(
                AdapterVersion.owner_id == actor.user_id,
                AdapterVersion.job_id == job_id,
                AdapterVersion.is_checkpoint.is_(is_checkpoint),
                *([AdapterVersion.step == step] if is_checkpoint else []),
            )
        )
        .scalars()
        .first()
    )


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
    if dataset_id is not None:
        get_dataset(actor, session, dataset_id, include_deleted=True)
    if parent_version_id is not None:
        get_version(actor, session, parent_version_id)
    adapter = get_or_create_adapter(actor, session, adapter_name)
    for _ in range(20):
        version = AdapterVersion(
            id=version_id or new_id("av"),
            adapter_id=adapter.id,
            owner_id=actor.user_id,
            version=None if is_checkpoint else _next_version(session, adapter.id),
            is_checkpoint=is_checkpoint,
            step=step,
            job_id=job_id,
            base_model=base_model,
            dataset_id=dataset_id,
            parent_version_id=parent_version_id,
            settings=dict(settings or {}),
            final_loss=final_loss,
            eval_loss=eval_loss,
            loss_curve=loss_curve,
            size_bytes=size_bytes,
            storage_bucket=storage_bucket,
            storage_prefix=storage_prefix,
            volume_path=volume_path,
            status=status,
            created_at=utcnow(),
        )
        try:
            with session.begin_nested():
                session.add(version)
                session.flush()
            return version
        except IntegrityError:
            # Another process took this number (or registered the same job/step): look again.
            if job_id is not None:
                again = _version_of_job(actor, session, job_id, is_checkpoint, step)
                if again is not None:
                    return again
    raise Conflict(f"could not number a new version of adapter {adapter_name!r}; try again")


def get_version(actor: Actor, session: Session, version_id: str) -> AdapterVersion:
    v = session.execute(
        select(AdapterVersion).where(
            AdapterVersion.id == version_id,
            AdapterVersion.owner_id == actor.user_id,
            AdapterVersion.deleted_at.is_(None),
        )
    ).scalar_one_or_none()
    if v is None:
        raise NotFound(f"adapter version {version_id!r} not found")
    return v


def get_version_by_number(
    actor: Actor, session: Session, adapter_name: str, version: int
) -> AdapterVersion:
    adapter = get_adapter(actor, session, adapter_name)
    v = session.execute(
        select(AdapterVersion).where(
            AdapterVersion.adapter_id == adapter.id,
            AdapterVersion.owner_id == actor.user_id,
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
    stmt = select(AdapterVersion).where(
        AdapterVersion.owner_id == actor.user_id, AdapterVersion.deleted_at.is_(None)
    )
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
    for _ in range(20):
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
    """The version and its ancestors (parent, grandparent, ...), newest first."""
    chain = [get_version(actor, session, version_id)]
    seen = {chain[0].id}
    while chain[-1].parent_version_id and chain[-1].parent_version_id not in seen:
        parent = session.execute(
            select(AdapterVersion).where(
                AdapterVersion.id == chain[-1].parent_version_id,
                AdapterVersion.owner_id == actor.user_id,
            )
        ).scalar_one_or_none()
        if parent is None:
            break
        seen.add(parent.id)
        chain.append(parent)
    return chain


# --------------------------------------------------------------------------- admin


def admin_actor_for(actor: Actor, session: Session, user_id: str) -> Actor:
    """The `Actor` of another user, for an admin or the syncer to act on their data with
    that user's own scope."""
    _require_admin(actor)
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id!r} not found")
    return Actor(user_id=user.id, email=user.email, role=user.role)  # type: ignore[arg-type]


def admin_list_users(actor: Actor, session: Session) -> list[User]:
    _require_admin(actor)
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
    _require_admin(actor)
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id!r} not found")
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
    _require_admin(actor)
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id!r} not found")
    user.role = role
    session.flush()
    return user


def admin_spend_by_user(
    actor: Actor, session: Session, month: str | None = None
) -> dict[str, float]:
    """Recorded dollars per user id in `month` (default: this month); every user appears."""
    _require_admin(actor)
    month = _check_month(month) if month else month_of()
    out = {uid: 0.0 for uid in session.execute(select(User.id).order_by(User.id)).scalars()}
    rows = session.execute(
        select(CostRecord.owner_id, func.sum(CostRecord.usd))
        .where(CostRecord.month == month)
        .group_by(CostRecord.owner_id)
    )
    for uid, usd in rows:
        out[uid] = float(usd)
    return out


def admin_list_unfinished_jobs(actor: Actor, session: Session) -> list[Job]:
    """Every user's unfinished jobs (the syncer's reconcile list), oldest first."""
    _require_admin(actor)
    return list(
        session.execute(
            select(Job).where(Job.status.in_(ACTIVE_STATUSES)).order_by(Job.created_at, Job.id)
        ).scalars()
    )
