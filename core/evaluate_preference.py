"""Preference accuracy of an adapter version on its dataset's held-out pairs.

For a version trained on preference data (DPO, ORPO; the dataset's layout is a
preference layout, `core.datasets.preference`), `core.evaluate.evaluate_version` scores
pairs instead of generating answers: each of the first EVAL_MAX_ROWS pairs of the eval
split is rendered with the base model's chat template (prompt + chosen, prompt +
rejected, as the trainer renders them: `trainer.shared.tokens.answer_span`), and the
inference server returns every token's log-probability (`/v1/completions` with `echo` and
`logprobs`, as vLLM answers it). A pair counts as right for a model when the chosen
answer's tokens have the higher summed log-probability. Adapter and base are both scored,
so the result says how much the adapter moved the preference, not only where it is.
With a judge (EVAL_JUDGE), adapter and base also answer each pair's prompt and the judge
compares them, the chosen answer given as the reference (`prompt_cases`): the win rate
against the base that `core.evaluate` stores for supervised versions too.

The result has the shape of `core.evaluate`'s: `metrics` (["preference_accuracy",
"mean_margin"]), `adapter`, `base`, `delta`, `rows`; `kind` is "preference". Raises
`InvalidInput` when there is no eval split or the base model's tokenizer is unavailable.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from core.db import repo, session_scope
from core.errors import InvalidInput
from core.settings import Settings
from core.users import Actor

METRICS = ("preference_accuracy", "mean_margin")


def cases(
    actor: Actor, settings: Settings, store: Any, version_id: str, max_rows: int | None
) -> tuple[list[dict[str, Any]], str, str] | None:
    """(held-out pairs, the version's folder, its base model), or None when the version
    was not trained on preference data."""
    from core import datasets

    with session_scope(settings) as s:
        v = repo.get_version(actor, s, version_id)
        if not v.dataset_id:
            return None
        ds = repo.get_dataset(actor, s, v.dataset_id)
        if not (ds.layout or "").startswith("preference"):
            return None
        if not v.volume_path:
            raise InvalidInput(
                "this version has no folder on the volume for the inference server to load"
            )
        limit = max_rows or settings.eval_max_rows
        rows = datasets.preview_rows(
            actor, s, store, v.dataset_id, n=limit, split="eval", max_chars=1_000_000
        )
        folder, base = v.volume_path, v.base_model
    pairs = [r for r in rows if "chosen" in r]
    if not pairs:
        raise InvalidInput("this dataset has no eval split of preference pairs to score")
    return pairs, folder, base


def prompt_cases(pairs: Sequence[dict[str, Any]]) -> list[Any]:
    """Each pair's prompt as a case to answer, its chosen answer as the reference."""
    from core.clients.inference import PromptCase

    return [
        PromptCase(
            tuple(p["prompt"]),
            reference="\n".join(m.get("content") or "" for m in p["chosen"]).strip() or None,
        )
        for p in pairs
    ]


def answer_logprob(client: Any, model: str, text: str, start: int, end: int) -> float:
    """The summed log-probability of the characters [start, end) of `text` under `model`."""
    return sum(lp for off, lp in client.prompt_logprobs(model, text) if start <= off < end)


def margins(client: Any, tokenizer: Any, pairs: Sequence[dict[str, Any]], model: str) -> list:
    """Per pair: log p(chosen) - log p(rejected) under `model`."""
    from trainer.shared.tokens import answer_span

    out = []
    for p in pairs:
        c = answer_span(tokenizer, p["prompt"], p["chosen"])
        r = answer_span(tokenizer, p["prompt"], p["rejected"])
        out.append(answer_logprob(client, model, *c) - answer_logprob(client, model, *r))
    return out


def result(
    client: Any,
    settings: Settings,
    pairs: Sequence[dict[str, Any]],
    served: str,
    base: str,
    trained_on: str,
) -> dict[str, Any]:
    """Score every pair with the adapter and the base (see the module docstring)."""
    from core.datasets import load_tokenizer

    choice = load_tokenizer(trained_on, settings.data_dir / "models")
    if choice.tokenizer is None:
        raise InvalidInput(f"cannot render the pairs with {trained_on}'s template: {choice.reason}")
    scores = {}
    for key, model in (("adapter", served), ("base", base)):
        m = margins(client, choice.tokenizer, pairs, model)
        scores[key] = {
            "preference_accuracy": round(sum(1 for x in m if x > 0) / len(m), 4),
            "mean_margin": round(sum(m) / len(m), 4),
        }
    return {
        "status": "done",
        "kind": "preference",
        "evaluated_at": dt.datetime.now(dt.UTC).isoformat(),
        "server_base": base,
        "trained_on": trained_on,
        "rows": len(pairs),
        "metrics": list(METRICS),
        "adapter": scores["adapter"],
        "base": scores["base"],
        "delta": {k: round(scores["adapter"][k] - scores["base"][k], 4) for k in METRICS},
        "judge": None,
        "differences": [],
    }
