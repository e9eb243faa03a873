"""One job's page: its detail, metric series, event log and checkpoints.

- `job_detail`: the job as a `JobView` (plain values, never the ORM row), its dataset's
  name, live cost, newest metrics, which actions apply, and why it stopped before its last
  step (`stop_note`: early stopping, with what it saved in dollars, or the time limit).
- `metric_series`: a job's training metrics downsampled in the database to at most
  `max_points` buckets of consecutive events (mean loss, learning rate, tokens/s and eval
  loss per bucket, at the bucket's last step), in one query: a chart of a job with 100,000
  logged steps gets 400 rows back.
- `event_log`: the newest events, one line of text each.
- `shown_samples`: a GRPO job's sample completions with their scores, as its newest
  metrics event carries them (`samples`, `trainer.grpo_shown`); malformed entries are
  skipped, texts are plain strings (the caller escapes them), scores plain floats.
- `job_checkpoints`: the checkpoints a job registered, newest step first, each with the
  version number it was promoted to (None until then).

Another user's job is `NotFound`.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, case, func, literal, select
from sqlalchemy.orm import Session

from core import adapters
from core.db import repo
from core.db.tables import ACTIVE_STATUSES, Job, JobEvent
from core.errors import InvalidInput, NotFound
from core.queries.jobs import live_cost_usd
from core.users import Actor


@dataclass(frozen=True)
class MetricSeries:
    step: list[int] = field(default_factory=list)
    loss: list[float | None] = field(default_factory=list)
    lr: list[float | None] = field(default_factory=list)
    tokens_per_s: list[float | None] = field(default_factory=list)
    eval_step: list[int] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)
    points: int = 0  # metric events stored for the job
    downsampled: bool = False

    @property
    def empty(self) -> bool:
        return not self.step


def _num(v: Any) -> float | None:
    return (
        float(v)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        else None
    )


def metric_series(
    actor: Actor, session: Session, job_id: str, max_points: int = 400
) -> MetricSeries:
    """The job's metrics for charts, at most `max_points` points (see the module doc).

    One query either way. Up to `max_points` events (by the job's highest sequence number)
    every metrics event is read as it is. Beyond, events are grouped in the database into
    buckets of consecutive sequence numbers: each bucket gives the mean loss, learning rate
    and tokens/s at its last step, and, where it holds evaluations, their mean at its last
    evaluated step (every evaluation is kept while there is at most one per bucket)."""
    job = repo.get_job(actor, session, job_id)
    if max_points < 2:
        raise InvalidInput("max_points must be at least 2")
    if job.last_seq < 0:
        return MetricSeries()
    data = JobEvent.data
    loss, lr, tps, ev = (data[k].as_float() for k in ("loss", "lr", "tokens_per_s", "eval_loss"))
    step = data["step"].as_integer()
    is_metric = and_(JobEvent.job_id == job_id, JobEvent.type == "metrics")
    downsampled = job.last_seq + 1 > max_points
    if not downsampled:
        stmt = (
            select(step, loss, lr, tps, step, ev, literal(1))
            .where(is_metric)
            .order_by(JobEvent.seq)
        )
    else:
        bucket = JobEvent.seq // math.ceil((job.last_seq + 1) / max_points)
        stmt = (
            select(
                func.max(step),
                func.avg(loss),
                func.avg(lr),
                func.avg(tps),
                func.max(case((ev.is_not(None), step))),
                func.avg(ev),
                func.count(),
            )
            .where(is_metric)
            .group_by(bucket)
            .order_by(func.min(JobEvent.seq))
        )
    rows = session.execute(stmt).all()
    points = sum(int(r[6]) for r in rows)
    rows = [r for r in rows if r[0] is not None]
    evals = [(int(r[4]), float(r[5])) for r in rows if r[4] is not None and _num(r[5]) is not None]
    return MetricSeries(
        step=[int(r[0]) for r in rows],
        loss=[_num(r[1]) for r in rows],
        lr=[_num(r[2]) for r in rows],
        tokens_per_s=[_num(r[3]) for r in rows],
        eval_step=[s for s, _ in evals],
        eval_loss=[v for _, v in evals],
        points=points,
        downsampled=downsampled,
    )


def last_metrics(actor: Actor, session: Session, job_id: str) -> dict[str, Any]:
    """The newest metrics event's data (learning rate, tokens/s, ...), or {}."""
    repo.get_job(actor, session, job_id)
    row = session.execute(
        select(JobEvent.data)
        .where(JobEvent.job_id == job_id, JobEvent.type == "metrics")
        .order_by(JobEvent.seq.desc())
        .limit(1)
    ).scalar_one_or_none()
    return dict(row or {})


@dataclass(frozen=True)
class EventLine:
    seq: int
    time: dt.datetime
    type: str
    summary: str


def _event_summary(type_: str, d: Mapping[str, Any]) -> str:
    if type_ == "metrics":
        parts = [f"step {d.get('step')}/{d.get('total_steps')}"]
        for k, label, fmt in (
            ("loss", "loss", ".4f"),
            ("eval_loss", "eval loss", ".4f"),
            ("lr", "lr", ".2e"),
            ("tokens_per_s", "tokens/s", ".1f"),
        ):
            if _num(d.get(k)) is not None:
                parts.append(f"{label} {d[k]:{fmt}}")
        return ", ".join(parts)
    if type_ == "started":
        plan = d.get("plan") or {}
        model = (d.get("model") or {}).get("name_or_path", "")
        resumed = d.get("resumed_from_step")
        text = f"started {model}: {plan.get('total_steps', '?')} steps"
        return text + (f", resumed from step {resumed}" if resumed else "")
    if type_ == "checkpoint":
        return f"checkpoint at step {d.get('step')}"
    if type_ == "progress":
        share = _num(d.get("fraction"))
        done = f", {share:.0%}" if share is not None else ""
        return f"{d.get('stage')}: stage {d.get('step')} of {d.get('steps')}{done}"
    if type_ == "completed":
        summary = d.get("summary") or {}
        loss = _num(summary.get("final_loss"))
        return f"completed ({d.get('reason') or 'finished'})" + (
            f", final loss {loss:.4f}" if loss is not None else ""
        )
    if type_ == "failed":
        return f"failed ({d.get('kind')}): {d.get('message')}"
    return type_


def event_log(actor: Actor, session: Session, job_id: str, limit: int = 200) -> list[EventLine]:
    """The job's newest `limit` events, newest first, each as one line of text."""
    repo.get_job(actor, session, job_id)
    rows = session.execute(
        select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq.desc()).limit(limit)
    ).scalars()
    return [
        EventLine(
            e.seq,
            dt.datetime.fromtimestamp(e.ts, dt.UTC),
            e.type,
            _event_summary(e.type, e.data or {}),
        )
        for e in rows
    ]


# --------------------------------------------------------------------------- job detail


@dataclass(frozen=True)
class JobView:
    """One job as its page shows it (plain values, read when the detail was read)."""

    id: str
    status: str
    base_model: str
    adapter_name: str
    dataset_id: str | None
    spec: dict[str, Any]  # the resolved JobSpec (a copy)
    gpu_type: str
    budget_usd: float | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    progress: float
    step: int | None
    total_steps: int | None
    eta_s: float | None
    final_loss: float | None
    eval_loss: float | None
    failure_kind: str | None
    failure_message: str | None
    failure_suggestion: str | None
    last_seq: int
    stop_reason: str | None = None
    early_stopping: dict[str, Any] | None = None  # what early stopping saved (`finish`)

    @classmethod
    def of(cls, job: Job) -> JobView:
        return cls(
            id=job.id,
            status=job.status,
            base_model=job.base_model,
            adapter_name=job.adapter_name,
            dataset_id=job.dataset_id,
            spec=copy.deepcopy(dict(job.spec or {})),
            gpu_type=job.gpu_type,
            budget_usd=job.budget_usd,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            progress=float(job.progress or 0.0),
            step=job.step,
            total_steps=job.total_steps,
            eta_s=job.eta_s,
            final_loss=job.final_loss,
            eval_loss=job.eval_loss,
            failure_kind=job.failure_kind,
            failure_message=job.failure_message,
            failure_suggestion=job.failure_suggestion,
            last_seq=job.last_seq,
            stop_reason=job.stop_reason,
            early_stopping=copy.deepcopy((job.result or {}).get("early_stopping")),
        )


@dataclass(frozen=True)
class ShownSample:
    prompt: str
    completion: str
    reward: float | None
    scores: dict[str, float | None] = field(default_factory=dict)


def shown_samples(metrics: Mapping[str, Any]) -> list[ShownSample]:
    """The sample completions a metrics event's data carries (module docstring), or []."""
    items = metrics.get("samples")
    out = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, Mapping):
            continue
        scores = item.get("scores")
        out.append(
            ShownSample(
                prompt=str(item.get("prompt") or ""),
                completion=str(item.get("completion") or ""),
                reward=_num(item.get("reward")),
                scores={str(k): _num(v) for k, v in scores.items()}
                if isinstance(scores, Mapping)
                else {},
            )
        )
    return out


@dataclass(frozen=True)
class JobDetail:
    job: JobView
    dataset: str
    live_cost_usd: float
    last: dict[str, Any]  # newest metrics event
    can_cancel: bool
    can_retry: bool
    stop_note: str | None = None  # why it stopped before its last step
    samples: list[ShownSample] = field(default_factory=list)  # GRPO's, of the newest step


def job_detail(
    actor: Actor, session: Session, job_id: str, now: dt.datetime | None = None
) -> JobDetail:
    job = repo.get_job(actor, session, job_id)
    dataset = ""
    if job.dataset_id:
        try:
            dataset = repo.get_dataset(actor, session, job.dataset_id, include_deleted=True).name
        except NotFound:
            dataset = job.dataset_id
    last = last_metrics(actor, session, job_id)
    return JobDetail(
        job=JobView.of(job),
        dataset=dataset,
        live_cost_usd=live_cost_usd(job, now),
        last=last,
        samples=shown_samples(last),
        can_cancel=job.status in ACTIVE_STATUSES,
        can_retry=job.status in ("FAILED", "CANCELLED", "TIMED_OUT"),
        stop_note=stop_note(job.stop_reason, (job.result or {}).get("early_stopping"), job.step),
    )


def _usd(x: float) -> str:
    return f"${x:.4f}" if x < 1 else f"${x:,.2f}"


def stop_note(
    stop_reason: str | None, early: Mapping[str, Any] | None, step: int | None = None
) -> str | None:
    """One line on why a completed job stopped before its last step (None: it did not):
    early stopping (`early`: `result['early_stopping']`), or the time limit."""
    if stop_reason == "time_limit":
        return (
            f"Stopped at its time limit (the budget cap) at step {step or 0}; the adapter "
            "holds what it had trained by then."
        )
    if stop_reason != "early_stopping":
        return None
    e = dict(early or {})
    text = f"Stopped early at step {e.get('step', step)} of {e.get('total_steps', '?')}: "
    patience = e.get("patience")
    text += (
        f"the eval loss did not improve for {patience} evaluations in a row."
        if patience
        else "the eval loss stopped improving."
    )
    if _num(e.get("best_eval_loss")) is not None:
        text += (
            f" The adapter is the best checkpoint, step {e.get('best_step')} "
            f"(eval loss {e['best_eval_loss']:.4f})."
        )
    if _num(e.get("saved_usd")) is not None:
        text += (
            f" Saved about {_usd(e['saved_usd'])} against running to the end "
            f"({e.get('steps_left')} more steps at {e.get('seconds_per_step', 0):.2f}s each)."
        )
    return text


def job_checkpoints(actor: Actor, session: Session, job_id: str) -> list[adapters.VersionInfo]:
    """The job's checkpoints, newest step first; a promoted one keeps its step and carries
    its version number."""
    repo.get_job(actor, session, job_id)  # another user's job is NotFound, not an empty list
    found = [v for v in repo.list_versions(actor, session, job_id=job_id) if v.is_checkpoint]
    return [adapters.info(actor, session, v) for v in sorted(found, key=lambda v: -(v.step or 0))]
