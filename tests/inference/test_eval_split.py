"""Compare on a set from a dataset's eval split: through core, and on the Playground page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import datasets, db
from core.clients.inference import eval_split_cases, eval_split_datasets
from core.clients.storage import make_blob_store
from core.errors import NotFound
from core.users import LOCAL_ACTOR, Actor
from tests.conftest import ROOT
from tests.inference.conftest import API_KEY, Server, settings_for

pytestmark = pytest.mark.slow

BOB = Actor(user_id="bob", email="bob@example.com")


@pytest.fixture
def toy_dataset(server: Server, data_dir: Path, tmp_path: Path):
    settings = settings_for(server, data_dir)
    db.upgrade(settings)
    src = tmp_path / "toy-qa.jsonl"
    src.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": f"Question {i}?"},
                        {"role": "assistant", "content": f"Answer {i}."},
                    ]
                }
            )
            + "\n"
            for i in range(40)
        )
    )
    store = make_blob_store(settings)
    with db.session_scope(settings) as s:
        ds, _ = datasets.add_dataset(LOCAL_ACTOR, s, store, src, "toy-qa", eval_fraction=0.5)
        ds_id = ds.id
    yield settings, store, ds_id
    db.dispose_engines()


def test_eval_split_rows_become_cases_for_their_owner_only(toy_dataset) -> None:
    settings, store, ds_id = toy_dataset
    with db.session_scope(settings) as s:
        assert eval_split_datasets(LOCAL_ACTOR, s) == {"toy-qa": ds_id}
        cases = eval_split_cases(LOCAL_ACTOR, s, store, ds_id)
        assert 5 <= len(cases) <= 35
        for c in cases:
            n = c.prompt.removeprefix("Question ").removesuffix("?")
            assert c.reference == f"Answer {n}."
        assert eval_split_datasets(BOB, s) == {}
        with pytest.raises(NotFound):
            eval_split_cases(BOB, s, store, ds_id)


def test_page_compares_on_a_datasets_eval_split(
    toy_dataset, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, store, ds_id = toy_dataset
    monkeypatch.setenv("INFERENCE_URL", server.url)
    monkeypatch.setenv("INFERENCE_API_KEY", API_KEY)
    monkeypatch.setenv("INFERENCE_ADAPTERS_DIR", str(server.adapters_dir))
    with db.session_scope(settings) as s:
        want = [(c.prompt, c.reference) for c in eval_split_cases(LOCAL_ACTOR, s, store, ds_id)]
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page("app_pages/playground.py").run()
    at.multiselect(key="playground.models").set_value([f"{server.base} (base)"])
    at.number_input(key="playground.max_tokens").set_value(4)
    at.run()
    at.radio(key="playground.set_source").set_value("Eval split of toy-qa").run()
    assert "playground.set_text" not in [t.key for t in at.text_area]  # no paste box now
    at.button(key="playground.run_set").click().run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert list(zip(table["prompt"], table["reference"], strict=True)) == want
    assert table[f"{server.base} (base)"].map(len).gt(0).any()
