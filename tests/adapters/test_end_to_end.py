"""Adapters end to end: the local endpoint (a real process running the trainer's handler on a
tiny model, CPU), the local inference server (a real process serving the same model), the
controller through `core`, SQLite and the local file store behind signed URLs.

- A job trains `secret-words` v1 on a toy question -> answer task; when it completes, the
  evaluation runs its eval split through adapter and base on the inference server: the
  adapter beats the base, the scores are stored on v1 and the quality-per-dollar figure is
  built from them.
- Continued training from v1 records v1 as the parent of v2 and starts where v1 ended.
- A checkpoint of a job that is still running is chatted with through the inference server,
  then promoted to a version.
- A merge job stores merged shards whose logits equal base + adapter.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from cli.stack import stop_all
from components.quality import quality_vs_cost
from core import adapters, db, evaluate, export, jobs
from core.clients.inference import InferenceClient, LoadMode, Sampling, find_choice, model_choices
from core.clients.storage import make_blob_store
from core.db import repo
from core.settings import Settings
from core.users import LOCAL_ACTOR
from tests.adapters.conftest import LEARN_QA, QA, add_dataset, chat_rows
from tests.inference.conftest import API_KEY, start_server
from tests.jobs.conftest import wait_until
from tests.jobs.stack import Stack, make_stack

pytestmark = pytest.mark.slow

TRAINING = LEARN_QA


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Train and eval rows are the same questions: the toy task is memorising them.
    def toy(settings: Settings) -> str:
        return add_dataset(settings, LOCAL_ACTOR, chat_rows(), chat_rows())

    root = tmp_path_factory.mktemp("adapters-e2e")
    stacked = make_stack(root, max_concurrent_jobs=4, training=TRAINING, dataset=toy)
    stack = next(stacked)
    proc, server = start_server(stack.model, root / "inference")
    stack.settings = stack.settings.model_copy(
        update={
            "inference_url": server.url,
            "inference_api_key": SecretStr(API_KEY),
            "eval_max_tokens": 8,
            "eval_after_job": True,
        }
    )
    try:
        yield stack
    finally:
        stop_all([proc])
        stacked.close()


@pytest.fixture(scope="module")
def v1(stack: Stack) -> dict[str, Any]:
    job = stack.wait_end(stack.submit(adapter_name="secret-words").id)
    assert job.status == "COMPLETED", job.failure_message
    with db.session_scope(stack.settings) as s:
        (v,) = repo.list_versions(LOCAL_ACTOR, s, job_id=job.id)
        return {"id": v.id, "version": v.version, "job": job}


def test_completed_job_is_evaluated_adapter_beats_base_scores_stored_and_plotted(
    stack: Stack, v1: dict[str, Any]
) -> None:
    assert v1["version"] == 1

    def report() -> Any:
        with db.session_scope(stack.settings) as s:
            r = evaluate.report(LOCAL_ACTOR, s, v1["id"])
        return r if r and r["status"] in ("done", "failed") else None

    rep = wait_until(report, timeout_s=180, every_s=0.3, what="the evaluation after the job")
    assert rep["status"] == "done", rep
    print(f"\nevaluation on {rep['rows']} eval rows: adapter {rep['adapter']}, base {rep['base']}")
    assert rep["rows"] == len(QA) and rep["trained_on"] == str(stack.model)
    assert rep["adapter"]["exact_match"] >= (len(QA) - 1) / len(QA)
    for m in evaluate.METRICS:
        assert rep["adapter"][m] > rep["base"][m], m
    assert rep["differences"] and rep["differences"][0]["reference"] in {a for _, a in QA}
    with InferenceClient(stack.settings) as client:  # the evaluation's own adapter was unloaded
        assert f"eval-{v1['id']}" not in {m.id for m in client.models()}

    with db.session_scope(stack.settings) as s:
        points = evaluate.quality_points(LOCAL_ACTOR, s)
    (point,) = [p for p in points if p.version_id == v1["id"]]
    assert point.score == rep["adapter"]["rouge_l"] and v1["job"].cost_usd > 0
    assert point.cost_usd == pytest.approx(v1["job"].cost_usd)
    fig = quality_vs_cost(points)
    (trace,) = [t for t in fig.data if t.name == "secret-words"]
    assert list(trace.y) == [rep["adapter"]["rouge_l"]] and list(trace.text) == ["secret-words v1"]


def test_continued_training_records_its_parent_and_starts_where_the_parent_ended(
    stack: Stack, v1: dict[str, Any]
) -> None:
    job = jobs.continue_training(
        LOCAL_ACTOR, stack.settings, "secret-words", training={"max_steps": 10}
    )
    assert job.resume_from_version_id == v1["id"]
    assert (
        job.spec["resume_from"] == "<signed url>"
    )  # the parent's weights, by a signed URL never stored
    job = stack.wait_end(job.id)
    assert job.status == "COMPLETED", job.failure_message
    with db.session_scope(stack.settings) as s:
        (v2,) = repo.list_versions(LOCAL_ACTOR, s, job_id=job.id)
        assert v2.version == 2 and v2.parent_version_id == v1["id"]
        assert [c.label for c in adapters.lineage(LOCAL_ACTOR, s, "secret-words:v2")] == [
            "secret-words v2",
            "secret-words v1",
        ]
    parent, child = stack.losses(v1["job"].id), stack.losses(job.id)
    print(
        f"\nparent loss {parent[0]:.3f} -> {parent[-1]:.4f}; continued job's first loss {child[0]:.4f}"
    )
    # Within a tenth of the parent's whole descent from its last loss (a fresh start would
    # begin near the parent's first loss).
    assert abs(child[0] - parent[-1]) <= 0.1 * (parent[0] - parent[-1])


def test_a_checkpoint_answers_in_the_playground_while_its_job_still_runs(stack: Stack) -> None:
    job = stack.submit(
        adapter_name="live-bot", training={**TRAINING, "max_steps": 100_000, "checkpoint_every": 5}
    )

    def checkpoint() -> Any:
        jobs.sync(LOCAL_ACTOR, stack.settings, job.id)
        with db.session_scope(stack.settings) as s:
            return [
                (v.id, v.step)
                for v in repo.list_versions(LOCAL_ACTOR, s, job_id=job.id)
                if v.is_checkpoint
            ]

    (ck_id, step), *_ = wait_until(checkpoint, timeout_s=180, every_s=0.3, what="a checkpoint")
    try:
        with InferenceClient(stack.settings) as client, db.session_scope(stack.settings) as s:
            choice = find_choice(
                model_choices(LOCAL_ACTOR, s, stack.settings, client), f"live-bot step {step}"
            )
            assert choice.served_name == f"ckpt-{ck_id}"
            assert client.ensure_adapter(choice.served_name, choice.path).mode is LoadMode.RUNTIME
            answer = client.chat(
                choice.served_name,
                [{"role": "user", "content": QA[0][0]}],
                Sampling(temperature=0.0, max_tokens=8),
            )
        assert answer.text and answer.finish_reason in ("stop", "length")
        running = jobs.sync(LOCAL_ACTOR, stack.settings, job.id)
        assert running.status == "IN_PROGRESS", "the job ended before its checkpoint was used"
        with db.session_scope(stack.settings) as s:
            promoted = adapters.promote(LOCAL_ACTOR, s, make_blob_store(stack.settings), ck_id)
            assert promoted.version == 1 and promoted.storage_prefix and promoted.step == step
    finally:
        jobs.cancel(LOCAL_ACTOR, stack.settings, job.id)


def test_a_merge_job_stores_shards_whose_logits_equal_base_plus_adapter(
    stack: Stack, v1: dict[str, Any], tmp_path: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    job, plan = export.merge(
        LOCAL_ACTOR, stack.settings, "secret-words:v1", dtype="float32", max_shard_size_mb=0.2
    )
    assert plan is not None and plan.weights_bytes > 0 and job.action == "merge"
    job = stack.wait_end(job.id)
    assert job.status == "COMPLETED", job.failure_message
    with db.session_scope(stack.settings) as s:
        assert not repo.list_versions(
            LOCAL_ACTOR, s, job_id=job.id
        )  # a merge is no adapter version
    store = make_blob_store(stack.settings)
    merged, adapter = tmp_path / "merged", tmp_path / "adapter"
    merged.mkdir()
    adapter.mkdir()
    for blob in export.merged_files(LOCAL_ACTOR, stack.settings, job.id):
        store.download_to("adapters", blob.key, merged / blob.key.rsplit("/", 1)[-1])
    with db.session_scope(stack.settings) as s:
        prefix = repo.get_version(LOCAL_ACTOR, s, v1["id"]).storage_prefix
    for blob in store.list("adapters", prefix):
        store.download_to("adapters", blob.key, adapter / blob.key.rsplit("/", 1)[-1])
    ids = torch.tensor([[1, 5, 9, 20, 33, 40, 2, 7]])
    with torch.no_grad():
        want = (
            PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(stack.model), adapter)
            .eval()(ids)
            .logits
        )
        got = AutoModelForCausalLM.from_pretrained(merged).eval()(ids).logits
    assert (got - want).abs().max() <= 1e-4
