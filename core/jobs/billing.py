"""What a job costs: billed seconds, live cost, the earlier attempts' cost, and its speed.

Cost: billed seconds (`executionTime` plus the worker's reported cold start, rounded up)
x the job's rate, the rate of the GPU that ran once the worker reported it (`ran_on`); while running, elapsed since the worker started x rate. A retried job
keeps its earlier attempts' dollars in `result['prior_cost_usd']` and numbers this
attempt's events from `result['attempt_first_seq']`.

A job that early stopping ended records in `result['early_stopping']` what running to its
last step would have cost on top (`early_stop_savings`): the steps left x the seconds per
step it measured (training seconds over steps, across attempts) x its rate.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from sqlalchemy.orm import Session

from core import planner
from core.db import repo
from core.db.tables import TERMINAL_STATUSES, Job, utcnow
from core.users import Actor


def attempt_seq(job: Job) -> int:
    """The first event sequence number of the job's current attempt."""
    return int((job.result or {}).get("attempt_first_seq", 0)) if job.attempt else 0


def prior_cost(job: Job) -> float:
    """Dollars recorded for this job's earlier attempts (kept in `result['prior_cost_usd']`)."""
    return float((job.result or {}).get("prior_cost_usd", 0.0)) if job.attempt else 0.0


def reserved_usd(job: Job) -> float:
    """What an unfinished job may still spend this attempt (earlier attempts are recorded)."""
    prior = prior_cost(job)
    return max((job.budget_usd or 0.0) - prior, (job.cost_usd or 0.0) - prior, 0.0)


def live_cost_usd(job: Job, now: dt.datetime | None = None) -> float:
    """What the job has cost so far: its recorded cost once ended, else elapsed x rate."""
    if job.status in TERMINAL_STATUSES or job.started_at is None:
        return float(job.cost_usd or 0.0)
    elapsed = ((now or utcnow()) - job.started_at).total_seconds()
    return prior_cost(job) + planner.live_cost_usd(elapsed, job.rate_per_s)


def running_cost_usd(job: Job, started: dt.datetime | None) -> float | None:
    """This attempt's cost while it runs, from when its worker started (None: not yet)."""
    if started is None:
        return None
    elapsed = max(0.0, (utcnow() - started).total_seconds())
    return prior_cost(job) + planner.live_cost_usd(elapsed, job.rate_per_s)


def eta_text(job: Job) -> str:
    if job.eta_s is None:
        return "-"
    m, s_ = divmod(int(math.ceil(job.eta_s)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s_:02d}s"


def ran_on(actor: Actor, s: Session, job: Job, settings: Any) -> dict[str, Any]:
    """The GPU type and rate of the GPU this attempt's worker reported (its `started`
    event's device), when it is not the one the job was priced as: the endpoint may pick
    any of its pools, and the job is billed and its speed learned by the one that ran.
    Nothing for a local job or a device the price table does not know."""
    from core.deploy.catalog import gpu_market, priced
    from core.jobs.pricing import LOCAL_GPU, rate_of

    if job.gpu_type == LOCAL_GPU:
        return {}
    started = repo.list_events(actor, s, job.id, after_seq=attempt_seq(job) - 1, types=["started"])
    model = ((started[-1].data or {}).get("model") or {}) if started else {}
    gpu = planner.gpu_type_for_device(model.get("device_name"))
    if gpu is None or gpu == job.gpu_type:
        return {}
    rate = rate_of(job.price_tier, gpu, priced(settings, gpu_market(settings)))
    return {"gpu_type": gpu, "rate_per_s": rate * int((job.spec or {}).get("gpus") or 1)}


def billed_s(
    actor: Actor, s: Session, job: Job, execution_ms: int | None, delay_ms: int | None
) -> float:
    """Billed seconds of this attempt.

    `executionTime` covers the handler (model loading included). The worker's boot before
    it took the job (container start, imports) is billed too but sits in `delayTime`; it is
    counted when the worker process started after the job was queued, i.e. this job woke
    it (process uptime minus setup time, at most `delayTime`). When the endpoint forgot the
    job, the worker's own clock is used: setup plus the span from its `started` event to its
    last event.
    """
    started = repo.list_events(actor, s, job.id, after_seq=attempt_seq(job) - 1, types=["started"])
    data = (started[-1].data or {}) if started else {}
    setup_s = float(data.get("cold_start_s") or 0.0)
    boot_s = max(0.0, float(data.get("process_uptime_s") or 0.0) - setup_s)
    if execution_ms is not None:
        woke = delay_ms is not None and boot_s * 1000 <= delay_ms
        boot_ms = boot_s * 1000 if woke else 0.0
        return planner.billed_seconds(execution_ms, cold_start_ms=boot_ms)
    if started:
        later = repo.list_events(actor, s, job.id, after_seq=started[-1].seq - 1)
        last_ts = max(e.ts for e in later)
        return planner.billed_seconds((setup_s + last_ts - started[-1].ts) * 1000)
    if job.started_at is not None:
        return planner.billed_seconds((utcnow() - job.started_at).total_seconds() * 1000)
    return 0


def record_cost(
    actor: Actor, s: Session, job: Job, execution_ms: int | None, delay_ms: int | None
) -> dict[str, Any]:
    """Record this attempt's billed cost; the job's `billed_s` and total `cost_usd` fields."""
    billed = billed_s(actor, s, job, execution_ms, delay_ms)
    usd = planner.job_cost_usd(billed, job.rate_per_s)
    repo.record_cost(actor, s, job_id=job.id, seconds=billed, usd=usd, attempt=job.attempt)
    return {"billed_s": int(billed), "cost_usd": prior_cost(job) + usd}


def measured_rate(actor: Actor, s: Session, job: Job, final: Any) -> float | None:
    """The tokens/s a completed train job achieved (`estimate.measured_tokens_per_s`): from
    its summary, else the median of its metrics events; what the planner learns from."""
    from core.planner import measured_tokens_per_s

    summary = ((final.data or {}) if final is not None else {}).get("summary")
    rate = measured_tokens_per_s(summary)
    if rate is None:
        metrics = repo.list_events(actor, s, job.id, types=["metrics"])
        rate = measured_tokens_per_s(None, [m.data or {} for m in metrics])
    return rate


def early_stop_savings(summary: dict[str, Any] | None, rate_per_s: float) -> dict[str, Any] | None:
    """What stopping early saved, from a `completed` event's summary: steps left, measured
    seconds per step, dollars (None when the summary lacks the steps or the seconds)."""
    s = summary or {}
    steps, total, seconds = s.get("steps"), s.get("total_steps"), s.get("train_seconds")
    if not (isinstance(steps, int) and isinstance(total, int) and steps > 0):
        return None
    if not isinstance(seconds, int | float) or seconds <= 0:
        return None
    per_step = float(seconds) / steps
    left = max(0, total - steps)
    return {
        "step": steps,
        "total_steps": total,
        "steps_left": left,
        "seconds_per_step": round(per_step, 4),
        "saved_usd": round(left * per_step * rate_per_s, 6),
        "best_step": s.get("best_step"),
        "best_eval_loss": s.get("best_eval_loss"),
    }
