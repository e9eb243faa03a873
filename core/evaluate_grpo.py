"""Grader scores of an adapter version on its dataset's held-out prompts.

For a version whose method is evaluated by its graders (`trainer.shared.methods`: the row's
`evaluation` is "graders"), `core.evaluate.evaluate_version` does not compare answers to a
reference: each of the first EVAL_MAX_ROWS prompts of the eval split (messages ending with a
user turn, plus the fields the graders read) is answered by the adapter and by the base
through the inference server, greedy (temperature 0, seed 0), at most the job's
`max_completion_length` tokens (EVAL_MAX_TOKENS when the job does not say), and every answer
is graded by the job's own graders (`JobSpec.grading.graders`, read from the job's stored
spec) with `trainer.shared.graders`, as the worker grades a sample.

Only the graders the controller can run count: `string_check`, `text_similarity`, and
`multi` made of those; a `score_model` grader too when GRADER_BASE_URL is set (the
OpenAI-compatible endpoint it asks, with GRADER_API_KEY). A `python` grader is user code
and runs only in the worker's sandbox, never here: it is left out, as is a `score_model`
grader without an endpoint and a `multi` grader holding either; `skipped` names each with
the reason. The reward is the sum of the counted graders' scores (the job's reward, less
the graders left out); a failure on one answer scores 0, as in the worker, and is counted
in `failures`.

The result has the shape of `core.evaluate`'s: `kind` "graders", `metrics` (["reward",
"reward_<grader>" ...]), `adapter` and `base` means, `delta`, `rows`, `graders` (counted),
`skipped` ({name: reason}); `differences` holds the prompts whose rewards differ most.
Raises `InvalidInput` when the job named no graders, none can run here, or the eval split
has no prompts.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from core.db import repo, session_scope
from core.errors import InvalidInput
from core.settings import Settings
from core.users import Actor
from trainer.shared.methods import METHODS

DIFFERENCES = 10


def graded(actor: Actor, settings: Settings, version_id: str) -> bool:
    """Whether the version's method is evaluated by its graders (the methods' table)."""
    with session_scope(settings) as s:
        method = (repo.get_version(actor, s, version_id).settings or {}).get("method")
    row = METHODS.get(method) if method else None
    return row is not None and row.evaluation == "graders"


def cases(
    actor: Actor, settings: Settings, store: Any, version_id: str, max_rows: int | None
) -> tuple[list[dict[str, Any]], dict[str, Any], str, str] | None:
    """(held-out prompt rows, the job's grading settings, the version's folder, its base
    model), or None when the version is not evaluated by graders."""
    from core import datasets

    if not graded(actor, settings, version_id):
        return None
    with session_scope(settings) as s:
        v = repo.get_version(actor, s, version_id)
        if not v.volume_path:
            raise InvalidInput(
                "this version has no folder on the volume for the inference server to load"
            )
        if not v.dataset_id:
            raise InvalidInput("this version has no dataset, so no eval prompts to grade")
        job_spec = repo.get_job(actor, s, v.job_id).spec if v.job_id else {}
        grading = (job_spec or {}).get("grading") or (v.settings or {}).get("grading") or {}
        limit = max_rows or settings.eval_max_rows
        rows = datasets.preview_rows(
            actor, s, store, v.dataset_id, n=limit, split="eval", max_chars=1_000_000
        )
        folder, base = v.volume_path, v.base_model
    rows = [r for r in rows if r.get("messages")]
    if not grading.get("graders"):
        raise InvalidInput("the version's job names no graders to score its answers with")
    if not rows:
        raise InvalidInput("the dataset has no eval split of prompts to grade")
    return rows, grading, folder, base


def model_runner(settings: Settings) -> Callable[[Mapping[str, Any], list], str] | None:
    """`score_model` graders' runner at GRADER_BASE_URL (None when it is not set): the
    chat completion of the grader's `model`, its `sampling_params` passed on."""
    base = settings.grader_base_url
    if not base:
        return None
    key = settings.grader_api_key.get_secret_value()

    def ask(grader: Mapping[str, Any], messages: list[dict[str, str]]) -> str:
        body = {
            "model": grader["model"],
            "messages": messages,
            **(grader.get("sampling_params") or {}),
        }
        req = urllib.request.Request(
            base.rstrip("/") + "/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        )
        with urllib.request.urlopen(req, timeout=60) as r:  # noqa: S310 (an operator's setting)
            answer = json.loads(r.read())
        return str(answer["choices"][0]["message"]["content"] or "")

    return ask


def why_not_here(g: Any, has_model: bool) -> str | None:
    """Why grader `g` cannot run in the controller, or None when it can."""
    if g.type == "python":
        return "python graders run only in the worker's sandbox, never in the controller"
    if g.type == "score_model" and not has_model:
        return "score_model grader: no GRADER_BASE_URL is configured for the controller"
    for k, child in g.children.items():
        reason = why_not_here(child, has_model)
        if reason:
            return f"its grader {k!r}: {reason}"
    return None


def split_graders(raw: Sequence[Any], runners: Any) -> tuple[list[Any], dict[str, str]]:
    """The job's graders parsed: those that run here, and {name: reason} for the others."""
    from core.grader_trial import parse_graders

    runnable, skipped = [], {}
    for g in parse_graders(list(raw)):
        reason = why_not_here(g, runners.model is not None)
        if reason:
            skipped[g.name] = reason
        else:
            runnable.append(g)
    if not runnable:
        raise InvalidInput(
            "none of the job's graders can run in the controller: "
            + "; ".join(f"{k}: {v}" for k, v in skipped.items())
        )
    return runnable, skipped


def _scores(graders: Sequence[Any], answer: str, item: Any, runners: Any) -> tuple[dict, int]:
    """{"reward": sum, "reward_<name>": score ...} of one answer, and its failures."""
    from trainer.shared import graders as G

    sample = G.make_sample(answer)
    per = {g.name: G.grade(g, sample, item, runners) for g in graders}
    out = {"reward": sum(s.value for s in per.values())}
    out.update({f"reward_{k}": s.value for k, s in per.items()})
    return out, sum(1 for s in per.values() if s.error)


def _means(scored: Sequence[dict[str, float]], metrics: Sequence[str]) -> dict[str, float]:
    return {m: round(sum(s[m] for s in scored) / len(scored), 4) for m in metrics}


def _differences(rows: Sequence[Any], per_case: Sequence[dict], served: str, base: str) -> list:
    gaps = sorted(
        range(len(rows)),
        key=lambda i: -abs(per_case[i]["adapter"]["reward"] - per_case[i]["base"]["reward"]),
    )
    return [
        {
            "prompt": rows[i].prompt,
            "adapter_answer": rows[i].answers[served],
            "base_answer": rows[i].answers[base],
            "adapter_reward": round(per_case[i]["adapter"]["reward"], 4),
            "base_reward": round(per_case[i]["base"]["reward"], 4),
        }
        for i in gaps[:DIFFERENCES]
    ]


def result(
    client: Any,
    settings: Settings,
    found: tuple[list[dict[str, Any]], dict[str, Any]],
    served: str,
    base: str,
    trained_on: str,
) -> dict[str, Any]:
    """Answer every held-out prompt with the adapter and the base and grade the answers
    (see the module docstring)."""
    from core.clients import inference
    from trainer.shared import graders as G

    items, grading = found
    runners = G.Runners(model=model_runner(settings))
    graders, skipped = split_graders(grading["graders"], runners)
    max_tokens = int(grading.get("max_completion_length") or settings.eval_max_tokens)
    sampling = inference.Sampling(temperature=0.0, max_tokens=max_tokens, seed=0)
    prompts = [inference.PromptCase(tuple(r["messages"])) for r in items]
    rows = inference.compare_on_set(client, prompts, [served, base], sampling)
    per_case, failures = [], {"adapter": 0, "base": 0}
    for row, item in zip(rows, items, strict=True):
        case = {}
        for key, model in (("adapter", served), ("base", base)):
            case[key], failed = _scores(graders, row.answers[model], item, runners)
            failures[key] += failed
        per_case.append(case)
    metrics = ["reward", *(f"reward_{g.name}" for g in graders)]
    means = {k: _means([c[k] for c in per_case], metrics) for k in ("adapter", "base")}
    return {
        "status": "done",
        "kind": "graders",
        "evaluated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "server_base": base,
        "trained_on": trained_on,
        "rows": len(rows),
        "sampling": {"temperature": 0.0, "max_tokens": max_tokens, "seed": 0},
        "metrics": metrics,
        "graders": [g.name for g in graders],
        "skipped": skipped,
        "failures": failures,
        **means,
        "delta": {m: round(means["adapter"][m] - means["base"][m], 4) for m in metrics},
        "judge": None,
        "differences": _differences(rows, per_case, served, base),
    }
