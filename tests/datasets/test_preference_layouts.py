"""Preference data: each layout detected and normalised to the trainer's pair shape, bad
pairs named, and pairs measured with the model's template (cut pairs named)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.datasets import inspect_file
from tests.datasets.helpers import write_jsonl

PAIR = {
    "prompt": [{"role": "user", "content": "Name a fruit."}],
    "chosen": [{"role": "assistant", "content": "An apple."}],
    "rejected": [{"role": "assistant", "content": "A hammer."}],
}
LAYOUT_ROWS = {
    "preference": {"prompt": "Name a fruit.", "chosen": "An apple.", "rejected": "A hammer."},
    "preference_openai": {
        "input": {"messages": [{"role": "user", "content": "Name a fruit."}]},
        "preferred_output": [{"role": "assistant", "content": "An apple."}],
        "non_preferred_output": [{"role": "assistant", "content": "A hammer."}],
    },
    "preference_sharegpt": {
        "conversations": [{"from": "human", "value": "Name a fruit."}],
        "chosen": {"from": "gpt", "value": "An apple."},
        "rejected": {"from": "gpt", "value": "A hammer."},
    },
}


@pytest.mark.parametrize("layout", sorted(LAYOUT_ROWS))
def test_each_preference_layout_is_detected_and_normalised(tmp_path: Path, layout: str) -> None:
    from core.datasets.ingest import process_file

    path = write_jsonl(tmp_path / "pairs.jsonl", [LAYOUT_ROWS[layout]] * 3)
    out = tmp_path / "train.jsonl"
    with out.open("wb") as f:
        report = process_file(path, train_out=f, eval_fraction=0.0)
    assert report.layout == layout
    assert report.valid_rows == 3
    assert [json.loads(line) for line in out.read_text().splitlines()] == [PAIR] * 3


def test_message_list_pairs_keep_their_conversation(tmp_path: Path) -> None:
    row = {
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Name a fruit."},
        ],
        "chosen": [{"role": "assistant", "content": "An apple."}],
        "rejected": [{"role": "assistant", "content": "A hammer."}],
    }
    report = inspect_file(write_jsonl(tmp_path / "p.jsonl", [row]))
    assert (report.layout, report.valid_rows) == ("preference", 1)
    assert report.samples[0]["prompt"] == row["prompt"]


def test_bad_pairs_are_named_by_row_and_field(tmp_path: Path) -> None:
    good = LAYOUT_ROWS["preference"]
    rows = [
        good,
        {**good, "rejected": good["chosen"]},  # identical answers
        {**good, "chosen": ""},  # empty answer
        {**good, "prompt": ""},  # empty prompt
        {"prompt": "Q?", "chosen": "A."},  # no rejected
        good,
    ]
    report = inspect_file(write_jsonl(tmp_path / "p.jsonl", rows))
    assert report.layout == "preference" and report.valid_rows == 2
    found = {(p.row, p.field) for p in report.problem_examples}
    assert {(2, "rejected"), (3, "chosen"), (4, "prompt"), (5, "rejected")} <= found
    assert report.problem_counts["identical_answers"] == 1


def test_pairs_are_measured_and_pairs_cut_before_they_differ_are_named(
    tmp_path: Path, tiny
) -> None:
    long_prefix = "word " * 60
    rows = [
        LAYOUT_ROWS["preference"],
        {"prompt": "Name a fruit.", "chosen": long_prefix + "apple", "rejected": long_prefix + "x"},
    ]
    report = inspect_file(write_jsonl(tmp_path / "p.jsonl", rows), tiny, max_length=48)
    pref = report.to_dict()["tokens"]["preference"]
    assert pref["pairs"] == 2
    assert pref["chosen_tokens"]["min"] >= 2 and pref["prompt_tokens"]["min"] >= 3
    assert pref["pairs_cut"] == 1 and pref["pairs_same_after_cut"] == 1
    assert pref["pairs_same_after_cut_rows"] == [2]


def test_inspect_json_names_preference_layout_and_counts_valid_pairs(tmp_path: Path) -> None:
    from cli import app

    rows = [LAYOUT_ROWS["preference_sharegpt"]] * 4 + [{"conversations": [], "chosen": 1}]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    r = CliRunner().invoke(app, ["dataset", "inspect", str(path), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["layout"] == "preference_sharegpt" and rep["valid_rows"] == 4


def test_truncated_share_of_pairs_agrees_with_their_histogram(tmp_path: Path, tiny) -> None:
    """A pair's length is its longer sequence (prompt + one answer) in the histogram and in
    the truncated share alike: bars past the max length are the rows said to be truncated."""
    from core import queries

    long = "word " * 80
    rows = [LAYOUT_ROWS["preference"]] * 3 + [
        {"prompt": "Name a fruit.", "chosen": long + "apple", "rejected": "x"},
        {"prompt": long, "chosen": "a", "rejected": "b"},
    ]
    tokens = inspect_file(write_jsonl(tmp_path / "p.jsonl", rows), tiny, max_length=48)
    tokens = tokens.to_dict()["tokens"]
    assert tokens["truncated_rows"] == 2 == tokens["preference"]["pairs_cut"]
    assert queries.truncated_share(tokens, 48) == pytest.approx(2 / 5)
    assert tokens["per_row"]["max"] > 48
    edges, counts = tokens["histogram"]["edges"], tokens["histogram"]["counts"]
    past = sum(n for lo, n in zip(edges[:-1], counts, strict=True) if lo >= 48)
    assert past == 2


def test_a_pairs_loss_share_counts_both_of_its_sequences(tmp_path: Path, tiny) -> None:
    rows = [LAYOUT_ROWS["preference"], {"prompt": "Hi.", "chosen": "Hello.", "rejected": "Go."}]
    tokens = inspect_file(write_jsonl(tmp_path / "p.jsonl", rows), tiny).to_dict()["tokens"]
    assert 0 < tokens["loss_share"] < 0.5  # both answers over both sequences, never over 100%
    longer_sequences = tokens["per_row"]["mean"] * tokens["measured_rows"]
    assert tokens["total"] > 1.5 * longer_sequences  # prompt + chosen and prompt + rejected
