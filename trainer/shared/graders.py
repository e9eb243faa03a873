"""Graders: how a sampled answer is scored, in OpenAI's reinforcement fine-tuning grader JSON.

`parse(obj)` reads one grader (raises `BadGrader`, a `ValueError`, naming the field); `grade(g,
sample, item, runners)` scores one sample and never raises on what the grader does: a
failure is a `Score` of 0 with its `error`. A sample is what the model answered
(`output_text`; `output_json` is that text parsed as JSON, or None); an item is the dataset
row (its fields next to `messages`).

Grader types:

    string_check     {"type", "name", "input", "reference", "operation": eq | ne | like | ilike}
                     1 when input == reference (eq), != (ne), reference in input (like),
                     the same ignoring case (ilike); else 0
    text_similarity  {"type", "name", "input", "reference", "evaluation_metric"}: fuzzy_match
                     (difflib's ratio of the two texts), bleu (nltk's sentence BLEU, smoothed),
                     rouge_1 ... rouge_5, rouge_l (rouge_score's F-measure); in [0, 1]
    python           {"type", "name", "source"}: `grade(sample, item) -> float`; run only by
                     the worker, in a separate process (`runners.python`; `trainer.sandbox`)
    score_model      {"type", "name", "model", "input": [messages], "range"?: [lo, hi],
                     "sampling_params"?}: an OpenAI-compatible chat model answers; the last
                     number in its answer, clamped to `range`, is the score (`runners.model`)
    multi            {"type", "name", "graders": {name: grader}, "calculate_output": formula}:
                     the formula over the named graders' scores (+ - * / **, numbers, and
                     min, max, abs, sqrt, log, exp); a sub-grader's failure fails it

Templates: `{{item.field}}` (dots reach into nested fields), `{{sample.output_text}}`,
`{{sample.output_json}}` (as JSON text) and `{{sample.output_json.key}}`, in `input`,
`reference` and a score model's messages. A name that is not there renders empty and the
score says so in its error. Torch-free; the worker and the controller both read it.
"""

from __future__ import annotations

import ast
import difflib
import json
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

TYPES = ("string_check", "text_similarity", "python", "score_model", "multi")
OPERATIONS = ("eq", "ne", "like", "ilike")
METRICS = ("fuzzy_match", "bleu", "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l")
_TEMPLATE = re.compile(r"\{\{\s*([A-Za-z_][\w.]*)\s*\}\}")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


class BadGrader(ValueError):
    """A grader that cannot be used; `suggestion` says what to do (the worker reports it as
    `bad_input`)."""

    def __init__(self, message: str, suggestion: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.suggestion = suggestion or (
            "fix the grader JSON named in the message (OpenAI's grader format)"
        )


@dataclass(frozen=True)
class Grader:
    """One parsed grader (see the module docstring); `raw` is the JSON it came from."""

    type: str
    name: str
    raw: Mapping[str, Any]
    children: dict[str, Grader] = field(default_factory=dict)


@dataclass(frozen=True)
class Score:
    value: float
    error: str | None = None  # why the grader failed on this sample (value 0)


@dataclass
class Runners:
    """What runs the graders that do not run in this process: `python(source, sample,
    item) -> Score` and `model(grader_json, messages) -> str`; None refuses them."""

    python: Callable[[str, dict[str, Any], Any], Score] | None = None
    model: Callable[[Mapping[str, Any], list[dict[str, str]]], str] | None = None


def _need(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind):
        raise BadGrader(f"{where}: '{key}' is missing or not a {getattr(kind, '__name__', kind)}")
    return value


def parse(obj: Any, where: str = "grader") -> Grader:
    """The grader in `obj` (a dict, or its JSON text), checked; `BadGrader` names the field."""
    if isinstance(obj, str):
        try:
            obj = json.loads(obj)
        except json.JSONDecodeError as e:
            raise BadGrader(f"{where} is not valid JSON ({e.msg})") from e
    if not isinstance(obj, dict):
        raise BadGrader(f"{where} must be a JSON object")
    kind = obj.get("type")
    if kind not in TYPES:
        raise BadGrader(f"{where}: type {kind!r} is not one of {', '.join(TYPES)}")
    name = str(obj.get("name") or kind)
    here = f"{where} {name!r}"
    if kind in ("string_check", "text_similarity"):
        _need(obj, "input", str, here)
        _need(obj, "reference", str, here)
    if kind == "string_check" and obj.get("operation") not in OPERATIONS:
        raise BadGrader(f"{here}: operation must be one of {', '.join(OPERATIONS)}")
    if kind == "text_similarity" and obj.get("evaluation_metric") not in METRICS:
        raise BadGrader(f"{here}: evaluation_metric must be one of {', '.join(METRICS)}")
    if kind == "python":
        source = _need(obj, "source", str, here)
        try:
            tree = ast.parse(source)
        except SyntaxError as e:
            raise BadGrader(f"{here}: the source does not parse ({e.msg}, line {e.lineno})") from e
        if not any(isinstance(n, ast.FunctionDef) and n.name == "grade" for n in tree.body):
            raise BadGrader(f"{here}: the source defines no grade(sample, item) function")
    if kind == "score_model":
        _need(obj, "model", str, here)
        messages = _need(obj, "input", list, here)
        if not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
            raise BadGrader(f"{here}: input must be a list of messages with text content")
    children: dict[str, Grader] = {}
    if kind == "multi":
        subs = _need(obj, "graders", dict, here)
        if not subs:
            raise BadGrader(f"{here}: graders is empty")
        children = {k: parse(v, f"{here} > {k!r}") for k, v in subs.items()}
        formula = _need(obj, "calculate_output", str, here)
        _check_formula(formula, set(children), here)
    return Grader(kind, name, obj, children)


# --------------------------------------------------------------------------- templates


def _lookup(path: str, sample: Mapping[str, Any], item: Any) -> tuple[Any, bool]:
    head, *rest = path.split(".")
    if head == "item":
        value: Any = item
    elif head == "sample":
        value = sample
    else:
        return None, False
    for key in rest:
        if isinstance(value, Mapping) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return None, False
    return value, True


def render(template: str, sample: Mapping[str, Any], item: Any) -> tuple[str, list[str]]:
    """`template` with its `{{...}}` names filled in, and the names that were not there."""
    missing: list[str] = []

    def fill(m: re.Match[str]) -> str:
        value, found = _lookup(m[1], sample, item)
        if not found or value is None:
            missing.append(m[1])
            return ""
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    return _TEMPLATE.sub(fill, template), missing


def make_sample(output_text: str) -> dict[str, Any]:
    """A sample from the model's answer text (`output_json`: parsed, or None)."""
    try:
        parsed = json.loads(output_text)
    except (json.JSONDecodeError, ValueError):
        parsed = None
    return {"output_text": output_text, "output_json": parsed}


# --------------------------------------------------------------------------- scoring


def _similarity(metric: str, text: str, ref: str) -> float:
    if metric == "fuzzy_match":
        return difflib.SequenceMatcher(None, text, ref).ratio()
    if metric == "bleu":
        from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

        return float(
            sentence_bleu(
                [ref.split()], text.split(), smoothing_function=SmoothingFunction().method1
            )
        )
    from rouge_score import rouge_scorer

    kind = "rougeL" if metric == "rouge_l" else "rouge" + metric[-1]
    return float(rouge_scorer.RougeScorer([kind]).score(ref, text)[kind].fmeasure)


def _string_check(op: str, text: str, ref: str) -> float:
    if op == "eq":
        return float(text == ref)
    if op == "ne":
        return float(text != ref)
    if op == "like":
        return float(ref in text)
    return float(ref.lower() in text.lower())


def _model_score(g: Grader, sample: Mapping[str, Any], item: Any, runners: Runners) -> Score:
    if runners.model is None:
        return Score(0.0, f"score_model grader {g.name!r}: no model endpoint is configured")
    messages = []
    for m in g.raw["input"]:
        content, missing = render(m["content"], sample, item)
        if missing:
            return Score(0.0, f"template names not in the row or sample: {', '.join(missing)}")
        messages.append({"role": str(m.get("role", "user")), "content": content})
    answer = runners.model(g.raw, messages)
    numbers = _NUMBER.findall(answer or "")
    if not numbers:
        return Score(0.0, f"score_model grader {g.name!r}: the answer has no number")
    lo, hi = (g.raw.get("range") or [0.0, 1.0])[:2]
    return Score(min(max(float(numbers[-1]), float(lo)), float(hi)))


def grade(g: Grader, sample: Mapping[str, Any], item: Any, runners: Runners) -> Score:
    """`g`'s score of `sample` for the row `item`; a failure is 0 with its reason."""
    try:
        return _grade(g, sample, item, runners)
    except (ValueError, TypeError, KeyError, ArithmeticError, OSError, ImportError) as e:
        return Score(0.0, f"{g.type} grader {g.name!r} failed: {type(e).__name__}: {e}")


def _grade(g: Grader, sample: Mapping[str, Any], item: Any, runners: Runners) -> Score:
    if g.type in ("string_check", "text_similarity"):
        text, missing = render(g.raw["input"], sample, item)
        ref, missing_ref = render(g.raw["reference"], sample, item)
        if missing or missing_ref:
            names = ", ".join(missing + missing_ref)
            return Score(0.0, f"template names not in the row or sample: {names}")
        if g.type == "string_check":
            return Score(_string_check(g.raw["operation"], text, ref))
        return Score(_similarity(g.raw["evaluation_metric"], text, ref))
    if g.type == "python":
        if runners.python is None:
            return Score(0.0, f"python grader {g.name!r} runs only in the worker")
        return runners.python(g.raw["source"], dict(sample), item)
    if g.type == "score_model":
        return _model_score(g, sample, item, runners)
    scores = {k: grade(c, sample, item, runners) for k, c in g.children.items()}
    failed = [f"{k}: {s.error}" for k, s in scores.items() if s.error]
    if failed:
        return Score(0.0, "; ".join(failed))
    value = _evaluate(ast.parse(g.raw["calculate_output"], mode="eval").body, scores)
    return Score(value) if math.isfinite(value) else Score(0.0, "the formula is not finite")


# --------------------------------------------------------------------------- formulas

_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_FUNCTIONS: dict[str, Callable[..., float]] = {
    "min": min,
    "max": max,
    "abs": abs,
    "sqrt": math.sqrt,
    "log": math.log,
    "exp": math.exp,
}


def _check_formula(formula: str, names: set[str], where: str) -> None:
    try:
        tree = ast.parse(formula, mode="eval")
    except SyntaxError as e:
        raise BadGrader(f"{where}: calculate_output does not parse ({e.msg})") from e
    for node in ast.walk(tree):
        ok = (
            isinstance(
                node,
                ast.Expression | ast.BinOp | ast.UnaryOp | ast.Call | ast.Name | ast.Load,
            )
            or type(node) in _BINARY
            or isinstance(node, ast.USub | ast.UAdd)
        )
        if isinstance(node, ast.Constant):
            ok = isinstance(node.value, int | float) and not isinstance(node.value, bool)
        if isinstance(node, ast.Call):
            ok = (
                isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS and not node.keywords
            )
        if isinstance(node, ast.Name) and node.id not in names | set(_FUNCTIONS):
            raise BadGrader(f"{where}: calculate_output names {node.id!r}, not a grader here")
        if not ok:
            raise BadGrader(
                f"{where}: calculate_output may use numbers, grader names, + - * / ** and "
                f"{', '.join(_FUNCTIONS)}"
            )


def _evaluate(node: ast.AST, scores: Mapping[str, Score]) -> float:
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return scores[node.id].value
    if isinstance(node, ast.UnaryOp):
        value = _evaluate(node.operand, scores)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        return float(
            _BINARY[type(node.op)](_evaluate(node.left, scores), _evaluate(node.right, scores))
        )
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    return float(_FUNCTIONS[node.func.id](*(_evaluate(a, scores) for a in node.args)))


# --------------------------------------------------------------------------- health


class GraderFailing(BadGrader):
    """A grader failed on most of the samples it scored: the job stops rather than learn
    from zeros."""


@dataclass
class Health:
    """Failures per grader across a job. `record` counts a score and keeps a few reasons;
    `check` raises `GraderFailing` once a grader has scored at least `min_samples` samples
    and failed on more than `max_share` of them. `report()` is the counts, for events."""

    min_samples: int = 8
    max_share: float = 0.5
    scored: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, list[str]] = field(default_factory=dict)

    def record(self, name: str, score: Score) -> None:
        self.scored[name] = self.scored.get(name, 0) + 1
        if score.error:
            self.failed[name] = self.failed.get(name, 0) + 1
            kept = self.reasons.setdefault(name, [])
            if len(kept) < 3 and score.error not in kept:
                kept.append(score.error)

    def check(self) -> None:
        for name, n in self.scored.items():
            bad = self.failed.get(name, 0)
            if n >= self.min_samples and bad > self.max_share * n:
                raise GraderFailing(
                    f"grader {name!r} failed on {bad} of {n} samples: "
                    + "; ".join(self.reasons.get(name, [])),
                    "fix the grader (test it with `brightrun grader test FILE --dataset ID`) "
                    "and launch again",
                )

    def report(self) -> dict[str, Any]:
        return {
            name: {
                "scored": n,
                "failed": self.failed.get(name, 0),
                "reasons": self.reasons.get(name, []),
            }
            for name, n in self.scored.items()
        }
