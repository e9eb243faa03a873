"""Preference layouts (DPO, ORPO): detection, normalisation and token statistics of pairs.

Accepted layouts, detected per row (`preference_layout`); `detect_any_layout` and
`normalise_any_row` put them in front of `core.datasets.layouts` (a file whose rows are
mostly pairs is preference data, one whose rows mostly carry a KTO label is `kto` data
(`core.datasets.kto`), else the chat and text layouts decide):

    preference            {"prompt", "chosen", "rejected", "system"?}: strings, or lists of
                          OpenAI messages (the prompt's ending before the answer, each answer
                          starting with the assistant's message)
    preference_openai     {"input": {"messages": [...]}, "preferred_output": [messages],
                          "non_preferred_output": [messages]}  (OpenAI's DPO format)
    preference_sharegpt   {"conversations": [{"from", "value"}, ...], "chosen": message or
                          messages, "rejected": message or messages, "system"?}
                          (LLaMA-Factory's ShareGPT preference format)

and the layouts whose answers are whole conversations sharing their first turns (the
prompt), read by `core.datasets.whole_pairs`: `preference_implicit` (TRL),
`preference_ultrafeedback`, `preference_hh` (Anthropic HH-RLHF text) and
`preference_llamafactory` (v1 `chosen_messages`/`rejected_messages`).

`normalise_preference` turns a row into the one shape the trainer reads
(`trainer.preference`):

    {"prompt": [messages], "chosen": [messages], "rejected": [messages],
     "scores"?: {"chosen": number, "rejected": number}}

`scores` keeps a row's `score_chosen`/`score_rejected` (UltraFeedback's ratings; any
preference layout may carry them): they are metadata, summed up in the report by
`ScoreCounts`, and do not change training. Preference training reads each message's role
and text only, so a pair whose messages carry more (tool calls, reasoning, an answer's
`loss_weight` 0) is refused (`unhonoured_key`) rather than trained without it; a
`loss_weight` 0 on a prompt message is dropped, the prompt carrying no loss anyway.

Row checks: prompt not empty and in a valid chat order, ending with a user (or tool)
message; both answers present, starting with a non-empty assistant message; the two
answers not identical; scores, when given, numbers. Each problem names the row and the field. Never raises on content.

`PairTokenStats` measures pairs with the model's template exactly as the trainer tokenises
them (`trainer.shared.tokens.answer_token_masks`): prompt and answer lengths, pairs with a
side cut at `max_length`, and pairs whose answers are the same up to the cut (they differ
only past it, so they teach nothing; the trainer drops them), named by row.
"""

from __future__ import annotations

from array import array
from collections import Counter
from typing import Any

from core.datasets.kto import is_kto_row, normalise_kto
from core.datasets.layouts import (
    _SHAREGPT,
    _check_order,
    _content,
    _messages,
    _Problems,
    detect_layout,
    normalise_row,
)
from core.datasets.prompts import is_prompt_row, normalise_prompt
from core.datasets.records import Problem
from core.datasets.whole_pairs import (
    HH_MARK,
    WHOLE_PAIR_LAYOUTS,
    is_conversation,
    split_pair,
)
from trainer.shared.methods import KTO_LAYOUT, PROMPTS_LAYOUT

PREFERENCE_LAYOUTS = (
    "preference",
    "preference_openai",
    "preference_sharegpt",
    *WHOLE_PAIR_LAYOUTS,
)
SCORE_KEYS = ("score_chosen", "score_rejected")
_EXAMPLES = 5


def preference_layout(v: dict[str, Any]) -> str | None:
    """The preference layout one row follows, or None."""
    if "preferred_output" in v and "non_preferred_output" in v:
        return "preference_openai"
    if "chosen_messages" in v and "rejected_messages" in v:
        return "preference_llamafactory"
    if "chosen" not in v or "rejected" not in v:
        return None
    if "conversations" in v:
        return "preference_sharegpt"
    chosen = v["chosen"]
    if isinstance(chosen, str) and v.get("prompt") is None and HH_MARK in chosen:
        return "preference_hh"
    if is_conversation(chosen):
        return "preference_implicit" if v.get("prompt") is None else "preference_ultrafeedback"
    return "preference"


def _special_layout(v: dict[str, Any]) -> str | None:
    """The preference or KTO layout one row follows, or None."""
    if preference_layout(v):
        return preference_layout(v)
    if is_kto_row(v):
        return KTO_LAYOUT
    return PROMPTS_LAYOUT if is_prompt_row(v) else None


def detect_any_layout(values: list[Any]) -> str | None:
    """The layout most of these rows follow, preference and KTO layouts included, or None."""
    votes = Counter(_special_layout(v) for v in values if isinstance(v, dict))
    pairs = sum(n for k, n in votes.items() if k)
    if pairs and pairs * 2 >= sum(votes.values()):
        return max((k for k in votes if k), key=lambda k: votes[k])
    return detect_layout(values)


def normalise_any_row(
    value: Any, layout: str, row: int
) -> tuple[dict[str, Any] | None, list[Problem]]:
    """`normalise_preference` for a preference layout, `kto.normalise_kto` for KTO rows,
    else `layouts.normalise_row`."""
    if layout in PREFERENCE_LAYOUTS:
        return normalise_preference(value, layout, row)
    if layout == PROMPTS_LAYOUT:
        return normalise_prompt(value, row)
    if layout == KTO_LAYOUT:
        return normalise_kto(value, row)
    return normalise_row(value, layout, row)


def _side(value: Any, key: str, role: str, problems: _Problems, sharegpt: bool) -> list:
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list):
        return (
            _messages(value, key, problems, _SHAREGPT)
            if sharegpt
            else _messages(value, key, problems)
        )
    text = _content(value, key, problems)
    return [{"role": role, "content": text}] if text is not None else []


def _parts(value: dict[str, Any], layout: str, problems: _Problems) -> tuple[list, list, list]:
    if layout == "preference_openai":
        inp = value.get("input")
        raw = inp.get("messages") if isinstance(inp, dict) else None
        prompt = _messages(raw, "input.messages", problems)
        keys = ("preferred_output", "non_preferred_output")
    else:
        sharegpt = layout == "preference_sharegpt"
        field = "conversations" if sharegpt else "prompt"
        prompt = _side(value.get(field), field, "user", problems, sharegpt)
        keys = ("chosen", "rejected")
    sharegpt = layout == "preference_sharegpt"
    answers = [_side(value.get(k), k, "assistant", problems, sharegpt) for k in keys]
    return prompt, answers[0], answers[1]


def normalise_preference(
    value: Any, layout: str, row: int
) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The normalised pair, or None and the problems that make it unusable."""
    if not isinstance(value, dict):
        kind = type(value).__name__
        return None, [Problem(row, "not_an_object", "", f"the row is {kind}, not an object")]
    problems = _Problems(row)
    if layout in WHOLE_PAIR_LAYOUTS:
        prompt, chosen, rejected = split_pair(value, layout, problems)
    else:
        prompt, chosen, rejected = _parts(value, layout, problems)
    system = value.get("system")
    if not problems and system not in (None, "") and layout != "preference_openai":
        text = _content(system, "system", problems)
        if text is not None and prompt and prompt[0]["role"] != "system":
            prompt = [{"role": "system", "content": text}, *prompt]
    if problems:
        return None, list(problems)
    _check_pair(prompt, chosen, rejected, problems)
    sides = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    if not problems:
        sides = {k: _text_only(msgs, k, problems) for k, msgs in sides.items()}
    scores = _scores(value, problems)
    if problems:
        return None, list(problems)
    return ({**sides, "scores": scores} if scores else sides), []


def _text_only(msgs: list, field: str, problems: _Problems) -> list:
    """A side's messages as preference training reads them (role and text); a message
    that says more is a problem, except a prompt message's `loss_weight` 0."""
    out = []
    for i, m in enumerate(msgs):
        extra = set(m) - {"role", "content"}
        if field == "prompt":
            extra.discard("loss_weight")
        if extra:
            key = sorted(extra)[0]
            problems.add(
                "unhonoured_key",
                f"{field}[{i}].{key}",
                f"{field}[{i}] has {key}: preference training reads each message's role and "
                "text only, so it would be lost; remove it or train this data with SFT",
            )
            return msgs
        out.append(m if len(m) == 2 else {"role": m["role"], "content": m["content"]})
    return out


def _scores(value: dict[str, Any], problems: _Problems) -> dict[str, float] | None:
    """`score_chosen`/`score_rejected` as {"chosen", "rejected"}, None when absent."""
    out = {}
    for key in SCORE_KEYS:
        v = value.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int | float):
            problems.add("wrong_type", key, f"{key} must be a number, not {type(v).__name__}")
            return None
        out[key.removeprefix("score_")] = v
    return out or None


def _check_pair(prompt: list, chosen: list, rejected: list, problems: _Problems) -> None:
    if not any(m["role"] == "user" for m in prompt):
        problems.add("missing_field", "prompt", "the prompt has no user message")
        return
    if prompt[-1]["role"] == "assistant":
        problems.add(
            "role_order",
            "prompt",
            "the prompt ends with an assistant message: the answer must come next",
        )
        return
    for name, answer in (("chosen", chosen), ("rejected", rejected)):
        if not answer:
            problems.add("missing_assistant", name, f"{name} has no answer after the prompt")
            return
        if answer[0]["role"] != "assistant":
            problems.add("role_order", name, f"{name} must start with an assistant message")
            return
        # the whole side, as the trainer renders it, in a valid chat order
        probe = _Problems(problems.row)
        _check_order(prompt + answer, name, probe)
        if probe:
            problems.add("role_order", name, probe[0].message)
            return
    if chosen == rejected:
        problems.add("identical_answers", "rejected", "chosen and rejected are identical")


class PairTokenStats:
    """Token statistics of normalised pairs, one at a time (`add`), then `result`."""

    def __init__(self, tok: Any, max_length: int) -> None:
        self.tok, self.max_length = tok, max_length
        self.prompt, self.chosen, self.rejected = array("I"), array("I"), array("I")
        self.cut = self.same_after_cut = 0
        self.cut_rows: list[int] = []
        self.same_rows: list[int] = []

    def add(self, pair: dict[str, Any], row: int | None) -> tuple[int, int]:
        """Measure one pair; the tokens of its longer sequence (the prompt and one answer,
        rendered as the trainer trains it: the length that `max_length` cuts), and of
        both sequences (what the trainer trains on)."""
        from trainer.shared.tokens import answer_token_masks

        p = [pair["prompt"]] * 2
        (c_ids, c_mask), (r_ids, r_mask) = answer_token_masks(
            self.tok, p, [pair["chosen"], pair["rejected"]]
        )
        self.prompt.append(c_mask.index(True) if True in c_mask else len(c_ids))
        self.chosen.append(sum(c_mask))
        self.rejected.append(sum(r_mask))
        n, longer, both = self.max_length, max(len(c_ids), len(r_ids)), len(c_ids) + len(r_ids)
        if longer <= n:
            return longer, both
        self.cut += 1
        if row is not None and len(self.cut_rows) < _EXAMPLES:
            self.cut_rows.append(row)
        kept_c = [t for t, m in zip(c_ids[:n], c_mask[:n], strict=True) if m]
        kept_r = [t for t, m in zip(r_ids[:n], r_mask[:n], strict=True) if m]
        if kept_c == kept_r:
            self.same_after_cut += 1
            if row is not None and len(self.same_rows) < _EXAMPLES:
                self.same_rows.append(row)
        return longer, both

    def result(self) -> dict[str, Any]:
        import numpy as np

        def summary(a: array) -> dict[str, float]:
            x = np.frombuffer(a, dtype=np.uint32)
            if not x.size:
                return {}
            return {"min": int(x.min()), "median": float(np.median(x)), "max": int(x.max())}

        return {
            "pairs": len(self.prompt),
            "prompt_tokens": summary(self.prompt),
            "chosen_tokens": summary(self.chosen),
            "rejected_tokens": summary(self.rejected),
            "pairs_cut": self.cut,
            "pairs_cut_rows": self.cut_rows,
            "pairs_same_after_cut": self.same_after_cut,
            "pairs_same_after_cut_rows": self.same_rows,
        }


class ScoreCounts:
    """The scores of normalised pairs (a report's `scores`): how many rows carry them, the
    least, mean and greatest of each side and of the margin, and the rows whose rejected
    answer scored higher. Constant memory."""

    def __init__(self) -> None:
        self.rows = self.inverted = 0
        self.sums: dict[str, list[float]] = {}  # name -> [min, sum, max, count]

    def add(self, row: dict[str, Any]) -> None:
        scores = row.get("scores")
        if not scores:
            return
        self.rows += 1
        values = dict(scores)
        if "chosen" in scores and "rejected" in scores:
            values["margin"] = scores["chosen"] - scores["rejected"]
            self.inverted += values["margin"] < 0
        for name, v in values.items():
            s = self.sums.setdefault(name, [v, 0.0, v, 0])
            s[0], s[1], s[2], s[3] = min(s[0], v), s[1] + v, max(s[2], v), s[3] + 1

    def result(self) -> dict[str, Any]:
        if not self.rows:
            return {}
        out: dict[str, Any] = {"rows": self.rows, "rows_rejected_scored_higher": self.inverted}
        for name, (lo, total, hi, n) in self.sums.items():
            out[name] = {"min": lo, "mean": round(total / n, 4), "max": hi}
        return out
