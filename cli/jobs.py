"""`brightrun jobs ...` and `brightrun sync`: list, show, cancel, retry jobs, their events,
and the background syncer.

    brightrun jobs list | show ID | cancel ID | retry ID | events ID
    brightrun jobs compare ID ID ... | relaunch ID   (cli/runs.py)
    brightrun sync [--once]

`brightrun train` is cli/train.py. Errors come back as one line naming what is wrong, exit
code 1 (2 for bad input).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import typer

from cli.common import actor as _actor
from cli.common import errors as _errors
from cli.common import fail as _fail
from cli.common import money as _money
from cli.common import settings as _settings
from cli.follow import follow, job_stop_note

app = typer.Typer(help="Training jobs: list, show, cancel, retry, and their event history.")


def job_summary(job: Any) -> dict[str, Any]:
    """The fields `jobs show --json` prints (no spec URLs, no secrets)."""
    from core.jobs import live_cost_usd

    keys = (
        "id",
        "status",
        "base_model",
        "adapter_name",
        "dataset_id",
        "gpu_type",
        "price_tier",
        "rate_per_s",
        "budget_usd",
        "step",
        "total_steps",
        "progress",
        "eta_s",
        "final_loss",
        "eval_loss",
        "delay_ms",
        "execution_ms",
        "billed_s",
        "attempt",
        "stop_reason",
        "failure_kind",
        "failure_message",
        "failure_suggestion",
        "runpod_job_id",
        "parent_job_id",
    )
    out = {k: getattr(job, k) for k in keys}
    out["cost_usd"] = round(live_cost_usd(job), 6)
    early = (job.result or {}).get("early_stopping")
    if early:
        out["early_stopping"] = early
    for k in ("created_at", "started_at", "finished_at"):
        v = getattr(job, k)
        out[k] = v.isoformat() if v else None
    return out


# --------------------------------------------------------------------------- jobs


@app.command("list")
def list_(
    status: list[str] = typer.Option([], "--status", help="only these statuses (repeatable)"),
    limit: int = typer.Option(50, "--limit", help="at most this many, newest first"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """List your jobs, newest first."""
    from core import jobs

    settings = _settings()
    rows = jobs.list_jobs(_actor(settings), settings, statuses=status or None, limit=limit)
    if as_json:
        typer.echo(json.dumps([job_summary(j) for j in rows], indent=1))
        return
    if not rows:
        typer.echo("no jobs yet: `brightrun train --help`")
        return
    for j in rows:
        steps = f"{j.step or 0}/{j.total_steps or '?'}"
        loss = f"{j.final_loss:.4f}" if j.final_loss is not None else "-"
        typer.echo(
            f"{j.id}  {j.status:<11} {j.created_at:%Y-%m-%d %H:%M}  {steps:>11}  loss {loss:<8} "
            f"{_money(jobs.live_cost_usd(j)):>9}  {j.adapter_name or j.base_model}"
        )


@app.command()
def show(
    job_id: str = typer.Argument(..., help="job id"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    sync: bool = typer.Option(True, help="bring the job up to date with the endpoint first"),
) -> None:
    """Show one job: status, progress, losses, cost, why it failed if it did, and a GRPO
    job's sample completions of its newest step with their scores."""
    from core import jobs

    settings = _settings()
    actor = _actor(settings)
    try:
        job = jobs.sync(actor, settings, job_id) if sync else jobs.get(actor, settings, job_id)
    except _errors() as e:
        _fail(e)
    info = job_summary(job)
    step, samples = _latest_samples(actor, settings, job.id)
    if as_json:
        typer.echo(json.dumps(info | {"samples": [asdict(x) for x in samples]}, indent=1))
        return
    for k, v in info.items():
        if v is not None:
            typer.echo(f"{k:>18}: {v}")
    note = job_stop_note(job)
    if note:
        typer.echo(f"{'stopped':>18}: {note}")
    if job.gpu_type == "LOCAL_CPU":
        typer.echo(f"{'note':>18}: ran on this machine's CPU, priced at the configured GPU's rate")
    _echo_samples(step, samples)


def _latest_samples(actor: Any, settings: Any, job_id: str) -> tuple[Any, list[Any]]:
    """The newest logged step and the sample completions its metrics carry (GRPO's)."""
    from core import db, queries

    try:
        with db.session_scope(settings) as s:
            last = queries.last_metrics(actor, s, job_id)
    except _errors() as e:
        _fail(e)
    return last.get("step"), queries.shown_samples(last)


def _score(v: float | None) -> str:
    return f"{v:.3f}" if v is not None else "-"


def _echo_samples(step: Any, samples: list[Any]) -> None:
    """A GRPO job's sample completions of its newest step, with their scores."""
    if not samples:
        return
    typer.echo(f"{'samples':>18}: at step {step}")
    indent = "\n" + " " * 20
    for n, x in enumerate(samples, 1):
        scores = "".join(f", {k} {_score(v)}" for k, v in x.scores.items())
        typer.echo(f"{n:>18}. reward {_score(x.reward)}{scores}")
        typer.echo(" " * 20 + "prompt: " + x.prompt.replace("\n", indent))
        typer.echo(" " * 20 + "completion: " + x.completion.replace("\n", indent))


@app.command()
def cancel(job_id: str = typer.Argument(..., help="job id")) -> None:
    """Stop a queued or running job. Its checkpoints stay, so a retry continues from them."""
    from core import jobs

    settings = _settings()
    try:
        job = jobs.cancel(_actor(settings), settings, job_id)
    except _errors() as e:
        _fail(e)
    typer.echo(f"job {job.id} {job.status}; cost so far {_money(job.cost_usd)}")


@app.command()
def retry(
    job_id: str = typer.Argument(..., help="job id"),
    budget: float = typer.Option(
        0.0, "--budget", help="new total budget in dollars (default: what is left)"
    ),
    wait: bool = typer.Option(False, "--wait", help="follow the job until it ends"),
) -> None:
    """Run a failed, cancelled or timed-out job again; it resumes from its last checkpoint."""
    from core import jobs

    settings = _settings()
    actor = _actor(settings)
    try:
        job = jobs.retry(actor, settings, job_id, budget_usd=budget or None)
    except _errors() as e:
        _fail(e)
    typer.echo(f"job {job.id} {job.status} (attempt {job.attempt + 1})")
    if wait:
        raise typer.Exit(follow(actor, settings, job.id))


@app.command()
def events(
    job_id: str = typer.Argument(..., help="job id"),
    type_: list[str] = typer.Option([], "--type", help="only these event types (repeatable)"),
    after: int = typer.Option(-1, "--after", help="only events with a larger sequence number"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
) -> None:
    """Print a job's stored events (started, metrics, checkpoint, completed, failed) in order."""
    from core import jobs

    settings = _settings()
    try:
        rows = jobs.events(_actor(settings), settings, job_id, after_seq=after, types=type_ or None)
    except _errors() as e:
        _fail(e)
    for e in rows:
        if as_json:
            typer.echo(json.dumps({"seq": e.seq, "type": e.type, "ts": e.ts, "data": e.data}))
        elif e.type == "metrics":
            d = e.data
            extra = f" eval {d['eval_loss']:.4f}" if d.get("eval_loss") is not None else ""
            typer.echo(f"{e.seq:>6} metrics   step {d.get('step')} loss {d.get('loss')}{extra}")
        else:
            summary = {k: v for k, v in (e.data or {}).items() if not isinstance(v, dict | list)}
            typer.echo(f"{e.seq:>6} {e.type:<9} {json.dumps(summary)[:200]}")


# --------------------------------------------------------------------------- sync


def sync_command(
    once: bool = typer.Option(False, "--once", help="one pass over the unfinished jobs, then exit"),
    interval: float = typer.Option(
        0.0, "--interval", help="seconds between passes (default: SYNC_INTERVAL_S)"
    ),
) -> None:
    """Keep every unfinished job in step with the endpoint (the background syncer that
    `brightrun up` starts; runnable as a service). Backfills from storage when the endpoint
    has forgotten a job, and posts end-of-job notifications."""
    import logging

    from core import syncer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs request URLs at INFO
    settings = _settings()

    def report_line(r: Any) -> None:
        typer.echo(f"synced {r.synced}, ended {r.ended}, errors {len(r.errors)}")

    try:
        syncer.run(
            settings,
            interval_s=interval or None,
            passes=1 if once else None,
            on_pass=report_line if once else None,
        )
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
