"""The Jobs page draws a KTO or GRPO job's own live metrics (what the methods' table names:
GRPO's reward and reward per grader, completion length, KL, clip ratio), one panel each;
an SFT job has none."""

from __future__ import annotations

import time

from core import db, queries
from core.db import repo
from core.settings import Settings
from core.users import LOCAL_ACTOR
from tests.ui.conftest import seed_dataset, seed_job


def _grpo_job(settings: Settings) -> str:
    job = seed_job(settings, seed_dataset(settings), spec={"method": "grpo"})
    events = [
        {
            "seq": i,
            "type": "metrics",
            "ts": time.time(),
            "data": {
                "step": i + 1,
                "loss": 0.1,
                "reward": 0.2 + 0.1 * i,
                "reward_exact": 0.1 * i,
                "completion_length": 8.0,
                "clip_ratio": 0.01,
                "kl": 0.0,
                **({"eval_reward": 0.5} if i == 2 else {}),
            },
        }
        for i in range(4)
    ]
    with db.session_scope(settings) as s:
        repo.append_events(LOCAL_ACTOR, s, job, events)
    return job


def test_a_grpo_jobs_metrics_are_drawn_per_metric(settings: Settings, open_page) -> None:
    job = _grpo_job(settings)
    sft = seed_job(settings, None, spec={"method": "sft"}, metrics=3)
    with db.session_scope(settings) as s:
        series = queries.method_series(LOCAL_ACTOR, s, job)
        assert queries.method_series(LOCAL_ACTOR, s, sft).empty
    assert series.step == [1, 2, 3, 4]
    assert list(series.groups) == ["reward", "completion_length", "clip_ratio", "kl"]
    assert series.groups["reward"]["reward_exact"] == [0.0, 0.1, 0.2, 0.30000000000000004]
    assert "eval_reward" not in series.groups["reward"]
    at = open_page("jobs", {"job": job})
    assert not at.exception
    spec = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("reward exact" in x and "Completion length" in x for x in spec)
