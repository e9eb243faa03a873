"""`brightrun deploy --with-vllm --base MODEL`: one more vLLM endpoint per base model, its
URL merged into INFERENCE_URLS in .env, every request valid against RunPod's document."""

from __future__ import annotations

import json
from pathlib import Path

from core.deploy import DeployConfig, desired_state
from core.deploy.config import base_endpoint_name
from core.settings import load_settings
from tests.deploy import test_deploy as _base
from tests.deploy.test_deploy import VLLM, _one

fake, deploy = _base.fake, _base.deploy  # the stand-in and the command, as there

BASE = "Qwen/Qwen2.5-14B-Instruct"
OTHER = "meta-llama/Llama-3.1-8B-Instruct"


def _urls() -> dict[str, str]:
    line = [x for x in Path(".env").read_text().splitlines() if x.startswith("INFERENCE_URLS=")]
    assert len(line) == 1, Path(".env").read_text()
    return json.loads(line[0].split("=", 1)[1])


def test_a_base_gets_its_own_endpoint_and_an_inference_urls_entry(deploy, fake):
    result = deploy(*VLLM, "--base", BASE)
    assert result.exit_code == 0, result.output
    name = base_endpoint_name("brightrun", BASE)
    template = _one(fake.templates, name=name)
    assert template["env"]["MODEL_NAME"] == BASE
    assert template["env"]["VLLM_PLUGINS"] == "lora_filesystem_resolver"
    assert template["env"]["VLLM_LORA_RESOLVER_CACHE_DIR"] == "/runpod-volume/adapters"
    endpoint = _one(fake.endpoints, name=name)
    default = _one(fake.endpoints, name="brightrun-vllm")
    assert endpoint["networkVolumes"] == default["networkVolumes"]
    assert _urls() == {BASE: f"{fake.url}/v2/{endpoint['id']}/openai/v1"}
    assert f"INFERENCE_URL={fake.url}/v2/{default['id']}/openai/v1" in Path(".env").read_text()
    # the settings read it back: chat and evaluation route the base to its endpoint
    assert load_settings().inference_urls == _urls()


def test_a_second_run_changes_nothing_and_says_so(deploy, fake):
    assert deploy(*VLLM, "--base", BASE).exit_code == 0
    writes, env = len(fake.writes()), Path(".env").read_text()
    second = deploy(*VLLM, "--base", BASE)
    assert second.exit_code == 0, second.output
    assert len(fake.writes()) == writes
    assert "already points at these endpoints" in second.output
    assert Path(".env").read_text() == env


def test_a_second_base_adds_an_entry_and_keeps_the_first(deploy, fake):
    Path(".env").write_text('INFERENCE_URLS={"some/other-base": "https://elsewhere/v1"}\n')
    assert deploy(*VLLM, "--base", BASE).exit_code == 0
    first = _urls()
    result = deploy(*VLLM, "--base", OTHER)
    assert result.exit_code == 0, result.output
    urls = _urls()
    assert set(urls) == {"some/other-base", BASE, OTHER}
    assert urls[BASE] == first[BASE] and urls["some/other-base"] == "https://elsewhere/v1"
    other = _one(fake.endpoints, name=base_endpoint_name("brightrun", OTHER))
    assert urls[OTHER] == f"{fake.url}/v2/{other['id']}/openai/v1"


def test_dry_run_shows_the_base_endpoint_calls(deploy, fake):
    result = deploy("--dry-run", *VLLM, "--base", BASE)
    assert result.exit_code == 0, result.output
    name = base_endpoint_name("brightrun", BASE)
    assert result.output.count(f"POST {fake.rest_url}/serverless") == 3
    assert f"+ create endpoint {name}" in result.output
    assert "INFERENCE_URLS=" in result.output
    assert fake.writes() == [] and not Path(".env").exists()


def test_base_names_are_stable_valid_and_distinct():
    a = base_endpoint_name("brightrun", BASE)
    assert a == base_endpoint_name("brightrun", BASE) and a.startswith("brightrun-vllm-qwen-")
    assert len(a) <= 48 and a.replace("-", "").isalnum()
    assert a != base_endpoint_name("brightrun", BASE.replace(".", "-"))
    config = DeployConfig(image="x/y:1", with_vllm=True, bases=(BASE,))
    assert list(desired_state(config).base_endpoints) == [BASE]  # no default endpoint needed


def test_base_needs_with_vllm(deploy, fake):
    result = deploy("--base", BASE)
    assert result.exit_code == 2 and "--base needs --with-vllm" in result.output
