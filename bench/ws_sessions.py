"""Browser sessions without a browser: Streamlit's own websocket protocol.

A browser tab speaks to `/_stcore/stream` (subprotocol "streamlit") in protobufs: it sends
`BackMsg.rerun_script` (a `ClientState`: query string, page name, widget states) and the
server answers with `ForwardMsg`s (`new_session`, `delta`s, ..., `script_finished`). Each
`Session` here is one tab: `open_page("")` is the first page of a new session (the script
run a browser starts on connecting), `open_page("jobs")` a click in the navigation.
`run(page, query, fragment)` returns every message of one run (`Run`), and with `fragment`
it is the rerun a browser's timer asks for when a live section (`run_every`) is due; like
a browser, a session names the large messages it already holds, which the server then
sends as a reference (`ref_hash`) instead of again.

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

# ScriptFinishedStatus: 0 the page ran, 2 it stopped for a rerun (`st.rerun`: another run
# follows), 3 a fragment (a live section) ran on its own.
PAGE_DONE, EARLY_FOR_RERUN, FRAGMENT_DONE = 0, 2, 3


@dataclass
class PageTiming:
    page: str
    seconds: float
    error: str | None = None


@dataclass
class Sent:
    """One ForwardMsg as it came: its size on the wire, its kind (`delta:plotly_chart`,
    `ref_hash`, `auto_rerun`, ...) and the hash Streamlit gives it."""

    size: int
    kind: str
    hash: str
    ref: str = ""  # for a ref_hash: the hash of the message the browser already holds
    body: bytes = b""  # a chart's specification (JSON)


@dataclass
class Run:
    """What the server sent for one rerun request, up to its end."""

    seconds: float
    sent: list[Sent]
    fragments: list[str]  # the live sections (`run_every` fragments) the run declared
    error: str | None = None

    @property
    def size(self) -> int:
        return sum(m.size for m in self.sent)

    def of(self, kind: str) -> list[Sent]:
        return [m for m in self.sent if m.kind == kind]


def _sent(raw: bytes, fwd: ForwardMsg) -> Sent:
    kind = fwd.WhichOneof("type") or ""
    body = b""
    if kind == "delta" and fwd.delta.WhichOneof("type") == "new_element":
        el = fwd.delta.new_element
        kind = "delta:" + (el.WhichOneof("type") or "")
        if kind == "delta:plotly_chart":
            body = el.plotly_chart.spec.encode()
    ref = fwd.ref_hash if kind == "ref_hash" else ""
    return Sent(len(raw), kind, fwd.hash, ref, body)


class Session:
    """One browser tab connected to the server. Like a browser, it tells the server which
    large messages it already holds (Streamlit then sends a `ref_hash` in their place)."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.held: set[str] = set()

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

    async def run(
        self, page: str, query: str = "", fragment: str = "", timeout: float = 120.0
    ) -> Run:
        """Ask for a run of `page` (or of its live section `fragment`, as a browser's timer
        does) and read what comes until it ends; a run that reruns the app is followed."""
        msg = BackMsg()
        msg.rerun_script.query_string = query
        msg.rerun_script.page_name = page
        msg.rerun_script.fragment_id = fragment
        msg.rerun_script.is_auto_rerun = bool(fragment)
        msg.rerun_script.cached_message_hashes.extend(sorted(self.held))
        t0 = time.perf_counter()
        await self.ws.send(msg.SerializeToString())
        run = Run(0.0, [], [])
        deadline = t0 + timeout
        while True:
            raw = await asyncio.wait_for(
                self.ws.recv(), timeout=max(0.1, deadline - time.perf_counter())
            )
            fwd = ForwardMsg()
            fwd.ParseFromString(raw)
            run.sent.append(_sent(raw, fwd))
            if fwd.metadata.cacheable:
                self.held.add(fwd.hash)
            kind = fwd.WhichOneof("type")
            if kind == "auto_rerun":
                run.fragments.append(fwd.auto_rerun.fragment_id)
            if kind == "delta" and fwd.delta.new_element.WhichOneof("type") == "exception":
                run.error = fwd.delta.new_element.exception.message or "exception"
            if kind != "script_finished" or fwd.script_finished == EARLY_FOR_RERUN:
                continue
            if fwd.script_finished not in (PAGE_DONE, FRAGMENT_DONE):
                run.error = run.error or f"script_finished={fwd.script_finished}"
            run.seconds = time.perf_counter() - t0
            return run

    async def open_page(self, page: str, timeout: float = 120.0) -> PageTiming:
        run = await self.run(page, timeout=timeout)
        return PageTiming(page or "(first)", run.seconds, run.error)

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
def server(
    app: Path, env: dict[str, str], flags: list[str], log_dir: Path | None = None
) -> Iterator[tuple[str, int]]:
    """A `streamlit run` of `app` (the deployment's .streamlit/config.toml plus `flags`);
    yields the websocket URL and the server's pid. Its output goes to `log_dir` (default
    bench/out/)."""
    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(port)]
    log_dir = log_dir or app.parent / "bench" / "out"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / f"server-{port}.log", "w")  # noqa: SIM115
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


@dataclass
class Redraws:
    """A page opened once, its live section redrawn `unchanged` times with no new data,
    then once more after `change()` added some."""

    first: Run
    unchanged: list[Run]
    changed: Run


async def _redraws(
    url: str, page: str, query: str, n: int, change: Callable[[], object]
) -> Redraws:
    s = await Session.connect(url)
    try:
        first = await s.run(page, query)
        if first.error or not first.fragments:
            raise RuntimeError(f"{page}?{query}: no live section ({first.error or 'not running'})")
        fragment = first.fragments[-1]
        unchanged = [await s.run(page, query, fragment) for _ in range(n)]
        await asyncio.to_thread(change)
        changed = await s.run(page, query, fragment)
    finally:
        await s.close()
    return Redraws(first, unchanged, changed)


def live_redraws(
    url: str, page: str, query: str, change: Callable[[], object], n: int = 3
) -> Redraws:
    """Open `page` (`query`: its address's query string) in a new session, then ask for
    its live section `n` times as a browser's timer would, then once more after `change`."""
    return asyncio.run(_redraws(url, page, query, n, change))
