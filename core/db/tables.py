"""BrightRun's tables (SQLAlchemy 2 typed models). The schema itself is made by the
Alembic migrations in `migrations/`; these classes must match them (a test checks it).

Every user-data table carries `owner_id`; `core.db.repo` scopes every query by it (through
`core.db.repo.scope.owned`). Times are stored in UTC and always come back timezone-aware.
Ids are short slugs (`ds-...`, `job-...`, `ad-...`, `av-...`) safe in paths and URLs; a
user id is whatever the identity provider gives (the Supabase auth user's UUID, or `local`).
`utcnow` is BrightRun's clock (tests pin it).

Deletion: datasets, adapters and adapter versions are soft-deleted (`deleted_at`) so the
lineage of every job and version stays readable; their stored files are removed by the
module that owns them. Jobs, events and cost records are never deleted.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class JobStatus(StrEnum):
    """A job's status: BrightRun's own QUEUED (stored, not yet accepted by the endpoint),
    then RunPod's. Members compare equal to their strings (the stored values)."""

    QUEUED = "QUEUED"
    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def retryable(self) -> bool:
        """An attempt that ended without finishing: retry sends the job again."""
        return self in RETRYABLE_STATUSES


JOB_STATUSES = tuple(JobStatus)
TERMINAL_STATUSES = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMED_OUT}
)
RETRYABLE_STATUSES = frozenset({JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMED_OUT})
ACTIVE_STATUSES = frozenset({JobStatus.QUEUED, JobStatus.IN_QUEUE, JobStatus.IN_PROGRESS})


# SQLite only auto-increments an INTEGER primary key.
_BIGINT_PK = BigInteger().with_variant(Integer, "sqlite")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored as UTC and returned timezone-aware on SQLite and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use an aware UTC time")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('member', 'admin')", name="ck_users_role"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), default="")
    role: Mapped[str] = mapped_column(String(16), default="member")
    # NULL: the deployment default from settings (MONTHLY_BUDGET_USD, MAX_CONCURRENT_JOBS).
    monthly_budget_usd: Mapped[float | None] = mapped_column(Float)
    max_concurrent_jobs: Mapped[int | None] = mapped_column(Integer)
    # Hub namespaces (users or organisations) this user may push to with the deployment's
    # HF_TOKEN, comma-separated; NULL or empty: none (core.export.hub).
    hub_namespaces: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (Index("ix_datasets_owner", "owner_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(200))
    original_filename: Mapped[str] = mapped_column(String(255), default="")  # display only
    file_format: Mapped[str] = mapped_column(String(16))  # jsonl | json | csv | parquet
    layout: Mapped[str] = mapped_column(String(32))  # messages | sharegpt | alpaca | ...
    rows: Mapped[int] = mapped_column(Integer, default=0)
    valid_rows: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str] = mapped_column(String(64), default="")  # of the original file
    stats: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the inspection report
    original_key: Mapped[str] = mapped_column(String(300), default="")  # bucket `datasets`
    normalized_key: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[dt.datetime | None] = mapped_column()


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(
            "status IN ('QUEUED', 'IN_QUEUE', 'IN_PROGRESS', 'COMPLETED', 'FAILED', "
            "'CANCELLED', 'TIMED_OUT')",
            name="ck_jobs_status",
        ),
        Index("ix_jobs_owner", "owner_id", "created_at"),
        Index("ix_jobs_status", "status"),
        Index("ix_jobs_owner_model", "owner_id", "base_model"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    action: Mapped[str] = mapped_column(String(16), default="train")  # train | merge | ...
    dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id"))
    base_model: Mapped[str] = mapped_column(String(300))
    adapter_name: Mapped[str] = mapped_column(String(128), default="")
    # Continue training from this version (recorded as the new version's parent).
    # (No foreign key: jobs and adapter_versions would reference each other; checked in repo.)
    resume_from_version_id: Mapped[str | None] = mapped_column(String(40))
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the JobSpec, no secrets, no URLs
    status: Mapped[str] = mapped_column(String(16), default="QUEUED")
    runpod_job_id: Mapped[str | None] = mapped_column(String(128))
    gpu_type: Mapped[str] = mapped_column(String(64), default="")
    price_tier: Mapped[str] = mapped_column(String(16), default="flex")
    rate_per_s: Mapped[float] = mapped_column(Float, default=0.0)
    budget_usd: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    submitted_at: Mapped[dt.datetime | None] = mapped_column()
    started_at: Mapped[dt.datetime | None] = mapped_column()
    finished_at: Mapped[dt.datetime | None] = mapped_column()
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    synced_at: Mapped[dt.datetime | None] = mapped_column()
    delay_ms: Mapped[int | None] = mapped_column(BigInteger)
    execution_ms: Mapped[int | None] = mapped_column(BigInteger)
    billed_s: Mapped[int | None] = mapped_column(Integer)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    progress: Mapped[float] = mapped_column(Float, default=0.0)  # 0..1
    eta_s: Mapped[float | None] = mapped_column(Float)
    step: Mapped[int | None] = mapped_column(Integer)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    final_loss: Mapped[float | None] = mapped_column(Float)
    eval_loss: Mapped[float | None] = mapped_column(Float)
    failure_kind: Mapped[str | None] = mapped_column(String(32))
    failure_message: Mapped[str | None] = mapped_column(Text)
    failure_suggestion: Mapped[str | None] = mapped_column(Text)
    stop_reason: Mapped[str | None] = mapped_column(String(32))  # e.g. budget, time_limit, user
    cancel_requested_at: Mapped[dt.datetime | None] = mapped_column()
    parent_job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"))  # retry/relaunch of
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # RunPod retries of this row
    auto_relaunched: Mapped[bool] = mapped_column(Boolean, default=False)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the worker's final output
    # Real (non-padding) tokens trained per second of training, set when a train job
    # completes (`core.planner.measured_tokens_per_s`); the planner's measured history.
    tokens_per_s: Mapped[float | None] = mapped_column(Float)
    last_seq: Mapped[int] = mapped_column(Integer, default=-1)  # highest stored event seq
    notified_at: Mapped[dt.datetime | None] = mapped_column()  # end-of-job webhook sent
    # Until when one process reads this job's /stream (`core.jobs.sync`): RunPod hands each
    # streamed item out once, so two readers at once would split the events between them.
    pull_lease_until: Mapped[dt.datetime | None] = mapped_column()


class JobEvent(Base):
    __tablename__ = "job_events"
    __table_args__ = (UniqueConstraint("job_id", "seq", name="uq_job_events_job_seq"),)

    id: Mapped[int] = mapped_column(_BIGINT_PK, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(16))
    ts: Mapped[float] = mapped_column(Float)  # seconds since the epoch, from the worker
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Adapter(Base):
    __tablename__ = "adapters"
    __table_args__ = (UniqueConstraint("owner_id", "name", name="uq_adapters_owner_name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[dt.datetime | None] = mapped_column()


class AdapterVersion(Base):
    """A numbered version of an adapter, or a checkpoint of a running/finished job.

    A checkpoint has `is_checkpoint` true, its `step`, and no `version` until promoted;
    promoting gives it the next version number (it stays marked as a checkpoint).
    """

    __tablename__ = "adapter_versions"
    __table_args__ = (
        UniqueConstraint("adapter_id", "version", name="uq_adapter_versions_number"),
        UniqueConstraint("job_id", "is_checkpoint", "step", name="uq_adapter_versions_job_step"),
        Index("ix_adapter_versions_owner", "owner_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    adapter_id: Mapped[str] = mapped_column(ForeignKey("adapters.id", ondelete="RESTRICT"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    version: Mapped[int | None] = mapped_column(Integer)
    is_checkpoint: Mapped[bool] = mapped_column(Boolean, default=False)
    step: Mapped[int | None] = mapped_column(Integer)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"))
    base_model: Mapped[str] = mapped_column(String(300))
    dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id"))
    parent_version_id: Mapped[str | None] = mapped_column(ForeignKey("adapter_versions.id"))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)  # lora + training settings
    final_loss: Mapped[float | None] = mapped_column(Float)
    eval_loss: Mapped[float | None] = mapped_column(Float)
    loss_curve: Mapped[list[Any] | None] = mapped_column(JSON)  # [[step, loss], ...]
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    storage_bucket: Mapped[str] = mapped_column(String(63), default="adapters")
    storage_prefix: Mapped[str] = mapped_column(String(300), default="")  # key prefix of the files
    volume_path: Mapped[str | None] = mapped_column(String(500))  # on the shared volume, if any
    eval_scores: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="ready")  # pending | ready | failed
    hub_repo: Mapped[str | None] = mapped_column(String(200))  # last Hugging Face Hub push
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[dt.datetime | None] = mapped_column()


class CostRecord(Base):
    """Billed GPU time of one job attempt. One row per (job, attempt); month is 'YYYY-MM' UTC."""

    __tablename__ = "cost_records"
    __table_args__ = (
        UniqueConstraint("job_id", "attempt", name="uq_cost_records_job_attempt"),
        Index("ix_cost_records_owner_month", "owner_id", "month"),
    )

    id: Mapped[int] = mapped_column(_BIGINT_PK, primary_key=True, autoincrement=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    gpu_type: Mapped[str] = mapped_column(String(64))
    price_tier: Mapped[str] = mapped_column(String(16), default="flex")
    seconds: Mapped[float] = mapped_column(Float)
    usd: Mapped[float] = mapped_column(Float)
    month: Mapped[str] = mapped_column(String(7))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
