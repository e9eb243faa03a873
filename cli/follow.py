"""Following a job to its end: a live progress bar with loss, dollars and ETA, then one
outcome line (`brightrun train --wait`, `brightrun jobs retry/relaunch --wait`)."""

from __future__ import annotations

import time
from typing import Any

import typer

from cli.common import errors as _errors
from cli.common import money as _money


def job_stop_note(job: Any) -> str | None:
    """Why the job stopped before its last step, as the job page says it."""
    from core.queries import stop_note

    return stop_note(job.stop_reason, (job.result or {}).get("early_stopping"), job.step)


def follow(actor: Any, settings: Any, job_id: str, every_s: float = 2.0) -> int:
    """Sync the job until it ends, drawing a progress bar with loss and dollars. Returns the
    exit code: 0 when it completed."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from core import jobs
    from core.db.tables import TERMINAL_STATUSES, JobStatus

    columns = (
        TextColumn("{task.fields[status]:<11}"),
        BarColumn(),
        TextColumn("step {task.fields[steps]}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[cost]}"),
        TextColumn("eta {task.fields[eta]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(
            job_id, total=None, status=JobStatus.QUEUED, steps="-", loss="-", cost="$0", eta="-"
        )
        while True:
            try:
                job = jobs.sync(actor, settings, job_id)
            except _errors() as e:
                bar.console.print(f"[yellow]sync: {e}; trying again")
                time.sleep(every_s)
                continue
            bar.update(
                task,
                total=job.total_steps or None,
                completed=job.step or 0,
                status=job.status,
                steps=f"{job.step or 0}/{job.total_steps or '?'}",
                loss=f"{job.final_loss:.4f}" if job.final_loss is not None else "-",
                cost=_money(jobs.live_cost_usd(job)),
                eta=jobs.eta_text(job),
            )
            if job.status in TERMINAL_STATUSES:
                break
            time.sleep(every_s)
    _print_outcome(job)
    return 0 if job.status == JobStatus.COMPLETED else 1


def _print_outcome(job: Any) -> None:
    from core.db.tables import JobStatus

    line = f"job {job.id} {job.status}: {job.step or 0} steps, cost {_money(job.cost_usd)}"
    if job.final_loss is not None:
        line += f", final loss {job.final_loss:.4f}"
    if job.eval_loss is not None:
        line += f", eval loss {job.eval_loss:.4f}"
    if job.stop_reason and job.stop_reason != "finished":
        line += f" (stopped: {job.stop_reason})"
    typer.echo(line)
    note = job_stop_note(job)
    if note:
        typer.echo(note)
    if job.failure_message:
        typer.echo(f"{job.failure_kind}: {job.failure_message}")
        if job.failure_suggestion:
            typer.echo(f"suggestion: {job.failure_suggestion}")
    if job.status == JobStatus.COMPLETED and job.adapter_name:
        typer.echo(f"adapter: {job.adapter_name}")
