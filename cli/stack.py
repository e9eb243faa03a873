"""`brightrun up`: which processes make up the local stack, and the launcher that starts them
as child processes and keeps them running.

`local_services(settings)` lists them: the local GPU endpoint and inference server only when
the settings point at them (the defaults; with cloud URLs configured, only the syncer and the
dashboard run here), then the syncer and the dashboard.

Each `Service` is a command plus an optional health URL. Services start in list order; a
service with a health URL must answer 200 there before the next one starts. When any
child exits, or on Ctrl-C / SIGTERM, every child is stopped (SIGTERM, then SIGKILL after a
grace period) and `run_stack` returns the first non-zero exit code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from core.clients.inference import local_adapters_dir
from core.deploy.tool_parsing import vllm_flags
from core.settings import LOCAL_INFERENCE_PORT, Settings

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    health_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)


class StackError(RuntimeError):
    """A service did not come up."""


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"exited with code {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.3)
    raise StackError(f"{url} did not answer within {timeout_s:.0f}s")


def stop_all(procs: Sequence[subprocess.Popen], grace_s: float = 10.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_stack(services: Sequence[Service], echo=print) -> int:
    procs: list[subprocess.Popen] = []
    stopping = False

    def _stop(signum, frame):  # noqa: ARG001
        nonlocal stopping
        stopping = True

    old = signal.signal(signal.SIGTERM, _stop)
    try:
        for svc in services:
            env = {**os.environ, **svc.env}
            proc = subprocess.Popen(svc.argv, env=env)
            procs.append(proc)
            if svc.health_url:
                try:
                    wait_healthy(svc.health_url, proc)
                except StackError as e:
                    echo(f"{svc.name}: {e}")
                    return 1
            echo(f"{svc.name}: up" + (f" ({svc.health_url})" if svc.health_url else ""))
        while not stopping:
            for svc, proc in zip(services, procs, strict=True):
                if proc.poll() is not None:
                    echo(f"{svc.name} exited with code {proc.returncode}; stopping the stack")
                    return proc.returncode or 1
            time.sleep(0.5)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        stop_all(procs)
        signal.signal(signal.SIGTERM, old)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _on_this_machine(url: str) -> bool:
    return (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost")


def endpoint_service(settings: Settings) -> Service | None:
    """The local GPU endpoint (`python -m local.endpoint`), when GPU_CLUSTER_API_URL points
    at this machine; None for a cloud endpoint URL."""
    if not _on_this_machine(settings.gpu_cluster_api_url):
        return None
    url = urlsplit(settings.gpu_cluster_api_url)
    return Service(
        "gpu-endpoint",
        python_module("local.endpoint"),
        health_url=f"{url.scheme}://{url.hostname}:{url.port or 80}/ping",
    )


# vLLM's CPU build lives in its own virtual environment (`make vllm`): it pins its own torch.
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
# Flags that make vLLM's CPU build serve a small model on a laptop: the tiny demo model's
# context, a small KV cache, no compiled graphs. One sequence at a time: the CPU build can
# apply an adapter to a base-model request batched beside a LoRA request.
VLLM_SMALL_FLAGS = tuple(
    "--dtype float32 --max-model-len 512 --enforce-eager --kv-cache-memory-bytes 64M".split()
)


def vllm_command(
    model: str,
    port: int,
    adapters_dir: Path,
    *,
    api_key: str = "",
    max_lora_rank: int = 16,
    small: bool = True,
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that run real vLLM (from .venv-vllm) on loopback: `model`
    served under its own name, LoRA on with runtime loading and the filesystem resolver
    over `adapters_dir`, tool calls (and reasoning) parsed as the deployed vLLM endpoint
    parses them for `model` (`core.deploy.tool_parsing`). `small` adds VLLM_SMALL_FLAGS
    (for the tiny model)."""
    if not VLLM_PYTHON.is_file():
        raise StackError(f"vLLM is not installed ({VLLM_PYTHON} is missing): run `make vllm`")
    argv = [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", model]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    argv += ["--enable-lora", "--max-lora-rank", str(max_lora_rank), "--max-loras", "2"]
    argv += ["--max-num-seqs", "1", *(VLLM_SMALL_FLAGS if small else ()), *vllm_flags(model)]
    if api_key:
        argv += ["--api-key", api_key]
    env = {
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        "VLLM_PLUGINS": "lora_filesystem_resolver",
        "VLLM_LORA_RESOLVER_CACHE_DIR": str(adapters_dir),
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "0"),
        "VLLM_NO_USAGE_STATS": "1",
    }
    return argv, env


def inference_service(settings: Settings) -> Service | None:
    """The local inference server, when INFERENCE_URL points at this machine: BrightRun's
    imitation (`python -m local.inference`, INFERENCE_ENGINE=local) or real vLLM's CPU
    build (INFERENCE_ENGINE=vllm). It serves INFERENCE_BASE_MODEL, or the tiny demo model
    built into <data_dir>/models/tiny-chat. None for a remote vLLM."""
    if not _on_this_machine(settings.inference_url):
        return None
    url = urlsplit(settings.inference_url)
    port = url.port or LOCAL_INFERENCE_PORT  # any loopback port (tests start stacks side by side)
    health = f"http://127.0.0.1:{port}/health"
    base = settings.inference_base_model
    tiny = str((settings.data_dir / "models" / "tiny-chat").resolve())
    if settings.inference_engine == "vllm":
        if not base:
            build_vllm_tiny_model(tiny)
        adapters = local_adapters_dir(settings)
        adapters.mkdir(parents=True, exist_ok=True)
        key = settings.inference_api_key.get_secret_value()
        rank = settings.inference_max_lora_rank
        argv, env = vllm_command(
            base or tiny, port, adapters, api_key=key, max_lora_rank=rank, small=not base
        )
        return Service("inference (vLLM)", argv, health_url=health, env=env)
    argv = python_module(
        "local.inference",
        "--port",
        str(port),
        "--max-lora-rank",
        str(settings.inference_max_lora_rank),
        "--base",
    )
    argv += [base] if base else [tiny, "--build-tiny"]
    return Service("inference", argv, health_url=health)


def build_vllm_tiny_model(folder: str) -> None:
    """The tiny demo model, once, with heads of 32 dimensions (vLLM's CPU attention has no
    kernel for the default tiny model's 16)."""
    config = Path(folder) / "config.json"
    if config.is_file():
        import json

        c = json.loads(config.read_text(encoding="utf-8"))
        head_dim = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
        if head_dim < 32:
            raise StackError(
                f"the tiny demo model in {folder} has heads of {head_dim} dimensions, which "
                "vLLM's CPU build cannot serve (it was built for INFERENCE_ENGINE=local): "
                "move that folder away so it is rebuilt (adapters trained on it need the "
                "old one), or keep INFERENCE_ENGINE=local"
            )
        return
    from trainer.shared.tiny import build_tiny_chat_model

    build_tiny_chat_model(folder, **VLLM_TINY)


# The tiny model's shape that vLLM's CPU build serves: head_dim = 64 / 2 = 32.
VLLM_TINY = {"hidden_size": 64, "num_heads": 2, "num_kv_heads": 1}


def local_services(settings: Settings, dashboard_port: int, headless: bool = True) -> list[Service]:
    """What `brightrun up` starts, in order."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    dashboard = Service(
        "dashboard",
        [
            *python_module("streamlit"),
            "run",
            str(ROOT / "app.py"),
            "--server.port",
            str(dashboard_port),
            "--server.headless",
            "true" if headless else "false",
            "--browser.gatherUsageStats",
            "false",
        ],
        health_url=f"http://127.0.0.1:{dashboard_port}/_stcore/health",
    )
    syncer = Service("syncer", python_module("core.syncer"))  # jobs stay synced with no page open
    local = [svc for svc in (endpoint_service(settings), inference_service(settings)) if svc]
    return [*local, syncer, dashboard]
