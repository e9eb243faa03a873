"""`brightrun grader test`: a grader on a dataset's first rows with given answers; a
broken grader exits 2 naming the field; python graders are not run outside the worker."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cli import app

ROWS = [
    {"messages": [{"role": "user", "content": f"What is {i} + {i}?"}], "answer": str(2 * i)}
    for i in range(1, 5)
]
CHECK = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "operation": "eq",
}


def _dataset(data_dir: Path) -> str:
    from core import db
    from core.settings import load_settings
    from core.users import LOCAL_ACTOR
    from tests.jobs.helpers import add_dataset

    settings = load_settings()
    db.upgrade(settings)
    try:
        return add_dataset(settings, LOCAL_ACTOR, ROWS, name="sums")
    finally:
        db.dispose_engines()


def test_a_grader_is_tried_on_rows_with_given_answers(data_dir: Path, tmp_path: Path) -> None:
    dataset = _dataset(data_dir)
    grader = tmp_path / "grader.json"
    grader.write_text(json.dumps(CHECK))
    r = CliRunner().invoke(
        app,
        ["grader", "test", str(grader), "--dataset", dataset, "--answer", "4", "--rows", "2"],
    )
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == [
        "row 1  answer '4'  score 0",
        "row 2  answer '4'  score 1",
    ]
    own = CliRunner().invoke(
        app, ["grader", "test", str(grader), "--dataset", dataset, "--answer-field", "answer"]
    )
    assert [line.endswith("score 1") for line in own.output.splitlines()] == [True] * 3


def test_a_broken_or_python_grader(data_dir: Path, tmp_path: Path) -> None:
    dataset = _dataset(data_dir)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({**CHECK, "operation": "gt"}))
    r = CliRunner().invoke(app, ["grader", "test", str(broken), "--dataset", dataset])
    assert r.exit_code == 2 and "operation must be one of" in r.output
    python = tmp_path / "py.json"
    python.write_text(json.dumps({"type": "python", "source": "def grade(s, i):\n  return 1"}))
    r = CliRunner().invoke(
        app, ["grader", "test", str(python), "--dataset", dataset, "--answer", "x", "--rows", "1"]
    )
    assert (
        r.exit_code == 0
        and "score 0  failed: python grader 'python' runs only in the worker" in r.output
    )


def test_train_takes_graders_from_a_file(tmp_path: Path) -> None:
    import pytest

    from cli.train import grpo_setting
    from core.errors import InvalidInput

    one = tmp_path / "one.json"
    one.write_text(json.dumps(CHECK))
    assert grpo_setting(one, 8, None) == {"graders": [CHECK], "num_generations": 8}
    many = tmp_path / "many.json"
    many.write_text(json.dumps([CHECK, {**CHECK, "name": "other"}]))
    assert len(grpo_setting(many, None, 16)["graders"]) == 2
    assert grpo_setting(None, None, None) is None
    with pytest.raises(InvalidInput, match="need --graders"):
        grpo_setting(None, 4, None)
