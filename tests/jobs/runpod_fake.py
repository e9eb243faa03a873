"""A scripted stand-in for RunPod's hosted Serverless API, served on loopback in a thread.

It answers with the JSON shapes of RunPod's documentation (send-requests page) and plays
jobs on a clock from the same inputs `tests.jobs.fakes.scripted` reads (`chunks`,
`interval_s`, `hang_s`, `raise`, `yield_error`, `plain_raise` (an exception in a plain
handler), `started` (chunk 0 is a `started` event with that data), and `final`: one last chunk, e.g. a `failed` event's type and data, which ends
the job FAILED as `trainer.handler` does; `events`: the first chunks' type and data instead
of metrics; `error` takes runpod-python's form for each): IN_QUEUE for `queue_s`, then IN_PROGRESS with chunk i
available `i * interval_s` later, then the outcome. `script` maps a job's input to those
keys (for inputs that are job specs); `timeout_scale` shortens `policy.executionTimeout` on
the fake's clock (0.05: a 60 s limit strikes after 3 s) so timeouts can be tested quickly;
`policy.ttl` is honoured on the same clock: once it has passed since submission the job is
deleted, even mid-run, and every call about it answers 404. `faults` injects what the
real service does under load: `("503", path_prefix)`, `("429", path_prefix)` answered
instead of the call, `("503-after", ...)` and `("slow-after", ...)` after the call took
effect (the answer is lost), each used once, in order. `aliases` renames statuses in answers (RunPod's RUNNING).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}


@dataclass
class FakeJob:
    id: str
    input: dict[str, Any]
    timeout_s: float
    submitted: float
    cursor: int = 0
    fixed: str | None = None  # CANCELLED once cancelled
    fixed_at: float | None = None
    ttl_s: float | None = None  # policy.ttl: queue plus execution, then the job is deleted


@dataclass
class RunPodFake:
    api_key: str = "fake-key"
    queue_s: float = 0.3
    retention_s: float = 1800.0
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    faults: list[tuple[str, str]] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)
    retried: int = 0
    script: Any = None  # callable(input) -> script dict
    timeout_scale: float = 1.0
    aliases: dict[str, str] = field(default_factory=dict)  # status -> what /status says
    lock: threading.Lock = field(default_factory=threading.Lock)

    # The job clock

    def _script(self, job: FakeJob) -> dict[str, Any]:
        return self.script(job.input) if self.script is not None else job.input

    def _timeline(self, job: FakeJob, now: float) -> tuple[str, int, float | None, float | None]:
        """(status, chunks available, start, end) of `job` at `now`."""
        inp = self._script(job)
        n = int(inp.get("chunks", 3)) + (1 if inp.get("final") else 0)
        interval = float(inp.get("interval_s", 0.05))
        start = job.submitted + self.queue_s
        run_s = max(0, n - 1) * interval + float(inp.get("hang_s", 0))
        failed = bool(inp.get("raise") or inp.get("yield_error") or inp.get("plain_raise"))
        failed = failed or (inp.get("final") or {}).get("type") == "failed"
        if job.fixed is not None:
            assert job.fixed_at is not None
            now = job.fixed_at
        if now < start:
            status, end = "IN_QUEUE", None
        elif now - start > job.timeout_s and run_s > job.timeout_s:
            status, end = "TIMED_OUT", start + job.timeout_s
        elif now - start >= run_s:
            status, end = ("FAILED" if failed else "COMPLETED"), start + run_s
        else:
            status, end = "IN_PROGRESS", None
        if job.fixed is not None:
            status, end = job.fixed, job.fixed_at
        upto = end if end is not None else now
        avail = (
            0
            if upto < start
            else min(n, int((upto - start) / interval + 1e-3) + 1 if interval else n)
        )
        return status, avail, (start if now >= start else None), end

    def _view(self, job: FakeJob, now: float) -> dict[str, Any] | None:
        status, avail, start, end = self._timeline(job, now)
        if end is not None and now - end > self.retention_s:
            return None
        if job.ttl_s is not None and now - job.submitted > job.ttl_s:
            return None  # RunPod deletes a job whose ttl passed, finished or not
        body: dict[str, Any] = {"id": job.id, "status": self.aliases.get(status, status)}
        if start is not None:
            body["delayTime"] = int((start - job.submitted) * 1000)
        if end is not None and start is not None:
            body["executionTime"] = int((end - start) * 1000)
        if status == "COMPLETED":
            body["output"] = [self._chunk(job, i) for i in range(avail)]
        if status == "FAILED":
            body["error"] = self._error(self._script(job))
        return body

    @staticmethod
    def _error(inp: dict[str, Any]) -> str:
        """`error` as runpod-python (1.12) writes it for each way a job fails."""
        if inp.get("raise"):  # an exception in a generator handler (run_job_generator)
            return (
                f"handler: {inp['raise']} \ntraceback: Traceback (most recent call last):\n"
                f'  File "handler.py", line 1, in handler\nRuntimeError: {inp["raise"]}\n'
            )
        if inp.get("plain_raise"):  # an exception in a plain handler (run_job)
            return json.dumps(
                {
                    "error_type": "<class 'RuntimeError'>",
                    "error_message": inp["plain_raise"],
                    "error_traceback": "Traceback (most recent call last):\n...",
                    "hostname": "fake-host",
                    "worker_id": "fake-worker",
                    "runpod_version": "1.12.0",
                }
            )
        if inp.get("yield_error"):
            return str(inp["yield_error"])
        data = inp["final"].get("data") or {}  # what trainer.handler yields after `failed`
        return json.dumps(
            {"error_type": data.get("kind"), "error_message": data.get("message", "")}
        )

    def _chunk(self, job: FakeJob, i: int) -> dict[str, Any]:
        inp = self._script(job)
        if inp.get("final") and i == int(inp.get("chunks", 3)):
            return {"seq": i, "ts": job.submitted + i, **inp["final"]}
        if inp.get("started") and i == 0:  # the worker's `started` event data
            return {"seq": 0, "ts": job.submitted, "type": "started", "data": inp["started"]}
        if i < len(inp.get("events") or []):  # the script's own events (type and data)
            return {"seq": i, "ts": job.submitted + i, **inp["events"][i]}
        return {
            "seq": i,
            "ts": job.submitted + i,
            "type": "metrics",
            "data": {"step": i, "job": job.id},
        }

    # The app

    def app(self) -> FastAPI:
        app = FastAPI()

        async def fault_for(request: Request) -> str | None:
            path = request.url.path.split("/v2/fake", 1)[-1]
            with self.lock:
                self.calls.append((request.method, path))
                for i, (action, prefix) in enumerate(self.faults):
                    if path.startswith(prefix):
                        del self.faults[i]
                        return action
            return None

        @app.middleware("http")
        async def runpod_like(request: Request, call_next):
            if request.headers.get("authorization") != f"Bearer {self.api_key}":
                return JSONResponse(status_code=401, content={"error": "Unauthorized"})
            fault = await fault_for(request)
            if fault in ("503", "429"):
                headers = {"Retry-After": "0"} if fault == "429" else {}
                return JSONResponse(
                    status_code=int(fault), content={"error": fault}, headers=headers
                )
            response = await call_next(request)
            if fault == "503-after":
                return JSONResponse(status_code=503, content={"error": "upstream"})
            if fault == "slow-after":
                await asyncio.sleep(2.0)
            return response

        @app.post("/v2/fake/run")
        async def run(request: Request):
            body = await request.json()
            policy = body.get("policy", {})
            job = FakeJob(
                id=f"{uuid.uuid4()}-u1",
                input=body["input"],
                timeout_s=policy.get("executionTimeout", 600_000) / 1000 * self.timeout_scale,
                submitted=time.time(),
                ttl_s=policy["ttl"] / 1000 * self.timeout_scale if "ttl" in policy else None,
            )
            with self.lock:
                self.jobs[job.id] = job
            return {"id": job.id, "status": "IN_QUEUE"}

        def known(job_id: str) -> FakeJob | None:
            job = self.jobs.get(job_id)
            if job is None or self._view(job, time.time()) is None:
                return None
            return job

        def not_found():
            return JSONResponse(status_code=404, content={"error": "request does not exist"})

        @app.get("/v2/fake/status/{job_id}")
        def status(job_id: str):
            job = known(job_id)
            return self._view(job, time.time()) if job else not_found()

        @app.get("/v2/fake/stream/{job_id}")
        def stream(job_id: str):
            job = known(job_id)
            if job is None:
                return not_found()
            with self.lock:
                st, avail, _, _ = self._timeline(job, time.time())
                chunks = [{"output": self._chunk(job, i)} for i in range(job.cursor, avail)]
                job.cursor = max(job.cursor, avail)
            return {"status": self.aliases.get(st, st), "stream": chunks}

        @app.post("/v2/fake/cancel/{job_id}")
        def cancel(job_id: str):
            job = known(job_id)
            if job is None:
                return not_found()
            now = time.time()
            st, _, _, _ = self._timeline(job, now)
            if st not in TERMINAL:
                job.fixed, job.fixed_at = "CANCELLED", now
            return {"id": job.id, "status": self._timeline(job, now)[0]}

        @app.post("/v2/fake/retry/{job_id}")
        def retry(job_id: str):
            job = known(job_id)
            if job is None:
                return not_found()
            st = self._timeline(job, time.time())[0]
            if st not in ("FAILED", "TIMED_OUT"):
                return JSONResponse(status_code=400, content={"error": f"job is {st}"})
            job.submitted, job.cursor, job.fixed, job.fixed_at = time.time(), 0, None, None
            self.retried += 1
            return {"id": job.id, "status": "IN_QUEUE"}

        @app.get("/v2/fake/health")
        def health():
            now = time.time()
            states = [self._timeline(j, now)[0] for j in self.jobs.values()]
            return {
                "jobs": {
                    "completed": states.count("COMPLETED"),
                    "failed": states.count("FAILED") + states.count("TIMED_OUT"),
                    "inProgress": states.count("IN_PROGRESS"),
                    "inQueue": states.count("IN_QUEUE"),
                    "retried": self.retried,
                },
                "workers": {"idle": 0, "running": states.count("IN_PROGRESS")},
            }

        return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServedFake:
    """Run a `RunPodFake` with uvicorn in a daemon thread; `url` is its endpoint base URL.
    On `host` 127.0.0.2 (loopback too, on Linux) BrightRun treats it as a cloud endpoint:
    jobs are priced at GPU rates, not as local CPU jobs."""

    def __init__(self, fake: RunPodFake, host: str = "127.0.0.1"):
        self.fake = fake
        self.port = free_port()
        self.url = f"http://{host}:{self.port}/v2/fake"
        config = uvicorn.Config(fake.app(), host=host, port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServedFake:
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("fake RunPod did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
