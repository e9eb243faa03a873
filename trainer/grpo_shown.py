"""The sample completions a GRPO job's metrics event shows (`samples`, `trainer.grpo`).

`shown_samples` takes a micro-batch's first `SAMPLES_SHOWN` completions: for each, its
prompt's last user message and its text, each cut to `SAMPLE_CHARS` characters (an
ellipsis marks a cut), its reward (the sum of the graders' scores) and each grader's
score, rounded to 4 decimals. Plain JSON, so the event stays small.
"""

from __future__ import annotations

from typing import Any

SAMPLES_SHOWN = 3  # completions per metrics event
SAMPLE_CHARS = 300  # of a shown prompt or completion


def cut(text: str, limit: int = SAMPLE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown_samples(
    prompts: list[Any], texts: list[str], rewards: Any, names: list[str], g: int
) -> list[dict[str, Any]]:
    """The micro-batch's first `SAMPLES_SHOWN` completions as a metrics event shows them:
    the prompt's last user message, the completion, the reward (the sum of the scores) and
    each grader's score."""
    out = []
    for k, text in enumerate(texts[:SAMPLES_SHOWN]):
        users = [m for m in prompts[k // g].messages if m.get("role") == "user"]
        scores = {name: round(float(rewards[k, j]), 4) for j, name in enumerate(names)}
        out.append(
            {
                "prompt": cut(str(users[-1].get("content") or "")) if users else "",
                "completion": cut(text),
                "reward": round(float(rewards[k].sum()), 4),
                "scores": scores,
            }
        )
    return out
