"""One client test suite, run against the local endpoint (a real process on loopback running
handlers in worker processes) and against a scripted fake of RunPod's hosted API.

The fake answers with the shapes of RunPod's documentation; the local endpoint must
answer the same way for the same inputs. Fault injection (429, 5xx, lost answers) needs the
fake; those tests are below the shared suite.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from core.clients.runpod import (
    BadRequest,
    EndpointAuthError,
    EndpointUnavailable,
    JobNotFound,
    PayloadTooLarge,
    RunPodClient,
    SubmitUncertain,
)
from tests.jobs.conftest import ENDPOINT_KEY, start_endpoint, wait_until
from tests.jobs.runpod_fake import RunPodFake, ServedFake

RETENTION_S = 4.0
TIMEOUT_MS = 60_000


@dataclass
class Backend:
    name: str
    url: str
    key: str

    def client(self, **kw) -> RunPodClient:
        kw.setdefault("backoff_s", 0.05)
        return RunPodClient(self.url, self.key, **kw)


@pytest.fixture(scope="module")
def local_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    ep = start_endpoint(tmp_path_factory.mktemp("ep"), workers=2, retention_s=RETENTION_S)
    try:
        yield Backend("local", ep.url, ENDPOINT_KEY)
    finally:
        ep.stop()


@pytest.fixture(scope="module")
def fake_backend() -> Iterator[tuple[Backend, RunPodFake]]:
    fake = RunPodFake(api_key="fake-key", retention_s=RETENTION_S)
    with ServedFake(fake) as served:
        yield Backend("fake", served.url, "fake-key"), fake


@pytest.fixture(params=["local", "fake"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "local":
        return request.getfixturevalue("local_backend")
    return request.getfixturevalue("fake_backend")[0]


def run_to_end(client: RunPodClient, job_id: str) -> tuple[list[str], list]:
    """Poll status and stream until the job ends; return the statuses seen and all chunks."""
    seen: list[str] = []
    chunks: list = []

    def step():
        st = client.status(job_id)
        if not seen or seen[-1] != st.status:
            seen.append(st.status)
        chunks.extend(client.stream(job_id).outputs)
        return st.terminal

    wait_until(step, timeout_s=60, every_s=0.05, what=f"job {job_id} to end")
    chunks.extend(client.stream(job_id).outputs)
    return seen, chunks


# --- the shared suite -----------------------------------------------------------------


def test_job_goes_queue_progress_completed_and_streams_while_running(backend: Backend) -> None:
    with backend.client() as c:
        sub = c.run(
            {"chunks": 6, "interval_s": 0.25}, execution_timeout_ms=TIMEOUT_MS, ttl_ms=3_600_000
        )
        assert sub.status == "IN_QUEUE" and sub.id
        seen: list[str] = []
        during: list = []

        def step():
            st = c.status(sub.id)
            if not seen or seen[-1] != st.status:
                seen.append(st.status)
            batch = c.stream(sub.id)
            if batch.status == "IN_PROGRESS":
                during.extend(batch.outputs)
            return st.terminal

        wait_until(step, every_s=0.05, what="completion")
        final = c.status(sub.id)
    assert seen[0] == "IN_QUEUE" and "IN_PROGRESS" in seen and seen[-1] == "COMPLETED"
    assert during, "no chunk arrived while the job was running"
    # The final output aggregates every chunk in order (return_aggregate_stream).
    assert [o["seq"] for o in final.output] == list(range(6))
    assert isinstance(final.delay_ms, int) and isinstance(final.execution_ms, int)
    assert final.execution_ms > 0


def test_stream_returns_each_chunk_once(backend: Backend) -> None:
    with backend.client() as c:
        sub = c.run({"chunks": 8, "interval_s": 0.1}, execution_timeout_ms=TIMEOUT_MS)
        _, chunks = run_to_end(c, sub.id)
        assert [ch["seq"] for ch in chunks] == list(range(8))
        assert c.stream(sub.id).outputs == []
        assert c.stream(sub.id).status == "COMPLETED"


def test_cancel_stops_a_running_job(backend: Backend) -> None:
    with backend.client() as c:
        sub = c.run({"chunks": 2, "interval_s": 0.1, "hang_s": 60}, execution_timeout_ms=TIMEOUT_MS)
        wait_until(lambda: c.status(sub.id).status == "IN_PROGRESS", what="start")
        assert c.cancel(sub.id).status == "CANCELLED"
        if backend.name == "local":  # its worker stopped: nothing late can change the job
            wait_until(lambda: c.health().workers["running"] == 0, what="the worker to stop")
        st = c.status(sub.id)
        assert st.status == "CANCELLED" and st.output is None
        # Cancelling again changes nothing.
        assert c.cancel(sub.id).status == "CANCELLED"


def test_cancel_a_queued_job(backend: Backend) -> None:
    with backend.client() as c:
        sub = c.run({"chunks": 1}, execution_timeout_ms=TIMEOUT_MS)
        assert c.cancel(sub.id).status == "CANCELLED"
        assert c.status(sub.id).status == "CANCELLED"


def test_execution_timeout_marks_timed_out(backend: Backend) -> None:
    with backend.client() as c:
        sub = c.run({"chunks": 1, "hang_s": 60}, execution_timeout_ms=5_500)
        seen, _ = run_to_end(c, sub.id)
        assert seen[-1] == "TIMED_OUT"
        st = c.status(sub.id)
        assert 5_000 <= st.execution_ms < 60_000


def test_failure_then_retry_requeues_the_same_job(backend: Backend) -> None:
    with backend.client() as c:
        before = c.health().jobs["retried"]
        sub = c.run(
            {"chunks": 2, "interval_s": 0.05, "raise": "boom"}, execution_timeout_ms=TIMEOUT_MS
        )
        seen, chunks = run_to_end(c, sub.id)
        st = c.status(sub.id)
        assert seen[-1] == "FAILED" and "boom" in str(st.error)
        # runpod-python's form for a generator's exception: "handler: <msg> \ntraceback: ..."
        assert st.job_error.message == "boom" and "RuntimeError" in st.job_error.traceback
        assert [ch["seq"] for ch in chunks] == [0, 1]  # what it yielded before failing
        again = c.retry(sub.id)
        assert again.id == sub.id and again.status == "IN_QUEUE"
        seen, _ = run_to_end(c, sub.id)
        assert "IN_PROGRESS" in seen and seen[-1] == "FAILED"
        assert c.health().jobs["retried"] == before + 1


def test_failed_event_ends_the_job_failed_with_its_events_streamed(backend: Backend) -> None:
    failed = {"type": "failed", "data": {"kind": "diverged", "message": "loss is NaN"}}
    with backend.client() as c:
        sub = c.run(
            {"chunks": 2, "interval_s": 0.05, "final": failed}, execution_timeout_ms=TIMEOUT_MS
        )
        seen, chunks = run_to_end(c, sub.id)
        st = c.status(sub.id)
    assert seen[-1] == "FAILED" and st.output is None
    assert [ch["type"] for ch in chunks] == ["metrics", "metrics", "failed"]
    assert st.job_error.type == "diverged" and st.job_error.message == "loss is NaN"


def test_retry_of_a_completed_job_is_refused(backend: Backend) -> None:
    with backend.client() as c:
        sub = c.run({"chunks": 1}, execution_timeout_ms=TIMEOUT_MS)
        run_to_end(c, sub.id)
        with pytest.raises(BadRequest):
            c.retry(sub.id)


def test_unknown_and_expired_jobs_are_not_found(backend: Backend) -> None:
    with backend.client() as c:
        with pytest.raises(JobNotFound):
            c.status("no-such-job")
        with pytest.raises(JobNotFound):
            c.stream("no-such-job")
        sub = c.run({"chunks": 1}, execution_timeout_ms=TIMEOUT_MS)
        run_to_end(c, sub.id)
        assert c.status(sub.id).status == "COMPLETED"

        def gone() -> bool:
            try:
                c.status(sub.id)
            except JobNotFound:
                return True
            return False

        wait_until(gone, timeout_s=RETENTION_S + 30, every_s=0.5, what="the result to expire")


def test_a_job_whose_ttl_passes_is_deleted_even_mid_run(backend: Backend) -> None:
    """`policy.ttl` covers queue plus execution: when it passes the job is deleted, running
    or not (its worker stopped), and every path about it answers 404."""
    with backend.client() as c:
        sub = c.run(
            {"chunks": 2, "interval_s": 0.1, "hang_s": 120},
            execution_timeout_ms=TIMEOUT_MS,
            ttl_ms=10_000,
        )
        wait_until(lambda: c.status(sub.id).status == "IN_PROGRESS", what="start")

        def deleted() -> bool:
            try:
                c.status(sub.id)
            except JobNotFound:
                return True
            return False

        wait_until(deleted, timeout_s=30, every_s=0.2, what="the ttl to delete the job")
        with pytest.raises(JobNotFound):
            c.stream(sub.id)
        if backend.name == "local":
            wait_until(lambda: c.health().workers["running"] == 0, what="the worker to stop")


def test_wrong_key_is_refused_and_never_echoed(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bad = "wrong-key-0xDEADBEEF"
    with RunPodClient(backend.url, bad) as c:
        assert bad not in repr(c)
        with pytest.raises(EndpointAuthError) as e:
            c.health()
    assert bad not in str(e.value)
    assert bad not in caplog.text


def test_health_reports_jobs_and_workers(backend: Backend) -> None:
    with backend.client() as c:
        h = c.health()
    assert set(h.jobs) == {"completed", "failed", "inProgress", "inQueue", "retried"}
    assert {"idle", "running"} <= set(h.workers)


def test_run_requires_a_valid_policy_and_payload(backend: Backend) -> None:
    with backend.client() as c:
        with pytest.raises(ValueError, match="5000"):
            c.run({"chunks": 1}, execution_timeout_ms=1000)
        with pytest.raises(PayloadTooLarge):
            c.run({"blob": "x" * (11 * 1024 * 1024)}, execution_timeout_ms=TIMEOUT_MS)


# --- local endpoint only ----------------------------------------------------------------


def test_local_queue_respects_worker_count(local_backend: Backend) -> None:
    with local_backend.client() as c:
        ids = [
            c.run({"chunks": 1, "hang_s": 3}, execution_timeout_ms=TIMEOUT_MS).id for _ in range(3)
        ]
        wait_until(lambda: c.health().workers["running"] == 2, what="two running workers")
        assert [c.status(i).status for i in ids].count("IN_QUEUE") >= 1
        assert c.health().workers["idle"] == 0
        for i in ids:
            c.cancel(i)


def test_local_plain_handler_returns_its_value(tmp_path: Path, endpoint_factory) -> None:
    ep = endpoint_factory(handler="tests.jobs.fakes:plain", data_dir=tmp_path / "d")
    with RunPodClient(ep.url, ENDPOINT_KEY) as c:
        sub = c.run({"x": 1}, execution_timeout_ms=TIMEOUT_MS)
        wait_until(lambda: c.status(sub.id).terminal, what="plain job")
        assert c.status(sub.id).output == {"echo": {"x": 1}}


def test_local_plain_handler_exception_is_runpods_json_error(
    tmp_path: Path, endpoint_factory
) -> None:
    ep = endpoint_factory(handler="tests.jobs.fakes:plain", data_dir=tmp_path / "d")
    with RunPodClient(ep.url, ENDPOINT_KEY) as c:
        sub = c.run({"plain_raise": "no such column"}, execution_timeout_ms=TIMEOUT_MS)
        wait_until(lambda: c.status(sub.id).terminal, what="plain job")
        st = c.status(sub.id)
    assert st.status == "FAILED" and json.loads(st.error)["runpod_version"]  # runpod-python's own
    err = st.job_error
    assert err.message == "no such column" and "RuntimeError" in err.type
    assert "Traceback" in err.traceback


def test_local_error_chunk_fails_the_job(local_backend: Backend) -> None:
    with local_backend.client() as c:
        sub = c.run({"chunks": 1, "yield_error": "bad input"}, execution_timeout_ms=TIMEOUT_MS)
        seen, _ = run_to_end(c, sub.id)
        assert seen[-1] == "FAILED" and c.status(sub.id).error == "bad input"


# --- RunPod's forms, against the scripted fake ---------------------------------------------


def test_plain_handler_error_form_is_read(fake_backend) -> None:
    backend, _ = fake_backend
    with backend.client() as c:
        sub = c.run({"chunks": 0, "plain_raise": "disk full"}, execution_timeout_ms=TIMEOUT_MS)
        run_to_end(c, sub.id)
        err = c.status(sub.id).job_error
    assert (err.message, err.type) == ("disk full", "<class 'RuntimeError'>")


def test_status_aliases_are_read_as_the_statuses_they_name(fake_backend) -> None:
    backend, fake = fake_backend
    fake.aliases.update({"IN_PROGRESS": "RUNNING", "CANCELLED": "CANCELED"})
    try:
        with backend.client() as c:
            sub = c.run({"chunks": 1, "hang_s": 30}, execution_timeout_ms=TIMEOUT_MS)
            wait_until(lambda: c.status(sub.id).status == "IN_PROGRESS", what="RUNNING")
            assert c.stream(sub.id).status == "IN_PROGRESS"
            c.cancel(sub.id)
            assert c.status(sub.id).status == "CANCELLED" and c.status(sub.id).terminal
    finally:
        fake.aliases.clear()


@pytest.mark.parametrize(
    ("error", "message", "kind"),
    [
        ("plain words", "plain words", None),
        ('{"error_type": "x", "error_message": "y", "error_traceback": "t"}', "y", "x"),
        ({"error_message": "as an object"}, "as an object", None),
        ('["not", "the", "shape"]', '["not", "the", "shape"]', None),
    ],
)
def test_job_error_forms(error, message: str, kind) -> None:
    from core.clients.runpod import JobError

    parsed = JobError.parse(error)
    assert parsed.message == message and parsed.type == kind
    assert JobError.parse(None) is None and JobError.parse("") is None


# --- faults, against the scripted fake ---------------------------------------------------


def test_reads_are_retried_through_429_and_5xx(
    fake_backend, caplog: pytest.LogCaptureFixture
) -> None:
    backend, fake = fake_backend
    caplog.set_level(logging.DEBUG)
    with backend.client() as c:
        sub = c.run({"chunks": 1}, execution_timeout_ms=TIMEOUT_MS)
        fake.faults += [("503", "/status"), ("429", "/status"), ("503", "/status")]
        assert c.status(sub.id).id == sub.id
    assert not fake.faults
    assert backend.key not in caplog.text


def test_reads_give_up_after_max_attempts(fake_backend) -> None:
    backend, fake = fake_backend
    with backend.client(max_attempts=2) as c:
        fake.faults += [("503", "/health"), ("503", "/health")]
        with pytest.raises(EndpointUnavailable):
            c.health()


def test_run_refused_with_429_is_sent_again_and_starts_one_job(fake_backend) -> None:
    backend, fake = fake_backend
    with backend.client() as c:
        n = len(fake.jobs)
        fake.faults.append(("429", "/run"))
        c.run({"chunks": 1}, execution_timeout_ms=TIMEOUT_MS)
    assert len(fake.jobs) == n + 1


@pytest.mark.parametrize("fault", ["503-after", "slow-after"])
def test_run_whose_answer_is_lost_is_never_sent_twice(fake_backend, fault: str) -> None:
    backend, fake = fake_backend
    with backend.client(timeout=httpx.Timeout(1.0, connect=1.0)) as c:
        n = len(fake.jobs)
        runs = sum(1 for m, p in fake.calls if p == "/run")
        fake.faults.append((fault, "/run"))
        with pytest.raises(SubmitUncertain):
            c.run({"chunks": 1}, execution_timeout_ms=TIMEOUT_MS)
    assert len(fake.jobs) == n + 1  # it did start, once
    assert sum(1 for m, p in fake.calls if p == "/run") == runs + 1


def test_run_is_retried_when_the_connection_was_never_made() -> None:
    sleeps: list[float] = []
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] < 3:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={"id": "j-1", "status": "IN_QUEUE"})

    c = RunPodClient(
        "http://runpod.test/v2/e", "k", transport=httpx.MockTransport(handler), sleep=sleeps.append
    )
    assert c.run({"a": 1}, execution_timeout_ms=TIMEOUT_MS).id == "j-1"
    assert calls["n"] == 3 and sleeps == [0.5, 1.0]  # exponential backoff


def test_unreachable_endpoint_raises_unavailable() -> None:
    from tests.jobs.runpod_fake import free_port

    c = RunPodClient(f"http://127.0.0.1:{free_port()}/v2/x", "k", max_attempts=2, backoff_s=0.01)
    with pytest.raises(EndpointUnavailable, match="cannot connect"):
        c.status("j")
