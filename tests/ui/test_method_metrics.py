"""The Jobs page draws a KTO or GRPO job's own live metrics (what the methods' table names:
GRPO's reward and reward per grader, completion length, KL, clip ratio), one panel each;
an SFT job has none. A GRPO job's newest sample completions show with their scores, on
the page and in `brightrun jobs show`."""

from __future__ import annotations

import json
import time

from components.widgets import plain
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


HOSTILE = "**bold** [x](http://e)"


def _grpo_job_with_samples(settings: Settings) -> str:
    """Two logged steps, the newest with two samples (one written as markdown) and junk."""
    job = seed_job(settings, seed_dataset(settings), spec={"method": "grpo"})
    old = {"prompt": "earlier prompt", "completion": "earlier answer", "reward": 0.0, "scores": {}}
    new = [
        {
            "prompt": f"Say {HOSTILE}",
            "completion": HOSTILE,
            "reward": 0.75,
            "scores": {"exact": 0.5, "_len_": 0.25},
        },
        {"prompt": "Say a", "completion": "aaaa", "reward": 1.0, "scores": {"exact": 1.0}},
        "not a sample",
    ]
    events = [
        {
            "seq": i,
            "type": "metrics",
            "ts": time.time(),
            "data": {"step": i + 1, "loss": 0.1, "reward": 0.5, "samples": s},
        }
        for i, s in enumerate([[old], new])
    ]
    with db.session_scope(settings) as s:
        repo.append_events(LOCAL_ACTOR, s, job, events)
    return job


def test_a_grpo_jobs_newest_sample_completions_are_shown_literally(
    settings: Settings, open_page
) -> None:
    """The newest step's samples, each with its reward and every grader's score; a prompt,
    completion or grader name written as markdown shows as typed."""
    job = _grpo_job_with_samples(settings)
    at = open_page("jobs", {"job": job})
    assert not at.exception
    texts = [t.value for t in at.text]
    assert f"Prompt: Say {HOSTILE}" in texts and f"Completion: {HOSTILE}" in texts
    assert "Completion: aaaa" in texts and not any("earlier" in t for t in texts)
    captions = [c.value for c in at.caption]
    assert plain("Sample 1: reward 0.750 · exact 0.500 · _len_ 0.250") in captions
    assert plain("Sample 2: reward 1.000 · exact 1.000") in captions
    assert any(e.label == "Sample completions at step 2" for e in at.expander)


def test_jobs_show_prints_the_newest_steps_samples(settings: Settings) -> None:
    from typer.testing import CliRunner

    from cli import app

    job = _grpo_job_with_samples(settings)
    runner = CliRunner()
    r = runner.invoke(app, ["jobs", "show", job, "--no-sync"])
    assert r.exit_code == 0, r.output
    assert "samples: at step 2" in r.output
    assert "1. reward 0.750, exact 0.500, _len_ 0.250" in r.output
    assert f"prompt: Say {HOSTILE}" in r.output and f"completion: {HOSTILE}" in r.output
    assert "2. reward 1.000, exact 1.000" in r.output and "earlier" not in r.output
    shown = json.loads(runner.invoke(app, ["jobs", "show", job, "--no-sync", "--json"]).output)
    assert shown["samples"] == [
        {
            "prompt": f"Say {HOSTILE}",
            "completion": HOSTILE,
            "reward": 0.75,
            "scores": {"exact": 0.5, "_len_": 0.25},
        },
        {"prompt": "Say a", "completion": "aaaa", "reward": 1.0, "scores": {"exact": 1.0}},
    ]
    sft = seed_job(settings, None, spec={"method": "sft"}, metrics=2)
    plain_job = runner.invoke(app, ["jobs", "show", sft, "--no-sync"]).output
    assert "samples" not in plain_job
    assert (
        json.loads(runner.invoke(app, ["jobs", "show", sft, "--no-sync", "--json"]).output)[
            "samples"
        ]
        == []
    )
