"""How the trainer turns a row into tokens, shared with the controller's dataset statistics.

`core.datasets` counts a dataset's tokens with these very functions, so its statistics
(tokens per row, loss-bearing share, rows truncated or split at `max_length`) are what the
trainer will see. Torch-free; a tokenizer is any transformers (fast) tokenizer.

- `chat_token_masks(tokenizer, conversations)`: each conversation rendered with the chat
  template, its token ids, and which tokens are assistant tokens (they carry the loss).
  Raises `BadInput` when the tokenizer has no fast version or no chat template, and
  `TemplateRefused` (a `BadInput` with the conversation's `index`) when the template raises
  on a conversation (Qwen3.5's "No user query found in messages.") or rewrites its text.
- `chat_row_tokens(tokenizer, conversation)`: one conversation's ids, its loss mask with and
  without reasoning, and how many assistant turns' reasoning the template dropped.
- `text_token_ids(tokenizer, texts)`: each text as the model expects a document (BOS when
  its tokenizer adds one, the text, EOS once).
- `text_windows(n_tokens, max_length)`: the windows a long document is split into.
- `render_with_spans(tokenizer, messages, tools)`: the rendered text, each assistant turn's
  character span, and the turns whose reasoning the template dropped (`Rendered`).
- `answer_token_masks(tokenizer, prompts, answers)`: a preference row's side (prompt
  messages, then the answer's messages) rendered, and which tokens are the answer's.

A conversation is a list of messages, or `{"messages": [...], "tools": [...]}` when the row
defines functions: `tools` goes to the template as it expects (Qwen's renders them in the
system turn). Messages may carry `tool_calls`, `reasoning_content` and `loss_weight`
(`core.datasets` writes them). Loss is on what the assistant produces in each of its turns
as the template renders the whole conversation: everything after the generation prompt
(`<|im_start|>assistant\\n`, or as much of it as the turn starts with: Qwen3.5's prompt
ends in an empty or open <think> block) up to and including the end-of-turn text
(`<|im_end|>`, whatever the tokenizer's EOS is): its <think> block, text and tool calls.
With `train_on_reasoning` off a turn's span starts after its `</think>` and the blank after
it; a message with `loss_weight` 0 has none. Tool results, system and user turns never
carry loss. A template may drop reasoning (Qwen2.5 and Qwen3-Instruct-2507 never render it,
Qwen3 and Qwen3.5 only after the last user message): that reasoning carries no loss, and
`Rendered.reasoning_dropped` counts those turns so the dataset report can say so.

How turns are found: the conversation is rendered a second time with invisible markers
(private-use characters) around every message's content, every assistant's reasoning and
tool-call names. With the markers removed that text must equal the plain rendering (else
`TemplateRefused`), and the markers give each field's position. A turn starts after the
generation prompt's text found right before its first field (never before the fields of an
earlier message), and ends at the first end-of-turn text after its last field. No turn is
found by searching for its words, so an answer that repeats the user's words, or an answer
that also appears in its own reasoning, cannot take the loss elsewhere.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from trainer.shared.errors import BadInput

Conversation = list[dict[str, Any]] | dict[str, Any]
THINK_END = "</think>"
_MARK0 = 0xF0000  # Supplementary Private Use Area-A: two markers (open, close) per field
_MARK_END = 0xFFFFE


class TemplateRefused(BadInput):
    """The chat template raised on a conversation, or rewrote its text so that its turns
    cannot be located. `index` is the conversation's position in the list given to
    `chat_token_masks` (None for a single conversation)."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(
            message,
            "fix the row so the model's chat template accepts it (Qwen3.5's needs a user "
            "message and the system message first), or drop the row",
        )
        self.index = index


class Rendered(NamedTuple):
    text: str
    spans: list[tuple[int, int]]  # characters that carry loss, one span per assistant turn
    reasoning_dropped: int  # assistant turns whose `reasoning_content` was not rendered


class ChatTokens(NamedTuple):
    ids: list[int]
    mask: list[bool]  # loss tokens, reasoning included
    answer_mask: list[bool]  # loss tokens with "train on reasoning" off
    reasoning_dropped: int


def conversation_parts(conv: Conversation) -> tuple[list[dict[str, Any]], list[Any] | None]:
    """(messages, tools) of a conversation given as a list or as a row with `tools`."""
    if isinstance(conv, dict):
        return conv["messages"], conv.get("tools") or None
    return conv, None


def _render(tokenizer: Any, messages: list[dict[str, Any]], tools: Any, gen: bool = False) -> str:
    """The template's text; `TemplateRefused` with the template's own words when it raises."""
    from jinja2 import TemplateError

    extra = {"tools": tools} if tools else {}
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=gen, **extra
        )
    except (TemplateError, TypeError, ValueError, KeyError) as e:
        raise TemplateRefused(f"the chat template refuses this row: {e}") from e


_TURN_TEXT: dict[tuple[str, str | None, str | None], tuple[str, str]] = {}


def _turn_text(tokenizer: Any) -> tuple[str, str]:
    """(generation prompt, end-of-turn text) of the tokenizer's template, from a one-user
    conversation: what `add_generation_prompt` appends (`<|im_start|>assistant\n`), and what
    closes an assistant turn after its content (`<|im_end|>`)."""
    key = (tokenizer.chat_template, tokenizer.bos_token, tokenizer.eos_token)
    if key not in _TURN_TEXT:
        user = [{"role": "user", "content": "hi"}]
        base, prompt = _render(tokenizer, user, None), _render(tokenizer, user, None, True)
        same = next(
            (i for i, (a, b) in enumerate(zip(base, prompt, strict=False)) if a != b), len(base)
        )
        sentinel = chr(_MARK0)
        turn = _render(tokenizer, [*user, {"role": "assistant", "content": sentinel}], None)
        end = turn[turn.find(sentinel) + 1 :].rstrip() if sentinel in turn else ""
        _TURN_TEXT[key] = (prompt[same:], end)
    return _TURN_TEXT[key]


def _wrap(value: Any, entry: int) -> Any:
    """`value` with markers around its words (inside its leading and trailing blanks, so a
    template that strips or trims it renders the same text); a value without words, or one
    holding marker characters already, as it is."""
    if not isinstance(value, str) or any(_MARK0 <= ord(c) <= _MARK_END for c in value):
        return value
    core = value.strip()
    if not core:
        return value
    lead = value[: len(value) - len(value.lstrip())]
    trail = value[len(value.rstrip()) :]
    return lead + chr(_MARK0 + 2 * entry) + core + chr(_MARK0 + 2 * entry + 1) + trail


def _marked(
    messages: list[dict[str, Any]], roles: set[str]
) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    """Copies of the messages with markers around the content of those in `roles`, and each
    assistant's reasoning and tool-call names; (message index, field) of each marker pair."""
    owners: list[tuple[int, str]] = []

    def wrap(value: Any, j: int, kind: str) -> Any:
        owners.append((j, kind))
        return _wrap(value, len(owners) - 1)

    out = []
    for j, m in enumerate(messages):
        m = dict(m)
        if m["role"] in roles and "content" in m:
            m["content"] = wrap(m["content"], j, "content")
        if m["role"] == "assistant":
            if "reasoning_content" in m:
                m["reasoning_content"] = wrap(m["reasoning_content"], j, "reasoning")
            if m.get("tool_calls"):
                m["tool_calls"] = [
                    _mark_call(c, lambda v, j=j: wrap(v, j, "call")) for c in m["tool_calls"]
                ]
        out.append(m)
    return out, owners


def _mark_call(call: Any, wrap: Any) -> Any:
    if not isinstance(call, dict):
        return call
    if isinstance(call.get("function"), dict):
        return {
            **call,
            "function": {**call["function"], "name": wrap(call["function"].get("name"))},
        }
    return {**call, "name": wrap(call.get("name"))} if "name" in call else call


def _unmark(text: str) -> tuple[str, dict[int, list[int]]]:
    """The text without markers, and each marked field's [open, close] positions in it."""
    out: list[str] = []
    at: dict[int, list[int]] = {}
    n = 0
    for piece_start, c in enumerate(text):
        o = ord(c)
        if _MARK0 <= o <= _MARK_END:
            at.setdefault((o - _MARK0) // 2, []).append(piece_start - n)
            n += 1
        else:
            out.append(c)
    return "".join(out), at


def _field_positions(
    tokenizer: Any, messages: list[dict[str, Any]], tools: Any, full: str
) -> tuple[dict[int, list[tuple[int, int]]], dict[int, tuple[int, int]]]:
    """Where each message's marked fields are in `full` ({message: [(start, end)...]}) and
    where each assistant's reasoning is ({message: (start, end)}); `TemplateRefused` when
    the marked rendering is not `full` once its markers are removed."""
    for roles in ({"system", "user", "tool", "assistant"}, {"assistant"}):
        marked, owners = _marked(messages, roles)
        text, at = _unmark(_render(tokenizer, marked, tools))
        if text == full:
            break
    else:
        raise TemplateRefused(
            "the chat template rewrites this row's text (it reads its messages' words, not "
            "only renders them), so its assistant turns cannot be located"
        )
    fields: dict[int, list[tuple[int, int]]] = {}
    reasoning: dict[int, tuple[int, int]] = {}
    for entry, pos in at.items():
        if entry >= len(owners) or len(pos) != 2:
            continue  # a field the template cut through (e.g. content split at </think>)
        j, kind = owners[entry]
        fields.setdefault(j, []).append((pos[0], pos[1]))
        if kind == "reasoning":
            reasoning[j] = (pos[0], pos[1])
    return fields, reasoning


def _has_words(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def render_with_spans(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    tools: list[Any] | None = None,
    *,
    train_on_reasoning: bool = True,
) -> Rendered:
    """The chat-template text, the character spans that carry loss (see the module
    docstring) and how many turns' reasoning the template dropped."""
    full, turns, dropped = _turns(tokenizer, messages, tools)
    pick = 0 if train_on_reasoning else 1
    return Rendered(full, [(t[pick], t[2]) for t in turns if t[2] > t[pick]], dropped)


def _turns(
    tokenizer: Any, messages: list[dict[str, Any]], tools: list[Any] | None
) -> tuple[str, list[tuple[int, int, int]], int]:
    """The rendered text; (start, answer start, end) of each assistant turn that carries
    loss, the answer start being where its reasoning stops; the turns (loss-bearing) whose
    reasoning the template did not render."""
    full = _render(tokenizer, messages, tools)
    prompt, end_of_turn = _turn_text(tokenizer)
    fields, reasoning = _field_positions(tokenizer, messages, tools, full)
    turns: list[tuple[int, int, int]] = []
    dropped = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant" or m.get("loss_weight", 1) == 0:
            continue
        dropped += _has_words(m.get("reasoning_content")) and i not in reasoning
        lo = max((e for j, fs in fields.items() if j < i for _s, e in fs), default=0)
        hi = min((s for j, fs in fields.items() if j > i for s, _e in fs), default=len(full))
        own = sorted(fields.get(i, []))
        first = own[0][0] if own else hi
        start = _turn_start(full, prompt, lo, first)
        if start is None and not own:
            continue  # nothing of this turn is rendered
        start = first if start is None else start
        last = max(e for _s, e in own) if own else start
        at = full.find(end_of_turn, last, hi) if end_of_turn else -1
        end = at + len(end_of_turn) if at >= 0 else last
        answer = start
        if i in reasoning:
            answer = max(start, _after_reasoning(full, reasoning[i][1], end, own))
        if end > start:
            turns.append((start, answer, end))
    return full, turns, dropped


def _turn_start(full: str, prompt: str, lo: int, hi: int) -> int | None:
    """Where the assistant's own text starts in `full[lo:hi]` (the template's text between
    the previous message's fields and this turn's first field): after the last occurrence
    of the generation prompt, or of its longest beginning made of whole lines that is there
    (a turn rendered in context may lack the <think> block the prompt opens); its first line
    at least."""
    if not prompt:
        return None
    lines = sorted({len(prompt)} | {i + 1 for i, c in enumerate(prompt) if c == "\n"})
    region = full[lo:hi]
    for k in reversed(lines):
        at = region.rfind(prompt[:k])
        if at >= 0:
            return lo + at + k
    return None


def _after_reasoning(full: str, r_end: int, end: int, own: list[tuple[int, int]]) -> int:
    """Where a turn's answer starts when its reasoning (ending at `r_end`) carries no loss:
    after the `</think>` that follows it and the blank after that, never past the turn's
    next field."""
    nxt = min((s for s, _e in own if s >= r_end), default=end)
    at = full.find(THINK_END, r_end, nxt)
    if at < 0:
        return nxt
    at += len(THINK_END)
    while at < nxt and full[at] in "\n ":
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
    ones that carry loss). `core.datasets` counts a dataset's tokens with this too.
    `TemplateRefused` names the first conversation the template refuses by its `index`."""
    _require_chat_tokenizer(tokenizer)
    rendered = []
    for n, conv in enumerate(conversations):
        try:
            rendered.append(
                render_with_spans(
                    tokenizer, *conversation_parts(conv), train_on_reasoning=train_on_reasoning
                )
            )
        except TemplateRefused as e:
            raise TemplateRefused(e.message, n) from e
    enc = tokenizer(
        [r.text for r in rendered], add_special_tokens=False, return_offsets_mapping=True
    )
    return [
        (list(ids), _span_mask(offsets, r.spans))
        for r, ids, offsets in zip(rendered, enc["input_ids"], enc["offset_mapping"], strict=True)
    ]


def chat_row_tokens(tokenizer: Any, conv: Conversation) -> ChatTokens:
    """One conversation's token ids, its loss mask with and without reasoning, and how many
    of its turns' reasoning the template dropped (one rendering for all of them)."""
    _require_chat_tokenizer(tokenizer)
    full, turns, dropped = _turns(tokenizer, *conversation_parts(conv))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    return ChatTokens(
        list(enc["input_ids"]),
        _span_mask(offsets, [(a, e) for a, _b, e in turns if e > a]),
        _span_mask(offsets, [(b, e) for _a, b, e in turns if e > b]),
        dropped,
    )


def _span_mask(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[bool]:
    """Which tokens start inside one of the (sorted, disjoint) character spans."""
    mask = [False] * len(offsets)
    si = 0
    for t, (start, _end) in enumerate(offsets):
        while si < len(spans) and start >= spans[si][1]:
            si += 1
        if si < len(spans) and spans[si][0] <= start < spans[si][1]:
            mask[t] = True
    return mask


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
