"""Tokens: the chosen model's tokenizer, and token statistics of normalised rows.

Statistics use the chosen model's tokenizer on up to `token_rows` valid rows (all rows
when None), tokenised as the trainer does (`trainer.shared.tokens`): tokens per row
(min/median/p95/max, histogram), total, the share of tokens that carry loss (the assistant
turns of chat rows and KTO completions, every token of text rows), chat rows longer than `max_length`
(`truncated_rows`) and those that would keep no assistant token after truncation (a
preference pair is measured by its longer sequence, prompt + one answer as the trainer
renders it, in the histogram and `truncated_rows` alike), and text
rows longer than `max_length` (`split_rows`: long documents the trainer splits into
`windows`, none truncated). Text rows need no chat template, so a base model's tokenizer
measures a text dataset. Reasoning (assistant <think> blocks) is counted apart:
`reasoning_share` of all tokens, and `loss_share_without_reasoning` (the share that carries
loss when "train on reasoning" is off). A template that does not render an assistant's
`reasoning_content` (Qwen2.5 and Qwen3-Instruct-2507 never do, Qwen3 and Qwen3.5 only after
the last user message) is counted: `reasoning_dropped_rows` and `_turns`, example rows, and
a line in `notes`. A row the chat template refuses (Qwen3.5 raises on a row without a user
message) is a `template_refused` problem naming the row (`TokenStats.add` returns it). Chat rows need a chat template and a fast tokenizer: without them
chat rows are not measured, counted in `unmeasured_chat_rows` with the reason in
`unmeasured_reason` (when no row could be measured, `available` is false and `reason` says
why). Without a tokenizer (none chosen, or it cannot be loaded offline) the report says so
in `tokens.reason`. Memory: only the token lengths of the measured rows are kept.
"""

from __future__ import annotations

import functools
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from core.datasets.records import Problem
from core.errors import InvalidInput
from core.planner import TINY_DIR_NAME, TINY_ID
from trainer.shared.tokens import TemplateRefused, chat_row_tokens, text_token_ids, text_windows

DEFAULT_MAX_LENGTH = 2048
DEFAULT_TOKEN_ROWS = 10_000
HISTOGRAM_BINS = 20
_EXAMPLES = 10


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
            model,
            None,
            f"the tokenizer of {model!r} could not be loaded ({type(e).__name__}): it is not in the "
            "local cache and the hub cannot be reached; token statistics are not available",
        )
    return TokenizerChoice(model, tok)


def as_choice(tokenizer: Any) -> TokenizerChoice | None:
    """A `TokenizerChoice` (from `load_tokenizer`) as it is, a tokenizer object as the
    choice of its own model, None as None (no token statistics)."""
    if isinstance(tokenizer, TokenizerChoice) or tokenizer is None:
        return tokenizer
    return TokenizerChoice(getattr(tokenizer, "name_or_path", "tokenizer"), tokenizer)


def require_max_length(max_length: int) -> None:
    if max_length < 1:
        raise InvalidInput("max length must be at least 1 token")


class RowTokens(NamedTuple):
    tokens: int
    loss: int  # tokens that carry loss
    kept: int  # loss tokens the trainer keeps at max_length
    windows: int  # samples the row becomes (a long text row: its windows; else 1)
    reasoning: int = 0  # loss tokens in the assistant's <think> blocks
    reasoning_dropped: int = 0  # assistant turns whose reasoning the template did not render


def count_row_tokens(tok: Any, row: dict[str, Any], max_length: int) -> RowTokens:
    """The token counts of one normalised row, tokenised exactly as the trainer does
    (`trainer.shared.tokens`): a chat row's loss tokens are its assistant turns, kept up to
    `max_length`; every token of a text row (BOS when the tokenizer adds one, EOS) counts,
    and a text row longer than `max_length` is split into windows, so nothing is cut. A
    text row needs no chat template; a chat row raises `trainer.shared.errors.BadInput` when the
    tokenizer cannot render it (see `chat_unmeasurable_reason`), `TemplateRefused` when its
    template refuses this row."""
    if "text" in row:
        (ids,) = text_token_ids(tok, [row["text"]])
        n = len(ids)
        return RowTokens(n, n, n, len(text_windows(n, max_length)))
    conv = {"messages": row["messages"], "tools": row.get("tools")}
    c = chat_row_tokens(tok, conv)
    loss = sum(c.mask)
    reasoning = loss - sum(c.answer_mask)
    return RowTokens(len(c.ids), loss, sum(c.mask[:max_length]), 1, reasoning, c.reasoning_dropped)


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


class TokenStats:
    """Token statistics gathered one normalised row at a time (`add`), then summed up
    (`result`, a report's `tokens`)."""

    def __init__(self, choice: TokenizerChoice | None, max_length: int, limit: int | None) -> None:
        self.choice = choice
        self.tok = choice.tokenizer if choice else None
        self.max_length = max_length
        self.limit = limit
        self.lengths = array("I")
        self.total = self.loss = self.truncated = self.no_loss_left = 0
        self.split = self.windows = self.chat_unmeasured = self.reasoning = 0
        self.reason: str | None = None  # nothing can be measured
        self.chat_reason: str | None = None  # chat rows cannot be measured
        self.pairs: Any = None  # PairTokenStats, once a preference pair is measured
        self.dropped_rows = self.dropped_turns = 0  # reasoning the template did not render
        self.dropped_examples: list[int] = []
        if choice is None:
            self.reason = "no tokenizer chosen: pass a model to see token statistics"
        elif self.tok is None:
            self.reason = choice.reason
        else:
            self.chat_reason = chat_unmeasurable_reason(self.tok, choice.model)

    def add(self, row: dict[str, Any], row_number: int | None = None) -> Problem | None:
        """Measure one row; the row's problem when its chat template refuses it (then it is
        not measured), else None."""
        if self.reason is not None:
            return None
        if self.chat_reason is not None and "text" not in row:
            self.chat_unmeasured += 1  # counted past the limit too: it scales the estimate
            return None
        if self.limit is not None and len(self.lengths) >= self.limit:
            return None
        if "chosen" in row:  # a preference pair (`core.datasets.preference`)
            self._add_pair(row, row_number)
            return None
        if "completion" in row:  # a KTO row (`core.datasets.kto`): loss on its completion
            row = {"messages": row["prompt"] + row["completion"], "tools": row.get("tools")}
        try:
            c = count_row_tokens(self.tok, row, self.max_length)
        except TemplateRefused as e:
            return Problem(row_number or 0, "template_refused", "messages", e.message)
        self._count(c, row, row_number)
        return None

    def _count(self, c: RowTokens, row: dict[str, Any], row_number: int | None) -> None:
        self.lengths.append(c.tokens)
        self.total += c.tokens
        self.loss += c.loss
        self.reasoning += c.reasoning
        if c.reasoning_dropped:
            self.dropped_rows += 1
            self.dropped_turns += c.reasoning_dropped
            if row_number is not None and len(self.dropped_examples) < _EXAMPLES:
                self.dropped_examples.append(row_number)
        if c.tokens <= self.max_length:
            return
        if "text" in row:
            self.split += 1
            self.windows += c.windows
        else:
            self.truncated += 1
            if c.kept == 0 and c.loss > 0:
                self.no_loss_left += 1

    def _add_pair(self, row: dict[str, Any], row_number: int | None) -> None:
        from core.datasets.preference import PairTokenStats

        if self.pairs is None:
            self.pairs = PairTokenStats(self.tok, self.max_length)
        # one length per pair for the histogram and the truncated share alike: its longer
        # sequence (prompt + one answer, as the trainer renders and cuts it); the total and
        # the loss share count both sequences, as the trainer trains them
        n, both = self.pairs.add(row, row_number)
        self.lengths.append(n)
        self.total += both
        self.loss += self.pairs.chosen[-1] + self.pairs.rejected[-1]
        if n > self.max_length:
            self.truncated += 1

    def result(self, valid_rows: int) -> dict[str, Any]:
        out = self._result(valid_rows)
        if self.pairs is not None and out.get("available"):
            out["preference"] = self.pairs.result()
        return out

    def _result(self, valid_rows: int) -> dict[str, Any]:
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
            },
            "histogram": {
                "edges": [round(float(e), 1) for e in edges],
                "counts": [int(c) for c in counts],
            },
            "loss_tokens": self.loss,
            "loss_share": round(self.loss / self.total, 4) if self.total else 0.0,
            "reasoning_tokens": self.reasoning,
            "reasoning_share": round(self.reasoning / self.total, 4) if self.total else 0.0,
            "loss_share_without_reasoning": (
                round((self.loss - self.reasoning) / self.total, 4) if self.total else 0.0
            ),
            "truncated_rows": self.truncated,
            "rows_without_loss_after_truncation": self.no_loss_left,
            "split_rows": self.split,
            "windows": self.windows,
            "unmeasured_chat_rows": self.chat_unmeasured,
            "unmeasured_reason": self.chat_reason if self.chat_unmeasured else None,
            "reasoning_dropped_rows": self.dropped_rows,
            "reasoning_dropped_turns": self.dropped_turns,
            "reasoning_dropped_examples": self.dropped_examples,
            "notes": self._notes(),
        }

    def _notes(self) -> list[str]:
        if not self.dropped_rows:
            return []
        model = self.choice.model if self.choice else "the model"
        return [
            f"{model}'s chat template does not render the reasoning of "
            f"{self.dropped_turns} assistant turns in {self.dropped_rows} measured rows "
            f"(e.g. rows {', '.join(map(str, self.dropped_examples[:5]))}): that reasoning "
            "is not trained on (some templates keep reasoning only after the last user "
            "message, some never render it)"
        ]


def token_statistics(
    rows: Iterable[dict[str, Any]],
    tokenizer: TokenizerChoice | None,
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    token_rows: int | None = DEFAULT_TOKEN_ROWS,
) -> dict[str, Any]:
    """The token statistics (a report's `tokens`) of normalised rows, which may mix chat and
    text rows as the trainer accepts them."""
    require_max_length(max_length)
    stats = TokenStats(tokenizer, max_length, token_rows)
    n = 0
    for row in rows:
        stats.add(row)
        n += 1
    return stats.result(n)
