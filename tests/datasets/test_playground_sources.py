"""What the Playground takes from datasets: a preference dataset's eval split compares on
its prompts (chosen answer as the reference), the Tools tab lists the datasets whose rows
define tools, and a chat preview shows an assistant turn's calls and reasoning."""

from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

from core import datasets, db
from core.clients.inference import eval_split_cases, tool_datasets
from core.users import LOCAL_ACTOR
from tests.datasets.helpers import write_jsonl

TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}


def tool_row(i: int) -> dict:
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
    return {
        "tools": [TOOL],
        "messages": [
            {"role": "user", "content": f"Weather {i}?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "content": "sunny"},
            {"role": "assistant", "content": "Sunny."},
        ],
    }


def pair(i: int) -> dict:
    return {"prompt": f"Name fruit {i}.", "chosen": f"Apple {i}.", "rejected": f"Hammer {i}."}


def test_pairs_compare_on_their_prompts_and_tool_datasets_are_listed(tmp_path: Path, env) -> None:
    settings, store = env
    pairs = write_jsonl(tmp_path / "ui-dpo.jsonl", [pair(i) for i in range(40)])
    tools = write_jsonl(tmp_path / "ui-tools.jsonl", [tool_row(i) for i in range(5)])
    with db.session_scope(settings) as s:
        dpo, _ = datasets.add_dataset(LOCAL_ACTOR, s, store, pairs, "ui-dpo", eval_fraction=0.5)
        tool, _ = datasets.add_dataset(LOCAL_ACTOR, s, store, tools, "ui-tools")
        cases = eval_split_cases(LOCAL_ACTOR, s, store, dpo.id)
        assert cases and all(c.prompt.startswith("Name fruit") for c in cases)
        n = cases[0].prompt.removeprefix("Name fruit ").removesuffix(".")
        assert cases[0].reference == f"Apple {n}."
        assert tool_datasets(LOCAL_ACTOR, s) == {"ui-tools": tool.id}


def _preview(row_json: str) -> None:
    import json

    from components import widgets

    widgets.chat_bubbles(json.loads(row_json))


def test_a_turn_that_calls_shows_its_calls_and_reasoning() -> None:
    row = tool_row(1)
    row["messages"][1]["reasoning_content"] = "I should look it up."
    at = AppTest.from_function(_preview, args=(json.dumps(row),)).run()
    assert not at.exception
    assert "calls get\\_weather" in [c.value for c in at.caption]  # markdown-escaped
    assert [c.value for c in at.code] == [json.dumps({"city": "Oslo"}, indent=1)]
    assert (
        at.expander[0].label == "Reasoning"
        and "I should look it up." in at.expander[0].text[0].value
    )
