"""Browser sessions without a browser: Streamlit's own websocket protocol.

A browser tab speaks to `/_stcore/stream` (subprotocol "streamlit") in protobufs: it sends
`BackMsg.rerun_script` (a `ClientState`: query string, page name, widget states) and the
server answers with `ForwardMsg`s (`new_session`, `delta`s, ..., `script_finished`). Each
`Session` here is one tab: `open_page("")` is the first page of a new session (the script
run a browser starts on connecting), `open_page("jobs")` a click in the navigation.

`run_wave(url, n, pages)` opens `n` sessions at once and, in each, the first page then the
`pages` that follow, timing each from the rerun request to `script_finished` (the server's
time for the page, the rendering in a browser excluded). `ServerProbe` samples the server
process's CPU and resident memory meanwhile; `server` starts `streamlit run` on a free
port; `series` runs a warm-up session then one wave per session count.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

# ScriptFinishedStatus: 0 the page ran, 3 a fragment (a live section) ran on its own.
PAGE_DONE, FRAGMENT_DONE = 0, 3


@dataclass
class PageTiming:
    page: str
    seconds: float
    error: str | None = None


class Session:
    """One browser tab connected to the server."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws

    @classmethod
    async def connect(cls, url: str) -> Session:
        ws = await websockets.connect(
            url,
            subprotocols=["streamlit"],
            max_size=None,
            origin=url.replace("ws://", "http://").split("/_stcore")[0],
            open_timeout=120,
        )
        return cls(ws)

    async def open_page(self, page: str, timeout: float = 120.0) -> PageTiming:
        msg = BackMsg()
        msg.rerun_script.query_string = ""
        msg.rerun_script.page_name = page
        t0 = time.perf_counter()
        await self.ws.send(msg.SerializeToString())
        error = None
        deadline = t0 + timeout
        while True:
            raw = await asyncio.wait_for(
                self.ws.recv(), timeout=max(0.1, deadline - time.perf_counter())
            )
            fwd = ForwardMsg()
            fwd.ParseFromString(raw)
            kind = fwd.WhichOneof("type")
            if kind == "delta" and fwd.delta.new_element.WhichOneof("type") == "exception":
                error = fwd.delta.new_element.exception.message or "exception"
            if kind != "script_finished" or fwd.script_finished == FRAGMENT_DONE:
                continue
            if fwd.script_finished != PAGE_DONE:
                error = error or f"script_finished={fwd.script_finished}"
            return PageTiming(page or "(first)", time.perf_counter() - t0, error)

    async def close(self) -> None:
        await self.ws.close()


async def _one_session(url: str, pages: list[str], start: asyncio.Event) -> list[PageTiming]:
    await start.wait()
    t0 = time.perf_counter()
    try:
        s = await Session.connect(url)
    except (OSError, TimeoutError, websockets.WebSocketException) as e:  # recorded
        return [PageTiming("(first)", time.perf_counter() - t0, f"connect: {e!r}")]
    out = []
    try:
        for page in ["", *pages]:
            try:
                out.append(await s.open_page(page))
            except (OSError, TimeoutError, websockets.WebSocketException) as e:  # counted
                out.append(PageTiming(page or "(first)", time.perf_counter() - t0, repr(e)))
                break
    finally:
        await s.close()
    return out


async def _wave(url: str, n: int, pages: list[str]) -> list[list[PageTiming]]:
    start = asyncio.Event()
    tasks = [asyncio.create_task(_one_session(url, pages, start)) for _ in range(n)]
    await asyncio.sleep(0.05)
    start.set()  # every session connects at the same moment
    return await asyncio.gather(*tasks)


def run_wave(url: str, n: int, pages: list[str]) -> list[list[PageTiming]]:
    return asyncio.run(_wave(url, n, pages))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


@dataclass
class ServerProbe:
    """Samples the server's CPU seconds and peak resident memory while a wave runs."""

    pid: int
    interval: float = 0.1
    peak_rss: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> ServerProbe:
        self.proc = psutil.Process(self.pid)
        t = self.proc.cpu_times()
        self.cpu0, self.wall0 = t.user + t.system, time.perf_counter()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join()
        t = self.proc.cpu_times()
        self.cpu_s = t.user + t.system - self.cpu0
        self.wall_s = time.perf_counter() - self.wall0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(app: Path, env: dict[str, str], flags: list[str]) -> Iterator[tuple[str, int]]:
    """A `streamlit run` of `app` (the deployment's .streamlit/config.toml plus `flags`);
    yields the websocket URL and the server's pid."""
    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(port)]
    log = open(app.parent / "bench" / "out" / f"server-{port}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [*cmd, "--server.headless", "true", *flags],
        cwd=app.parent,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"ws://127.0.0.1:{port}/_stcore/stream", proc.pid
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def summarize(n: int, sessions: list[list[PageTiming]], probe: ServerProbe) -> dict:
    first = [s[0].seconds for s in sessions]
    after = [t.seconds for s in sessions for t in s[1:]]
    errors = [t.error for s in sessions for t in s if t.error]
    return {
        "sessions": n,
        "first_p50_s": round(pct(first, 50), 3),
        "first_p95_s": round(pct(first, 95), 3),
        "next_p50_s": round(pct(after, 50), 3),
        "next_p95_s": round(pct(after, 95), 3),
        "errors": len(errors),
        "error_sample": errors[:3],
        "server_cpu_s": round(probe.cpu_s, 2),
        "server_cpu_share": round(probe.cpu_s / probe.wall_s, 2),
        "server_peak_rss_mb": probe.peak_rss >> 20,
        "wall_s": round(probe.wall_s, 2),
    }


def series(url: str, pid: int, counts: list[int], pages: list[str]) -> list[dict]:
    """A warm-up session (the process's imports), then one wave per count, each a set of
    sessions that connect at the same moment."""
    run_wave(url, 1, pages)
    out = []
    for n in counts:
        with ServerProbe(pid) as probe:
            waves = run_wave(url, n, pages)
        out.append(summarize(n, waves, probe))
    return out
