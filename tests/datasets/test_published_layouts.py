"""Datasets as they are published: OpenAI's per-message `weight`, KTO rows (TRL and
LLaMA-Factory), TRL's implicit-prompt pairs, UltraFeedback binarized, Anthropic HH-RLHF,
LLaMA-Factory v1 pairs and agent rows; each read from a small file in that layout, named
by `inspect --json`, every valid row valid, and no key dropped in silence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from core.datasets import inspect_file
from core.datasets.ingest import process_file
from core.datasets.methods import methods_for, untrainable_reason
from core.datasets.tokens import TokenizerChoice
from tests.datasets.helpers import write_csv, write_jsonl


def normalise(path: Path) -> tuple[Any, list[dict[str, Any]]]:
    out = path.parent / "normalised.jsonl"
    with out.open("wb") as f:
        report = process_file(path, eval_fraction=0.0, train_out=f, eval_out=f)
    return report, [json.loads(line) for line in out.read_text().splitlines()]


def inspect_json(path: Path) -> dict[str, Any]:
    from cli import app

    r = CliRunner().invoke(app, ["dataset", "inspect", str(path), "--json"])
    assert r.exit_code in (0, 2), r.output
    return json.loads(r.output)


def user(text: str, **extra: Any) -> dict[str, Any]:
    return {"role": "user", "content": text, **extra}


def assistant(text: str, **extra: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": text, **extra}


# --------------------------------------------------------------------------- OpenAI weight

WEIGHTED = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        user("Capital of France?"),
        assistant("Lyon, I think.", weight=0),
        user("Are you sure?"),
        assistant("Paris.", weight=1),
    ]
}


def test_openai_weight_0_reaches_the_normalised_file_and_the_loss_mask(
    tmp_path: Path, tiny: TokenizerChoice
) -> None:
    from trainer.data import read_rows, tokenize_rows

    report, rows = normalise(write_jsonl(tmp_path / "openai.jsonl", [WEIGHTED] * 2))
    assert (report.layout, report.valid_rows, report.invalid_rows) == ("messages", 2, 0)
    msgs = rows[0]["messages"]
    assert msgs[2] == {"role": "assistant", "content": "Lyon, I think.", "loss_weight": 0}
    assert msgs[4] == {"role": "assistant", "content": "Paris."}
    assert report.ignored_keys == []  # weight is read, not ignored

    tok = tiny.tokenizer
    (sample, _), _stats = tokenize_rows(tok, read_rows(tmp_path / "normalised.jsonl", "train"), 512)
    learned = tok.decode([t for t in sample.targets if t >= 0])
    assert "Paris." in learned
    assert "Lyon" not in learned


@pytest.mark.parametrize(
    ("message", "kind", "field"),
    [
        (user("q", weight=1), "unhonoured_key", "messages[0].weight"),
        (assistant("a", weight=0.5), "wrong_type", "messages[1].weight"),
        (assistant("a", weight=0, loss_weight=1), "wrong_type", "messages[1].weight"),
    ],
)
def test_a_weight_that_cannot_be_honoured_is_a_located_problem(
    tmp_path: Path, message: dict, kind: str, field: str
) -> None:
    msgs = [message, assistant("a")] if message["role"] == "user" else [user("q"), message]
    rows = [WEIGHTED, {"messages": msgs}]
    report = inspect_file(write_jsonl(tmp_path / "w.jsonl", rows))
    assert report.valid_rows == 1
    (p,) = report.problem_examples
    assert (p.row, p.kind, p.field) == (2, kind, field)


# --------------------------------------------------------------------------- KTO

KTO_TRL = [
    {"prompt": "The sky is", "completion": " blue.", "label": True},
    {"prompt": "The sky is", "completion": " green.", "label": False},
]
KTO_LLAMAFACTORY = [  # LLaMA-Factory's kto_en_demo: messages and a `label` (its kto_tag)
    {"messages": [user("Hi"), assistant("Hello! How can I help?")], "label": True},
    {"messages": [user("Hi"), assistant("Go away.")], "label": False},
]


@pytest.mark.parametrize("rows", [KTO_TRL, KTO_LLAMAFACTORY], ids=["trl", "llamafactory"])
def test_kto_rows_are_a_kto_layout_that_keeps_the_label(tmp_path: Path, rows: list) -> None:
    path = write_jsonl(tmp_path / "kto.jsonl", rows * 3)
    rep = inspect_json(path)
    assert (rep["layout"], rep["valid_rows"], rep["invalid_rows"]) == ("kto", 6, 0)
    _, out = normalise(path)
    assert [r["label"] for r in out] == [True, False] * 3
    assert out[0]["prompt"][-1]["role"] == "user"
    assert out[0]["completion"][0]["role"] == "assistant"


def test_kto_labels_from_csv_text_and_bad_labels_are_located(
    tmp_path: Path, tiny: TokenizerChoice
) -> None:
    rows = [*KTO_TRL, {"prompt": "Q", "completion": "A", "label": "maybe"}]
    path = write_csv(tmp_path / "kto.csv", rows)
    report, out = normalise(path)
    assert report.layout == "kto" and [r["label"] for r in out] == [True, False]
    (p,) = report.problem_examples
    assert (p.row, p.kind, p.field) == (3, "wrong_type", "label")
    measured = inspect_file(path, tiny).to_dict()["tokens"]
    assert measured["measured_rows"] == 2 and 0 < measured["loss_share"] < 1


def test_each_kind_of_data_trains_with_its_methods() -> None:
    assert methods_for("kto") == ("kto",) and untrainable_reason("kto") is None
    assert methods_for("preference_hh") == ("dpo", "orpo")
    assert methods_for("messages") == ("sft",) and untrainable_reason("messages") is None
    assert methods_for("prompts") == ("grpo",)


# --------------------------------------------------------------------------- pairs

PAIR = {
    "prompt": [user("What color is the sky?")],
    "chosen": [assistant("It is blue.")],
    "rejected": [assistant("It is green.")],
}
WHOLE = {
    "chosen": [user("What color is the sky?"), assistant("It is blue.")],
    "rejected": [user("What color is the sky?"), assistant("It is green.")],
}
PUBLISHED_PAIRS = {
    "preference_implicit": WHOLE,  # TRL's implicit prompt
    "preference_ultrafeedback": {  # HuggingFaceH4/ultrafeedback_binarized
        "prompt": "What color is the sky?",
        "prompt_id": "abc123",
        **WHOLE,
        "messages": WHOLE["chosen"],
        "score_chosen": 8.0,
        "score_rejected": 5.5,
    },
    "preference_hh": {  # Anthropic/hh-rlhf
        "chosen": "\n\nHuman: What color is the sky?\n\nAssistant: It is blue.",
        "rejected": "\n\nHuman: What color is the sky?\n\nAssistant: It is green.",
    },
    "preference_llamafactory": {  # LLaMA-Factory v1 DPOSample
        "chosen_messages": [
            {
                "role": "user",
                "content": [{"type": "text", "value": "What color is the sky?"}],
                "loss_weight": 0.0,
            },
            {
                "role": "assistant",
                "content": [{"type": "text", "value": "It is blue."}],
                "loss_weight": 1.0,
            },
        ],
        "rejected_messages": [
            {
                "role": "user",
                "content": [{"type": "text", "value": "What color is the sky?"}],
                "loss_weight": 0.0,
            },
            {
                "role": "assistant",
                "content": [{"type": "text", "value": "It is green."}],
                "loss_weight": 1.0,
            },
        ],
    },
}


@pytest.mark.parametrize("layout", sorted(PUBLISHED_PAIRS))
def test_each_published_pair_layout_is_read_with_its_shared_prompt(
    tmp_path: Path, layout: str
) -> None:
    path = write_jsonl(tmp_path / "pairs.jsonl", [PUBLISHED_PAIRS[layout]] * 3)
    rep = inspect_json(path)
    assert (rep["layout"], rep["valid_rows"], rep["invalid_rows"]) == (layout, 3, 0)
    _, out = normalise(path)
    for row in out:
        assert {k: row[k] for k in ("prompt", "chosen", "rejected")} == PAIR


def test_multi_turn_implicit_pairs_share_every_turn_before_they_differ(tmp_path: Path) -> None:
    first = [user("Hi"), assistant("Hello."), user("Sky color?")]
    row = {"chosen": [*first, assistant("Blue.")], "rejected": [*first, assistant("Green.")]}
    _, (out,) = normalise(write_jsonl(tmp_path / "p.jsonl", [row]))
    assert out == {
        "prompt": first,
        "chosen": [assistant("Blue.")],
        "rejected": [assistant("Green.")],
    }


def test_ultrafeedback_scores_are_kept_and_summed_up(tmp_path: Path) -> None:
    rows = [
        PUBLISHED_PAIRS["preference_ultrafeedback"],
        {**PUBLISHED_PAIRS["preference_ultrafeedback"], "score_chosen": 4, "score_rejected": 6},
    ]
    report, out = normalise(write_jsonl(tmp_path / "uf.jsonl", rows))
    assert out[0]["scores"] == {"chosen": 8.0, "rejected": 5.5}
    scores = report.to_dict()["scores"]
    assert scores["rows"] == 2 and scores["rows_rejected_scored_higher"] == 1
    assert scores["chosen"] == {"min": 4, "mean": 6.0, "max": 8.0}
    assert scores["margin"]["min"] == -2
    # the copy of chosen under `messages`, and prompt_id, are listed, not silently dropped
    ignored = {(e["key"], e["where"]): e["count"] for e in report.ignored_keys}
    assert ignored == {("messages", "rows"): 2, ("prompt_id", "rows"): 2}


def test_bad_published_pairs_are_located_by_row_and_field(tmp_path: Path) -> None:
    hh = PUBLISHED_PAIRS["preference_hh"]
    uf = PUBLISHED_PAIRS["preference_ultrafeedback"]
    hh_rows = [
        hh,
        {**hh, "rejected": hh["chosen"]},
        {**hh, "chosen": "\n\nHuman: What color is the sky?\n\nAssistant:"},
        {**hh, "chosen": "no turns at all"},
    ]
    report = inspect_file(write_jsonl(tmp_path / "hh.jsonl", hh_rows))
    assert (report.layout, report.valid_rows) == ("preference_hh", 1)
    found = {(p.row, p.field) for p in report.problem_examples}
    assert {(2, "rejected"), (3, "chosen"), (4, "chosen")} <= found
    uf_rows = [uf, {**uf, "prompt": "Something else?"}]
    report = inspect_file(write_jsonl(tmp_path / "uf.jsonl", uf_rows))
    assert report.valid_rows == 1
    assert [(p.row, p.field) for p in report.problem_examples] == [(2, "prompt")]


# --------------------------------------------------------------------------- agent rows


def test_llamafactory_v1_agent_rows_read_tool_call_parts_as_calls(tmp_path: Path) -> None:
    tools = [{"name": "get_time", "parameters": {"type": "object", "properties": {}}}]
    row = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "value": "Time?"}], "loss_weight": 0.0},
            {
                "role": "assistant",
                "content": [
                    {"type": "reasoning", "value": "Ask the clock."},
                    {
                        "type": "tool_call",
                        "value": json.dumps({"name": "get_time", "arguments": {}}),
                    },
                ],
                "loss_weight": 1.0,
            },
            {"role": "tool", "content": [{"type": "text", "value": "14:00"}], "loss_weight": 0.0},
            {
                "role": "assistant",
                "content": [{"type": "text", "value": "It is 14:00."}],
                "loss_weight": 1.0,
            },
        ],
        "tools": json.dumps(tools),
    }
    bad = json.loads(json.dumps(row))
    bad["messages"][1]["content"][1]["value"] = "{not json"
    path = write_jsonl(tmp_path / "v1.jsonl", [row, row, bad])
    report, out = normalise(path)
    assert (report.layout, report.valid_rows) == ("messages", 2)
    call = out[0]["messages"][1]
    assert call["tool_calls"] == [
        {"type": "function", "function": {"name": "get_time", "arguments": {}}}
    ]
    assert call["reasoning_content"] == "Ask the clock." and call["content"] == ""
    assert out[0]["tools"][0]["function"]["name"] == "get_time"
    (p,) = report.problem_examples
    assert (p.row, p.kind, p.field) == (3, "invalid_tool_call", "messages[1].content[1].value")


# --------------------------------------------------------------------------- ignored keys


def test_a_key_nothing_reads_is_reported_with_its_count_not_dropped_in_silence(
    tmp_path: Path,
) -> None:
    rows = [
        {"id": i, "messages": [user("q", name="ann"), assistant(f"a{i}", refusal=None)]}
        for i in range(3)
    ]
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    rep = inspect_json(path)
    assert rep["valid_rows"] == 3
    assert {(e["key"], e["where"], e["count"]) for e in rep["ignored_keys"]} == {
        ("id", "rows", 3),
        ("name", "user messages", 3),
        ("refusal", "assistant messages", 3),
    }
    assert "not used: `name` on 3 user messages" in rep["notes"]


def test_a_key_with_training_meaning_that_is_not_honoured_is_a_problem(tmp_path: Path) -> None:
    rows = [
        {"messages": [user("q"), assistant("a")]},
        {"messages": [user("q"), assistant("a")], "images": ["cat.png"]},
        {"messages": [user("q"), assistant("a", training=False)]},
        {"messages": [user("q"), assistant("a")], "images": []},  # empty: says nothing
    ]
    report = inspect_file(write_jsonl(tmp_path / "chat.jsonl", rows))
    assert report.valid_rows == 2
    found = {(p.row, p.kind, p.field) for p in report.problem_examples}
    assert found == {
        (2, "unhonoured_key", "images"),
        (3, "unhonoured_key", "messages[1].training"),
    }
    pairs = [PAIR, {**PAIR, "tools": [{"name": "f"}]}, {**PAIR, "functions": [{"name": "f"}]}]
    report = inspect_file(write_jsonl(tmp_path / "p.jsonl", pairs))
    assert report.valid_rows == 1  # OpenAI's legacy `functions` as well
    assert [(p.row, p.field) for p in report.problem_examples] == [(2, "tools"), (3, "functions")]


def test_inspect_prints_the_notes_and_scores(tmp_path: Path) -> None:
    from cli import app

    rows = [PUBLISHED_PAIRS["preference_ultrafeedback"]] * 2
    r = CliRunner().invoke(
        app, ["dataset", "inspect", str(write_jsonl(tmp_path / "u.jsonl", rows))]
    )
    assert r.exit_code == 0, r.output
    assert "note: not used: `prompt_id` on 2 rows" in r.output
    assert "scores on 2 pairs: chosen 8.0..8.0" in r.output
