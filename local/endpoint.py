"""A RunPod Serverless queue endpoint on loopback, running the trainer's handler locally.

It speaks the subset of RunPod's endpoint API that `core.clients.runpod.RunPodClient` uses, under
`/v2/<endpoint-id>` (default `/v2/local`): `POST /run`, `GET /status/{id}`,
`GET /stream/{id}`, `POST /cancel/{id}`, `POST /retry/{id}`, `GET /health`, with the same
JSON shapes, statuses (IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED, TIMED_OUT),
`delayTime`/`executionTime` in ms, and `Authorization: Bearer <key>` checked on every call.

Semantics, matched to RunPod's documentation:
- Jobs wait in a FIFO queue for one of `workers` slots. Each job runs in a fresh process
  (like a worker with `refresh_worker`), so cancel and timeout can kill it (its whole
  process group) without touching other jobs. The process imports the handler, then
  reports ready: that moment is IN_PROGRESS. `delayTime` = submission to ready (queue
  plus cold start), `executionTime` = ready to end.
- A generator handler's yielded values are stream chunks: `/stream` returns those not yet
  returned by an earlier `/stream` call; when the job ends, `output` is the list of all of
  them (RunPod's `return_aggregate_stream`). A plain handler's return value is `output`.
  An exception, or a yielded/returned dict with a truthy `error` key, makes the job FAILED
  with `error`.
- `policy.executionTimeout` (ms; default 600000, as on RunPod) kills a running job and
  marks it TIMED_OUT; `policy.ttl` (ms; default 24 h) bounds a job's whole life, so a job
  still queued past it is TIMED_OUT.
- `/cancel` kills a queued or running job (CANCELLED); `/retry` requeues a FAILED or
  TIMED_OUT job under the same id with the same input, clearing its previous output.
- A finished job is kept `retention_s` (default 30 minutes, RunPod's `/run` retention)
  after it ends, then forgotten: every job path answers 404.

The same server mounts the local file store's signed-URL routes (`/files/...`) when
`local.files` is available, so the worker's signed dataset and upload URLs work.

`python -m local.endpoint [--handler module:function] [--workers N] [--retention-s S]`
reads host, port and endpoint id from `GPU_CLUSTER_API_URL` (settings), the key from
`GPU_CLUSTER_API_KEY`. Access logs are off: signed file URLs are credentials.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import uuid
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from local.worker import worker_main

log = logging.getLogger("brightrun.local.endpoint")

DEFAULT_HANDLER = "trainer.handler:handler"
DEFAULT_EXECUTION_TIMEOUT_MS = 600_000
DEFAULT_TTL_MS = 24 * 3600 * 1000
DEFAULT_RETENTION_S = 30 * 60
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})


# --- the endpoint ---------------------------------------------------------------------


@dataclass
class LocalJob:
    id: str
    input: dict[str, Any]
    execution_timeout_s: float
    ttl_s: float
    submitted: float
    status: str = "IN_QUEUE"
    started: float | None = None
    finished: float | None = None
    chunks: list[Any] = field(default_factory=list)
    cursor: int = 0
    output: Any = None
    has_output: bool = False
    error: str | None = None
    generator: bool = False
    proc: Any = None
    attempt: int = 0  # bumped by /retry: output of an earlier attempt's process is dropped

    def view(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.started is not None:
            body["delayTime"] = int((self.started - self.submitted) * 1000)
            if self.finished is not None:
                body["executionTime"] = int((self.finished - self.started) * 1000)
        if self.status == "COMPLETED" and self.has_output:
            body["output"] = self.output
        if self.status == "FAILED" and self.error is not None:
            body["error"] = self.error
        return body


class LocalEndpoint:
    """The queue, its worker slots and the job table. Thread-safe."""

    def __init__(
        self,
        handler_ref: str = DEFAULT_HANDLER,
        workers: int = 1,
        retention_s: float = DEFAULT_RETENTION_S,
        worker_env: dict[str, str] | None = None,
        tick_s: float = 0.05,
    ):
        self.handler_ref = handler_ref
        self.workers = workers
        self.retention_s = retention_s
        self.worker_env = dict(worker_env or {})
        self._tick_s = tick_s
        self._jobs: dict[str, LocalJob] = {}
        self._queue: deque[str] = deque()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._counts = {"completed": 0, "failed": 0, "retried": 0}
        self._ctx = multiprocessing.get_context("spawn")
        self._thread = threading.Thread(target=self._loop, name="endpoint-dispatch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def shutdown(self) -> None:
        self._stop.set()
        with self._lock:
            for job in self._jobs.values():
                if job.proc is not None and job.status not in TERMINAL:
                    _kill_group(job.proc)

    # API operations (return JSON-able dicts, or None for "not found")

    def submit(self, input: dict[str, Any], policy: dict[str, Any] | None) -> dict[str, Any]:
        policy = policy or {}
        timeout_ms = int(policy.get("executionTimeout") or DEFAULT_EXECUTION_TIMEOUT_MS)
        ttl_ms = int(policy.get("ttl") or DEFAULT_TTL_MS)
        job = LocalJob(
            id=f"{uuid.uuid4()}-l1",
            input=input,
            execution_timeout_s=timeout_ms / 1000.0,
            ttl_s=ttl_ms / 1000.0,
            submitted=time.time(),
        )
        with self._lock:
            self._jobs[job.id] = job
            self._queue.append(job.id)
        log.info("job %s queued (executionTimeout %d ms)", job.id, timeout_ms)
        return {"id": job.id, "status": job.status}

    def status(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else job.view()

    def stream(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            new = job.chunks[job.cursor :]
            job.cursor = len(job.chunks)
            return {"status": job.status, "stream": [{"output": c} for c in new]}

    def cancel(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            if job.status == "IN_QUEUE" and job.proc is None:
                self._queue.remove(job.id)
                self._finish(job, "CANCELLED")
            elif job.status not in TERMINAL:
                _kill_group(job.proc)
                self._finish(job, "CANCELLED")
            return {"id": job.id, "status": job.status}

    def retry(self, job_id: str) -> dict[str, Any] | None | str:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            if job.status not in ("FAILED", "TIMED_OUT"):
                return f"only FAILED or TIMED_OUT jobs can be retried (job is {job.status})"
            job.status = "IN_QUEUE"
            job.started = job.finished = None
            job.chunks, job.cursor = [], 0
            job.output, job.has_output, job.error = None, False, None
            job.proc = None
            job.submitted = time.time()
            job.attempt += 1
            self._queue.append(job.id)
            self._counts["retried"] += 1
            return {"id": job.id, "status": job.status}

    def health(self) -> dict[str, Any]:
        with self._lock:
            running = sum(
                1 for j in self._jobs.values() if j.proc is not None and j.status not in TERMINAL
            )
            in_progress = sum(1 for j in self._jobs.values() if j.status == "IN_PROGRESS")
            return {
                "jobs": {
                    "completed": self._counts["completed"],
                    "failed": self._counts["failed"],
                    "inProgress": in_progress,
                    "inQueue": len(self._queue) + (running - in_progress),
                    "retried": self._counts["retried"],
                },
                "workers": {"idle": self.workers - running, "running": running},
            }

    # internals

    def _finish(self, job: LocalJob, status: str) -> None:
        job.status = status
        job.finished = time.time()
        if status == "COMPLETED":
            self._counts["completed"] += 1
        elif status in ("FAILED", "TIMED_OUT"):
            self._counts["failed"] += 1
        log.info("job %s %s", job.id, status)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:  # noqa: BLE001 - the dispatcher must outlive one bad tick
                log.exception("dispatcher tick failed")
            self._stop.wait(self._tick_s)

    def _tick(self) -> None:
        now = time.time()
        with self._lock:
            for job in list(self._jobs.values()):
                if job.status in TERMINAL:
                    if job.finished is not None and now - job.finished > self.retention_s:
                        del self._jobs[job.id]
                    continue
                if job.status == "IN_PROGRESS" and job.started is not None:
                    if now - job.started > job.execution_timeout_s:
                        _kill_group(job.proc)
                        self._finish(job, "TIMED_OUT")
                elif now - job.submitted > job.ttl_s:
                    if job.id in self._queue:
                        self._queue.remove(job.id)
                    if job.proc is not None:
                        _kill_group(job.proc)
                    self._finish(job, "TIMED_OUT")
            running = sum(
                1 for j in self._jobs.values() if j.proc is not None and j.status not in TERMINAL
            )
            while self._queue and running < self.workers:
                job = self._jobs[self._queue.popleft()]
                self._launch(job)
                running += 1

    def _launch(self, job: LocalJob) -> None:
        parent_conn, child_conn = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(
            target=worker_main,
            args=(
                self.handler_ref,
                {"id": job.id, "input": job.input},
                child_conn,
                self.worker_env,
                os.getpid(),
            ),
            name=f"worker-{job.id[:8]}",
            daemon=False,
        )
        job.proc = proc
        proc.start()
        child_conn.close()
        threading.Thread(
            target=self._read, args=(job, job.attempt, proc, parent_conn), daemon=True
        ).start()

    def _read(self, job: LocalJob, attempt: int, proc, conn) -> None:
        """Collect what the job's process reports until it exits, then settle its status."""
        outcome: str | None = None
        error: str | None = None
        result: Any = None
        while True:
            try:
                kind, value = conn.recv()
            except (EOFError, OSError):
                break
            with self._lock:
                if job.attempt != attempt or job.status in TERMINAL:
                    continue  # cancelled or timed out: late output is dropped
                if kind == "ready":
                    job.status = "IN_PROGRESS"
                    job.started = time.time()
                elif kind == "chunk":
                    job.generator = True
                    job.chunks.append(value)
                elif kind == "done":
                    outcome = "COMPLETED"
                elif kind == "result":
                    outcome, result = "COMPLETED", value
                elif kind == "error":
                    outcome, error = "FAILED", value
        proc.join()
        conn.close()
        with self._lock:
            if job.attempt != attempt or job.status in TERMINAL:
                return
            if job.started is None:
                job.started = time.time()
            if outcome == "COMPLETED":
                job.output = list(job.chunks) if job.generator else result
                job.has_output = True
            elif outcome is None:
                outcome = "FAILED"
                error = f"worker process exited with code {proc.exitcode} without a result"
            job.error = error
            self._finish(job, outcome)


def _kill_group(proc) -> None:
    """SIGKILL the job's process group (the handler's children too), then the process."""
    if proc is None or proc.pid is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # no group yet (it had not called setsid) or already gone: kill the process
    if proc.exitcode is None:
        proc.kill()


# --- HTTP -----------------------------------------------------------------------------


def build_app(endpoint: LocalEndpoint, api_key: str, endpoint_id: str = "local", extra_routers=()):
    expected = api_key.encode()

    def check_auth(request: Request) -> None:
        given = request.headers.get("authorization", "")
        token = given[7:] if given[:7].lower() == "bearer " else given
        if not hmac.compare_digest(token.encode(), expected):
            raise HTTPException(status_code=401, detail="unauthorized")

    @asynccontextmanager
    async def lifespan(app):  # noqa: ARG001
        endpoint.start()
        yield
        endpoint.shutdown()

    app = FastAPI(
        title="BrightRun local endpoint", lifespan=lifespan, docs_url=None, redoc_url=None
    )
    api = APIRouter(prefix=f"/v2/{endpoint_id}", dependencies=[Depends(check_auth)])

    def found(body: dict[str, Any] | None) -> dict[str, Any]:
        if body is None:
            raise HTTPException(status_code=404, detail="job not found")
        return body

    @api.post("/run")
    async def run(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise HTTPException(status_code=400, detail="body is not JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
            raise HTTPException(status_code=400, detail="body needs an 'input' object")
        policy = body.get("policy") or {}
        if not isinstance(policy, dict):
            raise HTTPException(status_code=400, detail="'policy' must be an object")
        timeout = policy.get("executionTimeout")
        if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 5000):
            raise HTTPException(status_code=400, detail="policy.executionTimeout must be > 5000 ms")
        ttl = policy.get("ttl")
        if ttl is not None and (not isinstance(ttl, int | float) or ttl < 10_000):
            raise HTTPException(status_code=400, detail="policy.ttl must be >= 10000 ms")
        return endpoint.submit(body["input"], policy)

    @api.get("/status/{job_id}")
    def status(job_id: str) -> dict[str, Any]:
        return found(endpoint.status(job_id))

    @api.get("/stream/{job_id}")
    def stream(job_id: str) -> dict[str, Any]:
        return found(endpoint.stream(job_id))

    @api.post("/cancel/{job_id}")
    def cancel(job_id: str) -> dict[str, Any]:
        return found(endpoint.cancel(job_id))

    @api.post("/retry/{job_id}")
    def retry(job_id: str):
        body = endpoint.retry(job_id)
        if isinstance(body, str):
            return JSONResponse(status_code=400, content={"error": body})
        return found(body)

    @api.get("/health")
    def health() -> dict[str, Any]:
        return endpoint.health()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        """Liveness for `brightrun up` (no job data, so no key needed)."""
        return {"status": "ok"}

    app.include_router(api)
    for router in extra_routers:
        app.include_router(router)
    return app


def _files_routers(settings) -> list:
    """The local store's signed-URL routes (with Supabase storage, URLs point at Supabase)."""
    if settings.storage != "local":
        return []
    from core.clients.storage import LocalBlobStore
    from local.files import files_router

    # No size cap here: these URLs are signed for one key each, and what the worker uploads
    # (an adapter of a large model at a high rank) can pass the dashboard's upload limit.
    return [files_router(LocalBlobStore.from_settings(settings))]


def worker_env(settings) -> dict[str, str]:
    """Where the local worker keeps what RunPod keeps on the network volume."""
    volume = Path(settings.data_dir).resolve() / "volume"
    return {
        "MODEL_CACHE_DIR": str(volume / "models"),
        "CHECKPOINT_DIR": str(volume / "checkpoints"),
        "ADAPTER_DIR": str(volume / "adapters"),
    }


def serves(settings) -> bool:
    """Whether GPU_CLUSTER_API_URL points at this machine (then `brightrun up` starts us)."""
    return (urlsplit(settings.gpu_cluster_api_url).hostname or "") in ("127.0.0.1", "localhost")


def stack_service(settings):  # noqa: ANN001, ANN201 - Settings -> local.stack.Service | None
    """The `brightrun up` service running this endpoint, or None for a cloud endpoint URL."""
    if not serves(settings):
        return None
    from local.stack import Service, python_module

    url = urlsplit(settings.gpu_cluster_api_url)
    return Service(
        "gpu-endpoint",
        python_module("local.endpoint"),
        health_url=f"{url.scheme}://{url.hostname}:{url.port or 80}/ping",
    )


def main(argv: list[str] | None = None) -> None:
    from core.settings import load_settings

    settings = load_settings()
    url = urlsplit(settings.gpu_cluster_api_url)
    parts = [p for p in url.path.split("/") if p]
    default_id = parts[1] if len(parts) >= 2 and parts[0] == "v2" else "local"
    p = argparse.ArgumentParser(prog="python -m local.endpoint", description=__doc__.split("\n")[0])
    p.add_argument("--host", default=url.hostname or "127.0.0.1")
    p.add_argument("--port", type=int, default=url.port or 8300)
    p.add_argument("--endpoint-id", default=default_id)
    p.add_argument(
        "--handler", default=DEFAULT_HANDLER, help="module:function (default %(default)s)"
    )
    p.add_argument("--workers", type=int, default=settings.local_workers)
    p.add_argument(
        "--retention-s",
        type=float,
        default=settings.local_result_retention_s,
        help="seconds a finished job's result is kept (RunPod: 1800)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )

    import uvicorn

    endpoint = LocalEndpoint(args.handler, args.workers, args.retention_s, worker_env(settings))
    app = build_app(
        endpoint,
        settings.gpu_cluster_api_key.get_secret_value(),
        args.endpoint_id,
        extra_routers=_files_routers(settings),
    )
    log.info(
        "local endpoint on http://%s:%d/v2/%s (%d worker(s), handler %s)",
        args.host,
        args.port,
        args.endpoint_id,
        args.workers,
        args.handler,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
