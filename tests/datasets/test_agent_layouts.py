"""Tool-calling and reasoning datasets, as files in each common layout: every row is read,
normalised to one form that keeps tools, calls, results and reasoning, and the rows that
are wrong are refused with the real reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core.datasets import inspect_file
from core.datasets.ingest import process_file
from core.datasets.tokens import TokenizerChoice

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a place",
        "parameters": {
            "type": "object",
            "properties": {
                "place": {"type": "object", "properties": {"city": {"type": "string"}}},
                "units": {"type": "string"},
            },
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {}}}
NESTED_ARGS = {"place": {"city": "Paris", "country": "FR", "near": [48.8, 2.3]}, "units": "C"}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def normalise(path: Path, tiny: TokenizerChoice | None = None) -> tuple[Any, list[dict]]:
    with (path.parent / "out.jsonl").open("wb") as out:
        report = process_file(
            path, tokenizer=tiny, eval_fraction=0.0, train_out=out, eval_out=out, max_length=4096
        )
    rows = [json.loads(x) for x in (path.parent / "out.jsonl").read_text().splitlines()]
    return report, rows


def openai_rows() -> list[dict[str, Any]]:
    parallel_call = {
        "role": "assistant",
        "content": None,
        "reasoning_content": "Two cities: two calls.",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": json.dumps(NESTED_ARGS)},
            },
            {
                "id": "call_2",
                "type": "function",
                "function": {"name": "get_time", "arguments": "{}"},
            },
        ],
    }
    return [
        {
            "tools": [WEATHER, TIME],
            "messages": [
                {"role": "system", "content": "You help with travel."},
                {"role": "user", "content": [{"type": "text", "text": "Weather and time?"}]},
                parallel_call,
                {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
                {"role": "tool", "tool_call_id": "call_2", "content": "14:00"},
                {"role": "assistant", "content": "<think>Both came back.</think>21 C at 14:00."},
            ],
        },
        {
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
            ]
        },
    ]


def test_openai_tool_rows_keep_tools_parallel_calls_results_and_reasoning(tmp_path: Path) -> None:
    report, rows = normalise(write_jsonl(tmp_path / "openai.jsonl", openai_rows()))
    assert report.layout == "messages" and report.valid_rows == 2, report.to_dict()
    row = rows[0]
    assert [t["function"]["name"] for t in row["tools"]] == ["get_weather", "get_time"]
    msgs = row["messages"]
    assert msgs[1]["content"] == "Weather and time?"
    call = msgs[2]
    assert call["content"] == "" and call["reasoning_content"] == "Two cities: two calls."
    # Arguments become objects, nested JSON intact; parallel calls keep their order and ids.
    assert [c["function"]["arguments"] for c in call["tool_calls"]] == [NESTED_ARGS, {}]
    assert [c["id"] for c in call["tool_calls"]] == ["call_1", "call_2"]
    assert [m.get("tool_call_id") for m in msgs[3:5]] == ["call_1", "call_2"]
    # Inline <think> becomes the turn's reasoning.
    assert msgs[5] == {
        "role": "assistant",
        "content": "21 C at 14:00.",
        "reasoning_content": "Both came back.",
    }
    assert rows[1] == openai_rows()[1]  # plain chat is unchanged, and has no tools
    agent = report.to_dict()["agent"]
    assert agent["rows_with_tools"] == 1 and agent["tool_calls"] == 2
    assert agent["rows_with_parallel_calls"] == 1 and agent["calls_per_row"] == 1.0
    assert agent["rows_with_reasoning"] == 1 and agent["tool_results"] == 2


def legacy_rows() -> list[dict[str, Any]]:
    """OpenAI's legacy function calling: `functions`, `function_call`, role "function"."""
    call = {"name": "get_weather", "arguments": json.dumps(NESTED_ARGS)}
    return [
        {
            "functions": [WEATHER["function"], TIME["function"]],
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": None, "function_call": call},
                {"role": "function", "name": "get_weather", "content": '{"temp": 21}'},
                {"role": "assistant", "content": "21 C."},
            ],
        },
        {  # a call to a function the row does not define
            "functions": [TIME["function"]],
            "messages": [
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": None, "function_call": call},
                {"role": "function", "name": "get_weather", "content": "cold"},
                {"role": "assistant", "content": "Cold."},
            ],
        },
        {  # arguments that are not JSON
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": None,
                    "function_call": {"name": "get_weather", "arguments": "{city: Paris"},
                },
                {"role": "function", "name": "get_weather", "content": "cold"},
                {"role": "assistant", "content": "Cold."},
            ],
        },
    ]


def test_openai_legacy_function_calling_is_read_as_tool_calls(tmp_path: Path) -> None:
    report, rows = normalise(write_jsonl(tmp_path / "legacy.jsonl", legacy_rows()))
    assert report.layout == "messages" and report.valid_rows == 1, report.to_dict()
    (row,) = rows
    assert row["tools"] == [WEATHER, TIME]  # `functions`, wrapped as tools
    msgs = row["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "assistant"]
    assert msgs[1]["content"] == "" and msgs[1]["tool_calls"] == [
        {"type": "function", "function": {"name": "get_weather", "arguments": NESTED_ARGS}}
    ]
    assert msgs[2]["content"] == '{"temp": 21}'
    assert report.problem_counts == {"unknown_function": 1, "invalid_tool_call": 1}
    by_row = {p.row: p for p in report.problem_examples}  # rows counted from 1
    assert "do not define (defined: get_time)" in by_row[2].message
    assert by_row[3].field == "messages[1].function_call" and "not valid JSON" in by_row[3].message
    assert not report.to_dict().get("ignored_keys")  # nothing of the rows went unread


def sharegpt_rows() -> list[dict[str, Any]]:
    call = json.dumps({"name": "get_weather", "arguments": NESTED_ARGS})
    both = json.dumps(
        [{"name": "get_weather", "arguments": {"place": {"city": "Oslo"}}}, {"name": "get_time"}]
    )
    tools = json.dumps([WEATHER["function"], TIME["function"]])  # a string, bare schemas
    return [
        {
            "tools": tools,
            "conversations": [
                {"from": "human", "value": "Weather in Paris?"},
                {"from": "gpt", "value": "Let me look."},
                {"from": "function_call", "value": call},
                {"from": "observation", "value": '{"temp": 21}'},
                {"from": "gpt", "value": "21 C."},
            ],
        },
        {
            "tools": tools,
            "conversations": [
                {"from": "human", "value": "Oslo weather and the time?"},
                {"from": "function_call", "value": both},
                {"from": "observation", "value": "cold"},
                {"from": "observation", "value": "09:00"},
                {"from": "gpt", "value": "Cold, at 09:00."},
            ],
        },
    ]


def test_sharegpt_function_call_and_observation_turns_are_tool_calls(tmp_path: Path) -> None:
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(sharegpt_rows(), indent=1))
    report, rows = normalise(path)
    assert report.layout == "sharegpt" and report.valid_rows == 2, report.to_dict()
    first = rows[0]["messages"]
    # "Let me look." and the call are one assistant turn; the observation is its result.
    assert [m["role"] for m in first] == ["user", "assistant", "tool", "assistant"]
    assert first[1]["content"] == "Let me look."
    assert first[1]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": NESTED_ARGS,
    }
    assert rows[0]["tools"][1] == TIME
    parallel = rows[1]["messages"][1]["tool_calls"]
    assert [c["function"]["name"] for c in parallel] == ["get_weather", "get_time"]
    assert parallel[1]["function"]["arguments"] == {}


def test_value_parts_reasoning_parts_and_loss_weight(tmp_path: Path) -> None:
    row = {
        "messages": [
            {"role": "system", "content": [{"type": "text", "value": "Think first."}]},
            {"role": "user", "content": [{"type": "text", "value": "2+2?"}], "loss_weight": 0},
            {
                "role": "assistant",
                "content": [
                    {"type": "reasoning", "value": "Two and two."},
                    {"type": "text", "value": "4"},
                ],
                "loss_weight": 0,
            },
            {"role": "user", "content": [{"type": "text", "value": "3+3?"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "reasoning", "value": "Three and three."},
                    {"type": "text", "value": "6"},
                ],
                "loss_weight": 1,
            },
        ]
    }
    report, rows = normalise(write_jsonl(tmp_path / "parts.jsonl", [row]))
    assert report.valid_rows == 1, report.to_dict()
    msgs = rows[0]["messages"]
    assert msgs[0] == {"role": "system", "content": "Think first."}
    assert msgs[2] == {
        "role": "assistant",
        "content": "4",
        "reasoning_content": "Two and two.",
        "loss_weight": 0,
    }
    assert msgs[4] == {"role": "assistant", "content": "6", "reasoning_content": "Three and three."}


BAD_ROWS = {
    "arguments are not JSON": (
        {
            "messages": [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "tool_calls": [{"function": {"name": "get_time", "arguments": "{city: x"}}],
                },
            ]
        },
        "invalid_tool_call",
        "messages[1].tool_calls[0].function.arguments is not valid JSON",
    ),
    "an undefined function": (
        {
            "tools": [TIME],
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "tool_calls": [{"function": {"name": "get_weather"}}]},
            ],
        },
        "unknown_function",
        "calls 'get_weather', which the row's tools do not define (defined: get_time)",
    ),
    "a result that answers no call": (
        {
            "tools": [TIME],
            "messages": [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "a", "function": {"name": "get_time"}}],
                },
                {"role": "tool", "tool_call_id": "b", "content": "09:00"},
                {"role": "assistant", "content": "nine"},
            ],
        },
        "unanswered_tool_message",
        "messages[2] is a tool result for call 'b', which no earlier call has as its id",
    ),
    "a part of unknown keys": (
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "val": "q"}]},
                {"role": "assistant", "content": "a"},
            ]
        },
        "unknown_part",
        "messages[0].content[0] is a text part whose keys ('type', 'val') are not understood",
    ),
    "a loss_weight of 0.5": (
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a", "loss_weight": 0.5},
            ]
        },
        "wrong_type",
        "messages[1].loss_weight must be 0 or 1, not 0.5",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_a_bad_row_is_refused_with_its_real_problem(tmp_path: Path, case: str) -> None:
    bad, kind, message = BAD_ROWS[case]
    good = openai_rows()[1]
    report = inspect_file(write_jsonl(tmp_path / "mixed.jsonl", [good, bad, good]))
    assert report.valid_rows == 2 and report.problem_counts == {kind: 1}
    (problem,) = report.problem_examples
    assert problem.row == 2 and message in problem.message, problem.message


def test_prompt_completion_rows_keep_their_tools_and_their_calls_are_checked(
    tmp_path: Path,
) -> None:
    """A prompt/completion row whose completion calls a tool: its `tools` reach the
    normalised row (the template renders them) and its calls are checked against them,
    the problem located in the field the message came from."""
    call = {"id": "c1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
    completion = [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "09:00"},
        {"role": "assistant", "content": "It is nine."},
    ]
    good = {"tools": [TIME], "prompt": "What time is it?", "completion": completion}
    undefined = {**good, "tools": [WEATHER]}
    listed = {
        "tools": [TIME],
        "prompt": [{"role": "user", "content": "Time?"}],
        "completion": [completion[0], {**completion[1], "tool_call_id": "zz"}, completion[2]],
    }
    report, rows = normalise(write_jsonl(tmp_path / "pc.jsonl", [good, good]))
    assert report.layout == "prompt_completion" and report.valid_rows == 2
    assert rows[0]["tools"] == [TIME]
    assert rows[0]["messages"][1]["tool_calls"][0]["function"]["name"] == "get_time"
    report = inspect_file(write_jsonl(tmp_path / "bad.jsonl", [good, undefined, listed]))
    assert report.valid_rows == 1
    assert report.problem_counts == {"unknown_function": 1, "unanswered_tool_message": 1}
    by_row = {p.row: p.message for p in report.problem_examples}
    assert by_row[2].startswith("completion[0].tool_calls[0] calls 'get_time'")
    assert by_row[3].startswith("completion[1] is a tool result for call 'zz'")


def test_a_txt_file_with_paragraphs_is_split_on_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("First document,\nover two lines.\n\n\nSecond one.\n\nThird.\n")
    report, rows = normalise(path)
    assert (report.file_format, report.layout) == ("txt", "text")
    assert rows == [
        {"text": "First document,\nover two lines."},
        {"text": "Second one."},
        {"text": "Third."},
    ]
    assert report.to_dict()["text_rule"] == "paragraphs"
    assert "blank lines separate the documents" in report.notes()[0]


def test_a_txt_file_without_blank_lines_is_one_document_per_line(tmp_path: Path) -> None:
    one = tmp_path / "lines.txt"
    one.write_text("\nFirst document.\r\nSecond document.\nThird one\n\n")
    report, rows = normalise(one)
    assert rows == [
        {"text": "First document."},
        {"text": "Second document."},
        {"text": "Third one"},
    ]
    assert (report.rows, report.valid_rows, report.text_rule) == (3, 3, "lines")
    assert "one document per line" in report.notes()[0]


def test_statistics_count_reasoning_and_loss_with_and_without_it(
    tmp_path: Path, tiny: TokenizerChoice
) -> None:
    report, _ = normalise(write_jsonl(tmp_path / "openai.jsonl", openai_rows()), tiny)
    tokens = report.to_dict()["tokens"]
    assert tokens["available"] and tokens["measured_rows"] == 2
    assert 0 < tokens["reasoning_share"] < tokens["loss_share"]
    assert tokens["loss_share_without_reasoning"] == pytest.approx(
        tokens["loss_share"] - tokens["reasoning_share"], abs=1e-3
    )
    tok = tiny.tokenizer
    reasoning = [
        "<think>\nTwo cities: two calls.\n</think>\n\n",
        "<think>\nBoth came back.\n</think>\n\n",
    ]
    assert tokens["reasoning_tokens"] == sum(len(tok(r)["input_ids"]) for r in reasoning)
