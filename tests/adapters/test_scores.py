"""The evaluation's metrics, judge and "where they differ most", and the quality-per-dollar
figure, on plain data (the evaluation through a real server is in test_end_to_end.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from components.quality import quality_vs_cost, score_rows
from core import evaluate
from core.evaluate import QualityPoint


def test_exact_match_f1_and_rouge_l_follow_their_definitions() -> None:
    # SQuAD normalisation: case, punctuation and articles do not count.
    assert evaluate.exact_match("The Zebra!", "zebra") == 1.0
    assert evaluate.exact_match("Zebra stripes", "Zebra") == 0.0
    # Token F1: 1 shared token of 2 predicted and 1 reference: P 0.5, R 1 -> 2/3.
    assert evaluate.token_f1("zebra stripes", "Zebra.") == pytest.approx(2 / 3)
    assert evaluate.token_f1("", "") == 1.0 and evaluate.token_f1("x", "") == 0.0
    # ROUGE-L (rouge_score, stemmed): LCS 3 of 4 and 3 tokens -> P 0.75, R 1 -> 6/7.
    assert evaluate.rouge_l("the cat sat down", "the cat sat") == pytest.approx(6 / 7)
    assert evaluate.rouge_l("cats running", "cat runs") == pytest.approx(1.0)  # Porter stemming
    assert evaluate.mean_scores(
        [evaluate.score("Zebra.", "Zebra."), evaluate.score("no", "Zebra.")]
    ) == {
        "exact_match": 0.5,
        "f1": 0.5,
        "rouge_l": 0.5,
    }


@dataclass
class Row:
    prompt: str
    reference: str | None
    answers: dict[str, str] = field(default_factory=dict)


class Judge:
    """A judge that always prefers the answer containing the reference, and records the
    prompts it was sent."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def chat(self, model, messages, sampling):  # noqa: ANN001, ANN201
        text = messages[0]["content"]
        self.prompts.append(text)
        ref = text.split("Reference answer:\n", 1)[1].split("\n", 1)[0]
        a = text.split("Answer A:\n", 1)[1].split("\n\nAnswer B:", 1)[0]
        return type("R", (), {"text": "A" if ref in a else " b\n"})()


def test_the_judge_sees_shuffled_answers_and_its_verdicts_count_for_the_adapter() -> None:
    rows = [Row(f"q{i}", f"ref{i}", {"ad": f"ref{i} yes", "base": "nope"}) for i in range(8)]
    judge = Judge()
    result = evaluate.judge(judge, "judge-model", rows, "ad", "base", seed=3)
    assert (result.wins, result.losses, result.ties, result.invalid) == (8, 0, 0, 0)
    assert result.win_rate == 1.0
    firsts = [p.split("Answer A:\n", 1)[1].startswith("ref") for p in judge.prompts]
    assert 0 < sum(firsts) < len(firsts), "the adapter's answer was always in the same place"
    assert result.to_dict()["prompt"] == evaluate.JUDGE_PROMPT
    assert evaluate.parse_verdict("T") == "T" and evaluate.parse_verdict("Both are fine") is None


def test_differences_rank_the_cases_where_the_answers_diverge_most() -> None:
    rows = [
        Row("same", "x", {"ad": "same answer", "base": "same answer"}),
        Row("far", "Zebra.", {"ad": "Zebra.", "base": "I do not know the word"}),
        Row("near", "blue sky", {"ad": "blue sky", "base": "blue skies today"}),
    ]
    per_case = [
        {
            "adapter": evaluate.score(r.answers["ad"], r.reference),
            "base": evaluate.score(r.answers["base"], r.reference),
        }
        for r in rows
    ]
    diffs = evaluate.differences(rows, "ad", "base", per_case)
    assert [d["prompt"] for d in diffs] == ["far", "near"]  # identical answers are left out
    assert diffs[0]["difference"] == 1.0 and diffs[0]["adapter_scores"]["exact_match"] == 1.0


def test_quality_per_dollar_figure_places_versions_by_lineage_cost() -> None:
    points = [
        QualityPoint("av-1", "bot v1", "bot", "job-1", None, 0.10, 0.10, 0.60, 0.05),
        QualityPoint("av-2", "bot v2", "bot", "job-2", "bot v1", 0.05, 0.15, 0.80, 0.05),
        QualityPoint("av-3", "other v1", "other", "job-3", None, 0.20, 0.20, 0.30, 0.05),
    ]
    assert points[1].gain_per_dollar == pytest.approx(0.75 / 0.15)
    fig = quality_vs_cost(points)
    by_name = {t.name: t for t in fig.data if t.name}
    assert list(by_name["bot"].x) == [0.10, 0.15] and list(by_name["bot"].y) == [0.60, 0.80]
    assert list(by_name["other"].text) == ["other v1"]
    assert list(by_name["base model"].y) == [0.05, 0.05, 0.05]
    lineage_lines = [t for t in fig.data if t.mode == "lines"]
    assert len(lineage_lines) == 1 and list(lineage_lines[0].x) == [0.10, 0.15]
    assert "+5.000 per $" in by_name["bot"].customdata[1]
    assert fig.layout.xaxis.tickprefix == "$"
    report = {
        "adapter": {"exact_match": 1.0, "f1": 1.0, "rouge_l": 1.0},
        "base": {"exact_match": 0.0, "f1": 0.1, "rouge_l": 0.2},
        "delta": {"exact_match": 1.0, "f1": 0.9, "rouge_l": 0.8},
    }
    assert [r["metric"] for r in score_rows(report)] == ["exact match", "token F1", "ROUGE-L"]
