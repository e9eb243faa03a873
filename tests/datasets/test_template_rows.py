"""What a model's real chat template does to a dataset, seen at inspect time: a row the
template refuses is a problem naming
the row, kept out of the normalised rows (a user turn that is only a pasted tool response
leaves Qwen3.5 "No user query found in messages."); reasoning the template does not render (Qwen2.5
never renders `reasoning_content`) is said in the token statistics and the report's notes;
reasoning Qwen3.5 renders is counted as reasoning tokens."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from core.datasets import inspect_file
from core.datasets.ingest import process_file
from core.datasets.tokens import TokenizerChoice

TEMPLATES = Path(__file__).resolve().parents[2] / (
    ".venv/lib/python3.11/site-packages/trl/chat_templates"
)
REASONS = {
    "messages": [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris.", "reasoning_content": "It is Paris."},
    ]
}
NO_QUERY = {
    "messages": [
        {"role": "user", "content": "<tool_response>21 C</tool_response>"},
        {"role": "assistant", "content": "It is warm."},
    ]
}
PLAIN = {
    "messages": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
    ]
}


@pytest.fixture(scope="module")
def base_tokenizer():
    from trainer.shared.tiny import _train_tokenizer

    tok = _train_tokenizer(1024)
    tok.add_tokens(["<think>", "</think>", "<tool_call>", "</tool_call>"])
    return tok


def choice(base_tokenizer, name: str) -> TokenizerChoice:
    tok = copy.deepcopy(base_tokenizer)
    tok.chat_template = (TEMPLATES / f"{name}.jinja").read_text()
    return TokenizerChoice(name, tok)


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_row_the_template_refuses_is_a_problem_naming_it(base_tokenizer, tmp_path) -> None:
    path = write(tmp_path / "rows.jsonl", [PLAIN, NO_QUERY, REASONS])
    with (tmp_path / "out.jsonl").open("wb") as out:
        report = process_file(
            path, tokenizer=choice(base_tokenizer, "qwen3_5_nothink"), train_out=out, eval_out=out
        )
    rep = report.to_dict()
    assert rep["valid_rows"] == 2 and rep["problems"] == {"template_refused": 1}
    (p,) = rep["problem_examples"]
    assert p["row"] == 2 and "No user query found in messages." in p["message"]
    written = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert NO_QUERY["messages"] not in [r["messages"] for r in written]
    tokens = rep["tokens"]
    assert tokens["measured_rows"] == 2
    assert tokens["reasoning_tokens"] > 0  # Qwen3.5 without thinking still trains reasoning
    assert tokens["reasoning_dropped_rows"] == 0 and tokens["notes"] == []


def test_reasoning_a_template_drops_is_said(base_tokenizer, tmp_path) -> None:
    path = write(tmp_path / "rows.jsonl", [PLAIN, REASONS, REASONS])
    rep = inspect_file(path, tokenizer=choice(base_tokenizer, "qwen2_5")).to_dict()
    tokens = rep["tokens"]
    assert tokens["reasoning_tokens"] == 0
    assert tokens["reasoning_dropped_rows"] == 2 and tokens["reasoning_dropped_turns"] == 2
    assert tokens["reasoning_dropped_examples"] == [2, 3]
    (note,) = tokens["notes"]
    assert "does not render the reasoning" in note and "rows 2, 3" in note
    assert f"tokens: {note}" in rep["notes"]
