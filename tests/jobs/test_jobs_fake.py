"""Job lifecycle rules against the scripted RunPod fake (fast, no training): quotas, planner
refusals, submit failures, platform timeout, OOM relaunch, notification, isolation."""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import update

from core import db, jobs, planner
from core.clients import runpod
from core.db import repo
from core.db.tables import Job
from core.errors import InvalidInput, NotFound, QuotaExceeded
from core.settings import Settings
from core.users import LOCAL_ACTOR, Actor
from tests.jobs.conftest import wait_until
from tests.jobs.helpers import add_dataset
from tests.jobs.runpod_fake import RunPodFake, ServedFake, free_port
from tests.state.db_fixtures import postgres_database, settings_for, truncate_all

TINY_TRAINING = {"max_steps": 5, "micro_batch_size": 4, "grad_accum": 2, "max_length": 128}
OOM = {
    "type": "failed",
    "data": {
        "kind": "out_of_memory",
        "message": "CUDA out of memory",
        "suggestion": "micro_batch_size 2 with grad_accum 4",
    },
}


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[RunPodFake, str]]:
    f = RunPodFake(api_key="fake-key", queue_s=0.1)
    with ServedFake(f) as served:
        yield f, served.url


@pytest.fixture
def env(fake, tmp_path: Path) -> Iterator[tuple[RunPodFake, Settings, str, str]]:
    yield from _env(fake, tmp_path)


@pytest.fixture(scope="module")
def pg_migrated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with postgres_database() as url:
        db.upgrade(settings_for(tmp_path_factory.mktemp("pg"), url))
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def env_db(
    request: pytest.FixtureRequest, fake, tmp_path: Path
) -> Iterator[tuple[RunPodFake, Settings, str, str]]:
    """`env` on SQLite and on the real PostgreSQL (production's database): for the
    guarantees that rest on the database's locks under concurrency."""
    url = ""
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_migrated")
        truncate_all(settings_for(tmp_path, url))
    yield from _env(fake, tmp_path, url)


def _env(fake, tmp_path: Path, database_url: str = ""):
    f, url = fake
    f.script, f.timeout_scale, f.faults[:] = None, 1.0, []
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        gpu_cluster_api_url=url,
        gpu_cluster_api_key="fake-key",
        max_concurrent_jobs=2,
        monthly_budget_usd=25.0,
        job_budget_usd=10.0,
        model_dirs=[tmp_path.parent],  # the shared tiny model lives beside the test folders
    )
    db.upgrade(settings)
    model = str(_tiny(tmp_path))
    yield f, settings, add_dataset(settings, LOCAL_ACTOR, _rows()), model
    db.dispose_engines()


_TINY: dict[str, Path] = {}


def _tiny(tmp_path: Path) -> Path:
    if "m" not in _TINY:
        from trainer.shared.tiny import build_tiny_chat_model

        _TINY["m"] = build_tiny_chat_model(tmp_path.parent / "tiny-shared", seed=0)
    return _TINY["m"]


def _rows() -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"q{i}"},
                {"role": "assistant", "content": f"a{i}"},
            ]
        }
        for i in range(8)
    ]


def _submit(settings: Settings, dataset_id: str, model: str, actor: Actor = LOCAL_ACTOR, **kw: Any):
    kw.setdefault("training", TINY_TRAINING)
    kw.setdefault("quantization", "none")
    return jobs.submit(actor, settings, dataset_id=dataset_id, model=model, **kw)


def _count_jobs(settings: Settings) -> int:
    with db.session_scope(settings) as s:
        return len(repo.list_jobs(LOCAL_ACTOR, s))


def _end(settings: Settings, job_id: str, actor: Actor = LOCAL_ACTOR):
    return wait_until(
        lambda: (
            (j := jobs.sync(actor, settings, job_id)).status
            in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
            and j
        ),
        timeout_s=30,
        every_s=0.1,
        what="the job to end",
    )


def test_submit_sends_the_budget_as_execution_timeout_and_no_secret(env) -> None:
    f, settings, ds, model = env
    f.script = lambda inp: {"chunks": 1, "hang_s": 30}
    job = _submit(settings, ds, model, budget_usd=2.0)
    rate = planner.rate_per_second(settings.gpu_type, settings.price_tier)
    assert f.jobs[job.runpod_job_id].timeout_s == pytest.approx(
        int(2.0 / rate * 1000) / 1000, abs=1e-3
    )
    sent = f.jobs[job.runpod_job_id].input
    assert sent["job_id"] == job.id and sent["data"]["train_url"].startswith("http")
    assert set(sent["output"]["upload_urls"]) >= {
        "adapter_model.safetensors",
        "events.jsonl",
        "result.json",
    }
    assert "fake-key" not in json.dumps(sent)
    # The stored spec keeps no signed URL.
    assert "sig=" not in json.dumps(job.spec) and job.spec["data"]["train_url"] == "<signed url>"
    jobs.cancel(LOCAL_ACTOR, settings, job.id)


def test_concurrent_job_quota(env_db) -> None:
    f, settings, ds, model = env_db
    f.script = lambda inp: {"chunks": 1, "hang_s": 60}
    a = _submit(settings, ds, model, budget_usd=1.0)
    b = _submit(settings, ds, model, budget_usd=1.0)
    with pytest.raises(QuotaExceeded, match="2 at once"):
        _submit(settings, ds, model, budget_usd=1.0)
    assert _count_jobs(settings) == 2
    jobs.cancel(LOCAL_ACTOR, settings, a.id)
    c = _submit(settings, ds, model, budget_usd=1.0)  # room again
    for j in (b, c):
        jobs.cancel(LOCAL_ACTOR, settings, j.id)


def test_two_launches_at_once_get_one_place_under_the_quota(env_db) -> None:
    f, settings, ds, model = env_db
    f.script = lambda inp: {"chunks": 1, "hang_s": 60}
    settings = settings.model_copy(update={"max_concurrent_jobs": 1})
    barrier = threading.Barrier(2)
    outcomes: list[Any] = []

    def launch() -> None:
        barrier.wait()
        try:
            outcomes.append(_submit(settings, ds, model, budget_usd=1.0))
        except QuotaExceeded as e:
            outcomes.append(e)

    threads = [threading.Thread(target=launch) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    launched = [o for o in outcomes if not isinstance(o, QuotaExceeded)]
    assert len(launched) == 1 and len(outcomes) == 2 and _count_jobs(settings) == 1
    jobs.cancel(LOCAL_ACTOR, settings, launched[0].id)


def test_monthly_budget_counts_spend_and_reserved_budgets(env) -> None:
    f, settings, ds, model = env
    f.script = lambda inp: {"chunks": 1, "hang_s": 60}
    a = _submit(settings, ds, model, budget_usd=20.0)  # $20 of $25 reserved
    with pytest.raises(QuotaExceeded, match=r"lower the budget to \$5\.00"):
        _submit(settings, ds, model, budget_usd=6.0)
    assert _count_jobs(settings) == 1
    jobs.cancel(LOCAL_ACTOR, settings, a.id)


def test_budget_below_a_minute_of_gpu_is_refused(env) -> None:
    _, settings, ds, model = env
    with pytest.raises(InvalidInput, match="one minute"):
        _submit(settings, ds, model, budget_usd=0.01)
    assert _count_jobs(settings) == 0


def test_planner_refuses_what_cannot_fit_or_costs_more_than_the_budget(env) -> None:
    _, settings, _, _ = env
    big = add_dataset(
        settings,
        LOCAL_ACTOR,
        _rows(),
        name="big",
        stats={"tokens": {"per_row": {"mean": 1500.0}}, "split": {"train_rows": 200_000}},
    )
    settings = settings.model_copy(update={"gpu_type": "L40S_48GB"})
    with pytest.raises(jobs.PlanRefused, match="does not fit"):
        _submit(
            settings,
            big,
            "Qwen/Qwen2.5-72B-Instruct",
            quantization="none",
            training={"max_length": 4096},
        )
    with pytest.raises(jobs.PlanRefused, match="above its budget"):
        _submit(
            settings,
            big,
            "Qwen/Qwen2.5-7B-Instruct",
            quantization="nf4",
            training={"epochs": 3, "max_length": 2048},
            budget_usd=1.0,
        )
    assert _count_jobs(settings) == 0


def test_platform_timeout_is_recorded_with_its_cost(env) -> None:
    f, settings, ds, model = env
    f.script = lambda inp: {"chunks": 2, "interval_s": 0.1, "hang_s": 600}
    f.timeout_scale = 0.05  # the 60+ s limit strikes after ~3 s on the fake's clock
    job = _submit(
        settings, ds, model, budget_usd=60 * planner.rate_per_second(settings.gpu_type) * 1.01
    )
    job = _end(settings, job.id)
    assert (
        job.status == "TIMED_OUT"
        and job.stop_reason == "budget"
        and job.failure_kind == "timed_out"
    )
    assert job.execution_ms is not None and job.cost_usd == pytest.approx(
        job.billed_s * job.rate_per_s
    )
    assert [e.seq for e in jobs.events(LOCAL_ACTOR, settings, job.id)] == [0, 1]


def test_out_of_memory_relaunches_once_with_lighter_settings(env_db) -> None:
    f, settings, ds, model = env_db
    f.script = lambda inp: {"chunks": 1, "interval_s": 0.05, "final": OOM}
    settings = settings.model_copy(update={"auto_relaunch_oom": True})
    job = _submit(settings, ds, model, budget_usd=5.0, quantization="nf4")
    with runpod.RunPodClient.from_settings(settings) as c:
        wait_until(lambda: c.status(job.runpod_job_id).terminal, what="the job to fail")
    _sync_at_once(settings, job.id, 4)  # four syncers see the end together: one relaunch
    job = _end(settings, job.id)
    assert job.status == "FAILED" and job.failure_kind == "out_of_memory" and job.auto_relaunched
    children = [j for j in jobs.list_jobs(LOCAL_ACTOR, settings) if j.parent_job_id == job.id]
    assert len(children) == 1
    child = children[0]
    t = child.spec["training"]
    assert (t["micro_batch_size"], t["grad_accum"]) == (2, 4) and t["gradient_checkpointing"]
    assert child.budget_usd == pytest.approx(5.0 - job.cost_usd)
    child = _end(settings, child.id)  # it runs out of memory too: no third attempt
    assert child.failure_kind == "out_of_memory"
    assert not [j for j in jobs.list_jobs(LOCAL_ACTOR, settings) if j.parent_job_id == child.id]
    assert len(jobs.list_jobs(LOCAL_ACTOR, settings)) == 2


def test_oom_is_not_relaunched_by_default(env) -> None:
    f, settings, ds, model = env
    f.script = lambda inp: {"chunks": 1, "final": OOM}
    job = _end(settings, _submit(settings, ds, model, budget_usd=5.0).id)
    assert job.failure_kind == "out_of_memory" and job.failure_suggestion
    assert _count_jobs(settings) == 1


class _Hook:
    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        hook = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                hook.posts.append({"path": self.path, "body": json.loads(body)})
                self.send_response(200)
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = (
            f"http://127.0.0.1:{self.httpd.server_address[1]}/services/T000/B000/SECRETtoken123"
        )


def _sync_at_once(settings: Settings, job_id: str, n: int) -> None:
    barrier = threading.Barrier(n)

    def one() -> None:
        barrier.wait()
        jobs.sync(LOCAL_ACTOR, settings, job_id)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_job_end_posts_one_notification_even_with_concurrent_syncs(
    env_db, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    f, settings, ds, model = env_db
    hook = _Hook()
    settings = settings.model_copy(update={"notify_webhook_url": SecretStr(hook.url)})
    f.script = lambda inp: {"chunks": 2, "interval_s": 0.05, "raise": "worker crashed"}
    job = _submit(settings, ds, model, budget_usd=1.0)
    with runpod.RunPodClient.from_settings(settings) as c:  # wait on the endpoint, not through sync
        wait_until(lambda: c.status(job.runpod_job_id).status == "FAILED", what="the job to fail")
    _sync_at_once(settings, job.id, 4)
    job = jobs.get(LOCAL_ACTOR, settings, job.id)
    assert job.status == "FAILED" and "worker crashed" in job.failure_message
    assert len(hook.posts) == 1
    assert job.id in hook.posts[0]["body"]["text"] and "failed" in hook.posts[0]["body"]["text"]
    assert "SECRETtoken123" not in caplog.text
    hook.httpd.shutdown()


def test_unreachable_endpoint_fails_the_submit_cleanly(env) -> None:
    _, settings, ds, model = env
    settings = settings.model_copy(
        update={"gpu_cluster_api_url": f"http://127.0.0.1:{free_port()}/v2/x"}
    )
    client = runpod.RunPodClient.from_settings(settings, max_attempts=2, backoff_s=0.01)
    with pytest.raises(jobs.SubmitFailed, match="could not be sent"):
        _submit(settings, ds, model, budget_usd=1.0, client=client)
    (job,) = jobs.list_jobs(LOCAL_ACTOR, settings)
    assert job.status == "FAILED" and job.failure_kind == "submit_failed"


def test_lost_run_answer_is_not_sent_again(env) -> None:
    f, settings, ds, model = env
    f.script = lambda inp: {"chunks": 1}
    n = len(f.jobs)
    f.faults.append(("503-after", "/run"))
    with pytest.raises(jobs.SubmitFailed):
        _submit(settings, ds, model, budget_usd=1.0)
    assert len(f.jobs) == n + 1
    (job,) = jobs.list_jobs(LOCAL_ACTOR, settings)
    assert (
        job.failure_kind == "submit_uncertain"
        and "before launching again" in job.failure_suggestion
    )


def test_a_job_whose_sender_died_is_settled_by_reconcile(env) -> None:
    f, settings, ds, model = env
    with db.session_scope(settings) as s:
        repo.create_job(
            LOCAL_ACTOR, s, job_id="job-orphan0001", base_model=model, spec={}, dataset_id=ds
        )
    assert jobs.reconcile(settings).ended == 0  # young: maybe being sent right now
    with db.session_scope(settings) as s:
        old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
        s.execute(update(Job).where(Job.id == "job-orphan0001").values(updated_at=old))
    assert jobs.reconcile(settings).ended == 1
    job = jobs.get(LOCAL_ACTOR, settings, "job-orphan0001")
    assert job.status == "FAILED" and job.failure_kind == "submit_uncertain"


def test_other_users_cannot_see_or_touch_a_job(env) -> None:
    f, settings, ds, model = env
    f.script = lambda inp: {"chunks": 1, "hang_s": 60}
    job = _submit(settings, ds, model, budget_usd=1.0)
    mallory = Actor(user_id="mallory")
    for call in (
        lambda: jobs.sync(mallory, settings, job.id),
        lambda: jobs.cancel(mallory, settings, job.id),
        lambda: jobs.retry(mallory, settings, job.id),
        lambda: jobs.events(mallory, settings, job.id),
    ):
        with pytest.raises(NotFound):
            call()
    assert jobs.list_jobs(mallory, settings) == []
    with pytest.raises(NotFound):
        _submit(settings, ds, model, actor=mallory, budget_usd=1.0)  # not her dataset
    jobs.cancel(LOCAL_ACTOR, settings, job.id)


def test_command_line_train_wait_list_show_events_cancel(
    env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from cli import app

    f, settings, ds, model = env
    monkeypatch.chdir(settings.data_dir.parent)  # no stray .env
    monkeypatch.setenv("BRIGHTRUN_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("GPU_CLUSTER_API_URL", settings.gpu_cluster_api_url)
    monkeypatch.setenv("GPU_CLUSTER_API_KEY", "fake-key")
    monkeypatch.setenv("MODEL_DIRS", json.dumps([str(Path(model).parent)]))
    runner = CliRunner()
    f.script = lambda inp: {"chunks": 3, "interval_s": 0.05, "final": OOM}
    r = runner.invoke(
        app,
        [
            "train",
            "--dataset",
            ds,
            "--model",
            model,
            "--quant",
            "none",
            "--max-steps",
            "5",
            "--budget",
            "1",
            "--wait",
        ],
    )
    assert r.exit_code == 1, r.output  # it ran out of memory
    assert "FAILED" in r.output and "out_of_memory" in r.output and "suggestion:" in r.output
    (job,) = jobs.list_jobs(LOCAL_ACTOR, settings)
    assert job.spec["training"]["max_steps"] == 5 and job.budget_usd == 1.0

    listed = json.loads(runner.invoke(app, ["jobs", "list", "--json"]).output)
    assert [j["id"] for j in listed] == [job.id]
    shown = json.loads(runner.invoke(app, ["jobs", "show", job.id, "--json"]).output)
    assert shown["status"] == "FAILED" and shown["cost_usd"] > 0
    lines = runner.invoke(app, ["jobs", "events", job.id, "--json"]).output.splitlines()
    assert [json.loads(x)["type"] for x in lines] == ["metrics"] * 3 + ["failed"]

    bad = runner.invoke(app, ["train", "--dataset", ds, "--model", model, "--budget", "0.01"])
    assert bad.exit_code == 2 and "one minute" in bad.output
    missing = runner.invoke(app, ["jobs", "show", "job-nope"])
    assert missing.exit_code == 2 and "not found" in missing.output

    f.script = lambda inp: {"chunks": 1, "hang_s": 60}
    r = runner.invoke(
        app, ["train", "--dataset", ds, "--model", model, "--quant", "none", "--budget", "1"]
    )
    assert r.exit_code == 0 and "IN_QUEUE" in r.output
    new_id = r.output.split()[1]
    r = runner.invoke(app, ["jobs", "cancel", new_id])
    assert r.exit_code == 0 and "CANCELLED" in r.output


def test_a_completed_job_keeps_its_throughput_and_later_plans_of_the_model_use_it(
    env, caplog: pytest.LogCaptureFixture
) -> None:
    from core.clients.storage import adapter_key, make_blob_store

    caplog.set_level(logging.INFO, logger="brightrun.jobs")
    f, settings, _, model = env
    settings = settings.model_copy(update={"eval_after_job": False})
    ds = add_dataset(
        settings,
        LOCAL_ACTOR,
        _rows(),
        name="measured",
        stats={"tokens": {"per_row": {"mean": 20.0}}, "split": {"train_rows": 8}},
    )
    summary = {"steps": 5, "tokens_seen": 300, "tokens_seen_total": 1200, "train_seconds": 4.0}
    done = {"type": "completed", "data": {"reason": "finished", "adapter": {}, "summary": summary}}
    f.script = lambda inp: {"chunks": 2, "interval_s": 0.05, "final": done}
    job = _submit(settings, ds, model, budget_usd=1.0)
    assert '"time_basis": "this machine\'s CPU' in caplog.text  # the local endpoint's CPU
    store = make_blob_store(settings)
    for name in ("adapter_config.json", "adapter_model.safetensors"):  # what the worker uploads
        store.put_bytes(
            "adapters",
            adapter_key(LOCAL_ACTOR.user_id, jobs.version_id_for(job.id), name),
            b"{}",
            "application/octet-stream",
        )
    job = _end(settings, job.id)
    assert job.status == "COMPLETED" and job.tokens_per_s == 1200 / 4.0
    with db.session_scope(
        settings
    ) as s:  # it ran on this machine's CPU: no GPU estimate learns from it
        assert repo.measured_throughput(LOCAL_ACTOR, s, model, "none") == {}
        repo.update_job(
            LOCAL_ACTOR, s, job.id, gpu_type=settings.gpu_type, price_tier="flex"
        )  # as on a GPU
    cloud = settings.model_copy(update={"gpu_cluster_api_url": "https://api.runpod.ai/v2/e"})
    request = jobs.LaunchRequest.build(
        dataset_id=ds, model=model, training=TINY_TRAINING, quantization="none", budget_usd=1.0
    )
    with db.session_scope(settings) as s:  # a later plan of the model on that GPU
        tp = jobs.preflight(request, LOCAL_ACTOR, s, cloud)
    assert tp.time.basis_text == "measured: median of 1 finished job on this GPU (300 tokens/s)"


def _command_line_env(monkeypatch: pytest.MonkeyPatch, settings: Settings, model: str) -> None:
    monkeypatch.chdir(settings.data_dir.parent)  # no stray .env
    monkeypatch.setenv("BRIGHTRUN_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("GPU_CLUSTER_API_URL", settings.gpu_cluster_api_url)
    monkeypatch.setenv("GPU_CLUSTER_API_KEY", "fake-key")
    monkeypatch.setenv("MODEL_DIRS", json.dumps([str(Path(model).parent)]))


def _worker_uploads_on_submit(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    """Every job submitted finds the adapter files the worker would upload."""
    from core.clients.storage import adapter_key, make_blob_store

    store, real_submit = make_blob_store(settings), jobs.submit

    def submit_and_upload(*args: Any, **kw: Any) -> Any:
        job = real_submit(*args, **kw)
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            key = adapter_key(LOCAL_ACTOR.user_id, jobs.version_id_for(job.id), name)
            store.put_bytes("adapters", key, b"{}", "application/octet-stream")
        return job

    monkeypatch.setattr(jobs, "submit", submit_and_upload)


def test_early_stopping_from_the_command_line_to_the_saving_on_the_job(
    env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from cli import app

    f, settings, ds, model = env
    _command_line_env(monkeypatch, settings, model)
    monkeypatch.setenv("EVAL_AFTER_JOB", "false")
    runner = CliRunner()
    base = ["train", "--dataset", ds, "--model", model, "--quant", "none", "--budget", "1"]
    base += ["--max-steps", "100"]

    r = runner.invoke(app, [*base, "--early-stopping-patience", "2"])
    assert r.exit_code == 2 and "set eval_every to the steps between them" in r.output
    r = runner.invoke(app, [*base, "--eval-every", "5", "--early-stopping-patience", "2"])
    assert r.exit_code == 2 and "this job has no eval split" in r.output
    r = runner.invoke(app, [*base, "--early-stopping-min-delta", "0.1"])
    assert r.exit_code == 2 and "needs --early-stopping-patience" in r.output
    assert _count_jobs(settings) == 0

    summary = {
        "steps": 40,
        "total_steps": 100,
        "train_seconds": 100.0,
        "tokens_seen": 4000,
        "tokens_seen_total": 8000,
        "eval_loss": 1.25,
        "best_step": 30,
        "best_eval_loss": 1.25,
        "stop_reason": "early_stopping",
    }
    done = {"type": "completed", "data": {"reason": "early_stopping", "summary": summary}}
    f.script = lambda inp: {"chunks": 2, "interval_s": 0.05, "final": done}
    _worker_uploads_on_submit(monkeypatch, settings)
    flags = ["--eval-every", "10", "--eval-fraction", "0.25", "--early-stopping-patience", "2"]
    r = runner.invoke(app, [*base, *flags, "--early-stopping-min-delta", "0.01", "--wait"])
    assert r.exit_code == 0, r.output
    (job,) = jobs.list_jobs(LOCAL_ACTOR, settings)
    assert job.spec["training"]["early_stopping"] == {"patience": 2, "min_delta": 0.01}
    assert job.status == "COMPLETED" and job.stop_reason == "early_stopping"
    assert job.eval_loss == 1.25  # the adapter's: the best evaluation's
    saved = job.result["early_stopping"]
    assert saved["steps_left"] == 60 and saved["seconds_per_step"] == 2.5
    assert saved["saved_usd"] == pytest.approx(60 * 2.5 * job.rate_per_s)
    note = (
        "Stopped early at step 40 of 100: the eval loss did not improve for 2 evaluations in a "
        "row. The adapter is the best checkpoint, step 30 (eval loss 1.2500). Saved about "
    )
    assert "(stopped: early_stopping)" in r.output and note in r.output
    shown = runner.invoke(app, ["jobs", "show", job.id, "--no-sync"]).output
    assert f"stopped: {note}" in shown and "against running to the end (60 more steps" in shown
    shown = json.loads(runner.invoke(app, ["jobs", "show", job.id, "--json"]).output)
    assert shown["stop_reason"] == "early_stopping" and shown["early_stopping"] == saved


def test_the_saving_and_the_stop_line_need_what_the_worker_measured() -> None:
    from core.jobs.billing import early_stop_savings
    from core.queries import stop_note

    assert early_stop_savings({"steps": 0, "total_steps": 10, "train_seconds": 5.0}, 0.001) is None
    assert early_stop_savings({"steps": 4, "total_steps": 10}, 0.001) is None
    saved = early_stop_savings({"steps": 4, "total_steps": 10, "train_seconds": 8.0}, 0.5)
    assert (saved["steps_left"], saved["seconds_per_step"], saved["saved_usd"]) == (6, 2.0, 6.0)
    assert stop_note("finished", None) is None and stop_note("budget", None) is None
    assert stop_note("time_limit", None, 12) == (
        "Stopped at its time limit (the budget cap) at step 12; the adapter holds what it had "
        "trained by then."
    )
    assert stop_note("early_stopping", None, 7) == (
        "Stopped early at step 7 of ?: the eval loss stopped improving."
    )


def test_a_job_on_a_cheaper_pool_is_billed_at_the_gpu_that_ran(tmp_path: Path) -> None:
    """The endpoint may pick any of its pools: the worker's device decides the rate, the
    GPU type recorded and the throughput learned; the time limit holds on the dearest."""
    f = RunPodFake(api_key="fake-key", queue_s=0.1)
    f.script = lambda inp: {
        "chunks": 3,
        "interval_s": 0.05,
        "started": {"job_id": inp.get("job_id"), "model": {"device_name": "NVIDIA A40"}},
        "final": OOM,  # billed all the same
    }
    with ServedFake(f, host="127.0.0.2") as served:  # not 127.0.0.1: priced as the cloud
        settings = Settings(
            data_dir=tmp_path / "data",
            gpu_cluster_api_url=served.url,
            gpu_cluster_api_key="fake-key",
            gpu_type="H100_80GB_PCIE",
            endpoint_gpu_types=["A40_48GB", "H100_80GB_PCIE"],
            model_dirs=[tmp_path.parent],
        )
        db.upgrade(settings)
        ds = add_dataset(settings, LOCAL_ACTOR, _rows())
        pricing = jobs.pricing_for(settings)
        h100, a40 = (planner.rate_per_second(g) for g in ("H100_80GB_PCIE", "A40_48GB"))
        assert (pricing.low_rate_per_s, pricing.cap_rate_per_s) == (a40, h100)
        assert "H100_80GB_PCIE, A40_48GB: $1.22-$4.18/h" in pricing.range_text
        job = _submit(settings, ds, str(_tiny(tmp_path)), budget_usd=2.0)
        # The hard limit is what $2 buys on the dearest GPU the endpoint may pick.
        assert f.jobs[job.runpod_job_id].timeout_s <= 2.0 / h100 + 1e-3
        job = _end(settings, job.id)
    try:
        assert job.failure_kind == "out_of_memory" and job.gpu_type == "A40_48GB"
        assert job.rate_per_s == pytest.approx(a40)
        assert job.cost_usd == pytest.approx(job.billed_s * a40) and job.cost_usd > 0
        with db.session_scope(settings) as s:
            (record,) = repo.list_cost_records(LOCAL_ACTOR, s)
            assert record.gpu_type == "A40_48GB" and record.usd == pytest.approx(job.cost_usd)
    finally:
        db.dispose_engines()


def test_a_job_deleted_mid_run_when_its_ttl_passed_ends_timed_out_and_retries(
    env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RunPod deletes a job whose `policy.ttl` passed, even mid-run (then 404 on every path):
    the job ends TIMED_OUT saying so, its cost is recorded once, and it can be retried."""
    preflight = importlib.import_module("core.jobs.preflight")

    f, settings, ds, model = env
    f.script = lambda inp: {"chunks": 2, "interval_s": 0.1, "hang_s": 600}
    f.timeout_scale = 0.1  # the 10 s ttl below passes after 1 s on the fake's clock
    real_window = preflight.upload_window
    monkeypatch.setattr(
        preflight,
        "upload_window",
        lambda *a, **kw: dataclasses.replace(real_window(*a, **kw), ttl_ms=10_000),
    )
    job = _submit(settings, ds, model, budget_usd=1.0)
    assert job.result["ttl_ms"] == 10_000
    job = _end(settings, job.id)
    assert job.status == "TIMED_OUT" and job.failure_kind == "ttl_expired"
    assert "time to live" in job.failure_message and "retry" in job.failure_suggestion
    assert [e.seq for e in jobs.events(LOCAL_ACTOR, settings, job.id)] == [0, 1]
    jobs.sync(LOCAL_ACTOR, settings, job.id)  # a second look changes nothing
    with db.session_scope(settings) as s:
        records = [r for r in repo.list_cost_records(LOCAL_ACTOR, s) if r.job_id == job.id]
    assert len(records) == 1 and records[0].usd == pytest.approx(job.cost_usd) and job.cost_usd > 0
    again = jobs.retry(LOCAL_ACTOR, settings, job.id)
    assert again.status == "IN_QUEUE" and again.attempt == 1
    assert again.result["attempt_first_seq"] == 2


def test_a_pull_that_outlasts_the_lease_keeps_the_job_and_splits_no_event(
    env_db, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pull lease is renewed while a pull runs: a `/stream` answer that takes 2 s
    against a 0.4 s lease does not let a second syncer read the endpoint meanwhile, and
    every event is stored once. The job ends FAILED, so it has no output, and nothing was
    uploaded: the stream is the only source, and a second reader would have split it."""
    sync_module = importlib.import_module("core.jobs.sync")
    monkeypatch.setattr(sync_module, "PULL_LEASE_S", 0.4)
    f, settings, ds, model = env_db
    final = {
        "type": "failed",
        "data": {"kind": "bad_input", "message": "row 3 is empty", "suggestion": "fix row 3"},
    }
    f.script = lambda inp: {"chunks": 4, "interval_s": 0.05, "final": final}
    job = _submit(settings, ds, model, budget_usd=1.0)
    with runpod.RunPodClient.from_settings(settings) as c:
        wait_until(lambda: c.status(job.runpod_job_id).terminal, what="the job to end")

    def stream_reads() -> int:
        return sum(1 for _, path in list(f.calls) if path.startswith("/stream/"))

    before = stream_reads()
    f.faults.append(("slow-after", f"/stream/{job.runpod_job_id}"))  # answered 2 s late
    first = threading.Thread(target=jobs.sync, args=(LOCAL_ACTOR, settings, job.id))
    first.start()
    wait_until(lambda: stream_reads() > before, what="the first syncer's /stream read")
    time.sleep(3 * 0.4)  # the lease's original length has passed three times over
    assert first.is_alive(), "the slow answer should still be on its way"
    second = jobs.sync(LOCAL_ACTOR, settings, job.id)
    assert second.status not in ("COMPLETED", "FAILED") and stream_reads() == before + 1
    first.join()
    job = jobs.get(LOCAL_ACTOR, settings, job.id)
    assert job.status == "FAILED" and job.failure_message == "row 3 is empty"
    assert [e.seq for e in jobs.events(LOCAL_ACTOR, settings, job.id)] == [0, 1, 2, 3, 4]
    with db.session_scope(settings) as s:
        assert repo.get_job(LOCAL_ACTOR, s, job.id).pull_lease_until is None  # given back
