"""The `jobs` and `job_events` tables: a job's row (status, progress, cost, outcome) and
its ordered event history.

- A finished job (COMPLETED, FAILED, CANCELLED, TIMED_OUT) does not go back to a running
  status unless the update says `reopen=True` (a retry).
- `append_event(s)` is idempotent on (job, seq) and safe when several processes sync the
  same job at once, on SQLite and PostgreSQL (INSERT ... ON CONFLICT DO NOTHING).
- Job specs are stored without signed URLs (`redact_spec`): a URL with a signature is a
  credential while it lives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db.repo.common import insert_ignore, new_id
from core.db.repo.datasets import get_dataset
from core.db.repo.scope import get_owned, owned, require_admin
from core.db.repo.users import ensure_user
from core.db.tables import (
    ACTIVE_STATUSES,
    JOB_STATUSES,
    TERMINAL_STATUSES,
    AdapterVersion,
    Job,
    JobEvent,
    JobStatus,
    utcnow,
)
from core.errors import Conflict, InvalidInput
from core.planner import LOCAL_CPU
from core.users import Actor

# The fields `update_job` may set.
_JOB_UPDATABLE = frozenset(
    """
    status runpod_job_id gpu_type price_tier rate_per_s budget_usd submitted_at started_at
    finished_at synced_at delay_ms execution_ms billed_s cost_usd progress eta_s step
    total_steps final_loss eval_loss failure_kind failure_message failure_suggestion
    stop_reason cancel_requested_at attempt auto_relaunched result notified_at spec
    adapter_name tokens_per_s
    """.split()
)

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
        get_owned(actor, session, AdapterVersion, resume_from_version_id, "adapter version")
    job = Job(
        id=job_id or new_id("job"),
        owner_id=actor.user_id,
        action=action,
        dataset_id=dataset_id,
        base_model=base_model,
        adapter_name=adapter_name,
        resume_from_version_id=resume_from_version_id,
        spec=redact_spec(spec),
        status=JobStatus.QUEUED,
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
    return get_owned(actor, session, Job, job_id, "job", for_update=for_update)


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
    stmt = owned(actor, Job)
    if statuses is not None:
        stmt = stmt.where(Job.status.in_(list(statuses)))
    if dataset_id is not None:
        stmt = stmt.where(Job.dataset_id == dataset_id)
    stmt = stmt.order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)
    return list(session.execute(stmt).scalars())


def list_unfinished_jobs(actor: Actor, session: Session) -> list[Job]:
    return list_jobs(actor, session, statuses=ACTIVE_STATUSES, limit=10_000)


def count_active_jobs(actor: Actor, session: Session) -> int:
    return session.execute(
        owned(actor, Job, func.count()).where(Job.status.in_(ACTIVE_STATUSES))
    ).scalar_one()


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
    rank = (
        func.row_number()
        .over(partition_by=Job.gpu_type, order_by=(Job.finished_at.desc(), Job.id.desc()))
        .label("rank")
    )
    stmt = owned(actor, Job, Job.gpu_type, Job.tokens_per_s, rank).where(
        Job.base_model == base_model,
        Job.action == "train",
        Job.status == JobStatus.COMPLETED,
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


def admin_list_unfinished_jobs(actor: Actor, session: Session) -> list[Job]:
    """Every user's unfinished jobs (the syncer's reconcile list), oldest first."""
    require_admin(actor)
    return list(
        session.execute(
            select(Job).where(Job.status.in_(ACTIVE_STATUSES)).order_by(Job.created_at, Job.id)
        ).scalars()
    )


def admin_find_job(actor: Actor, session: Session, job_id: str) -> Job | None:
    """Any user's job by id (None when there is none): the volume's retention rule."""
    require_admin(actor)
    return session.get(Job, job_id)


# --------------------------------------------------------------------------- events


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
    """`append_event` for a job the caller has already checked is the actor's."""
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
    inserted = insert_ignore(session, JobEvent, values, ["job_id", "seq"]) == 1
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
