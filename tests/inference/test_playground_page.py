"""The Playground page driven with AppTest against the real local server: what the user
sees after choosing models, chatting, clearing and comparing on a set."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from components.chat import DEMO_MODEL_NOTICE
from core.clients.inference import InferenceClient, Sampling
from tests.conftest import ROOT
from tests.inference.conftest import API_KEY, Server, free_port

pytestmark = pytest.mark.slow

Q = "What is the capital of France?"
GREEDY = Sampling(temperature=0.0, max_tokens=10)


@pytest.fixture
def page_env(server: Server, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERENCE_URL", server.url)
    monkeypatch.setenv("INFERENCE_API_KEY", API_KEY)
    monkeypatch.setenv("INFERENCE_ADAPTERS_DIR", str(server.adapters_dir))


def open_playground(ready: bool = True) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page("app_pages/playground.py").run()
    assert not at.exception, at.exception
    if ready:  # the server answered and a model is chosen: the page went all the way down
        assert not at.error, [e.value for e in at.error]
        # The server here serves the tiny demo model: the page says why its answers are noise.
        assert [i.value for i in at.info] == [DEMO_MODEL_NOTICE]
    return at


def texts(at: AppTest, role: str) -> list[str]:
    return [
        "".join(t.value for t in msg.text)  # shown as plain text, never markdown
        for msg in at.chat_message
        if msg.name == role
    ]


def test_side_by_side_chat_clear_and_compare_on_a_set(
    page_env: None,
    server: Server,
    client: InferenceClient,
    adapters: dict[str, Path],
    unique_name: str,
) -> None:
    shutil.copytree(adapters["a"], server.adapters_dir / unique_name)
    base_label = f"{server.base} (base)"
    at = open_playground()
    assert base_label in at.multiselect(key="playground.models").options
    at.multiselect(key="playground.models").set_value([base_label, unique_name])
    at.slider(key="playground.temperature").set_value(0.0)
    at.number_input(key="playground.max_tokens").set_value(10)
    at.run()
    assert not at.exception, at.exception
    assert any("loaded at run time" in c.value for c in at.caption)  # how it was loaded

    at.chat_input(key="playground.prompt").set_value(Q).run()
    assert not at.exception, at.exception
    msgs = [{"role": "user", "content": Q}]
    want_base = client.chat(server.base, msgs, GREEDY).text
    want_adapter = client.chat(unique_name, msgs, GREEDY).text
    assert want_adapter.strip() and want_adapter != want_base
    assert texts(at, "user") == [Q]
    answers = [t.strip() for t in texts(at, "assistant")]
    assert answers == [want_base.strip(), want_adapter.strip()]  # side by side, in order
    assert not at.get("download_button")[0].proto.disabled  # something to export now

    at.run()  # the kept conversation is shown again on the next rerun
    assert texts(at, "user") == [Q]
    assert [t.strip() for t in texts(at, "assistant")] == [want_base.strip(), want_adapter.strip()]

    at.button(key="playground.clear").click().run()
    assert texts(at, "user") == [] and texts(at, "assistant") == []

    at.text_area(key="playground.set_text").input(
        f"{Q}\tParis\nHow many legs does a spider have?"
    ).run()
    at.button(key="playground.run_set").click().run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert list(table.columns) == ["prompt", "reference", base_label, unique_name]
    assert table["prompt"].tolist() == [Q, "How many legs does a spider have?"]
    assert table["reference"].tolist() == ["Paris", ""]
    assert table[unique_name].iloc[0] == want_adapter
    client.unload_adapter(unique_name)


def test_bad_prompt_set_line_is_named(page_env: None) -> None:
    at = open_playground()
    # a new user has no dataset with an eval split: pasted prompts are the only source
    assert at.radio(key="playground.set_source").options == ["Pasted prompts"]
    assert at.radio(key="playground.set_source").value == "Pasted prompts"
    at.text_area(key="playground.set_text").input('{"prompt": 1}').run()
    at.button(key="playground.run_set").click().run()
    assert any("line 1" in e.value for e in at.error)


def test_unreachable_server_says_how_to_start_it(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFERENCE_URL", f"http://127.0.0.1:{free_port()}/v1")
    at = open_playground(ready=False)
    assert any("not reachable" in e.value and "brightrun up" in e.value for e in at.error)


def test_base_sft_and_dpo_versions_answer_side_by_side_on_the_page_and_the_command_line(
    page_env: None,
    server: Server,
    client: InferenceClient,
    adapters: dict[str, Path],
    data_dir: Path,
    unique_name: str,
) -> None:
    """A DPO version continued from an SFT version: the playground lists both versions of
    the adapter, and base, SFT and DPO answer the same prompt side by side; so does
    `brightrun chat --base -a NAME v1 -a NAME v2`."""
    from typer.testing import CliRunner

    from cli import app
    from core import db
    from core.db import repo
    from core.settings import load_settings
    from core.users import LOCAL_ACTOR

    settings = load_settings()
    db.upgrade(settings)
    folders = {}
    for key, tag in (("a", "sft"), ("b", "dpo")):
        folders[tag] = server.adapters_dir / f"{unique_name}-{tag}"
        shutil.copytree(adapters[key], folders[tag])
    with db.session_scope(settings) as s:
        sft = repo.create_adapter_version(
            LOCAL_ACTOR,
            s,
            adapter_name=unique_name,
            base_model=server.base,
            volume_path=str(folders["sft"]),
            settings={"method": "sft"},
        )
        repo.create_adapter_version(
            LOCAL_ACTOR,
            s,
            adapter_name=unique_name,
            base_model=server.base,
            volume_path=str(folders["dpo"]),
            parent_version_id=sft.id,
            settings={"method": "dpo", "preference": {"beta": 0.1}},
        )
    labels = [f"{server.base} (base)", f"{unique_name} v1", f"{unique_name} v2"]
    at = open_playground()
    assert set(labels) <= set(at.multiselect(key="playground.models").options)
    at.multiselect(key="playground.models").set_value(labels)
    at.slider(key="playground.temperature").set_value(0.0)
    at.number_input(key="playground.max_tokens").set_value(10)
    at.run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    assert not at.warning and [i.value for i in at.info] == [DEMO_MODEL_NOTICE], (
        [w.value for w in at.warning],
        [i.value for i in at.info],
    )
    at.chat_input(key="playground.prompt").set_value(Q).run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    msgs = [{"role": "user", "content": Q}]
    served = [server.base, folders["sft"].name, folders["dpo"].name]
    want = [client.chat(m, msgs, GREEDY).text.strip() for m in served]
    assert len(set(want)) == 3  # three different models answered
    assert [t.strip() for t in texts(at, "assistant")] == want

    sampling = ["--temperature", "0", "--max-tokens", "10"]
    versions = ["-a", labels[1], "-a", labels[2]]
    r = CliRunner().invoke(app, ["chat", "--base", *versions, *sampling, Q])
    assert r.exit_code == 0, r.output
    heads = [f"── {label} ──" for label in labels]
    at_ = [r.stdout.index(h) for h in heads]
    assert at_ == sorted(at_)  # base, v1, v2 in that order
    for i, answer in enumerate(want):
        end = at_[i + 1] if i + 1 < len(at_) else len(r.stdout)
        assert answer in r.stdout[at_[i] : end]
    r = CliRunner().invoke(app, ["chat", *versions, "--version", "1", Q])
    assert r.exit_code == 1 and "--version goes with one --adapter" in r.output
    db.dispose_engines()
