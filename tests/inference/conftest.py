"""Fixtures: a tiny chat model, LoRA adapters for it, and the real local inference server
(`python -m local.inference`) running on a free loopback port for the whole session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cli.stack import stop_all, wait_healthy
from core.clients.inference import InferenceClient
from core.settings import Settings
from tests.conftest import ROOT

API_KEY = "inference-test-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_adapter(
    base: Path, out: Path, *, rank: int = 4, seed: int = 0, base_name: str | None = None
) -> Path:
    """A LoRA adapter with random (non-zero) weights, so it visibly changes the answers.
    `base_name` overrides the recorded base_model_name_or_path."""
    import json

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    cfg = LoraConfig(
        r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():  # larger than peft's random init, so the answers clearly change
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.normal_(0.0, 0.3)
    peft_model.save_pretrained(out)
    if base_name is not None:
        cfg_path = out / "adapter_config.json"
        data = json.loads(cfg_path.read_text())
        data["base_model_name_or_path"] = base_name
        cfg_path.write_text(json.dumps(data))
    return out


@dataclass(frozen=True)
class Server:
    url: str
    base: str  # the served base model name (the folder path, as a trainer records it)
    adapters_dir: Path  # the server's filesystem-resolver folder
    work: Path  # scratch space for adapters outside that folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainer.shared.tiny import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("models") / "tiny-chat", seed=0)


@pytest.fixture(scope="session")
def adapters(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("adapters")
    return {
        "a": make_adapter(tiny_model, d / "a", rank=4, seed=1),
        "b": make_adapter(tiny_model, d / "b", rank=8, seed=2),
        "other-base": make_adapter(
            tiny_model, d / "other", rank=4, seed=3, base_name="Qwen/Qwen2.5-7B-Instruct"
        ),
    }


def start_server(tiny_model: Path, root: Path, *extra: str) -> tuple[subprocess.Popen, Server]:
    port = free_port()
    adapters_dir = root / "resolver"
    adapters_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "INFERENCE_API_KEY": API_KEY,
        "BRIGHTRUN_DATA_DIR": str(root / "data"),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    argv = [
        sys.executable,
        "-m",
        "local.inference",
        "--base",
        str(tiny_model),
        "--adapters-dir",
        str(adapters_dir),
        "--port",
        str(port),
        "--device",
        "cpu",
        *extra,
    ]
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", proc, timeout_s=180)
    except Exception:
        stop_all([proc])
        raise RuntimeError((root / "server.log").read_text(errors="replace")) from None
    return proc, Server(f"http://127.0.0.1:{port}/v1", str(tiny_model), adapters_dir, root)


@pytest.fixture(scope="session")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    proc, info = start_server(tiny_model, tmp_path_factory.mktemp("server"))
    yield info
    stop_all([proc])


def settings_for(server: Server, data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": data_dir,
        "inference_url": server.url,
        "inference_api_key": API_KEY,
        "inference_adapters_dir": str(server.adapters_dir),
    }
    return Settings(**{**values, **overrides})


@pytest.fixture
def settings(server: Server, data_dir: Path) -> Settings:
    return settings_for(server, data_dir)


@pytest.fixture
def client(settings: Settings) -> Iterator[InferenceClient]:
    with InferenceClient(settings) as c:
        yield c


@pytest.fixture
def unique_name() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"
