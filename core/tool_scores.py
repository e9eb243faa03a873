"""Tool-calling scores: how well a model calls the functions an eval row expects.

A case (`tool_cases`) is a normalised chat row whose assistant turn calls tools: the
messages before its first calling turn are sent with the row's `tools`, and that turn's
calls are the reference. Each answer's calls are scored against the reference, each score
in [0, 1]:

- `parseable`: the answer holds at least one tool call whose arguments are a JSON object.
- `name_accuracy`: the called function names, as a multiset, are the reference's.
- `exact_args`: the calls, as (name, arguments parsed as JSON) pairs, are the reference's
  (order does not matter; `{"a": 1}` and `{ "a" : 1 }` are the same).
- `arg_f1`: F1 between the leaf arguments of the answer and of the reference, each leaf
  being (function name, its path in the arguments, its JSON value), so nested arguments
  get partial credit; no call on either side scores 0, none on both 1.

`evaluate_tools(client, cases, adapter, base, sampling)` answers every case with both
models (`core.clients.inference.agent_chat`) and returns the means per model and the
adapter's gain, the shape `core.evaluate` stores under `eval_scores["tools"]`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TOOL_METRICS = ("parseable", "name_accuracy", "exact_args", "arg_f1")
TOOL_METRIC_LABELS = {
    "parseable": "parseable tool call",
    "name_accuracy": "function-name accuracy",
    "exact_args": "exact argument match",
    "arg_f1": "argument F1",
}

Call = tuple[str, Any]  # (function name, arguments parsed; None when not a JSON object)


@dataclass(frozen=True)
class ToolCase:
    messages: tuple[Mapping[str, Any], ...]
    tools: tuple[Mapping[str, Any], ...]
    expected: tuple[Call, ...]


def _args(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw or "{}")
        except ValueError:
            return None
    return raw if isinstance(raw, dict) else None


def calls_of(tool_calls: Iterable[Mapping[str, Any]] | None) -> list[Call]:
    """(name, parsed arguments) of OpenAI-shaped tool calls."""
    out = []
    for c in tool_calls or ():
        fn = c.get("function") or c
        out.append((str(fn.get("name", "")), _args(fn.get("arguments", {}))))
    return out


def tool_cases(rows: Iterable[Mapping[str, Any]]) -> list[ToolCase]:
    """The tool-calling cases of normalised rows (rows without a calling turn are left)."""
    cases = []
    for row in rows:
        msgs = row.get("messages") or []
        at = next((i for i, m in enumerate(msgs) if m.get("tool_calls")), None)
        if at is None or at == 0:
            continue
        prompt = tuple({k: v for k, v in m.items() if k != "loss_weight"} for m in msgs[:at])
        cases.append(
            ToolCase(prompt, tuple(row.get("tools") or ()), tuple(calls_of(msgs[at]["tool_calls"])))
        )
    return cases


def _canonical(call: Call) -> str:
    return json.dumps([call[0], call[1]], sort_keys=True)


def _leaves(call: Call) -> list[str]:
    name, args = call

    def walk(value: Any, path: str) -> Iterable[str]:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                yield from walk(v, f"{path}/{k}")
        else:
            yield json.dumps([name, path, value], sort_keys=True)

    return list(walk(args, "")) if isinstance(args, dict) else []


def score_calls(predicted: Sequence[Call], expected: Sequence[Call]) -> dict[str, float]:
    """The four scores of one answer (module docstring)."""
    parseable = any(args is not None for _, args in predicted)
    names = Counter(n for n, _ in predicted) == Counter(n for n, _ in expected)
    exact = Counter(map(_canonical, predicted)) == Counter(map(_canonical, expected))
    got = Counter(x for c in predicted for x in _leaves(c))
    want = Counter(x for c in expected for x in _leaves(c))
    if not predicted or not expected:
        f1 = float(not predicted and not expected)
    elif not got and not want:
        f1 = float(names)
    else:
        common = sum((got & want).values())
        f1 = 0.0 if common == 0 else 2 * common / (sum(got.values()) + sum(want.values()))
    return {
        "parseable": float(parseable),
        "name_accuracy": float(names and bool(predicted)),
        "exact_args": float(exact and bool(predicted)),
        "arg_f1": round(f1, 4),
    }


def mean_tool_scores(per_case: Sequence[Mapping[str, float]]) -> dict[str, float]:
    if not per_case:
        return {m: 0.0 for m in TOOL_METRICS}
    return {m: round(sum(c[m] for c in per_case) / len(per_case), 4) for m in TOOL_METRICS}


def answer_calls(client: Any, model: str, case: ToolCase, sampling: Any) -> list[Call]:
    from core.clients.inference import agent_chat

    reply = agent_chat(client, model, case.messages, tools=case.tools, sampling=sampling)
    return [(c.name, c.parsed_arguments()) for c in reply.tool_calls]


def evaluate_tools(
    client: Any, cases: Sequence[ToolCase], adapter: str, base: str, sampling: Any
) -> dict[str, Any]:
    """Both models on every case, scored; what `core.evaluate` stores as `tools`."""
    scores: dict[str, list[dict[str, float]]] = {adapter: [], base: []}
    for case in cases:
        for model in (adapter, base):
            scores[model].append(
                score_calls(answer_calls(client, model, case, sampling), case.expected)
            )
    a, b = mean_tool_scores(scores[adapter]), mean_tool_scores(scores[base])
    return {
        "rows": len(cases),
        "metrics": list(TOOL_METRICS),
        "adapter": a,
        "base": b,
        "delta": {m: round(a[m] - b[m], 4) for m in TOOL_METRICS},
    }


def for_version(
    actor: Any, settings: Any, store: Any, version_id: str, client: Any, served: str, base: str
) -> dict[str, Any] | None:
    """The tool scores of a version on its dataset's eval split, None when no eval row
    calls a tool (or the split is gone)."""
    from core import datasets
    from core.clients.inference import Sampling
    from core.db import repo, session_scope
    from core.errors import InvalidInput

    with session_scope(settings) as s:
        v = repo.get_version(actor, s, version_id)
        try:
            rows = datasets.preview_rows(
                actor,
                s,
                store,
                v.dataset_id,
                n=settings.eval_max_rows,
                split="eval",
                max_chars=1_000_000,
            )
        except InvalidInput:
            return None
    cases = tool_cases(rows)
    if not cases:
        return None
    sampling = Sampling(temperature=0.0, max_tokens=settings.eval_max_tokens, seed=0)
    return evaluate_tools(client, cases, served, base, sampling)
