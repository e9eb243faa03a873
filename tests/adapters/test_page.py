"""The Adapters page's evaluation section (AppTest): the quality-per-dollar chart, the
version's scores against the base, the judge's win rate with its prompt, and the answers
where adapter and base differ most."""

from __future__ import annotations

import json

from core import db
from core.db import repo
from core.evaluate import JUDGE_PROMPT
from core.settings import Settings
from core.users import LOCAL_ACTOR
from tests.ui.conftest import open_page, seed_dataset, seed_job, text_of  # noqa: F401 - fixture

REPORT = {
    "status": "done",
    "rows": 12,
    "server_base": "Qwen/Qwen3-4B",
    "metrics": ["exact_match", "f1", "rouge_l"],
    "adapter": {"exact_match": 0.75, "f1": 0.8, "rouge_l": 0.82},
    "base": {"exact_match": 0.1, "f1": 0.3, "rouge_l": 0.35},
    "delta": {"exact_match": 0.65, "f1": 0.5, "rouge_l": 0.47},
    "judge": {
        "model": "Qwen/Qwen3-4B",
        "wins": 9,
        "losses": 2,
        "ties": 1,
        "invalid": 0,
        "win_rate": 0.7917,
        "prompt": JUDGE_PROMPT,
    },
    "differences": [
        {
            "prompt": "How do I reset my password?",
            "reference": "Use the reset link.",
            "adapter": "Use the reset link.",
            "base": "I am a language model.",
            "difference": 1.0,
            "adapter_scores": {},
            "base_scores": {},
        }
    ],
}


def test_the_evaluation_and_quality_per_dollar_are_shown(settings: Settings, open_page) -> None:  # noqa: F811
    ds = seed_dataset(settings)
    job = seed_job(settings, ds, adapter="support-bot", cost=0.5)
    with db.session_scope(settings) as s:
        v = repo.create_adapter_version(
            LOCAL_ACTOR,
            s,
            adapter_name="support-bot",
            base_model="Qwen/Qwen3-4B",
            job_id=job,
            dataset_id=ds,
        )
        repo.update_version(LOCAL_ACTOR, s, v.id, eval_scores=REPORT)
    at = open_page("adapters")
    assert "Quality" in [h.value for h in at.subheader]
    chart = at.get("plotly_chart")
    assert len(chart) == 1 and "Quality per dollar" in chart[0].proto.spec
    scores = at.dataframe[1].value
    metric_config = json.loads(at.dataframe[1].proto.columns)["metric"]
    assert metric_config["width"] == "large"  # "preference accuracy" is read whole, not cut
    assert list(scores["metric"]) == ["exact match", "token F1", "ROUGE-L"] and list(
        scores["adapter"]
    ) == [0.75, 0.8, 0.82]
    assert at.metric[0].value == "79%"
    assert (
        JUDGE_PROMPT.splitlines()[0]
        in next(e for e in at.expander if e.label == "Judge prompt").code[0].value
    )
    diffs = at.dataframe[2].value
    assert (
        diffs.iloc[0]["base"] == "I am a language model."
        and diffs.iloc[0]["adapter"] == "Use the reset link."
    )


def test_a_version_not_evaluated_says_why(settings: Settings, open_page) -> None:  # noqa: F811
    ds = seed_dataset(settings)
    job = seed_job(settings, ds, adapter="support-bot")
    with db.session_scope(settings) as s:
        v = repo.create_adapter_version(
            LOCAL_ACTOR, s, adapter_name="support-bot", base_model="Qwen/Qwen3-4B", job_id=job
        )
        repo.update_version(
            LOCAL_ACTOR,
            s,
            v.id,
            eval_scores={"status": "skipped", "reason": "the dataset has no eval split"},
        )
    at = open_page("adapters")
    assert "support-bot v1: evaluation skipped (the dataset has no eval split)" in text_of(at)
    assert not at.get("plotly_chart")


def test_a_preference_evaluation_says_what_its_margin_measures(
    settings: Settings,
    open_page,  # noqa: F811
) -> None:
    ds = seed_dataset(settings)
    job = seed_job(settings, ds, adapter="pref-bot", cost=0.5)
    scores = {"preference_accuracy": 0.9, "mean_margin": 215.29}
    report = {
        "status": "done",
        "kind": "preference",
        "rows": 8,
        "metrics": ["preference_accuracy", "mean_margin"],
        "adapter": scores,
        "base": scores,
        "delta": {"preference_accuracy": 0.0, "mean_margin": 0.0},
    }
    with db.session_scope(settings) as s:
        v = repo.create_adapter_version(
            LOCAL_ACTOR, s, adapter_name="pref-bot", base_model="m", job_id=job, dataset_id=ds
        )
        repo.update_version(LOCAL_ACTOR, s, v.id, eval_scores=report)
    text = text_of(open_page("adapters")).replace("\\", "")
    assert "mean margin: the mean, over the eval split's pairs" in text
    assert "preference accuracy: the share of eval pairs" in text
