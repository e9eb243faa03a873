"""The scores of an evaluation: SQuAD v1.1's exact match and token F1, ROUGE-L, the LLM
judge's verdicts, and the cases where the adapter and the base answer differ most (see
`core.evaluate`)."""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.clients import inference

METRICS = ("exact_match", "f1", "rouge_l")
METRIC_LABELS = {"exact_match": "exact match", "f1": "token F1", "rouge_l": "ROUGE-L"}
DIFFERENCES = 5
JUDGE_PROMPT = """You are judging two answers to the same request. Judge which answer is more \
correct and more helpful, using the reference answer as the ground truth when one is given. \
Ignore answer order and length.

Request:
{prompt}

Reference answer:
{reference}

Answer A:
{a}

Answer B:
{b}

Reply with exactly one letter: A if answer A is better, B if answer B is better, T for a tie."""


# --------------------------------------------------------------------------- metrics


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD v1.1's token-level F1 over normalised whitespace tokens."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = Counter(pred) & Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


_scorer: Any = None


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (`rouge_score`, Porter stemmer)."""
    global _scorer
    if _scorer is None:
        from rouge_score import rouge_scorer

        _scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return float(_scorer.score(reference, prediction)["rougeL"].fmeasure)


def score(prediction: str, reference: str) -> dict[str, float]:
    return {
        "exact_match": exact_match(prediction, reference),
        "f1": token_f1(prediction, reference),
        "rouge_l": rouge_l(prediction, reference),
    }


def mean_scores(per_case: Sequence[Mapping[str, float]]) -> dict[str, float]:
    n = len(per_case)
    return {m: round(sum(c[m] for c in per_case) / n, 4) if n else 0.0 for m in METRICS}


# --------------------------------------------------------------------------- judge


@dataclass(frozen=True)
class JudgeResult:
    model: str
    wins: int
    losses: int
    ties: int
    invalid: int

    @property
    def win_rate(self) -> float | None:
        valid = self.wins + self.losses + self.ties
        return round((self.wins + 0.5 * self.ties) / valid, 4) if valid else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "wins": self.wins,
            "losses": self.losses,
            "ties": self.ties,
            "invalid": self.invalid,
            "win_rate": self.win_rate,
            "prompt": JUDGE_PROMPT,
        }


def parse_verdict(text: str) -> str | None:
    """The judge's letter: the first A, B or T that stands alone in its reply."""
    m = re.search(r"\b([ABT])\b", text.strip().upper())
    return m.group(1) if m else None


def judge(
    client: Any,
    judge_model: str,
    rows: Sequence[Any],
    adapter: str,
    base: str,
    seed: int = 0,
) -> JudgeResult:
    """Ask `judge_model` which of the two answers of each row is better (order shuffled,
    seeded per row)."""
    sampling = inference.Sampling(temperature=0.0, max_tokens=4, seed=seed)
    wins = losses = ties = invalid = 0
    for i, row in enumerate(rows):
        adapter_first = random.Random(seed * 1_000_003 + i).random() < 0.5
        a, b = (adapter, base) if adapter_first else (base, adapter)
        prompt = JUDGE_PROMPT.format(
            prompt=row.prompt,
            reference=row.reference or "(none)",
            a=row.answers[a],
            b=row.answers[b],
        )
        verdict = parse_verdict(
            client.chat(judge_model, [{"role": "user", "content": prompt}], sampling).text
        )
        if verdict is None:
            invalid += 1
        elif verdict == "T":
            ties += 1
        elif (verdict == "A") == adapter_first:
            wins += 1
        else:
            losses += 1
    return JudgeResult(judge_model, wins, losses, ties, invalid)


def differences(
    rows: Sequence[Any], adapter: str, base: str, per_case: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The cases where the two answers differ most (see `core.evaluate`)."""
    ranked = []
    for row, sc in zip(rows, per_case, strict=True):
        a, b = row.answers[adapter], row.answers[base]
        gap = 1.0 - rouge_l(a, b) if (a.strip() or b.strip()) else 0.0
        ranked.append(
            (round(gap, 4), abs(sc["adapter"]["rouge_l"] - sc["base"]["rouge_l"]), row, sc)
        )
    ranked.sort(key=lambda t: (t[0], t[1]), reverse=True)
    return [
        {
            "prompt": row.prompt,
            "reference": row.reference,
            "adapter": row.answers[adapter],
            "base": row.answers[base],
            "difference": gap,
            "adapter_scores": sc["adapter"],
            "base_scores": sc["base"],
        }
        for gap, _, row, sc in ranked[:DIFFERENCES]
        if gap > 0
    ]
