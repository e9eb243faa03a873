"""Datasets page: upload with its stated limit, problems by kind with the offending rows,
drop or re-upload, rows shown as text exactly as the model's chat template renders them,
the token histogram with the cut-off, rename and delete with confirmation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core import db
from core.db import repo
from core.settings import Settings
from core.users import LOCAL_ACTOR
from tests.ui.conftest import text_of

HOSTILE = "<script>alert(1)</script> **bold** [link](http://x)"


@pytest.fixture
def tiny(settings: Settings) -> Path:
    from trainer.shared.tiny import build_tiny_chat_model

    return build_tiny_chat_model(settings.data_dir / "models" / "tiny-chat")


def _file(n_good: int = 30) -> bytes:
    rows = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"question {i} {HOSTILE}"},
                    {"role": "assistant", "content": f"answer {i}"},
                ]
            }
        )
        for i in range(n_good)
    ]
    rows.insert(3, json.dumps({"messages": [{"role": "user", "content": "no answer"}]}))  # line 4
    rows.insert(7, "{not json")  # line 8
    return "\n".join(rows).encode()


def test_upload_rejects_bad_rows_by_kind_then_drops_them(
    settings: Settings, tiny: Path, open_page
) -> None:
    at = open_page("datasets")
    assert "up to **200 MB** per file" in text_of(at) and "brightrun dataset add FILE" in text_of(
        at
    )
    assert at.get("file_uploader")[0].proto.max_upload_size_mb == 200
    at.get("file_uploader")[0].upload("support.jsonl", _file(), "application/jsonl")
    at.run()
    assert at.text_input(key=f"datasets.name.{0}").value == "support"
    at.button(key="datasets.add").click().run()
    assert not at.exception
    text = text_of(at)
    assert "2 of 32 rows have problems" in text
    kinds = {e.label: e for e in at.expander}
    assert "missing assistant: 1 row(s)" in kinds and "invalid json: 1 row(s)" in kinds
    problems = [df.value for df in at.dataframe]
    assert sorted(r for df in problems for r in df["row"].tolist()) == [4, 8]
    with db.session_scope(settings) as s:
        assert repo.list_datasets(LOCAL_ACTOR, s) == []  # nothing stored yet

    at.button(key="datasets.drop").click().run()
    assert not at.exception
    with db.session_scope(settings) as s:
        (ds,) = repo.list_datasets(LOCAL_ACTOR, s)
    assert (ds.name, ds.rows, ds.valid_rows) == ("support", 32, 30)
    metrics = {m.label: m.value for m in at.metric}
    assert (
        metrics["Format"] == "jsonl"
        and metrics["Layout"] == "messages"
        and metrics["Valid rows"] == "30"
    )
    assert "Dropped rows" in text_of(at)

    # preview: chat bubbles of plain text, and the exact chat-template rendering
    assert f"question 0 {HOSTILE}" in [t.value for t in at.text]
    assert not any("<script>" in m.value for m in at.markdown)
    (rendered,) = [c.value for c in at.code]
    assert (
        rendered.rstrip()
        == f"<|im_start|>user\nquestion 0 {HOSTILE}<|im_end|>\n<|im_start|>assistant\nanswer 0<|im_end|>"
    )

    # the histogram marks the cut-off and states the truncated share
    (hist,) = [c for c in at.get("plotly_chart") if "Tokens per row" in c.proto.spec]
    assert "max length 2048: 0.0% of rows truncated" in hist.proto.spec
    at.number_input(key="datasets.max_length").set_value(16).run()
    assert "At max length 16, **100.0%** of rows are truncated." in text_of(at)


def test_another_file_after_a_rejected_one_gets_its_own_name_and_no_old_report(
    settings: Settings, tiny: Path, open_page
) -> None:
    """A file refused for its bad rows, then another one chosen: the name field and the
    report are the new file's (the first file's name used to stay, and name the second)."""
    at = open_page("datasets")
    at.get("file_uploader")[0].upload("broken.jsonl", _file(), "application/jsonl")
    at.run()
    at.button(key="datasets.add").click().run()
    assert "2 of 32 rows have problems" in text_of(at)
    at.get("file_uploader")[0].upload("tool-calls.jsonl", _file(4), "application/jsonl")
    at.run()
    assert at.text_input(key="datasets.name.0").value == "tool-calls"
    assert "rows have problems" not in text_of(at)  # not the old file's report
    assert not [e.label for e in at.expander if "row(s)" in e.label]
    assert not [b for b in at.button if b.key == "datasets.drop"]


def test_rename_and_delete_with_confirmation(settings: Settings, tiny: Path, open_page) -> None:
    at = open_page("datasets")
    at.get("file_uploader")[0].upload(
        "a.jsonl", _file().replace(b"{not json", b""), "application/jsonl"
    )
    at.run()
    at.button(key="datasets.add").click().run()
    assert "1 of 31 rows have problems" in text_of(at)  # the unanswered row is still there
    at.button(key="datasets.drop").click().run()
    ds_id = at.session_state["datasets.selected"]
    at.text_input(key=f"datasets.rename.{ds_id}").input("support v2").run()
    at.button(key="datasets.rename").click().run()
    with db.session_scope(settings) as s:
        assert repo.get_dataset(LOCAL_ACTOR, s, ds_id).name == "support v2"

    at.button(key="datasets.delete").click().run()
    assert "Delete dataset support v2? This cannot be undone." in text_of(at)
    at.button(key=f"datasets.confirm_delete.no.{ds_id}").click().run()
    with db.session_scope(settings) as s:
        assert repo.get_dataset(LOCAL_ACTOR, s, ds_id)  # kept
    at.button(key="datasets.delete").click().run()
    at.button(key=f"datasets.confirm_delete.yes.{ds_id}").click().run()
    assert not at.exception
    assert "No datasets yet" in text_of(at)
    with db.session_scope(settings) as s:
        assert repo.list_datasets(LOCAL_ACTOR, s) == []


def test_a_file_with_no_known_layout_gets_a_clear_reason(settings: Settings, open_page) -> None:
    at = open_page("datasets")
    at.get("file_uploader")[0].upload("x.csv", b"a,b\n1,2\n", "text/csv")
    at.run()
    at.button(key="datasets.add").click().run()
    assert "no known layout" in text_of(at) and "found 'a', 'b'" in text_of(at)
    assert not [b for b in at.button if b.key == "datasets.drop"]


def test_a_text_dataset_reports_long_documents_as_split_not_truncated(
    settings: Settings, tiny: Path, open_page
) -> None:
    docs = [json.dumps({"text": " ".join(["word"] * n)}) for n in (2, 150, 150, 3)]
    at = open_page("datasets")
    at.get("file_uploader")[0].upload("notes.jsonl", "\n".join(docs).encode(), "application/jsonl")
    at.run()
    at.button(key="datasets.add").click().run()
    assert not at.exception
    at.number_input(key="datasets.max_length").set_value(150).run()
    assert (
        "At max length 150, **50.0%** of rows are longer and are split into windows (no token lost)."
        in text_of(at)
    )


def test_a_tool_calling_dataset_shows_its_calls_and_renders_its_tools(
    settings: Settings, tiny: Path, open_page
) -> None:
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": {}}}]
    rows = [
        json.dumps(
            {
                "tools": tools,
                "messages": [
                    {"role": "user", "content": f"time in city {i}?"},
                    {
                        "role": "assistant",
                        "content": None,
                        "reasoning_content": "A call.",
                        "tool_calls": [
                            {"function": {"name": "get_time", "arguments": json.dumps({"city": i})}}
                        ],
                    },
                    {"role": "tool", "content": "09:00"},
                    {"role": "assistant", "content": "Nine."},
                ],
            }
        )
        for i in range(4)
    ]
    at = open_page("datasets")
    at.get("file_uploader")[0].upload("agent.jsonl", "\n".join(rows).encode(), "application/jsonl")
    at.run()
    at.button(key="datasets.add").click().run()
    assert not at.exception
    text = text_of(at)
    assert "Agent data: 4 rows define tools; 1.00 tool calls per row" in text
    assert "4 rows reason" in text
    codes = [c.value for c in at.code]
    assert '{\n "city": 0\n}' in codes  # the preview shows the turn's call, not an empty bubble
    rendered = next(c for c in codes if "<|im_end|>" in c)
    assert '"name": "get_time"' in rendered.split("<|im_end|>")[0]  # the tools, in the system turn
    assert '<tool_call>\n{"name": "get_time", "arguments": {"city": 0}}\n</tool_call>' in rendered
