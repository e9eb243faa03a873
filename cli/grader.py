"""`brightrun grader test FILE --dataset ID`: a grader (OpenAI's grader JSON, see
`trainer.shared.graders`) run on a few rows of a dataset with given sample answers.

Each `--answer` is graded against each of the first `--rows` rows (`--answer-field NAME`
grades the row's own field as the answer instead, e.g. its reference: the grader should
give it full marks). One line per (row, answer): the score and, when the grader failed,
why. A grader that cannot be parsed exits 2 naming the field. Python graders run only in
the worker, never here: they score 0 with that reason; a score model needs the worker's
model endpoint too.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Graders for GRPO: try one on a dataset's rows before training.")


@app.command("test")
def test_grader(
    file: Path = typer.Argument(..., help="grader JSON file (OpenAI's grader format)"),
    dataset: str = typer.Option(..., "--dataset", help="dataset id whose rows are the items"),
    answers: list[str] = typer.Option([], "--answer", help="a sample answer (repeatable)"),
    answer_field: str = typer.Option("", "--answer-field", help="grade this row field"),
    rows: int = typer.Option(3, "--rows", min=1, max=100, help="rows to grade"),
) -> None:
    """Grade sample answers on the first rows of a dataset and print each score."""
    from cli.dataset import _with_dataset
    from core.errors import InvalidInput
    from core.grader_trial import parse_graders, try_graders

    try:
        graders = json.loads(file.read_text(encoding="utf-8"))
        parse_graders(graders)
    except (OSError, json.JSONDecodeError, InvalidInput) as e:
        typer.echo(f"error: {file.name}: {e}", err=True)
        raise typer.Exit(2) from None
    if not answers and not answer_field:
        typer.echo("error: give --answer TEXT (repeatable) or --answer-field NAME", err=True)
        raise typer.Exit(2)
    trials = _with_dataset(
        dataset,
        lambda a, s, st: try_graders(
            a, s, st, dataset, graders, list(answers), answer_field=answer_field, rows=rows
        ),
    )
    for t in trials:
        line = f"row {t.row}  answer {t.answer[:40]!r}  score {t.score:.4g}"
        typer.echo(line + (f"  failed: {t.error}" if t.error else ""))
