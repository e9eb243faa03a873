"""Fixtures: a tiny chat model, LoRA adapters for it, and the inference servers on free
loopback ports, each started once for the whole session: BrightRun's local server
(`python -m local.inference`, fixture `server`, which most tests use) and real vLLM's CPU
build from .venv-vllm (`vllm_server`; `make vllm` installs it). Without .venv-vllm the vLLM
tests fail; BRIGHTRUN_SKIP_VLLM=1 skips them instead (`need_vllm`), on purpose only.

The tiny model has heads of 32 dimensions: vLLM's CPU attention has no smaller kernel."""

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

from cli.stack import VLLM_PYTHON, inference_service, stop_all, wait_healthy
from core.clients.inference import InferenceClient
from core.settings import Settings
from tests.conftest import ROOT

API_KEY = "inference-test-key"
MAX_MODEL_LEN = 512  # both servers' context (vLLM's --max-model-len in VLLM_SMALL_FLAGS)


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
    engine: str = "local"  # "local" (BrightRun's imitation) or "vllm"
    max_model_len: int = 4096


@pytest.fixture(scope="session")
def stack_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data folder of a `brightrun up` stack: its demo model is the tiny model here."""
    return tmp_path_factory.mktemp("stack") / "data"


@pytest.fixture(scope="session")
def tiny_model(stack_data: Path) -> Path:
    """The tiny demo model `brightrun up` serves (heads of 32 dimensions, for vLLM)."""
    from cli.stack import build_vllm_tiny_model

    folder = (stack_data / "models" / "tiny-chat").resolve()
    build_vllm_tiny_model(str(folder))
    return folder


@pytest.fixture(scope="session")
def adapters(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("adapters")
    return {
        "a": make_adapter(tiny_model, d / "a", rank=4, seed=1),
        "b": make_adapter(tiny_model, d / "b", rank=8, seed=2),
        "other-base": make_adapter(
            tiny_model, d / "other", rank=4, seed=3, base_name="Qwen/Qwen2.5-7B-Instruct"
        ),
        "rank-32": make_adapter(
            tiny_model, d / "rank-32", rank=32, seed=4
        ),  # above --max-lora-rank 16
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
        "--max-model-len",
        str(MAX_MODEL_LEN),
        *extra,
    ]
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", proc, timeout_s=180)
    except Exception:
        stop_all([proc])
        raise RuntimeError((root / "server.log").read_text(errors="replace")) from None
    return proc, Server(
        f"http://127.0.0.1:{port}/v1", str(tiny_model), adapters_dir, root, "local", MAX_MODEL_LEN
    )


@pytest.fixture(scope="session")
def local_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    proc, info = start_server(tiny_model, tmp_path_factory.mktemp("server"))
    yield info
    stop_all([proc])


@pytest.fixture(scope="session")
def server(local_server: Server) -> Server:
    """The server most tests use: BrightRun's local one (a module may override this)."""
    return local_server


def start_vllm(stack_data: Path, tiny_model: Path, root: Path) -> tuple[subprocess.Popen, Server]:
    """Real vLLM exactly as `brightrun up` runs it with INFERENCE_ENGINE=vllm (the service
    `cli.stack.inference_service` builds) on the stack's tiny demo model: LoRA with runtime
    loading and the filesystem resolver, one sequence at a time, float32, 512 tokens."""
    port = free_port()
    adapters_dir = root / "resolver"
    stack = Settings(
        data_dir=stack_data,
        inference_engine="vllm",
        inference_url=f"http://127.0.0.1:{port}/v1",
        inference_api_key=API_KEY,
        inference_adapters_dir=str(adapters_dir),
    )
    svc = inference_service(stack)
    assert svc is not None and svc.argv[svc.argv.index("--model") + 1] == str(tiny_model)
    env = {**os.environ, **svc.env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("OMP_NUM_THREADS", None)  # vLLM binds its own threads
    log = open(root / "vllm.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(svc.argv, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_healthy(svc.health_url or "", proc, timeout_s=600)
    except Exception:
        stop_all([proc])
        raise RuntimeError((root / "vllm.log").read_text(errors="replace")[-6000:]) from None
    return proc, Server(
        stack.inference_url, str(tiny_model), adapters_dir, root, "vllm", MAX_MODEL_LEN
    )


def need_vllm() -> None:
    """Skips the calling test when BRIGHTRUN_SKIP_VLLM=1; fails it when real vLLM is missing."""
    if os.environ.get("BRIGHTRUN_SKIP_VLLM") == "1":
        pytest.skip("BRIGHTRUN_SKIP_VLLM=1: the tests against real vLLM are skipped")
    if not VLLM_PYTHON.is_file():
        pytest.fail(
            f"real vLLM is not installed ({VLLM_PYTHON}): run `make vllm`, or set "
            "BRIGHTRUN_SKIP_VLLM=1 to skip the tests against it"
        )


@pytest.fixture(scope="session")
def vllm_server(
    stack_data: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    need_vllm()
    proc, info = start_vllm(stack_data, tiny_model, tmp_path_factory.mktemp("vllm"))
    yield info
    stop_all([proc], grace_s=30)


@pytest.fixture(scope="module", params=["vllm", "local"])
def both_servers(request: pytest.FixtureRequest) -> Server:
    """Real vLLM, then BrightRun's local server: a test that takes this runs against each
    (ids `[vllm]` and `[local]`); each server is started once for the session."""
    return request.getfixturevalue("vllm_server" if request.param == "vllm" else "local_server")


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
