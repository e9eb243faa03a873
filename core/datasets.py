"""Datasets: detect, validate, normalise, measure and store fine-tuning data.

Accepted files (see `core.formats`): JSONL, JSON (array, or an object holding the rows),
CSV/TSV with a header, Parquet. Accepted layouts, detected from the first rows' fields:

    messages            {"messages": [{"role", "content"}, ...], "system"?: str}  (OpenAI chat)
    sharegpt            {"conversations": [{"from", "value"}, ...], "system"?: str}
                        from: human/user -> user, gpt/assistant/bot/model -> assistant,
                        system, tool/function/observation -> tool
    alpaca              {"instruction", "input"?, "output", "system"?, "history"?: [[q, a], ...]}
                        -> [system], history turns, user: instruction + "\\n\\n" + input, assistant: output
    prompt_completion   {"prompt", "completion", "system"?}  (strings, or lists of messages)
    text                {"text"}  (continued pretraining)

The normalised file is JSONL, one row per line, in exactly one of two shapes:

    {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": str}, ...]}
    {"text": str}                         (only for the `text` layout; loss on every token)

Chat rows are checked so the trainer can use every one: roles known, content a non-empty
string (a list of `{"type": "text", "text"}` parts is joined), a system message only
first, the first other message from the user, user and assistant alternating (tool
messages only after an assistant or tool message), at least one assistant message, and
not ending on an unanswered user message. Each problem names the row (1-based: the line
for JSONL, the element/record otherwise), the field and its kind (counts per kind are in
the report). The whole row (raw) may be at most `max_row_bytes` characters.

Statistics use the chosen model's tokenizer on up to `token_rows` valid rows (all rows
when None), tokenised as the trainer does (`trainer.shared.tokens`): tokens per row
(min/median/p95/max, histogram), total, the share of tokens that carry loss (the assistant
turns of chat rows, every token of text rows), chat rows longer than `max_length`
(`truncated_rows`) and those that would keep no assistant token after truncation, and text
rows longer than `max_length` (`split_rows`: long documents the trainer splits into
`windows`, none truncated). Text rows need no chat template, so a base model's tokenizer
measures a text dataset; chat rows need a chat template and a fast tokenizer: without them
chat rows are not measured, counted in `unmeasured_chat_rows` with the reason in
`unmeasured_reason` (when no row could be measured, `available` is false and `reason` says
why). Without a tokenizer (none chosen, or it cannot be loaded offline) the report says so
in `tokens.reason`.

Rows are split into train and eval by a hash of the normalised row (`eval_fraction`,
default 5%; no eval split below 20 valid rows), so duplicates never straddle the split.
Memory stays bounded: rows stream through one at a time; per row only an 8-byte hash is
kept (for exact duplicates), plus token lengths of the measured rows.

Public API: `inspect_file`, `add_dataset`, `list_datasets`, `get_dataset`, `rename_dataset`,
`delete_dataset`, `preview_rows`, `load_tokenizer`, `token_statistics`. Errors: `DatasetUnusable` (with the
`report`) when a file cannot be used or has bad rows and the caller chose to reject them;
`InvalidInput` for bad arguments; `NotFound`/`Conflict` from `core.repo`.
"""

from __future__ import annotations

import functools
import itertools
import re
import tempfile
import zlib
from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple

import orjson

from core import repo, storage, validation
from core.errors import DatasetUnusable, InvalidInput
from core.formats import Problem, Record, open_records
from core.users import Actor
from trainer.shared.tokens import chat_token_masks, text_token_ids, text_windows

LAYOUTS = ("messages", "sharegpt", "alpaca", "prompt_completion", "text")
ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
    "bot": "assistant", "chatgpt": "assistant", "model": "assistant", "system": "system",
    "tool": "tool", "function": "tool", "observation": "tool", "function_response": "tool",
}  # fmt: skip
_SAME_ROLES = {r: r for r in ROLES}
PROBLEM_KINDS = (
    "invalid_json", "not_utf8", "not_an_object", "missing_field", "wrong_type",
    "unknown_role", "empty_content", "missing_assistant", "role_order", "too_long",
    "wrong_columns", "invalid_csv", "invalid_parquet",
)  # fmt: skip
DEFAULT_MAX_ROW_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_LENGTH = 2048
DEFAULT_EVAL_FRACTION = 0.05
DEFAULT_TOKEN_ROWS = 10_000
MIN_ROWS_FOR_EVAL = 20
MAX_EXAMPLES = 100
HISTOGRAM_BINS = 20
_DETECT_ROWS = 64
_CONTENT_TYPES = {
    "jsonl": "application/x-ndjson", "json": "application/json", "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
}  # fmt: skip

OnBadRows = Literal["reject", "drop"]


# --------------------------------------------------------------------------- layouts


def detect_layout(values: list[Any]) -> str | None:
    """The layout most of these rows follow, or None."""
    votes: Counter[str] = Counter()
    for v in values:
        if not isinstance(v, dict):
            continue
        if "messages" in v:
            votes["messages"] += 1
        elif "conversations" in v:
            votes["sharegpt"] += 1
        elif "instruction" in v and "output" in v:
            votes["alpaca"] += 1
        elif "prompt" in v and "completion" in v:
            votes["prompt_completion"] += 1
        elif "text" in v:
            votes["text"] += 1
    if not votes:
        return None
    return votes.most_common(1)[0][0]


def _content(value: Any, where: str, row: int, problems: list[Problem]) -> str | None:
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):  # OpenAI content parts
        texts = []
        for p in value:
            if p.get("type") != "text" or not isinstance(p.get("text"), str):
                problems.append(
                    Problem(
                        row,
                        "wrong_type",
                        where,
                        f"{where} has a {p.get('type')!r} part; only text parts are supported",
                    )
                )
                return None
            texts.append(p["text"])
        value = "".join(texts)
    if value is None:
        problems.append(Problem(row, "empty_content", where, f"{where} is missing or null"))
        return None
    if not isinstance(value, str):
        problems.append(
            Problem(row, "wrong_type", where, f"{where} must be text, not {type(value).__name__}")
        )
        return None
    if not value.strip():
        problems.append(Problem(row, "empty_content", where, f"{where} is empty"))
        return None
    return value


def _check_order(
    msgs: list[dict[str, str]], row: int, field_name: str, problems: list[Problem]
) -> None:
    prev: str | None = None
    seen_user = False
    for i, m in enumerate(msgs):
        role = m["role"]
        where = f"{field_name}[{i}]"
        if role == "system":
            if i != 0:
                problems.append(
                    Problem(
                        row,
                        "role_order",
                        where,
                        f"{where} is a system message; only the first message may be one",
                    )
                )
                return
        elif role == "user":
            if prev == "user":
                problems.append(
                    Problem(row, "role_order", where, f"{where}: two user messages in a row")
                )
                return
            seen_user = True
        elif role == "assistant":
            if not seen_user:
                problems.append(
                    Problem(
                        row,
                        "role_order",
                        where,
                        f"{where}: the conversation starts with an assistant message; a user message must come first",
                    )
                )
                return
            if prev == "assistant":
                problems.append(
                    Problem(row, "role_order", where, f"{where}: two assistant messages in a row")
                )
                return
        elif role == "tool" and prev not in ("assistant", "tool"):
            problems.append(
                Problem(
                    row,
                    "role_order",
                    where,
                    f"{where}: a tool message must follow an assistant or tool message",
                )
            )
            return
        prev = role
    if not any(m["role"] == "assistant" for m in msgs):
        problems.append(
            Problem(
                row,
                "missing_assistant",
                field_name,
                "no assistant message: nothing to learn from this row",
            )
        )
    elif msgs[-1]["role"] == "user":
        problems.append(
            Problem(
                row,
                "role_order",
                f"{field_name}[{len(msgs) - 1}]",
                "the conversation ends with a user message that has no answer",
            )
        )


def _messages(raw: Any, row: int, field_name: str, problems: list[Problem], role_key: str = "role",
              content_key: str = "content", role_map: dict[str, str] | None = None) -> list[dict[str, str]]:  # fmt: skip
    if raw is None:
        problems.append(Problem(row, "missing_field", field_name, f"the row has no {field_name!r}"))
        return []
    if not isinstance(raw, list):
        problems.append(
            Problem(
                row,
                "wrong_type",
                field_name,
                f"{field_name} must be a list of messages, not {type(raw).__name__}",
            )
        )
        return []
    if not raw:
        problems.append(Problem(row, "missing_assistant", field_name, f"{field_name} is empty"))
        return []
    out: list[dict[str, str]] = []
    for i, m in enumerate(raw):
        where = f"{field_name}[{i}]"
        if not isinstance(m, dict):
            problems.append(
                Problem(
                    row,
                    "wrong_type",
                    where,
                    f"{where} must be an object with {role_key!r} and {content_key!r}",
                )
            )
            return []
        role = m.get(role_key)
        if role is None:
            problems.append(
                Problem(row, "missing_field", f"{where}.{role_key}", f"{where} has no {role_key!r}")
            )
            return []
        if not isinstance(role, str):
            problems.append(
                Problem(
                    row, "wrong_type", f"{where}.{role_key}", f"{where}.{role_key} must be text"
                )
            )
            return []
        mapped = (role_map or _SAME_ROLES).get(role.strip().lower() if role_map else role)
        if mapped is None:
            allowed = ", ".join(sorted(role_map) if role_map else ROLES)
            problems.append(
                Problem(
                    row,
                    "unknown_role",
                    f"{where}.{role_key}",
                    f"{where}.{role_key} {role[:40]!r} is not one of {allowed}",
                )
            )
            return []
        text = _content(m.get(content_key), f"{where}.{content_key}", row, problems)
        if text is None:
            return []
        out.append({"role": mapped, "content": text})
    return out


def _with_system(
    value: dict[str, Any], msgs: list[dict[str, str]], row: int, problems: list[Problem]
) -> list[dict[str, str]]:
    system = value.get("system")
    if system is None or system == "":
        return msgs
    text = _content(system, "system", row, problems)
    if text is None:
        return msgs
    if msgs and msgs[0]["role"] == "system":
        problems.append(
            Problem(
                row,
                "role_order",
                "system",
                "the row has both a 'system' field and a system message",
            )
        )
        return msgs
    return [{"role": "system", "content": text}, *msgs]


def _fast_chat(
    raw: Any, role_key: str, content_key: str, role_map: dict[str, str] | None
) -> list[dict[str, str]] | None:
    """The messages when the row is clean (the common case), checked in one pass without
    building any problem; None sends the row to the full checks, which name the problem."""
    if type(raw) is not list or not raw:
        return None
    roles = role_map or _SAME_ROLES
    out: list[dict[str, str]] = []
    prev = ""
    seen_user = seen_assistant = False
    for i, m in enumerate(raw):
        if type(m) is not dict:
            return None
        role, text = m.get(role_key), m.get(content_key)
        if type(role) is not str or type(text) is not str or not text or text.isspace():
            return None
        mapped = roles.get(role) or (roles.get(role.strip().lower()) if role_map else None)
        if mapped is None or mapped == prev and mapped != "tool":
            return None
        if mapped == "system":
            if i:
                return None
        elif mapped == "user":
            seen_user = True
        elif mapped == "assistant":
            if not seen_user:
                return None
            seen_assistant = True
        elif prev not in ("assistant", "tool"):
            return None
        prev = mapped
        # A message already in the normalised shape is kept as it is.
        out.append(m if role_map is None and len(m) == 2 else {"role": mapped, "content": text})
    if prev == "user" or not seen_assistant:
        return None
    return out


def _fast_openai(raw: Any) -> list[dict[str, str]] | None:
    """`_fast_chat` for OpenAI messages, the most common layout: the list itself when every
    message is exactly {role, content} and the conversation is in order."""
    if type(raw) is not list or not raw:
        return None
    prev = ""
    seen_user = seen_assistant = False
    exact = True
    for m in raw:
        if type(m) is not dict:
            return None
        text = m.get("content")
        if type(text) is not str or not text or text.isspace():
            return None
        role = m.get("role")
        if role == "user":
            if prev == "user":
                return None
            seen_user = True
        elif role == "assistant":
            if prev == "assistant" or not seen_user:
                return None
            seen_assistant = True
        elif role == "system":
            if prev:
                return None
        elif role == "tool":
            if prev != "assistant" and prev != "tool":
                return None
        else:
            return None
        prev = role
        if len(m) != 2:
            exact = False
    if prev == "user" or not seen_assistant:
        return None
    return raw if exact else [{"role": m["role"], "content": m["content"]} for m in raw]


def normalise_row(value: Any, layout: str, row: int) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The normalised row, or None and the problems that make it unusable."""
    if type(value) is dict and not value.get("system"):
        if layout == "messages":
            fast = _fast_openai(value.get("messages"))
        elif layout == "sharegpt":
            fast = _fast_chat(value.get("conversations"), "from", "value", SHAREGPT_ROLES)
        else:
            fast = None
        if fast is not None:
            return {"messages": fast}, []
    return normalise_row_checked(value, layout, row)


def normalise_row_checked(
    value: Any, layout: str, row: int
) -> tuple[dict[str, Any] | None, list[Problem]]:
    """`normalise_row` through the full checks only (what the fast path must agree with)."""
    problems: list[Problem] = []
    if not isinstance(value, dict):
        return None, [
            Problem(
                row,
                "not_an_object",
                "",
                f"the row is {type(value).__name__}, not an object with fields",
            )
        ]
    if layout == "text":
        if "text" not in value:
            return None, [Problem(row, "missing_field", "text", "the row has no 'text'")]
        text = _content(value.get("text"), "text", row, problems)
        return ({"text": text} if text is not None else None), problems
    if layout == "messages":
        msgs = _messages(value.get("messages"), row, "messages", problems)
    elif layout == "sharegpt":
        msgs = _messages(
            value.get("conversations"),
            row,
            "conversations",
            problems,
            "from",
            "value",
            SHAREGPT_ROLES,
        )
    elif layout == "alpaca":
        msgs = _alpaca(value, row, problems)
    elif layout == "prompt_completion":
        msgs = _prompt_completion(value, row, problems)
    else:
        raise InvalidInput(f"unknown layout {layout!r}")
    if problems:
        return None, problems
    if layout in ("messages", "sharegpt", "prompt_completion"):
        msgs = _with_system(value, msgs, row, problems)
    if not problems:
        _check_order(msgs, row, "messages" if layout != "sharegpt" else "conversations", problems)
    if problems:
        return None, problems
    return {"messages": msgs}, problems


def _alpaca(value: dict[str, Any], row: int, problems: list[Problem]) -> list[dict[str, str]]:
    for key in ("instruction", "output"):
        if key not in value:
            problems.append(Problem(row, "missing_field", key, f"the row has no {key!r}"))
    if problems:
        return []
    instruction = _content(value.get("instruction"), "instruction", row, problems)
    output = _content(value.get("output"), "output", row, problems)
    extra = value.get("input")
    if extra is not None and not isinstance(extra, str):
        problems.append(
            Problem(row, "wrong_type", "input", f"input must be text, not {type(extra).__name__}")
        )
    msgs: list[dict[str, str]] = []
    system = value.get("system")
    if system not in (None, ""):
        text = _content(system, "system", row, problems)
        if text is not None:
            msgs.append({"role": "system", "content": text})
    history = value.get("history")
    if history not in (None, "", []):
        if not isinstance(history, list):
            problems.append(
                Problem(
                    row,
                    "wrong_type",
                    "history",
                    "history must be a list of [question, answer] pairs",
                )
            )
        else:
            for i, pair in enumerate(history):
                if not (isinstance(pair, list | tuple) and len(pair) == 2):
                    problems.append(
                        Problem(
                            row,
                            "wrong_type",
                            f"history[{i}]",
                            f"history[{i}] must be a [question, answer] pair",
                        )
                    )
                    break
                q = _content(pair[0], f"history[{i}][0]", row, problems)
                a = _content(pair[1], f"history[{i}][1]", row, problems)
                if q is None or a is None:
                    break
                msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    if problems or instruction is None or output is None:
        return []
    prompt = instruction + ("\n\n" + extra if isinstance(extra, str) and extra.strip() else "")
    return [*msgs, {"role": "user", "content": prompt}, {"role": "assistant", "content": output}]


def _prompt_completion(
    value: dict[str, Any], row: int, problems: list[Problem]
) -> list[dict[str, str]]:
    prompt, completion = value.get("prompt"), value.get("completion")
    for key, v in (("prompt", prompt), ("completion", completion)):
        if v is None:
            problems.append(Problem(row, "missing_field", key, f"the row has no {key!r}"))
    if problems:
        return []
    if isinstance(prompt, list):
        p_msgs = _messages(prompt, row, "prompt", problems)
    else:
        text = _content(prompt, "prompt", row, problems)
        p_msgs = [{"role": "user", "content": text}] if text is not None else []
    if isinstance(completion, list):
        c_msgs = _messages(completion, row, "completion", problems)
    else:
        text = _content(completion, "completion", row, problems)
        c_msgs = [{"role": "assistant", "content": text}] if text is not None else []
    return [*p_msgs, *c_msgs] if not problems else []


# --------------------------------------------------------------------------- tokenizer


@dataclass(frozen=True)
class TokenizerChoice:
    model: str
    tokenizer: Any | None
    reason: str | None = None


@functools.lru_cache(maxsize=8)
def _load_tokenizer_cached(name_or_path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name_or_path)


def load_tokenizer(model: str, models_dir: Path | None = None) -> TokenizerChoice:
    """The tokenizer of `model` (the tiny demo model's id, a model folder, or a hub id from
    the local cache / the hub). Never raises: when it cannot be loaded, `tokenizer` is None
    and `reason` says why, for the report."""
    from core.catalog import TINY_DIR_NAME, TINY_ID

    target = model
    if model.lower() == TINY_ID and models_dir is not None:
        target = str(Path(models_dir) / TINY_DIR_NAME)
        if not (Path(target) / "tokenizer_config.json").is_file():
            return TokenizerChoice(model, None, f"the tiny demo model is not built yet in {target}")
    if "://" in model:
        return TokenizerChoice(model, None, "a model must be a hub id or a folder, not a URL")
    try:
        tok = _load_tokenizer_cached(target)
    except (OSError, ValueError, KeyError, ImportError, RuntimeError) as e:
        return TokenizerChoice(
            model, None,
            f"the tokenizer of {model!r} could not be loaded ({type(e).__name__}): it is not in the "
            "local cache and the hub cannot be reached; token statistics are not available",
        )  # fmt: skip
    return TokenizerChoice(model, tok)


class RowTokens(NamedTuple):
    tokens: int
    loss: int  # tokens that carry loss
    kept: int  # loss tokens the trainer keeps at max_length
    windows: int  # samples the row becomes (a long text row: its windows; else 1)


def count_row_tokens(tok: Any, row: dict[str, Any], max_length: int) -> RowTokens:
    """The token counts of one normalised row, tokenised exactly as the trainer does
    (`trainer.shared.tokens`): a chat row's loss tokens are its assistant turns, kept up to
    `max_length`; every token of a text row (BOS when the tokenizer adds one, EOS) counts,
    and a text row longer than `max_length` is split into windows, so nothing is cut. A
    text row needs no chat template; a chat row raises `trainer.shared.errors.BadInput` when the
    tokenizer cannot render it (see `chat_unmeasurable_reason`)."""
    if "text" in row:
        (ids,) = text_token_ids(tok, [row["text"]])
        n = len(ids)
        return RowTokens(n, n, n, len(text_windows(n, max_length)))
    ((ids, mask),) = chat_token_masks(tok, [row["messages"]])
    return RowTokens(len(ids), sum(mask), sum(mask[:max_length]), 1)


def chat_unmeasurable_reason(tok: Any, model: str) -> str | None:
    """Why chat rows cannot be tokenised with `tok` (as the trainer would refuse them), or
    None when they can."""
    if not getattr(tok, "chat_template", None):
        return f"the tokenizer of {model!r} has no chat template, so chat rows cannot be measured"
    if not getattr(tok, "is_fast", False):
        return (
            f"the tokenizer of {model!r} has no fast (Rust) version, so chat rows cannot be "
            "measured"
        )
    return None


# --------------------------------------------------------------------------- report


@dataclass
class Report:
    """What inspecting a file found. `to_dict()` is the `--json` output."""

    path: str = ""
    file_format: str | None = None
    layout: str | None = None
    rows: int = 0
    valid_rows: int = 0
    problem_counts: Counter[str] = field(default_factory=Counter)
    problem_examples: list[Problem] = field(default_factory=list)
    reason: str | None = None  # why the file cannot be used at all
    size_bytes: int = 0
    duplicates: int = 0
    train_rows: int = 0
    eval_rows: int = 0
    eval_fraction: float = 0.0
    tokens: dict[str, Any] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    read_stopped: bool = False  # reading ended early at a row the reader could not pass

    @property
    def invalid_rows(self) -> int:
        return self.rows - self.valid_rows

    @property
    def usable(self) -> bool:
        return self.reason is None and self.valid_rows > 0

    def why_unusable(self) -> str:
        if self.reason:
            return self.reason
        if self.valid_rows == 0:
            top = ", ".join(f"{k} ({n})" for k, n in self.problem_counts.most_common(3))
            first = self.problem_examples[0].message if self.problem_examples else ""
            return f"no valid rows among {self.rows}: {top}" + (
                f"; row {self.problem_examples[0].row}: {first}" if first else ""
            )
        return ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.file_format,
            "layout": self.layout,
            "rows": self.rows,
            "valid_rows": self.valid_rows,
            "invalid_rows": self.invalid_rows,
            "usable": self.usable,
            "reason": self.why_unusable() or None,
            "problems": dict(sorted(self.problem_counts.items())),
            "problem_examples": [p.as_dict() for p in self.problem_examples],
            "read_stopped": self.read_stopped,
            "size_bytes": self.size_bytes,
            "duplicates": self.duplicates,
            "split": {
                "eval_fraction": self.eval_fraction,
                "train_rows": self.train_rows,
                "eval_rows": self.eval_rows,
            },
            "tokens": self.tokens,
            "samples": self.samples,
        }


class _TokenStats:
    def __init__(self, choice: TokenizerChoice | None, max_length: int, limit: int | None) -> None:
        self.choice = choice
        self.tok = choice.tokenizer if choice else None
        self.max_length = max_length
        self.limit = limit
        self.lengths = array("I")
        self.total = self.loss = self.truncated = self.no_loss_left = 0
        self.split = self.windows = self.chat_unmeasured = 0
        self.reason: str | None = None  # nothing can be measured
        self.chat_reason: str | None = None  # chat rows cannot be measured
        if choice is None:
            self.reason = "no tokenizer chosen: pass a model to see token statistics"
        elif self.tok is None:
            self.reason = choice.reason
        else:
            self.chat_reason = chat_unmeasurable_reason(self.tok, choice.model)

    def add(self, row: dict[str, Any]) -> None:
        if self.reason is not None:
            return
        if self.chat_reason is not None and "messages" in row:
            self.chat_unmeasured += 1  # counted past the limit too: it scales the estimate
            return
        if self.limit is not None and len(self.lengths) >= self.limit:
            return
        c = count_row_tokens(self.tok, row, self.max_length)
        self.lengths.append(c.tokens)
        self.total += c.tokens
        self.loss += c.loss
        if c.tokens <= self.max_length:
            return
        if "text" in row:
            self.split += 1
            self.windows += c.windows
        else:
            self.truncated += 1
            if c.kept == 0 and c.loss > 0:
                self.no_loss_left += 1

    def result(self, valid_rows: int) -> dict[str, Any]:
        base: dict[str, Any] = {
            "model": self.choice.model if self.choice else None,
            "max_length": self.max_length,
        }
        if self.reason is not None:
            return {**base, "available": False, "reason": self.reason}
        import numpy as np

        n = len(self.lengths)
        if n == 0 and self.chat_unmeasured:
            return {**base, "available": False, "reason": self.chat_reason}
        if n == 0:
            return {**base, "available": True, "measured_rows": 0, "total": 0}
        measurable = valid_rows - self.chat_unmeasured
        lengths = np.frombuffer(self.lengths, dtype=np.uint32)
        top = int(lengths.max())
        low = int(lengths.min())
        edges = np.linspace(low, max(top, low + 1), HISTOGRAM_BINS + 1)
        counts, _ = np.histogram(lengths, bins=edges)
        sampled = n < measurable
        return {
            **base,
            "available": True,
            "measured_rows": n,
            "sampled": sampled,
            "total": self.total,
            "total_estimate": round(self.total * measurable / n) if sampled else self.total,
            "per_row": {
                "min": int(lengths.min()),
                "median": float(np.median(lengths)),
                "p95": float(np.percentile(lengths, 95)),
                "max": top,
                "mean": round(float(lengths.mean()), 1),
            },  # fmt: skip
            "histogram": {
                "edges": [round(float(e), 1) for e in edges],
                "counts": [int(c) for c in counts],
            },
            "loss_tokens": self.loss,
            "loss_share": round(self.loss / self.total, 4) if self.total else 0.0,
            "truncated_rows": self.truncated,
            "rows_without_loss_after_truncation": self.no_loss_left,
            "split_rows": self.split,
            "windows": self.windows,
            "unmeasured_chat_rows": self.chat_unmeasured,
            "unmeasured_reason": self.chat_reason if self.chat_unmeasured else None,
        }


def token_statistics(
    rows: Iterable[dict[str, Any]],
    tokenizer: TokenizerChoice | None,
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    token_rows: int | None = DEFAULT_TOKEN_ROWS,
) -> dict[str, Any]:
    """The token statistics (a report's `tokens`) of normalised rows, which may mix chat and
    text rows as the trainer accepts them."""
    if max_length < 1:
        raise InvalidInput("max length must be at least 1 token")
    stats = _TokenStats(tokenizer, max_length, token_rows)
    n = 0
    for row in rows:
        stats.add(row)
        n += 1
    return stats.result(n)


def split_of(line: bytes, eval_fraction: float) -> str:
    """Which side of the split a normalised row (its JSONL line, newline included) is on.
    Rows are hashed with CRC-32; Adler-32 joins it into the 64-bit duplicate hash."""
    return "eval" if zlib.crc32(line) % 100_000 < eval_fraction * 100_000 else "train"


def _clip(row: dict[str, Any], n: int = 500) -> dict[str, Any]:
    if "text" in row:
        return {"text": row["text"][:n]}
    return {"messages": [{"role": m["role"], "content": m["content"][:n]} for m in row["messages"]]}


def process_file(
    path: Path,
    *,
    tokenizer: TokenizerChoice | None = None,
    max_length: int = DEFAULT_MAX_LENGTH,
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
    token_rows: int | None = DEFAULT_TOKEN_ROWS,
    train_out: IO[bytes] | None = None,
    eval_out: IO[bytes] | None = None,
    layout: str | None = None,
    n_samples: int = 3,
) -> Report:
    """Read, validate and normalise `path` in one streaming pass. Writes valid rows to
    `train_out` / `eval_out` when given. Never raises on file content."""
    if max_length < 1:
        raise InvalidInput("max length must be at least 1 token")
    if not 0.0 <= eval_fraction <= 0.5:
        raise InvalidInput("eval fraction must be between 0 and 0.5")
    path = Path(path)
    report = Report(path=str(path), eval_fraction=eval_fraction)
    try:
        report.size_bytes = path.stat().st_size
        report.file_format, records = open_records(path, max_row_bytes)
        head: list[Record] = []
        it = iter(records)
        for rec in it:
            head.append(rec)
            if sum(1 for r in head if r.problem is None) >= _DETECT_ROWS:
                break
        report.layout = layout or detect_layout([r.value for r in head if r.problem is None])
    except DatasetUnusable as e:
        report.reason = str(e)
        return report
    except OSError as e:
        report.reason = f"the file cannot be read ({type(e).__name__})"
        return report
    if report.layout is None:
        fields = sorted(
            {k for r in head if r.problem is None and isinstance(r.value, dict) for k in r.value}
        )[:12]
        if not head:
            report.reason = "the file holds no rows"
        elif not fields:
            report.rows = len(head)
            for rec in head:
                if rec.problem:
                    _note(report, rec.problem)
            report.reason = "no row could be read as an object with fields"
        else:
            report.reason = (
                "no known layout: expected a 'messages' (OpenAI chat), 'conversations' (ShareGPT), "
                "'instruction'+'output' (Alpaca), 'prompt'+'completion' or 'text' field; found "
                + ", ".join(repr(f[:40]) for f in fields)
            )
        return report

    stats = _TokenStats(tokenizer, max_length, token_rows)
    hashes = array("Q")
    dumps = orjson.dumps

    layout_ = report.layout
    measure = stats.reason is None
    eval_cut = eval_fraction * 100_000
    crc32, adler32 = zlib.crc32, zlib.adler32
    write_train = train_out.write if train_out is not None else None
    write_eval = eval_out.write if eval_out is not None else None
    rows = valid = n_eval = 0
    stopped = False
    for rec in itertools.chain(head, it):
        problem = rec.problem
        if problem is not None:
            stopped = stopped or rec.stops_reading
            if problem.row:  # row 0 is the file as a whole, not a row
                rows += 1
            _note(report, problem)
            continue
        rows += 1
        row, problems = normalise_row(rec.value, layout_, rec.row)
        if row is None:
            for p in problems:
                _note(report, p)
            continue
        valid += 1
        line = dumps(row) + b"\n"
        crc = crc32(line)  # see split_of
        hashes.append(crc | (adler32(line) << 32))
        if crc % 100_000 < eval_cut:
            n_eval += 1
            if write_eval is not None:
                write_eval(line)
        elif write_train is not None:
            write_train(line)
        if measure:
            stats.add(row)
        if valid <= n_samples:
            report.samples.append(_clip(row))
    report.rows, report.valid_rows, report.read_stopped = rows, valid, stopped
    report.eval_rows, report.train_rows = n_eval, valid - n_eval
    if hashes:
        import numpy as np

        report.duplicates = len(hashes) - int(
            np.unique(np.frombuffer(hashes, dtype=np.uint64)).size
        )
    report.tokens = stats.result(report.valid_rows)
    return report


def _note(report: Report, p: Problem) -> None:
    report.problem_counts[p.kind] += 1
    if len(report.problem_examples) < MAX_EXAMPLES:
        report.problem_examples.append(p)


def inspect_file(
    path: Path | str,
    tokenizer: Any = None,
    max_length: int = DEFAULT_MAX_LENGTH,
    *,
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
    token_rows: int | None = DEFAULT_TOKEN_ROWS,
) -> Report:
    """Detect, validate and measure a file without storing anything.

    `tokenizer` may be a `TokenizerChoice` (from `load_tokenizer`), a tokenizer object, or
    None (no token statistics)."""
    choice = (
        tokenizer
        if isinstance(tokenizer, TokenizerChoice) or tokenizer is None
        else TokenizerChoice(getattr(tokenizer, "name_or_path", "tokenizer"), tokenizer)
    )
    return process_file(
        Path(path), tokenizer=choice, max_length=max_length, max_row_bytes=max_row_bytes,
        eval_fraction=eval_fraction, token_rows=token_rows,
    )  # fmt: skip


# --------------------------------------------------------------------------- stored datasets

_NAME_FROM_FILE = re.compile(r"[^\w .()-]+")


def name_from_filename(filename: str) -> str:
    stem = Path(filename.replace("\\", "/")).name
    for ext in (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".txt"):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    cleaned = " ".join(_NAME_FROM_FILE.sub(" ", stem).split())[:120]
    return cleaned or "dataset"


def add_dataset(
    actor: Actor,
    session: Any,
    store: storage.BlobStore,
    path: Path | str,
    name: str | None = None,
    *,
    original_filename: str | None = None,
    tokenizer: Any = None,
    max_length: int = DEFAULT_MAX_LENGTH,
    on_bad_rows: OnBadRows = "reject",
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
    max_bytes: int | None = None,
    token_rows: int | None = DEFAULT_TOKEN_ROWS,
) -> tuple[Any, Report]:
    """Inspect, normalise and store a dataset for `actor`; returns (dataset row, report).

    Stored (bucket `datasets`): the original file unchanged, `normalized.jsonl` (the train
    rows) and, when there is an eval split, `eval.jsonl`; their keys are in the row
    (`original_key`, `normalized_key`) and `stats["split"]["eval_key"]`. With
    `on_bad_rows="reject"` (the default) a file with any bad row raises `DatasetUnusable`
    and nothing is stored; with "drop" the valid rows are kept and the report lists the rest.
    The caller commits the session; if storing fails nothing is left behind.
    """
    path = Path(path)
    if on_bad_rows not in ("reject", "drop"):
        raise InvalidInput("on_bad_rows must be 'reject' or 'drop'")
    # display only (keys are built from ids), but a path, control characters or >255 chars are refused
    original_filename = validation.check_upload_filename(original_filename or path.name)
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise InvalidInput(
            f"the file is {size / 1e6:.1f} MB; the upload limit is {max_bytes / 1e6:.0f} MB"
        )
    choice = (
        tokenizer
        if isinstance(tokenizer, TokenizerChoice) or tokenizer is None
        else TokenizerChoice(getattr(tokenizer, "name_or_path", "tokenizer"), tokenizer)
    )
    explicit_name = name is not None
    name = name if explicit_name else name_from_filename(original_filename)
    if not explicit_name:
        taken = {d.name for d in repo.list_datasets(actor, session)}
        base, k = name, 2
        while name in taken:
            name, k = f"{base} ({k})", k + 1
    with tempfile.TemporaryDirectory(prefix="brightrun-ds-") as tmp:
        train_p, eval_p = Path(tmp) / "train.jsonl", Path(tmp) / "eval.jsonl"
        with open(train_p, "wb") as tf, open(eval_p, "wb") as ef:
            report = process_file(
                path, tokenizer=choice, max_length=max_length, max_row_bytes=max_row_bytes,
                eval_fraction=eval_fraction, token_rows=token_rows, train_out=tf, eval_out=ef,
            )  # fmt: skip
        if not report.usable:
            raise DatasetUnusable(report.why_unusable(), report=report)
        if report.invalid_rows and on_bad_rows == "reject":
            top = ", ".join(f"{k} ({n})" for k, n in report.problem_counts.most_common(3))
            first = report.problem_examples[0]
            raise DatasetUnusable(
                f"{report.invalid_rows} of {report.rows} rows have problems ({top}); first: row {first.row}: "
                f"{first.message}. Fix the file, or choose to drop the bad rows",
                report=report,
            )
        if report.read_stopped and on_bad_rows == "reject":
            raise DatasetUnusable(
                "the file could not be read to the end; fix it or choose to drop the bad rows",
                report=report,
            )
        if 0 < report.valid_rows < MIN_ROWS_FOR_EVAL and report.eval_rows:
            with (
                open(train_p, "ab") as tf,
                open(eval_p, "rb") as ef,
            ):  # too few rows to hold any out
                tf.write(ef.read())
            report.train_rows += report.eval_rows
            report.eval_rows = 0
        dataset_id = repo.new_id("ds")
        keys = {
            "original": storage.dataset_original_key(actor.user_id, dataset_id),
            "train": storage.dataset_normalized_key(actor.user_id, dataset_id),
            "eval": f"{actor.user_id}/{dataset_id}/eval.jsonl",
        }
        sha = storage.sha256_file(path)
        written: list[str] = []
        try:
            store.put_file(
                "datasets",
                keys["original"],
                path,
                _CONTENT_TYPES.get(report.file_format or "", "application/octet-stream"),
            )
            written.append(keys["original"])
            store.put_file("datasets", keys["train"], train_p, "application/x-ndjson")
            written.append(keys["train"])
            if report.eval_rows:
                store.put_file("datasets", keys["eval"], eval_p, "application/x-ndjson")
                written.append(keys["eval"])
            stats = report.to_dict()
            stats["split"]["eval_key"] = keys["eval"] if report.eval_rows else None
            stats["on_bad_rows"] = on_bad_rows
            with session.begin_nested():
                ds = repo.create_dataset(
                    actor, session, name=name, file_format=report.file_format or "", layout=report.layout or "",
                    rows=report.rows, valid_rows=report.valid_rows, original_filename=original_filename,
                    size_bytes=size, sha256=sha, stats=stats, original_key=keys["original"],
                    normalized_key=keys["train"], dataset_id=dataset_id,
                )  # fmt: skip
        except BaseException:
            store.delete("datasets", written)
            raise
    return ds, report


def list_datasets(actor: Actor, session: Any) -> list[Any]:
    return repo.list_datasets(actor, session)


def get_dataset(actor: Actor, session: Any, dataset_id: str) -> Any:
    return repo.get_dataset(actor, session, dataset_id)


def rename_dataset(actor: Actor, session: Any, dataset_id: str, new_name: str) -> Any:
    return repo.rename_dataset(actor, session, dataset_id, new_name)


def delete_dataset(actor: Actor, session: Any, store: storage.BlobStore, dataset_id: str) -> Any:
    """Mark the dataset deleted (kept as a name in job history) and remove its files.
    Refused (Conflict) while an unfinished job uses it."""
    ds = repo.mark_dataset_deleted(actor, session, dataset_id)
    session.flush()
    store.delete_prefix("datasets", f"{actor.user_id}/{ds.id}/")
    return ds


def eval_key(ds: Any) -> str | None:
    return (ds.stats or {}).get("split", {}).get("eval_key")


def preview_rows(
    actor: Actor, session: Any, store: storage.BlobStore, dataset_id: str, n: int = 20,
    split: Literal["train", "eval"] = "train", max_chars: int = 2000,
) -> list[dict[str, Any]]:  # fmt: skip
    """The first `n` normalised rows of the actor's dataset (contents clipped to
    `max_chars`). They are data, to be shown as text, never rendered as HTML/markdown."""
    ds = repo.get_dataset(actor, session, dataset_id)
    key = ds.normalized_key if split == "train" else eval_key(ds)
    if not key:
        return []
    out: list[dict[str, Any]] = []
    with store.open("datasets", key) as f:
        while len(out) < n:
            line = f.readline(DEFAULT_MAX_ROW_BYTES + 1)
            if not line:
                break
            out.append(_clip(orjson.loads(line), max_chars))
    return out
