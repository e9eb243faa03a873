"""The agent loop on a tiny model, end to end: a tool-calling dataset is uploaded, a job
trains on its normalised rows through the worker's job handler, and through the inference
server the adapter answers with a parseable tool call more often than the base; a tool
result pasted back continues the conversation, and the tool-calling scores of the
evaluation show the same gain. Each test runs against real vLLM started with the deployed
endpoint's tool-call parser (`[vllm]`) and the local server (`[local]`); one adapter is
trained for the whole module and copied into each server's adapter folder."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from core import datasets, db
from core.clients.inference import (
    InferenceClient,
    Sampling,
    agent_chat,
    dataset_tools,
    tool_result,
)
from core.clients.storage import make_blob_store
from core.settings import Settings
from core.tool_scores import evaluate_tools, tool_cases
from core.users import LOCAL_ACTOR
from tests.inference.conftest import Server, settings_for
from tests.inference.test_trained_adapter import toy_job

pytestmark = pytest.mark.slow

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
CITIES = ["Paris", "London", "Berlin", "Madrid", "Rome", "Tokyo", "Oslo", "Lima", "Cairo"]
QUESTIONS = ["What is the weather in {}?", "Is it raining in {}?", "Weather for {} please."]
GREEDY = Sampling(temperature=0.0, max_tokens=64, seed=0)


def toy_row(question: str, city: str) -> dict[str, Any]:
    call = {
        "id": f"call-{city}",
        "type": "function",
        "function": {"name": "get_weather", "arguments": json.dumps({"city": city})},
    }
    return {
        "tools": [WEATHER],
        "messages": [
            {"role": "user", "content": question.format(city)},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"call-{city}", "content": "sunny"},
            {"role": "assistant", "content": f"It is sunny in {city}."},
        ],
    }


@pytest.fixture(scope="module")
def server(both_servers: Server) -> Server:
    return both_servers


@pytest.fixture(scope="module")
def agent(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Upload the dataset and train one adapter on it (into a volume of its own), once."""
    from trainer.env import WorkerEnv
    from trainer.handler import handler

    tmp = tmp_path_factory.mktemp("agent")
    settings = Settings(data_dir=tmp / "data")
    db.upgrade(settings)
    store = make_blob_store(settings)
    src = tmp / "weather-tools.jsonl"
    src.write_text("".join(json.dumps(toy_row(q, c)) + "\n" for q in QUESTIONS for c in CITIES))
    with db.session_scope(settings) as s:
        ds, report = datasets.add_dataset(
            LOCAL_ACTOR,
            s,
            store,
            src,
            "weather-tools",
            eval_fraction=0.2,
            tokenizer=datasets.load_tokenizer(str(tiny_model)),
        )
        key, stats, dataset_id = ds.normalized_key, dict(ds.stats), ds.id
        assert dataset_tools(LOCAL_ACTOR, s, store, ds.id) == [WEATHER]  # the Playground's
        eval_rows = datasets.preview_rows(
            LOCAL_ACTOR, s, store, ds.id, n=100, split="eval", max_chars=100_000
        )
    assert (
        stats["agent"]["rows_with_tools"]
        == report.valid_rows
        == len(src.read_text().split("\n")) - 1
    )
    train_file = tmp / "train.jsonl"
    train_file.write_bytes(store.get_bytes("datasets", key))
    job = toy_job(tiny_model, train_file, "weather-agent")
    job["training"].update(max_steps=80, max_length=512)
    env = WorkerEnv(
        model_cache_dir=tmp / "models", checkpoint_dir=tmp / "ck", adapter_dir=tmp / "volume"
    )
    events = list(handler({"id": "rp-agent", "input": job}, env))
    assert events[-1]["type"] == "completed", events[-1]
    yield {
        "data": tmp / "data",
        "eval_rows": eval_rows,
        "dataset_id": dataset_id,
        "folder": tmp / "volume" / "weather-agent",
    }
    db.dispose_engines()


@pytest.fixture(scope="module")
def trained(server: Server, agent: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The adapter in `server`'s adapter folder (as the worker copies it to the volume),
    and what the tests need."""
    folder = server.adapters_dir / "weather-agent"
    shutil.copytree(agent["folder"], folder)
    settings = settings_for(server, agent["data"], inference_lora_loading="resolver")
    with InferenceClient(settings) as client:
        client.ensure_adapter("weather-agent")
        yield {
            **agent,
            "client": client,
            "base": server.base,
            "settings": settings,
            "folder": folder,
        }


def parseable_calls(client: InferenceClient, model: str, prompts: list[str]) -> list[Any]:
    """The replies (each with its `prompt`) that hold a call with JSON-object arguments."""
    out = []
    for p in prompts:
        msgs = [{"role": "user", "content": p}]
        r = agent_chat(client, model, msgs, tools=[WEATHER], sampling=GREEDY)
        if any(c.parsed_arguments() is not None for c in r.tool_calls):
            out.append(SimpleNamespace(prompt=p, reply=r))
    return out


def test_the_adapter_calls_the_tool_more_often_than_the_base(trained) -> None:
    client, base = trained["client"], trained["base"]
    prompts = [q.format(c) for q in QUESTIONS for c in CITIES]
    adapter_ok = parseable_calls(client, "weather-agent", prompts)
    base_ok = parseable_calls(client, base, prompts)
    print(f"\nparseable tool calls: adapter {len(adapter_ok)}/{len(prompts)}, base {len(base_ok)}")
    assert len(adapter_ok) > len(base_ok)
    assert len(adapter_ok) >= len(prompts) // 2
    assert all(c.name == "get_weather" for r in adapter_ok for c in r.reply.tool_calls)
    assert adapter_ok[0].reply.finish_reason == "tool_calls" and adapter_ok[0].reply.content == ""


def test_a_pasted_tool_result_continues_the_conversation(trained) -> None:
    client = trained["client"]
    messages: list[dict[str, Any]] = [{"role": "user", "content": "What is the weather in Rome?"}]
    first = agent_chat(client, "weather-agent", messages, tools=[WEATHER], sampling=GREEDY)
    assert first.tool_calls, first
    messages += [first.as_message(), tool_result(first.tool_calls[0].id, "sunny")]
    second = agent_chat(client, "weather-agent", messages, tools=[WEATHER], sampling=GREEDY)
    assert second.finish_reason in ("stop", "length", "tool_calls")
    assert second.content or second.tool_calls


def test_tool_scores_of_the_eval_split_favour_the_adapter(trained) -> None:
    cases = tool_cases(trained["eval_rows"])
    assert cases and all(c.expected[0][0] == "get_weather" for c in cases)
    scores = evaluate_tools(trained["client"], cases, "weather-agent", trained["base"], GREEDY)
    print(f"\ntool scores: {json.dumps(scores)}")
    assert scores["adapter"]["name_accuracy"] > scores["base"]["name_accuracy"]
    assert scores["delta"]["parseable"] > 0


def test_a_tool_version_is_evaluated_and_its_tool_scores_stored(trained) -> None:
    """The evaluation a finished job gets, on a version of the tool-calling dataset: the
    tool scores sit beside the text metrics in the version's stored scores."""
    from core import evaluate
    from core.db import repo

    settings = trained["settings"].model_copy(update={"eval_max_tokens": GREEDY.max_tokens})
    with db.session_scope(settings) as s:
        v = repo.create_adapter_version(
            LOCAL_ACTOR,
            s,
            adapter_name="weather-agent-evaluated",
            base_model=trained["base"],
            dataset_id=trained["dataset_id"],
            volume_path=str(trained["folder"]),
        )
        version_id = v.id
    result = evaluate.evaluate_version(LOCAL_ACTOR, settings, version_id, client=trained["client"])
    tools = result["tools"]
    assert tools["rows"] == len(tool_cases(trained["eval_rows"])) > 0
    assert tools["adapter"]["name_accuracy"] > tools["base"]["name_accuracy"]
    assert tools["delta"]["parseable"] > 0
    assert result["status"] == "done" and result["rows"] > 0
    with db.session_scope(settings) as s:
        stored = repo.get_version(LOCAL_ACTOR, s, version_id).eval_scores
    assert stored["tools"] == tools and stored["adapter"] == result["adapter"]


def test_the_playground_shows_calls_takes_a_result_and_continues(
    trained, server: Server, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    from tests.conftest import ROOT
    from tests.inference.conftest import API_KEY

    monkeypatch.setenv("INFERENCE_URL", server.url)
    monkeypatch.setenv("INFERENCE_API_KEY", API_KEY)
    monkeypatch.setenv("INFERENCE_ADAPTERS_DIR", str(server.adapters_dir))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page("app_pages/playground.py").run()
    at.multiselect(key="playground.models").set_value(["weather-agent"])
    at.slider(key="playground.temperature").set_value(0.0)
    at.number_input(key="playground.max_tokens").set_value(64)
    at.text_area(key="playground.tools_json").set_value(json.dumps([WEATHER]))
    # A question the adapter answers with a well-formed call through the API.
    prompts = [q.format(c) for q in QUESTIONS for c in CITIES]
    prompt = parseable_calls(trained["client"], "weather-agent", prompts[:6])[0].prompt
    at.text_area(key="playground.agent_prompt").set_value(prompt).run()
    at.button(key="playground.agent_send").click().run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    assert any(c.value.startswith("calls get") for c in at.caption)
    (call,) = [c for c in at.code if c.language == "json"]
    assert json.loads(call.value)["city"]
    result_box = at.text_area(key="playground.result.weather-agent.0")
    result_box.set_value("sunny")
    at.button(key="playground.continue.weather-agent").click().run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    convo = at.session_state["playground.agent"]["weather-agent"]
    assert [m["role"] for m in convo[:3]] == ["user", "assistant", "tool"]
    assert convo[2]["content"] == "sunny" and len(convo) == 4
    assert "tool result" in [c.value for c in at.caption]


def test_the_agent_command_shows_calls_takes_a_result_and_clears(
    trained, server: Server, data_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`brightrun agent`, the Tools tab in the terminal: a call printed as a call, its
    result sent back from a later command through the conversation file, then cleared."""
    from typer.testing import CliRunner

    from cli import app
    from tests.inference.conftest import API_KEY

    monkeypatch.setenv("INFERENCE_URL", server.url)
    monkeypatch.setenv("INFERENCE_API_KEY", API_KEY)
    monkeypatch.setenv("INFERENCE_ADAPTERS_DIR", str(server.adapters_dir))
    tools, talk = tmp_path / "tools.json", tmp_path / "talk.jsonl"
    tools.write_text(json.dumps([WEATHER]))
    prompts = [q.format(c) for q in QUESTIONS for c in CITIES]
    prompt = parseable_calls(trained["client"], "weather-agent", prompts[:6])[0].prompt
    # Greedy, as the prompt was picked: the same call comes back through the command.
    common = ["agent", "--adapter", "weather-agent", "--conversation", str(talk)]
    common += ["--temperature", "0", "--max-tokens", "64", "--seed", "0"]
    first = CliRunner().invoke(app, [*common, "--tools", str(tools), prompt])
    assert first.exit_code == 0, first.output
    (line,) = [x for x in first.output.splitlines() if x.startswith("call ")]
    call_id = line.split()[1].rstrip(":")
    assert "get_weather(" in line
    again = CliRunner().invoke(
        app, [*common, "--tools", str(tools), "--result", f"{call_id}=sunny"]
    )
    assert again.exit_code == 0, again.output
    roles = [json.loads(x)["role"] for x in talk.read_text().splitlines()]
    assert roles == ["user", "assistant", "tool", "assistant"]
    bad = CliRunner().invoke(app, [*common, "--result", "no-equals-sign"])
    assert bad.exit_code == 1 and "CALL_ID=TEXT" in bad.output
    bad_sampling = CliRunner().invoke(app, [*common, "--temperature", "3", "hi"])
    assert bad_sampling.exit_code == 1 and "temperature 3.0 must be between 0 and 2" in (
        bad_sampling.output
    )
    cleared = CliRunner().invoke(app, ["agent", "--conversation", str(talk), "--clear"])
    assert cleared.exit_code == 0 and talk.read_text() == ""
