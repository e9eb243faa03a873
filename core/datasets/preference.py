"""Preference layouts (DPO, ORPO): detection, normalisation and token statistics of pairs.

Accepted layouts, detected per row (`preference_layout`); `detect_any_layout` and
`normalise_any_row` put them in front of `core.datasets.layouts` (a file whose rows are
mostly pairs is preference data, else the chat and text layouts decide):

    preference            {"prompt", "chosen", "rejected", "system"?}: strings, or lists of
                          OpenAI messages (the prompt's ending before the answer, each answer
                          starting with the assistant's message)
    preference_openai     {"input": {"messages": [...]}, "preferred_output": [messages],
                          "non_preferred_output": [messages]}  (OpenAI's DPO format)
    preference_sharegpt   {"conversations": [{"from", "value"}, ...], "chosen": message or
                          messages, "rejected": message or messages, "system"?}
                          (LLaMA-Factory's ShareGPT preference format)

`normalise_preference` turns a row into the one shape the trainer reads
(`trainer.preference`):

    {"prompt": [messages], "chosen": [messages], "rejected": [messages]}

Row checks: prompt not empty and in a valid chat order, ending with a user (or tool)
message; both answers present, starting with a non-empty assistant message; the two
answers not identical. Each problem names the row and the field. Never raises on content.

`PairTokenStats` measures pairs with the model's template exactly as the trainer tokenises
them (`trainer.shared.tokens.answer_token_masks`): prompt and answer lengths, pairs with a
side cut at `max_length`, and pairs whose answers are the same up to the cut (they differ
only past it, so they teach nothing; the trainer drops them), named by row.
"""

from __future__ import annotations

from array import array
from collections import Counter
from typing import Any

from core.datasets.layouts import (
    _SHAREGPT,
    _check_order,
    _content,
    _messages,
    _Problems,
    detect_layout,
    normalise_row,
)
from core.datasets.records import Problem

PREFERENCE_LAYOUTS = ("preference", "preference_openai", "preference_sharegpt")
_EXAMPLES = 5


def preference_layout(v: dict[str, Any]) -> str | None:
    """The preference layout one row follows, or None."""
    if "preferred_output" in v and "non_preferred_output" in v:
        return "preference_openai"
    if "chosen" in v and "rejected" in v:
        return "preference_sharegpt" if "conversations" in v else "preference"
    return None


def detect_any_layout(values: list[Any]) -> str | None:
    """The layout most of these rows follow, preference layouts included, or None."""
    votes = Counter(preference_layout(v) for v in values if isinstance(v, dict))
    pairs = sum(n for k, n in votes.items() if k)
    if pairs and pairs * 2 >= sum(votes.values()):
        return max((k for k in votes if k), key=lambda k: votes[k])
    return detect_layout(values)


def normalise_any_row(
    value: Any, layout: str, row: int
) -> tuple[dict[str, Any] | None, list[Problem]]:
    """`normalise_preference` for a preference layout, else `layouts.normalise_row`."""
    if layout in PREFERENCE_LAYOUTS:
        return normalise_preference(value, layout, row)
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
    prompt, chosen, rejected = _parts(value, layout, problems)
    system = value.get("system")
    if not problems and system not in (None, "") and layout != "preference_openai":
        text = _content(system, "system", problems)
        if text is not None and prompt and prompt[0]["role"] != "system":
            prompt = [{"role": "system", "content": text}, *prompt]
    if problems:
        return None, list(problems)
    _check_pair(prompt, chosen, rejected, problems)
    if problems:
        return None, list(problems)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}, []


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

    def add(self, pair: dict[str, Any], row: int | None) -> None:
        from trainer.shared.tokens import answer_token_masks

        p = [pair["prompt"]] * 2
        (c_ids, c_mask), (r_ids, r_mask) = answer_token_masks(
            self.tok, p, [pair["chosen"], pair["rejected"]]
        )
        self.prompt.append(c_mask.index(True) if True in c_mask else len(c_ids))
        self.chosen.append(sum(c_mask))
        self.rejected.append(sum(r_mask))
        n = self.max_length
        if max(len(c_ids), len(r_ids)) <= n:
            return
        self.cut += 1
        if row is not None and len(self.cut_rows) < _EXAMPLES:
            self.cut_rows.append(row)
        kept_c = [t for t, m in zip(c_ids[:n], c_mask[:n], strict=True) if m]
        kept_r = [t for t, m in zip(r_ids[:n], r_mask[:n], strict=True) if m]
        if kept_c == kept_r:
            self.same_after_cut += 1
            if row is not None and len(self.same_rows) < _EXAMPLES:
                self.same_rows.append(row)

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
