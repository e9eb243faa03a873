"""`brightrun chat` against the real local server."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from core.clients.inference import InferenceClient, Sampling
from tests.inference.conftest import API_KEY, Server

pytestmark = pytest.mark.slow

Q = "What is the capital of France?"
GREEDY = Sampling(temperature=0.0, max_tokens=10)


@pytest.fixture
def cli_env(server: Server, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERENCE_URL", server.url)
    monkeypatch.setenv("INFERENCE_API_KEY", API_KEY)
    monkeypatch.setenv("INFERENCE_ADAPTERS_DIR", str(server.adapters_dir))


def test_chat_streams_the_adapters_answer_and_compares_with_the_base(
    cli_env: None,
    server: Server,
    client: InferenceClient,
    adapters: dict[str, Path],
    unique_name: str,
) -> None:
    shutil.copytree(adapters["a"], server.adapters_dir / unique_name)
    args = ["chat", "--adapter", unique_name, "--temperature", "0", "--max-tokens", "10", Q]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    want = client.chat(unique_name, [{"role": "user", "content": Q}], GREEDY).text
    assert want in r.stdout
    assert "loaded at run time" in r.stderr  # says how the adapter was made available

    r = CliRunner().invoke(app, [*args[:1], "--base", *args[1:]])
    assert r.exit_code == 0, r.output
    base_answer = client.chat(server.base, [{"role": "user", "content": Q}], GREEDY).text
    base_head, adapter_head = f"── {server.base} (base) ──", f"── {unique_name} ──"
    assert r.stdout.index(base_head) < r.stdout.index(adapter_head)
    assert base_answer in r.stdout.split(adapter_head)[0]
    assert want in r.stdout.split(adapter_head)[1]
    client.unload_adapter(unique_name)

    listed = CliRunner().invoke(app, ["chat", "--list"])
    assert f"{server.base} (base)" in listed.stdout and unique_name in listed.stdout


def test_chat_with_an_unknown_adapter_fails_clearly(cli_env: None) -> None:
    r = CliRunner().invoke(app, ["chat", "--adapter", "nobody-trained-this", "hello"])
    assert r.exit_code == 1
    assert "no adapter 'nobody-trained-this'" in r.stderr and "--list" in r.stderr


def test_chat_with_bad_sampling_names_the_option(cli_env: None, server: Server) -> None:
    r = CliRunner().invoke(app, ["chat", "--base", "--temperature", "9", "hello"])
    assert r.exit_code == 1 and "temperature" in r.stderr
