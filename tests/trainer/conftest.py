"""Fixtures for the trainer tests: a tiny chat model built on the spot, toy data, a spec
builder and a loopback HTTP server that serves downloads and records uploads."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

# A memorable question -> answer mapping the base model cannot know.
TOY_QA = [
    ("What is the secret word for apple?", "Zebra."),
    ("What is the secret word for river?", "Lantern."),
    ("What is the secret word for cloud?", "Pepper."),
    ("What is the secret word for stone?", "Violin."),
    ("What is the secret word for green?", "Rocket."),
    ("What is the secret word for seven?", "Marble."),
]


def toy_rows(repeat: int = 4) -> list[dict[str, Any]]:
    rows = []
    for _ in range(repeat):
        for q, a in TOY_QA:
            rows.append(
                {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            )
    return rows


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainer.shared.tiny import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture
def toy_data(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "toy.jsonl", toy_rows())


@pytest.fixture
def worker_env(tmp_path: Path) -> Any:
    from trainer.env import WorkerEnv

    return WorkerEnv(
        model_cache_dir=tmp_path / "models",
        checkpoint_dir=tmp_path / "checkpoints",
        adapter_dir=tmp_path / "adapters",
        cached_models_dir=tmp_path / "hf-hub",
    )


def make_spec(model: Path, train: Path | None = None, **over: Any) -> dict[str, Any]:
    """A small, fast job spec as the controller would send it (JSON-able dict)."""
    spec: dict[str, Any] = {
        "job_id": "job-1",
        "model": {"name_or_path": str(model)},
        "data": {"train_path": str(train)} if train else {},
        "quantization": "none",
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "training": {
            "max_steps": 6,
            "learning_rate": 3e-3,
            "micro_batch_size": 2,
            "grad_accum": 2,
            "max_length": 96,
            "checkpoint_every": 0,
            "compute_dtype": "float32",
            "warmup_ratio": 0.0,
        },
        "output": {"adapter_name": "toy-adapter"},
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def run(spec: dict[str, Any], env: Any) -> list[dict[str, Any]]:
    from trainer.handler import events as handler

    return list(handler({"id": "rp-1", "input": spec}, env))


class _Store:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}  # GET-able, by path
        self.puts: dict[str, tuple[str, bytes]] = {}  # path -> (content type, body)


class LoopbackServer:
    def __init__(self) -> None:
        store = self.store = _Store()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                return

            def do_GET(self) -> None:
                body = store.files.get(self.path.split("?")[0])
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self) -> None:
                n = int(self.headers.get("content-length", "0"))
                store.puts[self.path.split("?")[0]] = (
                    self.headers.get("content-type", ""),
                    self.rfile.read(n),
                )
                self.send_response(200)
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}?token=secret-signature"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_server() -> Iterator[LoopbackServer]:
    server = LoopbackServer()
    yield server
    server.close()
