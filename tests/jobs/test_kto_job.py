"""KTO end to end: a KTO dataset added through `core.datasets`, a kto job submitted through
`core.jobs` to the real local endpoint (the real trainer handler, tiny model, CPU), synced
until it ends.

The task: six topic words, each with its own answer word; a desirable row answers a topic
with its word, an undesirable row with another topic's word. Training must separate them:
the desirable answers' rewards end above the undesirable ones' (the margin grows from 0 at
step one, where the adapter is the reference), and the job reports KTO's live metrics.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import datasets, db, jobs
from core.clients.storage import make_blob_store
from core.db import repo
from core.settings import Settings
from core.users import LOCAL_ACTOR
from tests.jobs.stack import TRAINING, Stack, make_stack
from tests.trainer.test_preference_job import PHRASINGS, TOPICS
from trainer.shared.methods import KTO_METRICS

pytestmark = pytest.mark.slow


def kto_rows() -> list[dict]:
    rows = []
    for phrasing in PHRASINGS:
        for i, (topic, answer) in enumerate(TOPICS):
            wrong = TOPICS[(i + 1) % len(TOPICS)][1]
            for text, label in ((answer, True), (wrong, False)):
                rows.append(
                    {"prompt": phrasing.format(t=topic), "completion": text, "label": label}
                )
    return rows


def _add(settings: Settings) -> str:
    path = settings.data_dir / "kto.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in kto_rows()))
    with db.session_scope(settings) as s:
        ds, _ = datasets.add_dataset(LOCAL_ACTOR, s, make_blob_store(settings), path, "labelled")
        assert ds.layout == "kto"
        return ds.id


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    training = {**TRAINING, "max_steps": 16, "learning_rate": 1e-2, "micro_batch_size": 6}
    training["checkpoint_every"] = 0
    yield from make_stack(
        Path(tmp_path_factory.mktemp("kto")), workers=1, training=training, dataset=_add
    )


def test_a_kto_job_separates_desirable_from_undesirable_answers(stack: Stack) -> None:
    job = stack.submit(method="kto", preference={"beta": 0.5})
    job = stack.wait_end(job.id, timeout_s=300)
    assert job.status == "COMPLETED", [e.data for e in stack.events(job.id)][-1:]
    evs = stack.events(job.id)
    started = next(e for e in evs if e.type == "started")
    assert started.data["dataset"]["method"] == "kto"
    train = started.data["dataset"]["train"]
    assert train["desirable"] > 10 and train["undesirable"] > 10
    metrics = [e.data for e in evs if e.type == "metrics"]
    assert all(set(KTO_METRICS) <= set(m) for m in metrics)
    assert abs(metrics[0]["reward_margin"]) < 1e-3  # step one: the adapter is the reference
    assert metrics[-1]["reward_margin"] > 0.1
    assert metrics[-1]["rewards_desirable"] > metrics[-1]["rewards_undesirable"]
    with db.session_scope(stack.settings) as s:
        (version,) = [
            v for v in repo.list_versions(LOCAL_ACTOR, s, job_id=job.id) if not v.is_checkpoint
        ]
        assert (version.settings or {}).get("method") == "kto"
    assert jobs.get(LOCAL_ACTOR, stack.settings, job.id).final_loss is not None
    # The version is scored by its job's eval metrics (the methods' table), not evaluated
    # again as chat answers.
    from core.evaluate.run import start_after_job

    on = stack.settings.model_copy(update={"eval_after_job": True})
    assert start_after_job(LOCAL_ACTOR, on, job.id) is None
    with db.session_scope(stack.settings) as s:
        scores = repo.get_version(LOCAL_ACTOR, s, version.id).eval_scores or {}
    assert scores["status"] == "skipped" and "eval_reward_margin" in scores["reason"]
