"""Fixtures for the jobs tests: real endpoint processes on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.jobs.runpod_fake import free_port

ROOT = Path(__file__).resolve().parents[2]
ENDPOINT_KEY = "test-endpoint-key-9f2c"


@dataclass
class EndpointProcess:
    url: str  # the endpoint base URL, .../v2/local
    base: str  # scheme://host:port, where signed file URLs point
    proc: subprocess.Popen
    log_path: Path
    env: dict[str, str]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_endpoint(
    data_dir: Path,
    *,
    handler: str = "tests.jobs.fakes:scripted",
    workers: int = 1,
    retention_s: float = 1800.0,
    port: int | None = None,
    extra_env: dict[str, str] | None = None,
) -> EndpointProcess:
    """Start `python -m local.endpoint` as a child process and wait for /health."""
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "BRIGHTRUN_DATA_DIR": str(data_dir),
        "GPU_CLUSTER_API_URL": f"{base}/v2/local",
        "GPU_CLUSTER_API_KEY": ENDPOINT_KEY,
        "PUBLIC_BASE_URL": base,
        "OMP_NUM_THREADS": "1",
        **(extra_env or {}),
    }
    log_path = data_dir / f"endpoint-{port}.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "local.endpoint",
                "--handler",
                handler,
                "--workers",
                str(workers),
                "--retention-s",
                str(retention_s),
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    ep = EndpointProcess(url=f"{base}/v2/local", base=base, proc=proc, log_path=log_path, env=env)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"endpoint exited ({proc.returncode}):\n{ep.log()}")
        try:
            r = httpx.get(
                f"{ep.url}/health", headers={"Authorization": f"Bearer {ENDPOINT_KEY}"}, timeout=2
            )
            if r.status_code == 200:
                return ep
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            ep.stop()
            raise RuntimeError(f"endpoint did not answer:\n{ep.log()}")
        time.sleep(0.2)


@pytest.fixture
def endpoint_factory(tmp_path: Path) -> Iterator[Callable[..., EndpointProcess]]:
    started: list[EndpointProcess] = []

    def factory(**kwargs: Any) -> EndpointProcess:
        ep = start_endpoint(kwargs.pop("data_dir", tmp_path / "data"), **kwargs)
        started.append(ep)
        return ep

    yield factory
    for ep in started:
        ep.stop()


def wait_until(
    predicate: Callable[[], Any], timeout_s: float = 60.0, every_s: float = 0.1, what: str = ""
) -> Any:
    """Poll `predicate` until it returns something truthy (a guard, not a timing assert)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(every_s)
