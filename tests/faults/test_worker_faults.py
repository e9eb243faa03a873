"""Faults of the worker and the platform on the real local stack (SQLite): the worker killed
mid-training and mid-checkpoint, the job deleted when its `policy.ttl` passes mid-run, and
syncer processes killed while they write. See `tests/faults/conftest.py`."""

from __future__ import annotations

import dataclasses
import importlib
import random
import time
from pathlib import Path

import pytest

from core import jobs
from core.users import LOCAL_ACTOR
from tests.faults.conftest import LONG, Stack, assert_whole_history, kill
from tests.jobs.conftest import wait_until

pytestmark = pytest.mark.slow


def _kill_worker(stack: Stack) -> None:
    (pid,) = wait_until(stack.worker_pids, what="the job's worker process")
    kill(pid)
    wait_until(lambda: not stack.worker_pids(), what="the worker to be gone")


def _retry_resumes(stack: Stack, job_id: str, from_step: int) -> None:
    """Retry the ended job: its new attempt resumes at `from_step` or later and the history
    stays one numbering; then stop it (cancel) and check each attempt's cost is recorded once."""
    before = len([e for e in stack.events(job_id) if e.type == "started"])
    again = jobs.retry(LOCAL_ACTOR, stack.settings, job_id)
    assert again.status == "IN_QUEUE" and again.attempt == 1

    def resumed():
        stack.sync(job_id)
        starts = [e for e in stack.events(job_id) if e.type == "started"]
        return len(starts) > before and starts[-1]

    start = wait_until(resumed, timeout_s=180, every_s=0.3, what="the retried run to start")
    assert start.data["resumed_from_step"] >= from_step
    assert_whole_history(stack, job_id)
    job = jobs.cancel(LOCAL_ACTOR, stack.settings, job_id)
    assert job.status == "CANCELLED"
    assert sorted(r.attempt for r in stack.cost_records(job_id)) == [0, 1]


def _checkpoint_step(stack: Stack, job_id: str) -> int:
    return max(e.data["step"] for e in stack.events(job_id) if e.type == "checkpoint")


def _volume_step(stack: Stack, job_id: str) -> int:
    """The step of the job's latest complete checkpoint on the volume (0: none)."""
    pointer = _checkpoints(stack, job_id) / "latest"
    return int(pointer.read_text().strip().split("-")[1]) if pointer.is_file() else 0


def _checkpoints(stack: Stack, job_id: str) -> Path:
    return Path(stack.endpoint.env["BRIGHTRUN_DATA_DIR"]) / "volume" / "checkpoints" / job_id


def test_worker_killed_mid_training_ends_failed_and_retry_resumes(stack: Stack) -> None:
    job = stack.submit(training=LONG)
    ckpt = stack.wait_event(job.id, "checkpoint")
    stack.wait_event(job.id, "metrics", after_seq=ckpt.seq)  # training on past the checkpoint
    _kill_worker(stack)
    job = stack.wait_end(job.id)
    assert job.status == "FAILED" and job.failure_kind == "internal"
    assert "without" in job.failure_message and "retry" in job.failure_suggestion
    assert_whole_history(stack, job.id)
    (record,) = stack.cost_records(job.id)
    assert record.usd == pytest.approx(job.cost_usd) and job.cost_usd > 0
    stack.sync(job.id)
    assert len(stack.cost_records(job.id)) == 1  # a later sync records nothing again
    step = max(_checkpoint_step(stack, job.id), _volume_step(stack, job.id))
    _retry_resumes(stack, job.id, step)


def test_worker_killed_mid_checkpoint_resumes_from_the_last_complete_one(stack: Stack) -> None:
    """A kill while a checkpoint is written leaves its folder half-written (`step-N.tmp`)
    and `latest.tmp`; `latest` is written last, so the retry resumes from the one before.
    The kill lands between two saves; the half-written save is laid down as it leaves it."""
    job = stack.submit(training=LONG)
    stack.wait_event(job.id, "checkpoint")
    _kill_worker(stack)
    job = stack.wait_end(job.id)
    assert job.status == "FAILED"
    complete = _checkpoint_step(stack, job.id)
    root = _checkpoints(stack, job.id)
    complete = max(complete, _volume_step(stack, job.id))  # saved, its event maybe unread
    assert complete > 0
    torn = root / f"step-{complete + 2:07d}.tmp"
    torn.mkdir()
    (torn / "optimizer.pt").write_bytes(b"\x80torn")
    (root / "latest.tmp").write_text(torn.name)
    _retry_resumes(stack, job.id, complete)


def test_ttl_passing_mid_run_deletes_the_job_and_it_ends_timed_out(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    preflight = importlib.import_module("core.jobs.preflight")
    real_window = preflight.upload_window
    monkeypatch.setattr(
        preflight,
        "upload_window",
        lambda *a, **kw: dataclasses.replace(real_window(*a, **kw), ttl_ms=40_000),
    )
    job = stack.submit(training=LONG)
    job = stack.wait_end(job.id, timeout_s=120)
    assert job.status == "TIMED_OUT" and job.failure_kind == "ttl_expired"
    assert "time to live" in job.failure_message
    wait_until(lambda: not stack.worker_pids(), what="the endpoint to stop the worker")
    assert_whole_history(stack, job.id)
    assert len(stack.cost_records(job.id)) == 1 and job.cost_usd > 0
    monkeypatch.undo()
    _retry_resumes(stack, job.id, _volume_step(stack, job.id))  # from its checkpoint, if any


def test_syncers_killed_while_they_write_lose_and_repeat_nothing(stack: Stack) -> None:
    """Three syncer processes, one SIGKILLed at a random moment every second or two (mid
    pass, mid write) and replaced, while the job runs; then a reconcile."""
    job = stack.submit()
    for _ in range(3):
        stack.start_syncer(interval_s=0.2)
    rng = random.Random(15)
    kills = 0
    try:
        with stack.client() as c:
            while not c.status(job.runpod_job_id).terminal:
                time.sleep(rng.uniform(0.5, 2.0))  # a random moment of a pass: the fault itself
                victim = stack.syncers.pop(rng.randrange(len(stack.syncers)))
                kill(victim.pid)
                victim.wait()
                stack.start_syncer(interval_s=0.2)
                kills += 1
        wait_until(
            lambda: jobs.get(LOCAL_ACTOR, stack.settings, job.id).notified_at is not None,
            timeout_s=120,
            what="the syncers to finish the job",
        )
    finally:
        stack.stop_syncers()
    report = jobs.reconcile(stack.settings)
    assert not report.errors
    job = jobs.get(LOCAL_ACTOR, stack.settings, job.id)
    assert job.status == "COMPLETED" and kills >= 1
    evs = assert_whole_history(stack, job.id)
    assert evs[0].type == "started" and evs[-1].type == "completed"
    (record,) = stack.cost_records(job.id)
    assert record.usd == pytest.approx(job.cost_usd)


def test_uploads_failing_end_the_job_failed_and_the_retry_delivers(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every upload URL of the first attempt points at a port where nothing answers (the
    store down): the worker trains, cannot deliver, says so; the retry resumes from the
    volume's checkpoint and delivers the adapter."""
    from core.clients.storage import LocalBlobStore
    from tests.jobs.runpod_fake import free_port

    real = LocalBlobStore.signed_upload_url
    dead = f"http://127.0.0.1:{free_port()}"

    def unreachable(self, bucket: str, key: str, expires_s: int = 3600) -> str:
        return dead + "/" + real(self, bucket, key, expires_s).split("/", 3)[3]

    monkeypatch.setattr(LocalBlobStore, "signed_upload_url", unreachable)
    job = stack.wait_end(stack.submit().id)
    assert job.status == "FAILED" and "upload" in (job.failure_message or "").lower()
    assert_whole_history(stack, job.id)
    assert len(stack.cost_records(job.id)) == 1
    monkeypatch.undo()
    step = _volume_step(stack, job.id)
    again = jobs.retry(LOCAL_ACTOR, stack.settings, job.id)
    assert again.attempt == 1
    job = stack.wait_end(job.id)
    assert job.status == "COMPLETED"
    evs = assert_whole_history(stack, job.id)
    started = [e for e in evs if e.type == "started"]
    assert len(started) == 2 and started[-1].data["resumed_from_step"] >= step > 0
    assert sorted(r.attempt for r in stack.cost_records(job.id)) == [0, 1]


def test_worker_killed_mid_upload_ends_failed_and_the_retry_delivers(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first attempt's uploads go to a loopback server that takes the request and
    never answers; the worker is killed while it waits there, mid-upload."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from core.clients.storage import LocalBlobStore

    arrived = threading.Event()
    release = threading.Event()

    class Stall(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:  # noqa: N802 - the http.server hook
            arrived.set()
            release.wait(60)

        def log_message(self, *a) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Stall)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    real = LocalBlobStore.signed_upload_url

    def stalling(self, bucket: str, key: str, expires_s: int = 3600) -> str:
        path = real(self, bucket, key, expires_s).split("/", 3)[3]
        return f"http://127.0.0.1:{httpd.server_address[1]}/{path}"

    monkeypatch.setattr(LocalBlobStore, "signed_upload_url", stalling)
    try:
        job = stack.submit()
        wait_until(arrived.is_set, timeout_s=180, what="the worker to start its upload")
        _kill_worker(stack)
    finally:
        release.set()
        httpd.shutdown()
    monkeypatch.undo()
    job = stack.wait_end(job.id)
    assert job.status == "FAILED" and job.failure_kind == "internal"
    assert_whole_history(stack, job.id)
    assert len(stack.cost_records(job.id)) == 1
    step = _volume_step(stack, job.id)
    jobs.retry(LOCAL_ACTOR, stack.settings, job.id)
    job = stack.wait_end(job.id)
    assert job.status == "COMPLETED"
    evs = assert_whole_history(stack, job.id)
    started = [e for e in evs if e.type == "started"]
    assert len(started) == 2 and started[-1].data["resumed_from_step"] >= step > 0
    assert sorted(r.attempt for r in stack.cost_records(job.id)) == [0, 1]
