"""Time estimates learn from finished jobs: the tokens/s a user's completed jobs of a model
achieved on a GPU type replace the default utilisation for that GPU (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import text

from core import db, jobs, planner
from core.db import repo
from core.settings import Settings
from core.users import LOCAL_ACTOR, Actor
from tests.state.db_fixtures import postgres_database, settings_for

MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
H100 = "H100_80GB_PCIE"
BOB = Actor("user-bob", "bob@example.com", "member")
TOKENS = {"tokens": {"per_row": {"mean": 500.0}}, "split": {"train_rows": 4000}}
TRAINING = {"epochs": 1.0, "max_length": 1024}


def _finished(
    actor: Actor,
    session,
    *,
    tokens_total: int,
    train_seconds: float,
    gpu: str = H100,
    tier: str = "flex",
    model: str = MODEL,
    quantization: str = "nf4",
    status: str = "COMPLETED",
    minutes_ago: float = 10,
) -> str:
    """A train job that ended with the worker's `completed` event, stored as sync stores it."""
    job = repo.create_job(
        actor,
        session,
        base_model=model,
        spec={"quantization": quantization},
        gpu_type=gpu,
        price_tier=tier,
    )
    summary = {
        "steps": 10,
        "tokens_seen": tokens_total // 3,
        "tokens_seen_total": tokens_total,
        "train_seconds": train_seconds,
        "stop_reason": None,
    }
    final = {"reason": "finished", "adapter": {}, "summary": summary}
    repo.append_events(
        actor, session, job.id, [{"seq": 0, "type": "completed", "ts": 1.0, "data": final}]
    )
    repo.update_job(
        actor,
        session,
        job.id,
        status=status,
        finished_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes_ago),
        result={"final": {"seq": 0, "type": "completed", "data": final}},
        tokens_per_s=planner.measured_tokens_per_s(summary),
    )
    return job.id


def test_only_the_actors_completed_gpu_jobs_of_the_model_count(session) -> None:
    _finished(LOCAL_ACTOR, session, tokens_total=90_000, train_seconds=60)  # 1500/s
    _finished(LOCAL_ACTOR, session, tokens_total=150_000, train_seconds=60, minutes_ago=5)  # 2500/s
    _finished(LOCAL_ACTOR, session, tokens_total=60_000, train_seconds=60, gpu="A100_80GB")
    _finished(BOB, session, tokens_total=6_000_000, train_seconds=60)  # someone else's
    _finished(
        LOCAL_ACTOR, session, tokens_total=600, train_seconds=60, gpu="LOCAL_CPU", tier="local"
    )
    _finished(
        LOCAL_ACTOR, session, tokens_total=600, train_seconds=60, tier="local"
    )  # priced as H100
    _finished(LOCAL_ACTOR, session, tokens_total=600, train_seconds=60, status="FAILED")
    _finished(LOCAL_ACTOR, session, tokens_total=600, train_seconds=60, quantization="none")
    _finished(LOCAL_ACTOR, session, tokens_total=600, train_seconds=60, model="Qwen/Qwen3-8B")

    got = repo.measured_throughput(LOCAL_ACTOR, session, MODEL, "nf4")
    assert got == {H100: [2500.0, 1500.0], "A100_80GB": [1000.0]}  # newest first
    assert repo.measured_throughput(BOB, session, MODEL, "nf4") == {H100: [100_000.0]}
    assert repo.measured_throughput(LOCAL_ACTOR, session, MODEL, "none") == {H100: [10.0]}
    assert repo.measured_throughput(LOCAL_ACTOR, session, "Qwen/Qwen3-14B") == {}


def test_only_the_most_recent_jobs_per_gpu_are_read(session) -> None:
    for i in range(repo.MEASURED_JOBS_PER_GPU + 3):
        _finished(
            LOCAL_ACTOR, session, tokens_total=1000 * (i + 1), train_seconds=1, minutes_ago=100 - i
        )
    rates = repo.measured_throughput(LOCAL_ACTOR, session, MODEL, "nf4")[H100]
    assert len(rates) == repo.MEASURED_JOBS_PER_GPU
    assert rates[0] == 1000.0 * (repo.MEASURED_JOBS_PER_GPU + 3) and 1000.0 not in rates


def _train_plan(actor: Actor, session, settings: Settings, ds_id: str) -> jobs.Preflight:
    """The plan of a job on a cloud endpoint (a local one runs on the CPU, timed apart)."""
    cloud = settings.model_copy(update={"gpu_cluster_api_url": "https://api.runpod.ai/v2/e"})
    return jobs.preflight(
        jobs.LaunchRequest.build(
            dataset_id=ds_id,
            model=MODEL,
            lora={},
            training=TRAINING,
            quantization="nf4",
            eval_fraction=0.0,
            budget_usd=10.0,
        ),
        actor,
        session,
        cloud,
    )


def test_the_train_plan_times_h100_from_the_median_and_other_gpus_from_the_default(
    session, settings: Settings
) -> None:
    ds = repo.create_dataset(
        LOCAL_ACTOR,
        session,
        name="chats",
        file_format="jsonl",
        layout="messages",
        rows=4000,
        valid_rows=4000,
        normalized_key="k",
        stats=TOKENS,
    )
    before = _train_plan(LOCAL_ACTOR, session, settings, ds.id)
    assert before.gpu == H100 and before.time.basis_text.startswith("default utilisation 30%")

    _finished(LOCAL_ACTOR, session, tokens_total=90_000, train_seconds=60)  # 1500/s
    _finished(LOCAL_ACTOR, session, tokens_total=210_000, train_seconds=60)  # 3500/s
    _finished(BOB, session, tokens_total=60, train_seconds=60)  # 1/s: would make it take days
    _finished(
        LOCAL_ACTOR, session, tokens_total=60, train_seconds=60, gpu="LOCAL_CPU", tier="local"
    )
    tp = _train_plan(LOCAL_ACTOR, session, settings, ds.id)

    trained = 4000 * 500  # rows x mean tokens, one epoch
    assert tp.time.training_tokens == trained
    assert tp.time.seconds == pytest.approx(trained / 2500.0)  # median of 1500 and 3500
    assert tp.time.basis_text == "measured: median of 2 finished jobs on this GPU (2,500 tokens/s)"
    assert tp.cost.usd_low > before.cost.usd_low  # these jobs ran slower than the default assumes
    a100 = next(t for t in tp.plan.times if t.gpu == "A100_80GB")
    assert a100.utilisation == 0.30 and a100.basis_text.startswith("default utilisation")
    assert a100.seconds == next(t for t in before.plan.times if t.gpu == "A100_80GB").seconds


def test_rate_from_the_summary_else_the_median_of_metrics_events() -> None:
    assert (
        planner.measured_tokens_per_s({"tokens_seen_total": 3000, "train_seconds": 2.0}) == 1500.0
    )
    metrics = [{"total_tokens_per_s": r} for r in (100.0, 400.0, 300.0)]
    assert (
        planner.measured_tokens_per_s({"tokens_seen_total": 0, "train_seconds": 0}, metrics)
        == 300.0
    )
    assert planner.measured_tokens_per_s(None, [{"tokens_per_s": 5.0}]) is None


def _backfill(s: Settings) -> None:
    db.upgrade(s, "0002")
    summary = {"tokens_seen": 100, "tokens_seen_total": 4000, "train_seconds": 2.0}
    result = json.dumps({"final": {"seq": 3, "type": "completed", "data": {"summary": summary}}})
    with db.get_engine(s).begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (id, email, role, created_at) VALUES ('local', '', 'member', CURRENT_TIMESTAMP)"
            )
        )
        for job_id, gpu, res in (("job-old", H100, result), ("job-noresult", H100, None)):
            conn.execute(
                text(
                    "INSERT INTO jobs (id, owner_id, action, base_model, adapter_name, spec, status, gpu_type,"
                    " price_tier, rate_per_s, created_at, updated_at, finished_at, cost_usd, progress, attempt,"
                    " auto_relaunched, last_seq, result) VALUES (:id, 'local', 'train', :m, 'bot',"
                    " '{\"quantization\": \"nf4\"}', 'COMPLETED', :gpu, 'flex', 0, CURRENT_TIMESTAMP,"
                    " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 1.0, 1.0, 0, false, 3, :res)"
                ),
                {"id": job_id, "m": MODEL, "gpu": gpu, "res": res},
            )
    db.upgrade(s)
    with db.session_scope(s) as session:
        assert repo.get_job(LOCAL_ACTOR, session, "job-old").tokens_per_s == 2000.0
        assert repo.get_job(LOCAL_ACTOR, session, "job-noresult").tokens_per_s is None
        assert repo.measured_throughput(LOCAL_ACTOR, session, MODEL, "nf4") == {H100: [2000.0]}


def test_upgrading_an_old_database_fills_throughput_from_stored_summaries(tmp_path: Path) -> None:
    _backfill(settings_for(tmp_path / "data"))
    db.dispose_engines()
    with postgres_database() as url:
        _backfill(settings_for(tmp_path / "pg", url))
