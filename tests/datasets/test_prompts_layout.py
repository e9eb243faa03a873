"""Prompts for GRPO (OpenAI's reinforcement fine-tuning rows) are the `prompts` layout:
messages ending with a user turn, every other field kept for the graders, and trained
with method grpo only."""

from __future__ import annotations

import json
from pathlib import Path

from core.datasets.ingest import inspect_file
from core.datasets.methods import methods_for

ROWS = [
    {"messages": [{"role": "user", "content": "What is 2 + 2?"}], "answer": "4", "meta": {"k": 1}},
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "What is 3 + 3?"}]},
        ],
        "answer": "6",
    },
    {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]},
    {"messages": [{"role": "user", "content": "Q"}, {"role": "system", "content": "late"}]},
]


def test_prompt_rows_are_read_with_their_fields_and_trained_with_grpo(tmp_path: Path) -> None:
    path = tmp_path / "rft.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    report = inspect_file(path)
    assert report.layout == "prompts" and methods_for(report.layout) == ("grpo",)
    assert report.valid_rows == 2 and not report.ignored_keys  # answer, meta: the graders'
    assert report.samples[0] == ROWS[0]
    assert report.samples[1]["messages"][1] == {"role": "user", "content": "What is 3 + 3?"}
    rows = {p.row: p.message for p in report.problem_examples}
    assert "must end with a user message" in rows[3]  # answered: chat data, not a prompt
    assert "must end with a user message" in rows[4]
