"""No page shows a traceback. Every page opens with a dataset of each layout BrightRun
reads (chat, tools, reasoning, each preference layout, text), and the Datasets page
previews each of them; an unexpected error inside a page section shows one line with an
error id (the traceback goes to the log under that id), never the exception's text, a file
path or Streamlit's exception box, and the rest of the page still works."""

from __future__ import annotations

import json
import logging
import re
import tomllib
from typing import Any

import pytest

from core import datasets, db
from core.clients.storage import make_blob_store
from core.settings import Settings
from core.users import LOCAL_ACTOR
from tests.conftest import ROOT
from tests.ui.conftest import text_of

TOOLS = [{"type": "function", "function": {"name": "get_time", "parameters": {}}}]
CALL = {"function": {"name": "get_time", "arguments": json.dumps({"city": "Oslo"})}}
PROMPT = [{"role": "user", "content": "Name a fruit."}]
# One row per layout as a user's file has it; each file holds four of them.
LAYOUT_ROWS: dict[str, dict[str, Any]] = {
    "messages": {
        "messages": [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4"},
        ]
    },
    "sharegpt": {
        "conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]
    },
    "alpaca": {"instruction": "What is 2+2?", "input": "", "output": "4"},
    "prompt_completion": {"prompt": "What is 2+2?", "completion": "4"},
    "tools": {
        "tools": TOOLS,
        "messages": [
            {"role": "user", "content": "Time in Oslo?"},
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "content": "09:00"},
            {"role": "assistant", "content": "Nine."},
        ],
    },
    "reasoning": {
        "messages": [
            {"role": "user", "content": "3+3?"},
            {"role": "assistant", "content": "6", "reasoning_content": "Three and three."},
        ]
    },
    "preference": {"prompt": "Name a fruit.", "chosen": "An apple.", "rejected": "A hammer."},
    "preference_openai": {
        "input": {"messages": PROMPT},
        "preferred_output": [{"role": "assistant", "content": "An apple."}],
        "non_preferred_output": [{"role": "assistant", "content": "A hammer."}],
    },
    "preference_sharegpt": {
        "conversations": [{"from": "human", "value": "Name a fruit."}],
        "chosen": {"from": "gpt", "value": "An apple."},
        "rejected": {"from": "gpt", "value": "A hammer."},
    },
    "text": {"text": "A plain document to continue."},
}
PAGES = ["overview", "datasets", "train", "jobs", "adapters", "playground", "costs", "settings"]
PAGES += ["admin"]
ERROR_ID = re.compile(r"Could not show (.+) \(error ([0-9a-f]{8})\)\. The rest of the page")


@pytest.fixture
def every_layout(settings: Settings) -> dict[str, str]:
    """A stored dataset of each layout, measured with the tiny model: {layout: dataset id}."""
    from trainer.shared.tiny import build_tiny_chat_model

    build_tiny_chat_model(settings.data_dir / "models" / "tiny-chat")
    tok = datasets.load_tokenizer("tiny-chat", settings.data_dir / "models")
    ids = {}
    for layout, row in LAYOUT_ROWS.items():
        path = settings.data_dir.parent / f"{layout}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for _ in range(4)))
        with db.session_scope(settings) as s:
            ds, _ = datasets.add_dataset(
                LOCAL_ACTOR, s, make_blob_store(settings), path, layout, tokenizer=tok
            )
            ids[layout] = ds.id
    return ids


def _no_error_shown(at: Any, *, expected: str = "") -> None:
    """No exception and no error id (the autouse check fails on any a section caught);
    only an `expected` error (the Playground's "not reachable", no inference server here)."""
    assert not at.exception, at.exception
    shown = [e.value.replace("\\", "") for e in at.error]
    assert all(expected and expected in e for e in shown), shown


def test_every_page_opens_and_previews_a_dataset_of_each_layout(
    settings: Settings, every_layout: dict[str, str], open_page
) -> None:
    with db.session_scope(settings) as s:
        layouts = {d.id: d.layout for d in datasets.list_datasets(LOCAL_ACTOR, s)}
    assert sorted(set(layouts.values())) == sorted(
        ["messages", "sharegpt", "alpaca", "prompt_completion", "text"]
        + ["preference", "preference_openai", "preference_sharegpt"]
    )  # tools and reasoning rows are chat rows ("messages") that keep their tools and thoughts
    for page in PAGES:
        _no_error_shown(open_page(page), expected="inference server" * (page == "playground"))

    at = open_page("datasets")
    for layout, ds_id in every_layout.items():
        at.selectbox(key="datasets.selected").set_value(ds_id).run()
        _no_error_shown(at)
        assert [m.value for m in at.metric if m.label == "Valid rows"] == ["4"], layout
        assert at.button(key="datasets.rename"), layout  # the manage tab is there
        if layouts[ds_id].startswith("preference"):  # both sides, as the trainer renders them
            chosen, rejected = (c.value for c in at.code)
            assert "Name a fruit." in chosen and chosen.rstrip().endswith("An apple.<|im_end|>")
            assert "Name a fruit." in rejected and "A hammer." in rejected
            assert "An apple." in [t.value for t in at.text]
            assert "assistant (rejected answer)" in text_of(at)
        else:  # the rendered template (a tool-calling row's calls are shown as JSON too)
            assert len([c for c in at.code if c.language != "json"]) == 1, layout
            calls = [c for c in at.code if c.language == "json"]
            assert bool(calls) == ("tool_calls" in json.dumps(LAYOUT_ROWS[layout])), layout
    at = open_page("train")
    for layout, ds_id in every_layout.items():
        at.selectbox(key="train.dataset").set_value(ds_id).run()
        assert not at.exception, (layout, at.exception)


def test_an_error_in_a_section_shows_its_id_and_the_rest_of_the_page_works(
    settings: Settings,
    every_layout: dict[str, str],
    open_page,
    page_errors: list[logging.LogRecord],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from core import queries

    def broken(*_: Any) -> None:
        raise ValueError(f"secret detail in {ROOT / 'core' / 'queries' / 'templates.py'}")

    monkeypatch.setattr(queries, "render_with_template", broken)
    at = open_page("datasets")
    assert not at.exception
    (shown,) = [e.value.replace("\\", "") for e in at.error]
    what, error_id = ERROR_ID.match(shown).groups()
    assert what == "the preview"
    page = repr(at._tree)  # every element, serialised: no trace of the exception
    for leak in ("secret detail", "Traceback", "ValueError", str(ROOT), "templates.py"):
        assert leak not in page, leak
    # the other sections and the rest of the page are there
    assert {m.label for m in at.metric} >= {"Format", "Layout", "Valid rows"}
    assert at.button(key="datasets.rename") and at.get("file_uploader")
    # the log has the traceback under the same id
    (record,) = page_errors
    assert error_id in record.getMessage() and "the preview" in record.getMessage()
    assert record.exc_info[0] is ValueError


def test_an_error_outside_any_section_still_shows_only_its_id(
    settings: Settings, open_page, page_errors: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core import queries

    monkeypatch.setattr(queries, "model_options", lambda _: 1 / 0)
    at = open_page("datasets")
    assert not at.exception
    (shown,) = [e.value.replace("\\", "") for e in at.error]
    assert ERROR_ID.match(shown).group(1) == "this page"
    assert "ZeroDivisionError" not in repr(at._tree) and len(page_errors) == 1
    assert at.title[0].value == "Datasets"  # what ran before the error is still shown


def test_a_brightrun_error_in_a_section_shows_its_own_message() -> None:
    from streamlit.testing.v1 import AppTest

    def page() -> None:
        import streamlit as st

        from components.sections import section
        from core.errors import InvalidInput

        with section("the thing"):
            raise InvalidInput("name must not be empty")
        st.text("after")

    at = AppTest.from_function(page).run()
    assert not at.exception and [e.value for e in at.error] == ["name must not be empty"]
    assert [t.value for t in at.text] == ["after"]


def test_streamlit_itself_never_shows_error_details() -> None:
    from streamlit import config

    toml = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert toml["client"]["showErrorDetails"] == config.ShowErrorDetailsConfigOptions.NONE


def test_sections_let_streamlit_control_flow_through() -> None:
    from streamlit.testing.v1 import AppTest

    def page() -> None:
        import streamlit as st

        from components.sections import section

        with section("the thing"):
            st.text("before")
            st.stop()
        st.text("never")

    at = AppTest.from_function(page).run()
    assert [t.value for t in at.text] == ["before"] and not at.error
