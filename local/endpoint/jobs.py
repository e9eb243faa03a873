"""The local endpoint's job queue: FIFO jobs, each run in a fresh worker process
(`local.worker`, runpod-python's own worker loop), with RunPod's statuses, timeouts, cancel, retry and retention (the
semantics are listed in `local.endpoint`). No HTTP here."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from local.worker import worker_main

log = logging.getLogger("brightrun.local.endpoint")

DEFAULT_HANDLER = "trainer.handler:handler"
DEFAULT_EXECUTION_TIMEOUT_MS = 600_000
DEFAULT_TTL_MS = 24 * 3600 * 1000
DEFAULT_RETENTION_S = 30 * 60
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT", "DELETED"})


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

    def _delete(self, job: LocalJob) -> None:
        """`policy.ttl` passed: RunPod deletes the job, queued or running (its worker is
        stopped), and every job path answers 404 from then on."""
        if job.id in self._queue:
            self._queue.remove(job.id)
        if job.proc is not None:
            _kill_group(job.proc)
        job.status, job.finished = "DELETED", time.time()  # late output of its process is dropped
        del self._jobs[job.id]
        log.info("job %s deleted: its ttl of %.0f s passed", job.id, job.ttl_s)

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
                    expired = job.finished is not None and now - job.finished > self.retention_s
                    if expired or now - job.submitted > job.ttl_s:
                        del self._jobs[job.id]
                    continue
                if now - job.submitted > job.ttl_s:
                    self._delete(job)
                elif job.status == "IN_PROGRESS" and job.started is not None:
                    if now - job.started > job.execution_timeout_s:
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
        """Collect what the job's process reports (`local.worker`); settle its status at
        its result, or when it exits without one."""
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
                elif kind == "stream":
                    job.chunks.append(json.loads(value).get("output"))
                elif kind == "done":
                    self._settle(job, json.loads(value))
                elif kind == "error":
                    self._settle(job, {"error": value})
        proc.join()
        conn.close()
        with self._lock:
            if job.attempt == attempt and job.status not in TERMINAL:
                error = f"worker process exited with code {proc.exitcode} without a result"
                self._settle(job, {"error": error})

    def _settle(self, job: LocalJob, result: dict[str, Any]) -> None:
        """End `job` with the worker's result: `{"error": ...}` FAILED, else COMPLETED."""
        if job.started is None:
            job.started = time.time()
        if result.get("error"):
            job.error = result["error"]
            self._finish(job, "FAILED")
            return
        job.has_output = "output" in result
        job.output = result.get("output")
        self._finish(job, "COMPLETED")


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
