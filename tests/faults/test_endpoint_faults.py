"""The endpoint misbehaving (the scripted RunPod fake, fast): bursts of 429 and 5xx answers,
answers lost after the call took effect (a `/stream` batch read but never delivered), and
hanging connections. The job still ends with its whole history (what the stream lost comes
back from the event log the worker uploads) and its cost once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core import db, jobs
from core.clients.runpod import RunPodClient, RunPodError
from core.clients.storage import job_key, make_blob_store
from core.db import repo
from core.settings import Settings
from core.users import LOCAL_ACTOR
from tests.jobs.conftest import wait_until
from tests.jobs.helpers import add_dataset
from tests.jobs.runpod_fake import RunPodFake, ServedFake

CHUNKS = 12
FINAL = {  # the worker's last word: what the job's status must say, whatever was lost on the way
    "type": "failed",
    "data": {"kind": "out_of_memory", "message": "CUDA out of memory", "suggestion": "lower it"},
}


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[tuple[RunPodFake, Settings, str, str]]:
    from trainer.shared.tiny import build_tiny_chat_model

    f = RunPodFake(api_key="fake-key", queue_s=0.1)
    f.script = lambda inp: {"chunks": CHUNKS - 1, "interval_s": 0.15, "final": FINAL}
    with ServedFake(f) as served:
        settings = Settings(
            _env_file=None,
            data_dir=tmp_path / "data",
            gpu_cluster_api_url=served.url,
            gpu_cluster_api_key="fake-key",
            model_dirs=[tmp_path],
        )
        db.upgrade(settings)
        model = str(build_tiny_chat_model(tmp_path / "tiny", seed=0))
        rows = [
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
        ] * 8
        yield f, settings, add_dataset(settings, LOCAL_ACTOR, rows), model
        db.dispose_engines()


@pytest.mark.parametrize(
    "burst",
    [
        [("429", "/v2")] * 6 + [("503", "/v2/stream")] * 3 + [("503", "/v2/status")] * 3,
        [("503-after", "/v2/stream")] * 4,  # batches read, then the answer lost
        [("slow-after", "/v2/stream"), ("slow-after", "/v2/status")] * 2,  # hanging connections
    ],
    ids=["429-and-5xx-bursts", "lost-stream-answers", "hanging-connections"],
)
def test_the_job_ends_whole_through_endpoint_faults(fake, burst) -> None:
    f, settings, ds, model = fake
    job = jobs.submit(
        LOCAL_ACTOR,
        settings,
        dataset_id=ds,
        model=model,
        training={"max_steps": 5},
        quantization="none",
    )
    # The worker uploads its whole event log next to the adapter before it ends (as
    # trainer.report does): RunPod keeps no output for a FAILED job, so what a lost /stream
    # answer carried comes back from there.
    played = f.jobs[job.runpod_job_id]
    log = "".join(json.dumps(f._chunk(played, i)) + "\n" for i in range(CHUNKS))
    key = job_key(LOCAL_ACTOR.user_id, job.id, "events.jsonl")
    make_blob_store(settings).put_bytes("adapters", key, log.encode(), "application/x-ndjson")
    f.faults[:] = [(kind, prefix.replace("/v2", "")) for kind, prefix in burst]
    client = RunPodClient(
        settings.gpu_cluster_api_url, "fake-key", backoff_s=0.01, timeout=httpx.Timeout(0.5)
    )

    def ended():
        try:
            j = jobs.sync(LOCAL_ACTOR, settings, job.id, client=client)
        except RunPodError:  # a sync that gave up is tried again, as the syncer does
            return False
        return j.status in ("COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED") and j

    with client:
        job = wait_until(ended, timeout_s=60, every_s=0.1, what="the job to end")
    assert job.status == "FAILED" and job.failure_kind == "out_of_memory"
    assert [e.seq for e in jobs.events(LOCAL_ACTOR, settings, job.id)] == list(range(CHUNKS))
    with db.session_scope(settings) as s:
        records = [r for r in repo.list_cost_records(LOCAL_ACTOR, s) if r.job_id == job.id]
    assert len(records) == 1 and records[0].usd == pytest.approx(job.cost_usd)
    assert not f.faults, "every injected fault was met"
