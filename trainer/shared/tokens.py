"""How the trainer turns a row into tokens, shared with the controller's dataset statistics.

`core.datasets` counts a dataset's tokens with these very functions, so its statistics
(tokens per row, loss-bearing share, rows truncated or split at `max_length`) are what the
trainer will see. Torch-free; a tokenizer is any transformers (fast) tokenizer.

- `chat_token_masks(tokenizer, conversations)`: each conversation rendered with the chat
  template, its token ids, and which tokens are assistant tokens (they carry the loss).
  Raises `BadInput` when the tokenizer has no fast version or no chat template.
- `text_token_ids(tokenizer, texts)`: each text as the model expects a document (BOS when
  its tokenizer adds one, the text, EOS once).
- `text_windows(n_tokens, max_length)`: the windows a long document is split into.
- `render_with_spans(tokenizer, messages, tools)`: the rendered text and each assistant
  turn's character span (how `chat_token_masks` finds the loss tokens).
- `answer_token_masks(tokenizer, prompts, answers)`: a preference row's side (prompt
  messages, then the answer's messages) rendered, and which tokens are the answer's.

A conversation is a list of messages, or `{"messages": [...], "tools": [...]}` when the row
defines functions: `tools` goes to the template as it expects (Qwen's renders them in the
system turn). Messages may carry `tool_calls`, `reasoning_content` and `loss_weight`
(`core.datasets` writes them). Loss is on each assistant turn as the template renders it
(its text, its tool calls, its <think> block), except that with `train_on_reasoning` off
the turn's span starts after its `</think>`, and a message with `loss_weight` 0 has none.
Tool results, system and user turns never carry loss.
"""

from __future__ import annotations

from typing import Any

from trainer.shared.errors import BadInput

Conversation = list[dict[str, Any]] | dict[str, Any]
THINK_END = "</think>"


def conversation_parts(conv: Conversation) -> tuple[list[dict[str, Any]], list[Any] | None]:
    """(messages, tools) of a conversation given as a list or as a row with `tools`."""
    if isinstance(conv, dict):
        return conv["messages"], conv.get("tools") or None
    return conv, None


def render_with_spans(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    tools: list[Any] | None = None,
    *,
    train_on_reasoning: bool = True,
) -> tuple[str, list[tuple[int, int]]]:
    """The chat-template text and the character spans of each assistant turn that carries
    loss (see the module docstring)."""
    extra = {"tools": tools} if tools else {}

    def render(msgs: list[dict[str, Any]], gen: bool) -> str:
        return tokenizer.apply_chat_template(
            msgs, tokenize=False, add_generation_prompt=gen, **extra
        )

    full = render(messages, False)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant" or m.get("loss_weight", 1) == 0:
            continue
        prefix = render(messages[:i], True)
        upto = render(messages[: i + 1], False)
        turn = upto[len(prefix) :].rstrip() if upto.startswith(prefix) else ""
        if turn and full.startswith(upto) and len(prefix) >= cursor:
            start, end = len(prefix), len(prefix) + len(turn)
        else:
            found = _find_turn(full, turn, m.get("content") or "", cursor, tokenizer.eos_token)
            if found is None:
                continue
            start, end = found
        if not train_on_reasoning and m.get("reasoning_content"):
            start = _after_reasoning(full, start, end)
        if end > start:
            spans.append((start, end))
            cursor = end
    return full, spans


def _find_turn(
    full: str, turn: str, content: str, cursor: int, eos: str | None
) -> tuple[int, int] | None:
    """Where an assistant turn is in `full` when the template rewrites earlier turns (Qwen3
    drops the reasoning of turns before the last user message): the turn as rendered on its
    own, else what follows its `</think>` (its answer and tool calls), else its content
    plus the end-of-turn token right after it."""
    candidates = [turn]
    if THINK_END in turn:
        candidates.append(turn.split(THINK_END, 1)[1].lstrip("\n "))
    for text in candidates:
        at = full.find(text, cursor) if text else -1
        if at >= 0:
            return at, at + len(text)
    at = full.find(content, cursor) if content else -1
    if at < 0:
        return None
    end = at + len(content)
    if eos and full.startswith(eos, end):
        end += len(eos)
    return at, end


def _after_reasoning(full: str, start: int, end: int) -> int:
    """Where an assistant turn's span starts when its reasoning carries no loss: after its
    `</think>` and the blank that follows it."""
    at = full.find(THINK_END, start, end)
    if at < 0:
        return start
    at += len(THINK_END)
    while at < end and full[at] in "\n ":
        at += 1
    return at


def text_token_ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Each plain text as the model expects a document: the special tokens its tokenizer
    adds (a BOS for Llama-style models, nothing for Qwen), the text, then EOS once."""
    eos = tokenizer.eos_token_id
    out = []
    for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]:
        ids = list(ids)
        if eos is not None and (not ids or ids[-1] != eos):
            ids.append(eos)
        out.append(ids)
    return out


def text_windows(n_tokens: int, max_length: int) -> list[tuple[int, int]]:
    """The [start, end) token spans a document of `n_tokens` is split into: consecutive,
    covering every token, each at most `max_length` long and (when the document has two
    tokens or more, and `max_length` is 3 or more) at least two, so each window has a token
    to predict. One span when the document fits. `core.datasets` counts windows with this."""
    if max_length < 1:
        raise ValueError("max_length must be at least 1 token")
    bounds = list(range(0, n_tokens, max_length)) + [n_tokens]
    if max_length >= 3 and len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        bounds[-2] -= 1  # no one-token tail: the window before it gives up its last token
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _require_chat_tokenizer(tokenizer: Any) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise BadInput("the base model's tokenizer has no fast (Rust) version; BrightRun needs it")
    if not getattr(tokenizer, "chat_template", None):
        raise BadInput(
            "the base model's tokenizer has no chat template",
            "pick an instruct/chat model (e.g. a '-Instruct' variant), or train on a plain-text "
            'dataset ({"text": ...} rows)',
        )


def chat_token_masks(
    tokenizer: Any, conversations: list[Conversation], *, train_on_reasoning: bool = True
) -> list[tuple[list[int], list[bool]]]:
    """Token ids of each rendered conversation, and which of them are assistant tokens (the
    ones that carry loss). `core.datasets` counts a dataset's tokens with this too."""
    _require_chat_tokenizer(tokenizer)
    rendered = [
        render_with_spans(
            tokenizer, *conversation_parts(conv), train_on_reasoning=train_on_reasoning
        )
        for conv in conversations
    ]
    enc = tokenizer(
        [text for text, _ in rendered], add_special_tokens=False, return_offsets_mapping=True
    )
    out = []
    for (_, spans), ids, offsets in zip(
        rendered, enc["input_ids"], enc["offset_mapping"], strict=True
    ):
        mask = [False] * len(ids)
        si = 0
        for t, (start, _end) in enumerate(offsets):
            while si < len(spans) and start >= spans[si][1]:
                si += 1
            if si < len(spans) and spans[si][0] <= start < spans[si][1]:
                mask[t] = True
        out.append((list(ids), mask))
    return out


_PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": "brightrun_probe_fn",
        "description": "probe",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    },
}


def tools_unrenderable_reason(tokenizer: Any) -> str | None:
    """Why this tokenizer's chat template cannot train on tool-calling rows (it drops the
    `tools` it is given, or an assistant's `tool_calls`), or None when it renders both."""
    if not getattr(tokenizer, "chat_template", None):
        return "the base model's tokenizer has no chat template"
    call = {"type": "function", "function": {"name": "brightrun_probe_call", "arguments": {}}}
    msgs = [
        {"role": "user", "content": "probe"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "probe result"},
        {"role": "assistant", "content": "done"},
    ]
    try:
        text = tokenizer.apply_chat_template(msgs, tools=[_PROBE_TOOL], tokenize=False)
    except Exception as e:  # noqa: BLE001 - a template's own error (jinja raises many kinds)
        return f"its chat template fails on tool-calling rows ({type(e).__name__}: {e})"[:300]
    if "brightrun_probe_fn" not in text:
        return "its chat template does not render the function schemas ('tools')"
    if "brightrun_probe_call" not in text:
        return "its chat template does not render an assistant's tool calls"
    return None


def answer_span(
    tokenizer: Any, prompt: list[dict[str, str]], answer: list[dict[str, str]]
) -> tuple[str, int, int]:
    """The prompt + answer conversation rendered, and the answer's [start, end) characters:
    from where the prompt rendered with the generation prompt stops matching, to the last
    non-whitespace character (the end-of-turn token in, the newline after it out)."""

    def render(msgs: list[dict[str, str]], gen: bool) -> str:
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)

    head, full = render(prompt, True), render(prompt + answer, False)
    start = next((i for i, (a, b) in enumerate(zip(head, full, strict=False)) if a != b), len(head))
    return full, min(start, len(full)), len(full.rstrip())


def answer_token_masks(
    tokenizer: Any, prompts: list[list[dict[str, str]]], answers: list[list[dict[str, str]]]
) -> list[tuple[list[int], list[bool]]]:
    """Token ids of each prompt + answer conversation, and which tokens are the answer's
    (preference tuning scores these; see `answer_span`)."""
    _require_chat_tokenizer(tokenizer)
    rendered = [answer_span(tokenizer, p, a) for p, a in zip(prompts, answers, strict=True)]
    enc = tokenizer(
        [text for text, _, _ in rendered], add_special_tokens=False, return_offsets_mapping=True
    )
    out = []
    for (_, start, end), ids, offsets in zip(
        rendered, enc["input_ids"], enc["offset_mapping"], strict=True
    ):
        out.append((list(ids), [start <= a < end for a, _b in offsets]))
    return out
