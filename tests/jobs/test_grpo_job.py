"""GRPO end to end: prompts uploaded through `core.datasets` (OpenAI's reinforcement
fine-tuning rows: messages ending with a user turn, the answer in another field; a quarter
held out as the eval split), a grpo job with two graders (fuzzy match to the answer; a
python grader, run in the worker's sandbox) submitted through `core.jobs` to the real local
endpoint (tiny model, CPU) and synced until it ends. On this task with a verifiable answer
(every prompt asks for the letter `a` written many times) the mean reward must rise, and the
live metrics carry the reward of each grader. Then `core.evaluate` answers the held-out
prompts with adapter and base through the local inference server and grades them: the
adapter must beat the base by the grader that runs in the controller; the python grader is
left out with its reason."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from cli.stack import stop_all
from core import datasets, db, evaluate
from core.clients.storage import make_blob_store
from core.db import repo
from core.settings import Settings
from core.users import LOCAL_ACTOR
from tests.inference.conftest import API_KEY, start_server
from tests.jobs.stack import TRAINING, Stack, make_stack
from tests.trainer.test_grpo_job import GRADERS, _rows

pytestmark = pytest.mark.slow


def _add(settings: Settings) -> str:
    path = settings.data_dir / "prompts.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows(32)))
    with db.session_scope(settings) as s:
        ds, report = datasets.add_dataset(
            LOCAL_ACTOR, s, make_blob_store(settings), path, "letters", eval_fraction=0.25
        )
        assert ds.layout == "prompts" and report.valid_rows == 32
        return ds.id


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    training = {**TRAINING, "max_steps": 24, "learning_rate": 2e-2, "grad_accum": 1}
    training.update(checkpoint_every=0, lr_scheduler="constant")
    yield from make_stack(
        Path(tmp_path_factory.mktemp("grpo")), workers=1, training=training, dataset=_add
    )


@pytest.fixture(scope="module")
def grpo_job(stack: Stack) -> Any:
    grpo = {"graders": GRADERS, "num_generations": 8, "max_completion_length": 8}
    job = stack.submit(method="grpo", grading=grpo, lora={"r": 16, "alpha": 32, "dropout": 0.0})
    job = stack.wait_end(job.id, timeout_s=400)
    assert job.status == "COMPLETED", [e.data for e in stack.events(job.id)][-1:]
    return job


def test_a_grpo_job_raises_the_mean_reward(stack: Stack, grpo_job: Any) -> None:
    metrics = [e.data for e in stack.events(grpo_job.id) if e.type == "metrics"]
    assert all({"reward_close", "reward_share_a", "clip_ratio"} <= set(m) for m in metrics)
    first = sum(m["reward"] for m in metrics[:4]) / 4
    last = sum(m["reward"] for m in metrics[-4:]) / 4
    print(f"GRPO through the endpoint: mean reward {first:.3f} -> {last:.3f}")
    assert last > first + 0.2


def test_a_grpo_version_beats_the_base_by_its_graders_on_held_out_prompts(
    stack: Stack, grpo_job: Any, tmp_path: Path
) -> None:
    job = grpo_job
    proc, server = start_server(stack.model, tmp_path)
    try:
        settings = stack.settings.model_copy(
            update={
                "inference_url": server.url,
                "inference_api_key": SecretStr(API_KEY),
                "inference_adapters_dir": str(server.adapters_dir),
                "eval_after_job": True,
            }
        )
        thread = evaluate.start_after_job(LOCAL_ACTOR, settings, job.id)
        assert thread is not None
        thread.join(timeout=300)
        with db.session_scope(settings) as s:
            (version,) = [
                v for v in repo.list_versions(LOCAL_ACTOR, s, job_id=job.id) if not v.is_checkpoint
            ]
            scores = version.eval_scores or {}
    finally:
        stop_all([proc])
    assert scores.get("status") == "done", scores
    print(f"held-out mean reward: adapter {scores['adapter']} base {scores['base']}")
    assert scores["kind"] == "graders" and scores["graders"] == ["close"]
    assert "worker" in scores["skipped"]["share_a"]  # python graders never run here
    assert scores["rows"] >= 4 and scores["sampling"]["max_tokens"] == 8
    assert scores["adapter"]["reward"] > scores["base"]["reward"]
    assert scores["delta"]["reward_close"] > 0
