"""`brightrun up` starts the local inference server only when INFERENCE_URL points at it:
BrightRun's imitation by default, real vLLM's CPU build with INFERENCE_ENGINE=vllm."""

from __future__ import annotations

import json
from pathlib import Path

from cli.stack import local_services
from core.settings import Settings


def test_up_serves_the_tiny_demo_model_by_default(data_dir: Path) -> None:
    services = {s.name: s for s in local_services(Settings(), dashboard_port=8599)}
    inference = services["inference"]
    assert inference.argv[1:3] == ["-m", "local.inference"]
    assert str((data_dir / "models" / "tiny-chat").resolve()) in inference.argv
    assert "--build-tiny" in inference.argv
    assert inference.health_url == "http://127.0.0.1:8301/health"


def test_up_serves_the_configured_base_model(data_dir: Path) -> None:
    services = {
        s.name: s
        for s in local_services(Settings(inference_base_model="Qwen/Qwen2.5-0.5B-Instruct"), 8599)
    }
    argv = services["inference"].argv
    assert (
        argv[argv.index("--base") + 1] == "Qwen/Qwen2.5-0.5B-Instruct"
        and "--build-tiny" not in argv
    )


def test_up_starts_no_inference_server_for_a_remote_vllm(data_dir: Path) -> None:
    settings = Settings(inference_url="https://api.runpod.ai/v2/abc123/openai/v1")
    assert "inference" not in {s.name for s in local_services(settings, dashboard_port=8599)}


def test_up_with_inference_engine_vllm_runs_vllms_cpu_build(data_dir: Path) -> None:
    from cli.stack import VLLM_PYTHON
    from core.deploy.tool_parsing import vllm_flags
    from tests.inference.conftest import need_vllm

    need_vllm()
    svc = {s.name: s for s in local_services(Settings(inference_engine="vllm"), 8599)}[
        "inference (vLLM)"
    ]
    tiny = str((data_dir / "models" / "tiny-chat").resolve())
    assert svc.argv[:3] == [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server"]
    assert svc.argv[svc.argv.index("--model") + 1] == tiny and "--enable-lora" in svc.argv
    assert svc.env["VLLM_PLUGINS"] == "lora_filesystem_resolver"
    # Tool calls parsed as the deployed endpoint parses them (the tiny model writes hermes).
    hermes = ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
    i = svc.argv.index("--tool-call-parser")
    assert svc.argv[i - 1 : i + 2] == vllm_flags(tiny) == hermes
    assert svc.env["VLLM_LORA_RESOLVER_CACHE_DIR"] == str(
        (data_dir / "volume" / "adapters").resolve()
    )
    assert (
        json.loads((Path(tiny) / "config.json").read_text())["num_attention_heads"] == 2
    )  # head_dim 32
    # That it serves, and that the Settings page's health check names it: the vLLM server of
    # the contract tests is this service (tests/inference/conftest.py, start_vllm).
