"""The end of a job: which status it ends with, and what is recorded then.

Status precedence when sources disagree: RunPod's own CANCELLED/TIMED_OUT win; otherwise
the worker's last `completed`/`failed` event of this attempt decides COMPLETED/FAILED; a
job the endpoint forgot without a final event is TIMED_OUT (`ttl_expired`) once its
`policy.ttl` had passed (the platform deletes such a job even mid-run, killing its worker),
else FAILED (`lost`); one that ended without reporting a result is FAILED (`internal`). The billed cost is recorded, and a completed
training job's adapter is registered as its next version (`core.adapters`); when its
files are not in storage the job is FAILED instead. A completed job's eval loss is its
summary's (the adapter's: with early stopping, the best evaluation's); one that early
stopping ended keeps what that saved in `result['early_stopping']`
(`billing.early_stop_savings`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy.orm import Session

from core import adapters
from core.clients.storage import BlobStore
from core.db import repo
from core.db.tables import Job, JobStatus, utcnow
from core.jobs.billing import attempt_seq, early_stop_savings, measured_rate, record_cost
from core.jobs.pull import Pulled
from core.jobs.window import hours
from core.users import Actor


def final_event(events: Iterable[Any]) -> Any:
    """The last `completed` or `failed` event among `events` (None when there is none)."""
    last = None
    for e in events:
        if getattr(e, "type", None) in ("completed", "failed") and (
            last is None or e.seq > last.seq
        ):
            last = e
    return last


# The endpoint starts a job's ttl when it takes the job, a little before BrightRun records
# it as sent, and clocks differ: a job gone this close to its ttl was deleted for it.
TTL_SLACK_S = 30.0


def ttl_passed(job: Job, now: dt.datetime | None = None) -> bool:
    """Whether the job's `policy.ttl` (recorded when it was sent) has passed since then."""
    ttl_ms = (job.result or {}).get("ttl_ms")
    if not ttl_ms or job.submitted_at is None:
        return False
    submitted = job.submitted_at
    if submitted.tzinfo is None:
        submitted = submitted.replace(tzinfo=dt.UTC)
    age_s = ((now or utcnow()) - submitted).total_seconds()
    return age_s + TTL_SLACK_S >= float(ttl_ms) / 1000


def _outcome(job: Job, pulled: Pulled, final: Any) -> dict[str, Any]:
    """Status, stop reason and failure of the ended job (see the module docstring)."""
    if pulled.status == JobStatus.CANCELLED:
        return {"status": JobStatus.CANCELLED, "stop_reason": job.stop_reason or "user"}
    if pulled.status == JobStatus.TIMED_OUT:
        return dict(
            status=JobStatus.TIMED_OUT,
            stop_reason="budget",
            failure_kind="timed_out",
            failure_message=(
                "the endpoint stopped the job at its time limit, derived from its budget "
                f"${job.budget_usd or 0:.2f}; its checkpoints stay on the volume"
            ),
            failure_suggestion="retry with a larger budget to continue from the last checkpoint",
        )
    if final is not None and final.type == "completed":
        reason = (final.data or {}).get("reason") or "finished"
        return {
            "status": JobStatus.COMPLETED,
            "stop_reason": reason,
            "progress": 1.0 if reason == "finished" else job.progress,
        }
    if final is not None:
        data = final.data or {}
        return dict(
            status=JobStatus.CANCELLED if data.get("kind") == "cancelled" else JobStatus.FAILED,
            failure_kind=data.get("kind"),
            failure_message=data.get("message"),
            failure_suggestion=data.get("suggestion"),
        )
    if pulled.gone and ttl_passed(job):
        ttl_s = float((job.result or {})["ttl_ms"]) / 1000
        return dict(
            status=JobStatus.TIMED_OUT,
            stop_reason="ttl",
            failure_kind="ttl_expired",
            failure_message=(
                f"the endpoint deleted the job when its time to live ({hours(ttl_s)}, waiting "
                "plus running) passed, before the worker reported a result; its checkpoints "
                "stay on the volume"
            ),
            failure_suggestion="retry the job; it resumes from its last checkpoint on the volume",
        )
    if pulled.gone:
        return dict(
            status=JobStatus.FAILED,
            failure_kind="lost",
            failure_message="the endpoint no longer knows this job and the worker left no result",
            failure_suggestion="retry the job; it resumes from its last checkpoint on the volume",
        )
    return dict(
        status=JobStatus.FAILED,
        failure_kind="internal",
        failure_message=_platform_failure(pulled),
        failure_suggestion="retry the job; if it fails again, look at the endpoint's logs",
    )


def _platform_failure(pulled: Pulled) -> str:
    """What the platform says of a job whose worker reported no final event."""
    error = pulled.error
    if error is None:
        return f"the worker ended without reporting a result ({pulled.status})"
    what = f"{error.type}: {error.message}" if error.type else error.message
    return f"the worker ended without reporting a result: {what}"


def finish(actor: Actor, s: Session, job: Job, pulled: Pulled, store: BlobStore) -> dict[str, Any]:
    """The fields of a job that has ended; records its cost and registers its adapter."""
    events = repo.list_events(
        actor, s, job.id, after_seq=attempt_seq(job) - 1, types=["completed", "failed"]
    )
    final = final_event(events)
    fields: dict[str, Any] = {"finished_at": utcnow(), "eta_s": 0.0, **_outcome(job, pulled, final)}
    if pulled.delay_ms is not None:
        fields["delay_ms"] = pulled.delay_ms
    if pulled.execution_ms is not None:
        fields["execution_ms"] = pulled.execution_ms
    fields.update(record_cost(actor, s, job, pulled.execution_ms, pulled.delay_ms))
    result = dict(job.result or {})
    if final is not None:
        result["final"] = {"seq": final.seq, "type": final.type, "data": final.data}
    if pulled.stored_result:
        result["stored"] = pulled.stored_result
    fields["result"] = result
    if fields["status"] == JobStatus.COMPLETED and job.action == "train":
        fields.update(_completed_training(job, final, result))
        fields["tokens_per_s"] = measured_rate(actor, s, job, final)
        if adapters.register_job_version(actor, s, job, final, store) is None:
            fields.update(
                status=JobStatus.FAILED,
                failure_kind="internal",
                failure_message="the worker reported success but its adapter files are not in storage",
                failure_suggestion="retry the job; it resumes from its last checkpoint",
            )
    return fields


def _completed_training(job: Job, final: Any, result: dict[str, Any]) -> dict[str, Any]:
    """The adapter's eval loss from the summary, and what early stopping saved (in `result`)."""
    summary = (final.data or {}).get("summary") or {}
    fields: dict[str, Any] = {}
    if isinstance(summary.get("eval_loss"), int | float):
        fields["eval_loss"] = float(summary["eval_loss"])
    if (final.data or {}).get("reason") == "early_stopping":
        saved = early_stop_savings(summary, float(job.rate_per_s or 0.0))
        if saved is not None:
            given = ((job.spec or {}).get("training") or {}).get("early_stopping") or {}
            result["early_stopping"] = {**saved, **given}
    return fields
