"""`brightrun jobs compare` and `brightrun jobs relaunch`: what the Jobs page does with runs
beyond one job's own buttons.

    brightrun jobs compare job-a job-b [--target-eval-loss 1.2] [--csv curves.csv] [--json]
    brightrun jobs relaunch JOB [--wait]

`compare`: 2 to 6 runs side by side, as the Jobs page's Compare view shows them
(`core.queries.compare_jobs`).
Prints each run (status, cost, best eval loss, cost to reach the target eval loss, its
adapter's evaluation scores) and the settings that differ, and writes the overlaid curves
(train and eval loss, learning rate, tokens/s against tokens seen) as CSV. No image: plotly's
image export needs the kaleido package and a browser it drives, which BrightRun does not
install; the CSV opens in any spreadsheet or plotting tool.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

from cli.tables import echo_table


def compare(
    job_ids: list[str] = typer.Argument(..., help="2 to 6 job ids (see `brightrun jobs list`)"),
    target: float | None = typer.Option(
        None,
        "--target-eval-loss",
        help="price reaching this eval loss (default: the loss every run reached, when they used one method)",
    ),
    csv_path: Path = typer.Option(Path("compare.csv"), "--csv", help="where to write the curves"),
    as_json: bool = typer.Option(False, "--json", help="print everything as JSON (no CSV written)"),
) -> None:
    """Compare runs: losses against tokens seen, cost to reach an eval loss, the settings
    that differ and their adapters' evaluation scores."""
    from cli.common import actor as _actor
    from cli.common import errors as _errors
    from cli.common import fail as _fail
    from cli.common import settings as _settings
    from core import db, queries

    settings = _settings()
    try:
        with db.session_scope(settings) as s:
            cmp = queries.compare_jobs(_actor(settings), s, job_ids, target)
    except _errors() as e:
        _fail(e)
    if as_json:
        typer.echo(json.dumps(asdict(cmp), indent=1, default=str))
        return
    echo_table(cmp.summary_table())
    for note in cmp.metric_notes():
        typer.echo(note)
    typer.echo("")
    if cmp.settings:
        typer.echo("settings that differ:")
        echo_table(cmp.settings_table())
    else:
        typer.echo("all settings are the same")
    for r in cmp.runs:
        if r.note:
            typer.echo(f"{r.label}: {r.note}")
    csv_path.write_text(cmp.curves_csv())
    typer.echo(
        f"\ncurves (train and eval loss, learning rate, tokens/s against tokens seen): {csv_path}"
    )


def relaunch(
    job_id: str = typer.Argument(..., help="a failed job's id"),
    wait: bool = typer.Option(False, "--wait", help="follow the new job until it ends"),
) -> None:
    """Launch a failed job again as a new job with the settings its failure suggests
    (lighter memory settings after running out of memory, a lower learning rate with warmup
    after divergence), as the job page's "Relaunch with suggested settings" does."""
    from cli.common import actor as _actor
    from cli.common import errors as _errors
    from cli.common import fail as _fail
    from cli.common import settings as _settings
    from cli.follow import follow
    from core import jobs

    settings = _settings()
    actor = _actor(settings)
    try:
        job = jobs.relaunch(actor, settings, job_id)
    except _errors() as e:
        _fail(e)
    changed = {
        "training": (job.spec or {}).get("training", {}),
        "quantization": (job.spec or {}).get("quantization"),
    }
    typer.echo(f"job {job.id} {job.status}: relaunch of {job_id} with {json.dumps(changed)}")
    if wait:
        raise typer.Exit(follow(actor, settings, job.id))
