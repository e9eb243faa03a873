"""Keys a dataset's rows carry that BrightRun does not read: none is dropped in silence.

`KeyCensus(layout)` looks at every readable raw row before it is normalised (`check`):

- a key known to carry training meaning elsewhere that this layout does not honour
  (`UNHONOURED_ROW_KEYS`, `UNHONOURED_MESSAGE_KEYS`: images or audio beside the text, a
  per-row weight, a KTO label on rows that are not KTO data, functions on rows whose
  training ignores them, a per-message training flag) makes the row's problem
  `unhonoured_key`, naming the key and why, so the row is refused like any other bad row
  rather than trained without that meaning. An empty value (null, "", [], {}) says
  nothing and is let through.
- any other key the layout does not read is counted, by key and place: "rows", or
  "<role> messages" for a key on messages (`result()`, the report's `ignored_keys`:
  `[{"key", "where", "count"}]`, most frequent first), shown as notes.

Which keys each layout reads is `ROW_KEYS`; message keys are `MESSAGE_KEYS` (`name` and
`tool_call_id` are read on tool messages only). Constant memory: one count per distinct
(key, place), at most `MAX_KEYS` of them. Never raises on content.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from core.datasets.agent import LEGACY_CALL, LEGACY_FUNCTIONS
from core.datasets.records import Problem
from trainer.shared.methods import KTO_LAYOUT, PROMPTS_LAYOUT

_SCORES = ("score_chosen", "score_rejected")
ROW_KEYS: dict[str, frozenset[str]] = {
    "messages": frozenset({"messages", "system", "tools", LEGACY_FUNCTIONS}),
    "sharegpt": frozenset({"conversations", "system", "tools"}),
    "alpaca": frozenset({"instruction", "input", "output", "system", "history"}),
    "prompt_completion": frozenset({"prompt", "completion", "system", "tools"}),
    "text": frozenset({"text"}),
    "preference": frozenset({"prompt", "chosen", "rejected", "system", *_SCORES}),
    "preference_openai": frozenset({"input", "preferred_output", "non_preferred_output"}),
    "preference_sharegpt": frozenset({"conversations", "chosen", "rejected", "system", *_SCORES}),
    "preference_implicit": frozenset({"chosen", "rejected", "system", *_SCORES}),
    "preference_ultrafeedback": frozenset({"prompt", "chosen", "rejected", "system", *_SCORES}),
    "preference_hh": frozenset({"chosen", "rejected", *_SCORES}),
    "preference_llamafactory": frozenset({"chosen_messages", "rejected_messages", *_SCORES}),
    KTO_LAYOUT: frozenset(
        {"messages", "conversations", "prompt", "completion", "system", "tools", "label"}
        | {"kto_tag", LEGACY_FUNCTIONS}
    ),
}
_MESSAGE_FIELDS = (
    "messages",
    "conversations",
    "prompt",
    "completion",
    "chosen",
    "rejected",
    "chosen_messages",
    "rejected_messages",
    "preferred_output",
    "non_preferred_output",
)
MESSAGE_KEYS = frozenset(
    {"role", "content", "from", "value", "tool_calls", "loss_weight", "weight"}
    | {"reasoning_content", "reasoning", "thinking", LEGACY_CALL}
)
_TOOL_MESSAGE_KEYS = frozenset({"name", "tool_call_id"})
_MULTIMODAL = (
    "it is multimodal input (images, video or audio); BrightRun trains on text, so the row "
    "would be trained without it"
)
UNHONOURED_ROW_KEYS = {
    **dict.fromkeys(("images", "image", "videos", "video", "audios", "audio"), _MULTIMODAL),
    **dict.fromkeys(
        ("weight", "loss_weight", "sample_weight"),
        "it weights the row, and rows are not weighted here; remove it, or drop the rows "
        "that should not count",
    ),
    **dict.fromkeys(
        ("label", "kto_tag"),
        "it is a KTO label (desirable or not); a file whose rows mostly carry one is read "
        "as KTO data, but this file is not",
    ),
    **dict.fromkeys(
        ("tools", LEGACY_FUNCTIONS),
        "it defines functions, and training on this layout does not show them to the "
        "model; use a chat layout (messages with tools) for tool-calling data",
    ),
}
UNHONOURED_MESSAGE_KEYS = dict.fromkeys(
    ("training", "train", "train_detail"),
    "it is a per-message training flag; say it with loss_weight 0 or 1 (0: no loss on "
    "the message), which is honoured on assistant messages",
)
MAX_KEYS = 200


def _empty(v: Any) -> bool:
    return v is None or v == "" or v == [] or v == {}


class KeyCensus:
    """The keys of one file's rows that its layout does not read (see the module)."""

    def __init__(self, layout: str) -> None:
        self.row_keys = ROW_KEYS.get(layout, frozenset())
        self.message_fields = tuple(f for f in _MESSAGE_FIELDS if f in self.row_keys)
        self.counts: Counter[tuple[str, str]] = Counter()
        self.keeps_every_key = layout == PROMPTS_LAYOUT  # the graders read the other fields

    def check(self, value: Any, row: int) -> list[Problem]:
        """Count the keys `value` has that are not read; the `unhonoured_key` problems of
        the row (usually none)."""
        if type(value) is not dict or self.keeps_every_key:
            return []
        problems: list[Problem] = []
        extra = value.keys() - self.row_keys
        if extra:
            self._row_keys(value, extra, row, problems)
        for field in self.message_fields:
            msgs = value.get(field)
            if type(msgs) is list:
                for i, m in enumerate(msgs):
                    if type(m) is dict and len(m) > 2:
                        self._message(m, f"{field}[{i}]", row, problems)
        if type(value.get("input")) is dict and "input" in self.row_keys:
            self._nested(value["input"], row, problems)
        return problems

    def _count(self, key: str, where: str) -> None:
        if (key, where) in self.counts or len(self.counts) < MAX_KEYS:
            self.counts[(str(key)[:60], where)] += 1

    def _row_keys(self, value: dict[str, Any], extra: set[str], row: int, problems: list) -> None:
        for key in sorted(extra):
            why = UNHONOURED_ROW_KEYS.get(key)
            if why is not None and not _empty(value[key]):
                if key not in ("label", "kto_tag") or _labelish(value[key]):
                    problems.append(
                        Problem(row, "unhonoured_key", key, f"the row has {key!r}: {why}")
                    )
                    continue
            self._count(key, "rows")

    def _message(self, m: dict[str, Any], where: str, row: int, problems: list) -> None:
        role = m.get("role", m.get("from"))
        role = role.strip().lower()[:20] if isinstance(role, str) else "?"
        for key in m.keys() - MESSAGE_KEYS:
            if role in ("tool", "observation", "function") and key in _TOOL_MESSAGE_KEYS:
                continue
            why = UNHONOURED_MESSAGE_KEYS.get(key)
            if why is not None and not _empty(m[key]):
                problems.append(
                    Problem(row, "unhonoured_key", f"{where}.{key}", f"{where} has {key!r}: {why}")
                )
                continue
            self._count(key, f"{role} messages")

    def _nested(self, inp: dict[str, Any], row: int, problems: list) -> None:
        """OpenAI's preference `input`: its messages are read, its other keys are not."""
        for key in inp.keys() - {"messages"}:
            if key == "tools" and not _empty(inp[key]):
                why = UNHONOURED_ROW_KEYS["tools"]
                problems.append(
                    Problem(row, "unhonoured_key", "input.tools", f"the row has input.tools: {why}")
                )
            else:
                self._count(f"input.{key}", "rows")
        msgs = inp.get("messages")
        if type(msgs) is list:
            for i, m in enumerate(msgs):
                if type(m) is dict and len(m) > 2:
                    self._message(m, f"input.messages[{i}]", row, problems)

    def result(self) -> list[dict[str, Any]]:
        return [
            {"key": key, "where": where, "count": n}
            for (key, where), n in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        ]


def _labelish(v: Any) -> bool:
    """A value that reads as a KTO label (true/false), not a class number or name."""
    return isinstance(v, bool) or (isinstance(v, str) and v.strip().lower() in ("true", "false"))


def describe(entry: dict[str, Any]) -> str:
    """One ignored key as a line of the report: "`weight` on 800 assistant messages"."""
    where = entry["where"]
    n = entry["count"]
    if where == "rows":
        where = "row" if n == 1 else "rows"
    elif n == 1:
        where = where.removesuffix("s")
    return f"`{entry['key']}` on {n} {where}"
