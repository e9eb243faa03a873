"""Names a user chose (dataset and adapter names, emails, model folders) are escaped in every
Streamlit call that renders markdown: toasts, titles, captions, alerts, labels and help.
Each such call is driven here with a name that is a live link and image in markdown; the
name must show literally (escaped by `components.widgets.plain`), never as markdown."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from components.widgets import plain
from core import db
from core.db import repo, tables
from core.settings import Settings
from core.users import LOCAL_ACTOR, Actor
from tests.ui.conftest import seed_dataset, seed_job
from tests.ui.test_adapters_page import _adapter

HOSTILE = "[link](https://evil.example) ![img](http://evil.example/i.png) __bold__"
ADAPTER = "x__bold__y_it_"  # adapter names are letters, digits, '.', '_', '-': still markdown
# Elements whose text Streamlit shows as-is; everything else renders its strings as markdown.
PLAIN_TYPES = {"text", "code", "json", "arrow_data_frame", "dataframe", "table", "plotly_chart"}
MARKDOWN_FIELDS = {"label", "body", "help", "placeholder", "caption"}


def _nodes(node: Any) -> Iterator[Any]:
    yield node
    for child in getattr(node, "children", {}).values():
        yield from _nodes(child)


def markdown_strings(at: Any) -> list[str]:
    """Every string of the page that Streamlit renders as markdown (toasts included)."""
    out = []
    for node in _nodes(at._tree):
        proto = getattr(node, "proto", None)
        if proto is None or getattr(node, "type", None) in PLAIN_TYPES:
            continue
        for field, value in proto.ListFields():
            if field.name in MARKDOWN_FIELDS and isinstance(value, str):
                out.append(value)
    return out


def assert_shown_literally(at: Any, where: str, name: str = HOSTILE) -> None:
    assert not at.exception, at.exception
    rendered = markdown_strings(at)
    assert not [s for s in rendered if name in s], f"{where}: the name renders as markdown"
    assert [s for s in rendered if plain(name) in s], f"{where}: the name is not shown"


def test_the_added_dataset_toast_shows_the_name_literally(settings: Settings, open_page) -> None:
    at = open_page("datasets")
    rows = (
        b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}'
    )
    at.get("file_uploader")[0].upload("d.jsonl", rows + b"\n" + rows, "application/jsonl")
    at.run()
    at.text_input(key="datasets.name.0").input(HOSTILE).run()
    at.button(key="datasets.add").click().run()
    assert [t.value for t in at.toast] == [f"Added 2 rows as {plain(HOSTILE)}"]
    assert_shown_literally(at, "datasets toast")


def test_an_adapter_name_and_base_model_folder_show_literally(
    settings: Settings, open_page
) -> None:
    vid = _adapter(settings, name=ADAPTER)
    with db.session_scope(settings) as s:
        repo.get_version(LOCAL_ACTOR, s, vid).base_model = f"/models/{HOSTILE}"
    at = open_page("adapters")
    assert_shown_literally(at, "adapters page", ADAPTER)
    assert at.subheader[0].value == plain(f"{ADAPTER} v1")
    assert plain(f"/models/{HOSTILE}") in at.caption[0].value
    assert f"{plain(ADAPTER)} v1: evaluation not run" in [c.value for c in at.caption]
    assert_shown_literally(at, "adapters page")

    with db.session_scope(settings) as s:
        repo.get_version(LOCAL_ACTOR, s, vid).eval_scores = {
            "status": "done",
            "rows": 3,
            "server_base": "base",
            "metrics": ["f1"],
            "adapter": {"f1": 0.5},
            "base": {"f1": 0.4},
            "delta": {"f1": 0.1},
            "judge": {"win_rate": 0.5, "wins": 1, "ties": 1, "losses": 1, "model": HOSTILE},
        }
    at.run()
    assert_shown_literally(at, "adapters evaluation")
    assert f"judge {plain(HOSTILE)}" in at.metric[0].proto.help

    at.button(key="adapters.delete").click().run()
    at.button(key=f"adapters.confirm_delete.yes.{ADAPTER}").click().run()
    assert [t.value for t in at.toast] == [f"Deleted {plain(ADAPTER)}"]
    assert_shown_literally(at, "adapter deleted toast", ADAPTER)


def test_a_job_shows_its_adapter_name_and_model_source_literally(
    settings: Settings, open_page
) -> None:
    job = seed_job(settings, seed_dataset(settings), adapter=ADAPTER, status="IN_PROGRESS")
    with db.session_scope(settings) as s:
        repo.append_events(
            LOCAL_ACTOR,
            s,
            job,
            [{"seq": 0, "type": "started", "ts": 0.0, "data": {"model": {"source": HOSTILE}}}],
        )
        repo.update_job(LOCAL_ACTOR, s, job, status="COMPLETED", finished_at=tables.utcnow())
    at = open_page("jobs", {"job": job})
    assert at.subheader[0].value == plain(ADAPTER)
    assert f"Base model from {plain(HOSTILE)}" in [c.value for c in at.caption]
    assert_shown_literally(at, "job detail")
    assert_shown_literally(at, "job detail", ADAPTER)


def test_the_role_toast_shows_the_email_literally(settings: Settings, open_page) -> None:
    other = Actor(user_id="u-other", email=HOSTILE, role="member")
    with db.session_scope(settings) as s:
        repo.ensure_user(LOCAL_ACTOR, s)
        repo.ensure_user(other, s)
    at = open_page("admin")
    at.selectbox(key="admin.user").set_value("u-other").run()
    at.selectbox(key="admin.role.u-other").set_value("admin").run()
    at.button(key="admin.save_role").click().run()
    assert [t.value for t in at.toast] == [f"{plain(HOSTILE)} is now admin"]
    assert_shown_literally(at, "role toast")


def test_a_model_folder_name_shows_literally_on_the_train_page(
    settings: Settings, open_page, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core import planner

    real = planner.describe

    def named(model: str, **kw: Any) -> Any:
        facts = real("Qwen/Qwen2.5-0.5B-Instruct", **kw)
        return type(facts)(**{**facts.__dict__, "name": HOSTILE})

    monkeypatch.setattr(planner, "describe", named)
    seed_dataset(settings)
    at = open_page("train")
    assert at.caption[0].value.startswith(plain(HOSTILE) + " · ")
    assert_shown_literally(at, "train model card")


def test_the_check_finds_a_name_rendered_as_markdown() -> None:
    from streamlit.testing.v1 import AppTest

    def page() -> None:
        import streamlit as st

        st.toast("Added [link](https://evil.example) ![img](http://evil.example/i.png) __bold__")

    at = AppTest.from_function(page).run()
    with pytest.raises(AssertionError, match="renders as markdown"):
        assert_shown_literally(at, "unescaped toast")
