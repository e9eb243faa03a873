"""A job is never sent when its upload URLs could expire before it ends: on Supabase Storage
without S3 keys (2-hour upload URLs) a long job is refused before anything is stored, with
the fix named, and the Train page blocks Launch with the same words; with S3 keys the same
job goes out with presigned URLs that last as long as it may run. Each test runs with the
project's new-format keys (`sb_secret_...` as SUPABASE_SECRET_KEY, `sb_publishable_...` as
SUPABASE_PUBLISHABLE_KEY) and with keys of no published shape; the Storage stand-in takes
only the secret key for the uploads and signing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr

from core import db, jobs, planner
from core.clients import storage
from core.clients.runpod import RunPodClient
from core.clients.storage import S3_PRESIGN_MAX_S, SUPABASE_UPLOAD_URL_MAX_S, make_blob_store
from core.db import repo
from core.settings import Settings
from core.users import LOCAL_ACTOR
from tests.jobs.helpers import add_dataset
from tests.jobs.runpod_fake import RunPodFake, ServedFake
from tests.state.supabase_fake import FakeSupabaseStorage
from trainer.output import put_file

MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
TRAINING = {"max_steps": 5, "micro_batch_size": 4, "grad_accum": 2, "max_length": 128}
ROWS = [
    {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
    for i in range(8)
]


@pytest.fixture(scope="module")
def runpod() -> Iterator[tuple[RunPodFake, str]]:
    f = RunPodFake(api_key="fake-key", queue_s=0.1)
    with ServedFake(f) as served:
        yield f, served.url


# The project's keys: new-format (sb_secret_/sb_publishable_) and a self-hosted style key.
KEYS = {
    "new-format keys": ("sb_secret_" + "s" * 32, "sb_publishable_" + "p" * 32),
    "other keys": ("fake-service-key", "fake-publishable-key"),
}


@pytest.fixture(params=sorted(KEYS))
def world(request: pytest.FixtureRequest, runpod, tmp_path: Path) -> Iterator[dict[str, Any]]:
    f, url = runpod
    f.script = lambda inp: {"chunks": 1, "hang_s": 60}
    secret, publishable = KEYS[request.param]
    with FakeSupabaseStorage(
        tmp_path / "supabase", service_key=secret, publishable_key=publishable
    ) as fake:
        base = Settings(
            _env_file=None,
            data_dir=tmp_path / "data",
            gpu_cluster_api_url=url,
            gpu_cluster_api_key="fake-key",
            storage="supabase",
            supabase_url=fake.url,
            supabase_key=fake.state.service_key,
            supabase_anon_key=fake.state.publishable_key,
            max_concurrent_jobs=2,
            monthly_budget_usd=100.0,
        )
        s3 = base.model_copy(
            update={
                "supabase_s3_access_key_id": SecretStr(fake.state.s3_access_key_id),
                "supabase_s3_secret_access_key": SecretStr(fake.state.s3_secret),
                "supabase_s3_region": fake.state.region,
            }
        )
        db.upgrade(base)
        ds = add_dataset(base, LOCAL_ACTOR, ROWS)
        yield {"runpod": f, "fake": fake, "plain": base, "s3": s3, "ds": ds}
    db.dispose_engines()


def _jobs(settings: Settings) -> int:
    with db.session_scope(settings) as s:
        return len(repo.list_jobs(LOCAL_ACTOR, s))


def _submit(settings: Settings, ds: str, budget: float):
    return jobs.submit(
        LOCAL_ACTOR,
        settings,
        dataset_id=ds,
        model=MODEL,
        training=TRAINING,
        quantization="none",
        budget_usd=budget,
    )


def _rate(settings: Settings) -> float:
    return planner.rate_per_second(settings.gpu_type, settings.price_tier)


def test_a_job_longer_than_two_hours_is_refused_on_plain_supabase_with_nothing_stored(
    world,
) -> None:
    settings, f, fake = world["plain"], world["runpod"], world["fake"]
    assert make_blob_store(settings).max_upload_url_s == SUPABASE_UPLOAD_URL_MAX_S
    sent_before, storage_calls = len(f.jobs), len(fake.state.requests)
    budget = 10.0  # over 2 hours of GPU at the configured rate
    assert budget / _rate(settings) > 7200
    with pytest.raises(jobs.UploadUrlsExpire) as e:
        _submit(settings, world["ds"], budget)
    most = (
        SUPABASE_UPLOAD_URL_MAX_S - jobs.UPLOAD_URL_MARGIN_S - jobs.MIN_QUEUE_ALLOWANCE_S
    ) * _rate(settings)
    message = str(e.value)
    assert "SUPABASE_S3_ACCESS_KEY_ID" in message and "SUPABASE_S3_SECRET_ACCESS_KEY" in message
    assert f"at most ${int(most * 100) / 100:.2f} so the job ends within 2 h" in message
    assert _jobs(settings) == 0 and len(f.jobs) == sent_before
    assert len(fake.state.requests) == storage_calls  # not even a URL was signed
    # The Train page blocks Launch with the same words.
    with db.session_scope(settings) as s:
        tp = jobs.preflight(
            jobs.LaunchRequest.build(
                dataset_id=world["ds"],
                model=MODEL,
                lora={},
                training=TRAINING,
                quantization="none",
                eval_fraction=0.0,
                budget_usd=budget,
            ),
            LOCAL_ACTOR,
            s,
            settings,
        )
    assert not tp.can_launch and message in tp.blockers
    # Within the limit it goes out, and the platform drops it before its URLs expire.
    with db.session_scope(settings) as s:
        tp = jobs.preflight(
            jobs.LaunchRequest.build(
                dataset_id=world["ds"],
                model=MODEL,
                lora={},
                training=TRAINING,
                quantization="none",
                eval_fraction=0.0,
                budget_usd=1.0,
            ),
            LOCAL_ACTOR,
            s,
            settings,
        )
    assert not any("SUPABASE_S3" in b for b in tp.blockers)


def test_a_short_job_on_plain_supabase_is_dropped_by_the_platform_before_its_urls_expire(
    world, monkeypatch
) -> None:
    settings, f = world["plain"], world["runpod"]
    seen: dict[str, Any] = {}
    original = RunPodClient.run

    def spy(self, payload, **kw):
        seen.update(kw)
        return original(self, payload, **kw)

    monkeypatch.setattr(RunPodClient, "run", spy)
    job = _submit(settings, world["ds"], 1.0)
    run_ms = f.jobs[job.runpod_job_id].timeout_s * 1000
    # policy.ttl covers the queue and the run, and ends before the 2-hour upload URLs do.
    assert run_ms < seen["ttl_ms"] <= (SUPABASE_UPLOAD_URL_MAX_S - jobs.UPLOAD_URL_MARGIN_S) * 1000
    assert seen["ttl_ms"] - run_ms >= jobs.MIN_QUEUE_ALLOWANCE_S * 1000
    jobs.cancel(LOCAL_ACTOR, settings, job.id)


def test_with_s3_keys_the_long_job_is_sent_with_urls_that_outlive_it(world) -> None:
    settings, f, fake = world["s3"], world["runpod"], world["fake"]
    assert make_blob_store(settings).max_upload_url_s == S3_PRESIGN_MAX_S
    budget = 10.0
    job = _submit(settings, world["ds"], budget)
    payload = f.jobs[job.runpod_job_id].input
    limits = planner.execution_limits(budget, _rate(settings))
    want = jobs.upload_window(limits, None).url_s  # what an unlimited store gives
    assert want > SUPABASE_UPLOAD_URL_MAX_S + budget / _rate(settings)
    for name, url in payload["output"]["upload_urls"].items():
        q = parse_qs(urlsplit(url).query)
        assert urlsplit(url).path.startswith("/storage/v1/s3/adapters/"), name
        assert q["X-Amz-Expires"] == [str(want)], name
        assert fake.state.s3_secret not in url and fake.state.service_key not in url
    # The worker's own upload reaches the bucket through the presigned URL.
    result = fake.state.root.parent / "result.json"
    result.write_text('{"status": "completed"}')
    put_file(payload["output"]["upload_urls"]["result.json"], result)
    stored = make_blob_store(settings).get_bytes(
        "adapters", f"{LOCAL_ACTOR.user_id}/jobs/{job.id}/result.json"
    )
    assert stored == b'{"status": "completed"}'
    jobs.cancel(LOCAL_ACTOR, settings, job.id)
    # Retried on a store whose URLs are too short, it is refused and left as it was.
    jobs.sync(LOCAL_ACTOR, settings, job.id)
    status = jobs.get(LOCAL_ACTOR, settings, job.id).status
    with pytest.raises(jobs.UploadUrlsExpire):
        jobs.retry(LOCAL_ACTOR, world["plain"], job.id)
    assert jobs.get(LOCAL_ACTOR, settings, job.id).status == status


def test_upload_window_without_a_limit_is_unchanged() -> None:
    limits = planner.execution_limits(2.0, 4.0 / 3600)
    w = jobs.upload_window(limits, None)
    assert w.queue_s == jobs.QUEUE_ALLOWANCE_S
    assert w.ttl_ms == int((jobs.QUEUE_ALLOWANCE_S + limits.budget_s) * 1000)
    assert w.url_s == max(
        storage.UPLOAD_URL_TTL_S, int(jobs.QUEUE_ALLOWANCE_S + limits.budget_s + 3600)
    )
    assert jobs.upload_window(limits, S3_PRESIGN_MAX_S) == w
