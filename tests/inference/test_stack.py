"""`brightrun up` starts the local inference server only when INFERENCE_URL points at it."""

from __future__ import annotations

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
