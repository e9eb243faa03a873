"""The dashboard's read models (core/queries/): what the pages show, computed from the database."""

from __future__ import annotations

import datetime as dt
import io
import zipfile

import pytest

from core import actions, adapters, db, jobs, queries
from core.clients.storage import adapter_key, adapter_prefix, make_blob_store
from core.db import repo
from core.errors import InvalidInput, NotFound
from core.settings import Settings
from core.users import LOCAL_ACTOR, Actor
from tests.ui.conftest import seed_dataset, seed_job

OTHER = Actor(user_id="someone-else", email="b@example.com")


def test_job_page_filters_sorts_and_paginates_in_the_database(settings: Settings) -> None:
    ds = seed_dataset(settings)
    for i in range(23):
        seed_job(
            settings,
            ds,
            cost=i / 10,
            status="FAILED" if i % 5 == 0 else "COMPLETED",
            model="Qwen/Qwen3-8B" if i % 2 else "Qwen/Qwen3-4B",
        )
    with db.session_scope(settings) as s:
        repo.create_job(OTHER, s, base_model="Qwen/Qwen3-8B", spec={})
    with db.session_scope(settings) as s:
        page = queries.job_page(LOCAL_ACTOR, s, sort="cost", descending=True, page=2, page_size=10)
        assert (page.total, page.pages, page.page) == (23, 3, 2)
        assert [r.cost_usd for r in page.rows] == pytest.approx([i / 10 for i in range(12, 2, -1)])
        last = queries.job_page(LOCAL_ACTOR, s, page=99, page_size=10)
        assert last.page == 3 and len(last.rows) == 3
        failed = queries.job_page(LOCAL_ACTOR, s, filters=queries.JobFilter(statuses=("FAILED",)))
        assert failed.total == 5 and {r.status for r in failed.rows} == {"FAILED"}
        by_model = queries.job_page(
            LOCAL_ACTOR,
            s,
            filters=queries.JobFilter(model="Qwen/Qwen3-8B"),
            sort="cost",
            descending=False,
        )
        assert by_model.total == 11 and by_model.rows[0].cost_usd == pytest.approx(0.1)
        assert by_model.rows[0].dataset == "support chats"
        assert by_model.rows[0].duration_s == pytest.approx(600, abs=1)
        opts = queries.job_filter_options(LOCAL_ACTOR, s)
        assert opts.models == ["Qwen/Qwen3-4B", "Qwen/Qwen3-8B"] and list(
            opts.datasets.values()
        ) == ["support chats"]
        with pytest.raises(InvalidInput, match="sort must be one of"):
            queries.job_page(LOCAL_ACTOR, s, sort="owner_id")
        with pytest.raises(InvalidInput, match="unknown job status"):
            queries.job_page(LOCAL_ACTOR, s, filters=queries.JobFilter(statuses=("DONE",)))


def test_job_page_sorts_by_duration_with_running_jobs_measured_until_now(
    settings: Settings,
) -> None:
    seed_job(settings, None, status="COMPLETED", minutes_ago=120)  # ran 10 minutes
    running = seed_job(settings, None, status="IN_PROGRESS", minutes_ago=30, cost=0.0)
    with db.session_scope(settings) as s:
        rows = queries.job_page(LOCAL_ACTOR, s, sort="duration").rows
    assert rows[0].id == running and rows[0].duration_s == pytest.approx(1800, abs=5)
    assert rows[0].cost_usd == pytest.approx(1800 * 0.00116, rel=0.01)  # live: elapsed × rate


def test_metric_series_downsamples_in_the_database_and_keeps_every_eval_point(
    settings: Settings,
) -> None:
    job = seed_job(settings, None, metrics=2000)
    with db.session_scope(settings) as s:
        series = queries.metric_series(LOCAL_ACTOR, s, job, max_points=100)
        mid = queries.metric_series(LOCAL_ACTOR, s, job, max_points=250)
        whole = queries.metric_series(LOCAL_ACTOR, s, job, max_points=5000)
        with pytest.raises(NotFound):
            queries.metric_series(OTHER, s, job)
    assert series.downsampled and series.points == 2000 and len(series.step) == 100
    assert series.step[-1] == 2000 and series.step == sorted(series.step)
    # each point is the mean of its bucket of 20 steps: loss falls linearly from 3.0
    assert series.loss[0] == pytest.approx(3.0 - 2.0 * 9.5 / 2000)
    # 200 evaluations: all kept while a bucket holds at most one, else averaged per bucket
    assert len(mid.step) == 250 and len(mid.eval_step) == 200 and mid.eval_step[0] == 10
    assert (
        len(series.eval_step) == 100
        and series.eval_step[:2] == [20, 40]
        and series.eval_step[-1] == 2000
    )
    assert series.eval_loss[0] == pytest.approx(2.5 - (9 + 19) / 2 / 2000)
    assert not whole.downsampled and len(whole.step) == 2000 and whole.lr[0] == pytest.approx(2e-4)


def test_event_log_and_detail(settings: Settings) -> None:
    job = seed_job(settings, seed_dataset(settings), metrics=3, status="IN_PROGRESS", cost=0.0)
    with db.session_scope(settings) as s:
        log = queries.event_log(LOCAL_ACTOR, s, job)
        d = queries.job_detail(LOCAL_ACTOR, s, job)
    assert [e.seq for e in log] == [2, 1, 0]
    assert log[0].summary.startswith("step 3/3, loss ")
    assert d.can_cancel and not d.can_retry and d.dataset == "support chats"
    assert d.last["step"] == 3 and d.live_cost_usd > 0


@pytest.mark.parametrize(
    ("kind", "expect"),
    [
        ("out_of_memory", {"micro_batch_size": 2, "grad_accum": 8}),
        ("diverged", {"learning_rate": pytest.approx(1e-4), "warmup_ratio": 0.1}),
        ("download_failed", {"learning_rate": 3e-4, "micro_batch_size": 4}),
        ("bad_input", None),
    ],
)
def test_relaunch_settings_follow_the_failure(
    settings: Settings, kind: str, expect: dict | None
) -> None:
    spec = {
        "lora": {"r": 16},
        "quantization": "nf4",
        "training": {
            "micro_batch_size": 4,
            "grad_accum": 4,
            "learning_rate": 3e-4,
            "gradient_checkpointing": True,
            "time_limit_s": 100.0,
        },
    }
    job = seed_job(settings, None, status="FAILED", spec=spec, failure_kind=kind)
    with db.session_scope(settings) as s:
        got = jobs.relaunch_settings(repo.get_job(LOCAL_ACTOR, s, job))
    if expect is None:
        assert got is None
        return
    assert got is not None and "time_limit_s" not in got["training"]
    assert {k: got["training"][k] for k in expect} == expect


def test_spend_view_groups_and_compares_with_an_always_on_pod(settings: Settings) -> None:
    ds = seed_dataset(settings)
    a = seed_job(settings, ds, cost=1.0, model="Qwen/Qwen3-8B")
    seed_job(settings, ds, cost=3.0, model="Qwen/Qwen3-4B")
    with db.session_scope(settings) as s:
        repo.record_cost(LOCAL_ACTOR, s, job_id=a, seconds=600, usd=0.7, attempt=9, month="2025-01")
    now = dt.datetime.now(dt.UTC)
    with db.session_scope(settings) as s:
        sv = queries.spend_view(LOCAL_ACTOR, s, settings, now=now)
        months = queries.spend_months(LOCAL_ACTOR, s, now=now)
    assert sv.month_spend_usd == pytest.approx(4.0)
    assert sv.by_model == {"Qwen/Qwen3-4B": pytest.approx(3.0), "Qwen/Qwen3-8B": pytest.approx(1.0)}
    assert list(sv.by_gpu) == ["H100_80GB_PCIE"] and [j.job_id for j in sv.by_job][1] == a
    assert sv.by_month["2025-01"] == pytest.approx(0.7) and months[-1] == "2025-01"
    busy_h = 4.0 / 0.00116 / 3600
    assert sv.busy_hours == pytest.approx(busy_h)
    assert sv.period_hours == pytest.approx(
        (now - now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)).total_seconds()
        / 3600,
        rel=1e-3,
    )
    assert sv.comparison is not None and sv.comparison.pod_usd == pytest.approx(
        sv.period_hours * 1.99
    )
    assert sv.comparison.serverless_usd == pytest.approx(4.0, rel=1e-3)
    flat, pod = queries.cost_per_busy_hour(4.18, 1.99, [0.1, 0.5, 1.0])
    assert flat == [4.18] * 3 and pod == pytest.approx([19.9, 3.98, 1.99])


def test_truncated_share_exact_at_the_measured_length_else_from_the_histogram() -> None:
    tokens = {
        "available": True,
        "measured_rows": 100,
        "max_length": 512,
        "truncated_rows": 7,
        "histogram": {"edges": [0, 100, 200, 300, 400], "counts": [40, 30, 20, 10]},
    }
    assert queries.truncated_share(tokens, 512) == pytest.approx(0.07)
    assert queries.truncated_share(tokens, 250) == pytest.approx((10 + 10) / 100)
    assert queries.truncated_share({"available": False}, 512) is None


def test_adapter_rows_download_and_delete(settings: Settings) -> None:
    store = make_blob_store(settings)
    ds = seed_dataset(settings)
    job = seed_job(
        settings,
        ds,
        spec={
            "lora": {"r": 8, "alpha": 16},
            "quantization": "nf4",
            "training": {"epochs": 2, "learning_rate": 2e-4},
        },
    )
    prefix = adapter_prefix("local", "av-1")
    for name, body in (("adapter_config.json", b"{}"), ("adapter_model.safetensors", b"weights")):
        store.put_bytes(
            "adapters", adapter_key("local", "av-1", name), body, "application/octet-stream"
        )
    with db.session_scope(settings) as s:
        repo.create_adapter_version(
            LOCAL_ACTOR,
            s,
            adapter_name="support-bot",
            base_model="Qwen/Qwen3-4B",
            job_id=job,
            dataset_id=ds,
            settings={
                "lora": {"r": 8, "alpha": 16},
                "quantization": "nf4",
                "training": {"epochs": 2, "learning_rate": 2e-4},
            },
            final_loss=0.9,
            size_bytes=9,
            storage_prefix=prefix,
            version_id="av-1",
        )
    with db.session_scope(settings) as s:
        rows = queries.adapter_rows(LOCAL_ACTOR, s)
    assert [(r.label, r.dataset, r.settings) for r in rows] == [
        ("support-bot v1", "support chats", "r=8 α=16, nf4, 2 epoch(s), lr 0.0002")
    ]
    assert rows[0].stored and rows[0].zip_name == "support-bot-v1.zip"
    data = queries.zip_builder(
        LOCAL_ACTOR, settings, store, "av-1"
    )()  # built when the button is clicked
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(
            zf.namelist()
        )
        assert zf.read("adapter_model.safetensors") == b"weights"
    with pytest.raises(NotFound):
        queries.zip_builder(OTHER, settings, store, "av-1")()
    with db.session_scope(settings) as s:
        assert adapters.delete_adapter(LOCAL_ACTOR, s, store, "support-bot") == 2
    with db.session_scope(settings) as s:
        assert queries.adapter_rows(LOCAL_ACTOR, s) == []
    assert store.list("adapters", prefix) == []


def test_health_reports_each_part_without_raising_or_showing_secrets(settings: Settings) -> None:
    from components.session import _runpod  # noqa: F401 - the same client settings the page uses
    from core.clients.inference import InferenceClient
    from core.clients.runpod import RunPodClient

    runpod = RunPodClient.from_settings(settings, max_attempts=1)
    parts = {
        p.part: p
        for p in queries.health(
            settings,
            store=make_blob_store(settings),
            runpod=runpod,
            inference=InferenceClient(settings),
        )
    }
    assert parts["database"].ok and "up to date" in parts["database"].detail
    assert parts["storage"].ok
    assert not parts["GPU endpoint"].ok and "cannot connect" in parts["GPU endpoint"].detail
    assert not parts["inference"].ok
    assert "local-dev-key" not in repr(parts) and "(key set)" in parts["GPU endpoint"].configured


def test_model_cache_state_is_unknown_when_the_database_cannot_be_read(data_dir) -> None:
    from core.settings import load_settings

    unmigrated = load_settings()  # an empty database: no jobs table to look in
    state = actions.model_cache_state(LOCAL_ACTOR, unmigrated, "Qwen/Qwen2.5-7B-Instruct")
    assert state == actions.CacheState("unknown", "the database could not be read")
    assert (
        actions.model_cache_state(LOCAL_ACTOR, unmigrated, "brightrun/tiny-chat").state == "local"
    )
