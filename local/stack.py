"""`brightrun up`: start the local stack as child processes and keep it running.

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

import httpx


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
