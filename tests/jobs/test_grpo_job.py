"""GRPO end to end: prompts uploaded through `core.datasets` (OpenAI's reinforcement
fine-tuning rows: messages ending with a user turn, the answer in another field), a grpo
job with two graders (fuzzy match to the answer; a python grader, run in the worker's
sandbox) submitted through `core.jobs` to the real local endpoint (tiny model, CPU) and
synced until it ends. On this task with a verifiable answer the mean reward must rise,
and the live metrics carry the reward of each grader."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import datasets, db
from core.clients.storage import make_blob_store
from core.settings import Settings
from core.users import LOCAL_ACTOR
from tests.jobs.stack import TRAINING, Stack, make_stack
from tests.trainer.test_grpo_job import GRADERS, _rows

pytestmark = pytest.mark.slow


def _add(settings: Settings) -> str:
    path = settings.data_dir / "prompts.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows(8)))
    with db.session_scope(settings) as s:
        ds, report = datasets.add_dataset(
            LOCAL_ACTOR, s, make_blob_store(settings), path, "letters"
        )
        assert ds.layout == "prompts" and report.valid_rows == 8
        return ds.id


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    training = {**TRAINING, "max_steps": 24, "learning_rate": 2e-2, "grad_accum": 1}
    training.update(checkpoint_every=0, lr_scheduler="constant")
    yield from make_stack(
        Path(tmp_path_factory.mktemp("grpo")), workers=1, training=training, dataset=_add
    )


def test_a_grpo_job_raises_the_mean_reward(stack: Stack) -> None:
    grpo = {"graders": GRADERS, "num_generations": 8, "max_completion_length": 8}
    job = stack.submit(method="grpo", grading=grpo, lora={"r": 16, "alpha": 32, "dropout": 0.0})
    job = stack.wait_end(job.id, timeout_s=400)
    assert job.status == "COMPLETED", [e.data for e in stack.events(job.id)][-1:]
    metrics = [e.data for e in stack.events(job.id) if e.type == "metrics"]
    assert all({"reward_close", "reward_share_a", "clip_ratio"} <= set(m) for m in metrics)
    first = sum(m["reward"] for m in metrics[:4]) / 4
    last = sum(m["reward"] for m in metrics[-4:]) / 4
    print(f"GRPO through the endpoint: mean reward {first:.3f} -> {last:.3f}")
    assert last > first + 0.2
