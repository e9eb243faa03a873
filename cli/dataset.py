"""`brightrun dataset`: inspect, store and manage training data.

    brightrun dataset inspect FILE [--model M] [--max-length N] [--json]
    brightrun dataset add FILE [--name NAME] [--drop-bad-rows] [--model M]
    brightrun dataset list | show ID | preview ID | rename ID NAME | delete ID

`inspect` exits 0 when the file has valid rows and 2 when it cannot be used (the reason
is printed, or is `reason` in the --json object).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from cli.common import actor as _actor

app = typer.Typer(help="Datasets: inspect a file, store it, list, preview, rename, delete.")

_MODEL_HELP = (
    "model whose tokenizer and chat template measure the tokens (catalog id, folder or hub id)"
)


def _tokenizer(model: str, settings: Any) -> Any:
    if not model:
        return None
    from core.datasets import load_tokenizer

    return load_tokenizer(model, settings.data_dir / "models")


def _print_report(rep: dict[str, Any]) -> None:
    typer.echo(f"format: {rep['format'] or '?'}   layout: {rep['layout'] or '?'}")
    typer.echo(
        f"rows: {rep['rows']}   valid: {rep['valid_rows']}   with problems: {rep['invalid_rows']}"
        f"   exact duplicates: {rep['duplicates']}"
    )
    split = rep["split"]
    typer.echo(f"split: {split['train_rows']} train / {split['eval_rows']} eval")
    if rep["problems"]:
        typer.echo("problems: " + ", ".join(f"{k} {n}" for k, n in rep["problems"].items()))
        for p in rep["problem_examples"][:10]:
            where = f" [{p['field']}]" if p["field"] else ""
            typer.echo(f"  row {p['row']}{where}: {p['message']}")
    scores = rep.get("scores") or {}
    if scores.get("chosen"):
        c = scores["chosen"]
        typer.echo(
            f"scores on {scores['rows']} pairs: chosen {c['min']}..{c['max']} (mean {c['mean']}),"
            f" rejected scored higher in {scores['rows_rejected_scored_higher']}"
        )
    for line in rep.get("notes") or []:
        typer.echo(f"note: {line}")
    tok = rep["tokens"]
    if tok.get("available"):
        if tok.get("measured_rows"):
            pr = tok["per_row"]
            sampled = f" (first {tok['measured_rows']} rows)" if tok.get("sampled") else ""
            typer.echo(
                f"tokens{sampled}: total {tok['total']}, per row min {pr['min']} / median {pr['median']:.0f}"
                f" / p95 {pr['p95']:.0f} / max {pr['max']}; loss on {tok['loss_share']:.1%};"
                f" {tok['truncated_rows']} chat rows truncated at {tok['max_length']}"
            )
            if tok.get("split_rows"):
                typer.echo(
                    f"  {tok['split_rows']} text rows longer than {tok['max_length']}: split into"
                    f" {tok['windows']} windows, no token lost"
                )
        if tok.get("unmeasured_chat_rows"):
            typer.echo(
                f"  {tok['unmeasured_chat_rows']} chat rows not measured: {tok['unmeasured_reason']}"
            )
    elif tok:
        typer.echo(f"tokens: not measured: {tok.get('reason')}")


@app.command()
def inspect(
    file: Path = typer.Argument(..., help="JSONL, JSON, CSV or Parquet file"),
    model: str = typer.Option("", "--model", "-m", help=_MODEL_HELP),
    max_length: int = typer.Option(2048, "--max-length", help="training max length in tokens"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    token_rows: int = typer.Option(10_000, "--token-rows", help="rows to tokenize; 0: all"),
) -> None:
    """Detect the format, validate every row, and measure tokens; stores nothing.
    Exit code 0 when there are valid rows, 2 when the file cannot be used."""
    from core.datasets import inspect_file
    from core.errors import InvalidInput
    from core.settings import load_settings

    settings = load_settings()
    if not file.is_file():
        _fail(as_json, f"no such file: {file}")
    try:
        report = inspect_file(
            file, _tokenizer(model, settings), max_length, token_rows=token_rows or None
        )
    except InvalidInput as e:
        _fail(as_json, str(e))
    rep = report.to_dict()
    if as_json:
        typer.echo(json.dumps(rep, ensure_ascii=False))
    else:
        _print_report(rep)
        if not report.usable:
            typer.echo(f"cannot be used: {report.why_unusable()}", err=True)
    raise typer.Exit(0 if report.usable else 2)


def _fail(as_json: bool, reason: str) -> None:
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "format": None,
                    "rows": 0,
                    "valid_rows": 0,
                    "problems": {},
                    "tokens": {},
                    "usable": False,
                    "reason": reason,
                }
            )
        )
    else:
        typer.echo(f"cannot be used: {reason}", err=True)
    raise typer.Exit(2)


@app.command()
def add(
    file: Path = typer.Argument(..., help="JSONL, JSON, CSV or Parquet file"),
    name: str = typer.Option(None, "--name", help="display name (default: from the file name)"),
    drop_bad_rows: bool = typer.Option(
        False,
        "--drop-bad-rows",
        help="store the valid rows and drop the rest (default: refuse a file with bad rows)",
    ),
    model: str = typer.Option("", "--model", "-m", help=_MODEL_HELP),
    max_length: int = typer.Option(2048, "--max-length", help="training max length in tokens"),
    eval_fraction: float = typer.Option(
        0.05, "--eval-fraction", help="share of rows held out for evaluation (0-0.5)"
    ),
) -> None:
    """Validate, normalise and store a dataset (original and chat JSONL); prints its id."""
    from core import datasets
    from core.clients.storage import make_blob_store
    from core.db import session_scope, upgrade
    from core.errors import BrightRunError
    from core.settings import load_settings

    settings = load_settings()
    upgrade(settings)
    try:
        with session_scope(settings) as session:
            ds, report = datasets.add_dataset(
                _actor(settings),
                session,
                make_blob_store(settings),
                file,
                name,
                tokenizer=_tokenizer(model, settings),
                max_length=max_length,
                on_bad_rows="drop" if drop_bad_rows else "reject",
                eval_fraction=eval_fraction,
                max_bytes=settings.max_upload_mb * 1024 * 1024,
            )
            ds_id, ds_name = ds.id, ds.name
    except FileNotFoundError:
        typer.echo(f"no such file: {file}", err=True)
        raise typer.Exit(2) from None
    except BrightRunError as e:
        typer.echo(f"not stored: {e}", err=True)
        raise typer.Exit(2) from None
    dropped = f", {report.invalid_rows} bad rows dropped" if report.invalid_rows else ""
    typer.echo(f"stored {ds_id} {ds_name!r}: {report.valid_rows} rows ({report.layout}){dropped}")


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Your datasets, newest first."""
    from core import datasets
    from core.db import session_scope, upgrade
    from core.settings import load_settings

    settings = load_settings()
    upgrade(settings)
    with session_scope(settings) as session:
        rows = [
            {
                "id": d.id,
                "name": d.name,
                "layout": d.layout,
                "format": d.file_format,
                "rows": d.valid_rows,
                "created_at": d.created_at.isoformat(timespec="seconds"),
            }
            for d in datasets.list_datasets(_actor(settings), session)
        ]
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    if not rows:
        typer.echo("no datasets yet: add one with `brightrun dataset add FILE`")
        return
    for r in rows:
        typer.echo(
            f"{r['id']}  {r['name']}  {r['rows']} rows  {r['layout']}/{r['format']}  {r['created_at']}"
        )


def _with_dataset(dataset_id: str, fn: Any) -> Any:
    from core.clients.storage import make_blob_store
    from core.db import session_scope, upgrade
    from core.errors import BrightRunError
    from core.settings import load_settings

    settings = load_settings()
    upgrade(settings)
    try:
        with session_scope(settings) as session:
            return fn(_actor(settings), session, make_blob_store(settings))
    except BrightRunError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1) from None


@app.command()
def show(dataset_id: str = typer.Argument(..., help="dataset id")) -> None:
    """A dataset's report: counts, problems, tokens, split."""
    from core import datasets

    stats = _with_dataset(dataset_id, lambda a, s, st: datasets.get_dataset(a, s, dataset_id).stats)
    _print_report(stats)


@app.command()
def preview(
    dataset_id: str = typer.Argument(..., help="dataset id"),
    n: int = typer.Option(5, "-n", help="rows to show"),
    split: str = typer.Option("train", help="train or eval"),
) -> None:
    """The first normalised rows, as JSON lines."""
    from core import datasets

    rows = _with_dataset(
        dataset_id, lambda a, s, st: datasets.preview_rows(a, s, st, dataset_id, n, split)
    )  # type: ignore[arg-type]
    for r in rows:
        typer.echo(json.dumps(r, ensure_ascii=False))


@app.command()
def rename(
    dataset_id: str = typer.Argument(..., help="dataset id"),
    name: str = typer.Argument(..., help="new name"),
) -> None:
    """Give a dataset a new display name."""
    from core import datasets

    _with_dataset(dataset_id, lambda a, s, st: datasets.rename_dataset(a, s, dataset_id, name))
    typer.echo(f"renamed {dataset_id} to {name!r}")


@app.command()
def delete(dataset_id: str = typer.Argument(..., help="dataset id")) -> None:
    """Delete a dataset's files (the name stays in job history). Refused while a job uses it."""
    from core import datasets

    _with_dataset(dataset_id, lambda a, s, st: datasets.delete_dataset(a, s, st, dataset_id))
    typer.echo(f"deleted {dataset_id}")
