"""What the Datasets and Train pages read about models: the base models a user can pick,
a row through a model's chat template, and the share of rows a max length truncates.

`render_with_template` takes any normalised row `core.datasets` stores: `{"text"}` (the
text and EOS), `{"messages", "tools"?}` (the conversation), or a preference pair
`{"prompt", "chosen", "rejected"}` (prompt + chosen and prompt + rejected, each as the
trainer renders a side). A row the template cannot render (no tokenizer, no chat template,
no messages, the template itself refusing the row) comes back with `text=None` and the
reason; it never raises for a row's content."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.planner import CATALOG, TINY_ID
from core.settings import Settings


def model_options(settings: Settings) -> list[str]:
    """Base models a user can pick: the catalog, with the tiny demo model first when the
    local inference server serves it (the default local setup)."""
    ids = list(CATALOG)
    local_demo = not settings.inference_base_model
    return [TINY_ID, *ids] if local_demo else [*ids, TINY_ID]


@dataclass(frozen=True)
class TemplateView:
    text: str | None  # the row exactly as the model's chat template renders it
    reason: str | None = None  # why it could not be rendered
    rejected: str | None = None  # a preference pair: prompt + rejected (`text`: + chosen)


def render_with_template(settings: Settings, model: str, row: Mapping[str, Any]) -> TemplateView:
    """A normalised row through `model`'s chat template (the text the trainer tokenizes)."""
    from core.datasets import load_tokenizer

    choice = load_tokenizer(model, settings.data_dir / "models")
    tok = choice.tokenizer
    if tok is None:
        return TemplateView(None, choice.reason)
    if "text" in row:
        eos = getattr(tok, "eos_token", None) or ""
        return TemplateView(str(row["text"]) + eos)
    if not getattr(tok, "chat_template", None):
        return TemplateView(None, f"the tokenizer of {model!r} has no chat template")
    if "chosen" in row and "rejected" in row:  # a preference pair: each side as trained
        prompt = list(row.get("prompt") or [])
        chosen = _render(tok, prompt + list(row.get("chosen") or []), None)
        rejected = _render(tok, prompt + list(row.get("rejected") or []), None)
        if chosen.text is None or rejected.text is None:
            return chosen if chosen.text is None else rejected
        return TemplateView(chosen.text, rejected=rejected.text)
    return _render(tok, list(row.get("messages") or []), row.get("tools") or None)


def _render(tok: Any, messages: list[Any], tools: list[Any] | None) -> TemplateView:
    from jinja2 import TemplateError

    if not messages:
        return TemplateView(None, "the row has no messages to render")
    extra = {"tools": tools} if tools else {}  # tool-calling rows
    try:
        return TemplateView(tok.apply_chat_template(messages, tokenize=False, **extra))
    except TemplateError as e:  # the model's template refuses this row (raise_exception)
        return TemplateView(None, f"the chat template could not render this row: {e}")


def truncated_share(tokens: Mapping[str, Any], max_length: int) -> float | None:
    """Share of measured rows longer than `max_length` tokens: exact for the length the
    statistics were measured at, else read from the histogram (uniform within a bin)."""
    rows = tokens.get("measured_rows") or 0
    if not tokens.get("available") or not rows:
        return None
    if max_length == tokens.get("max_length") and tokens.get("truncated_rows") is not None:
        return tokens["truncated_rows"] / rows
    edges, counts = tokens["histogram"]["edges"], tokens["histogram"]["counts"]
    over = 0.0
    for lo, hi, n in zip(edges[:-1], edges[1:], counts, strict=True):
        if lo >= max_length:
            over += n
        elif hi > max_length:
            over += n * (hi - max_length) / (hi - lo)
    return min(1.0, over / rows)
