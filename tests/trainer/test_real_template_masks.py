"""Loss masks under the real Qwen chat templates (Qwen2.5, Qwen3, Qwen3-Instruct-2507,
Qwen3.5 with and without thinking, as TRL ships them), token by token, under both EOS
conventions (EOS = <|im_end|> and EOS = <|endoftext|>).

The tokenizer is the tiny byte-level BPE one built on the spot, with Qwen's special tokens
and tags added, and each real template swapped in. The reference is built apart from the
trainer: the k-th assistant turn is the text from the k-th `<|im_start|>assistant` header to
the `<|im_end|>` after it, and the loss of a turn is written out below as the exact text the
assistant produces, ending at that `<|im_end|>`. So loss that lands on a user's words, on a
reasoning block instead of the answer, or misses the end-of-turn token, fails."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from trainer import data as D
from trainer.shared.errors import BadInput
from trainer.shared.tokens import (
    TemplateRefused,
    chat_row_tokens,
    chat_token_masks,
    render_with_spans,
)

TEMPLATES = Path(__file__).resolve().parents[2] / (
    ".venv/lib/python3.11/site-packages/trl/chat_templates"
)
NAMES = ["qwen2_5", "qwen3", "qwen3_instruct_2507", "qwen3_5_think", "qwen3_5_nothink"]
HEADER, END = "<|im_start|>assistant\n", "<|im_end|>"
TAGS = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"place": {"type": "string"}}},
        },
    },
    {"type": "function", "function": {"name": "get_time", "parameters": {}}},
]
CALLS = [
    {"type": "function", "function": {"name": "get_weather", "arguments": {"place": "Paris"}}},
    {"type": "function", "function": {"name": "get_time", "arguments": {}}},
]
JSON_CALLS = (
    '<tool_call>\n{"name": "get_weather", "arguments": {"place": "Paris"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
)
XML_CALLS = (
    "<tool_call>\n<function=get_weather>\n<parameter=place>\nParis\n</parameter>\n</function>\n"
    "</tool_call>\n<tool_call>\n<function=get_time>\n</function>\n</tool_call>"
)
CALLS_TEXT = {n: XML_CALLS if n.startswith("qwen3_5") else JSON_CALLS for n in NAMES}


def think(reasoning: str, answer: str, name: str) -> str:
    """A turn's text after the generation prompt when its reasoning is rendered: Qwen3's
    prompt is the bare header (the model writes <think>), Qwen3.5's opens the block."""
    head = "" if name.startswith("qwen3_5") else "<think>\n"
    return f"{head}{reasoning}\n</think>\n\n{answer}"


def agent_rows() -> dict[str, dict[str, Any]]:
    """Tool calls in parallel, their results, reasoning in several turns; `one_query` has
    one user question (every turn after it, so Qwen3 and Qwen3.5 render all reasoning),
    `follow_up` a second one (they drop the reasoning of turns before it)."""
    start = [
        {"role": "system", "content": "You help with travel."},
        {"role": "user", "content": "Weather and time in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "Two facts.",
            "tool_calls": CALLS,
        },
        {"role": "tool", "content": '{"temp": 21}'},
        {"role": "tool", "content": "14:00"},
        {"role": "assistant", "content": "21 C at 14:00.", "reasoning_content": "Both back."},
    ]
    follow = [
        {"role": "user", "content": "And tomorrow?"},
        {"role": "assistant", "content": "Rain.", "reasoning_content": "Guess."},
    ]
    return {
        "one_query": {"messages": start, "tools": TOOLS},
        "follow_up": {"messages": start + follow, "tools": TOOLS},
    }


ECHO = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Repeat after me: I love Paris."},
    {"role": "assistant", "content": "I love Paris."},
    {"role": "user", "content": "Now: I love Rome."},
    {"role": "assistant", "content": "I love Rome."},
    {"role": "user", "content": "Once more: I love Paris."},
    {"role": "assistant", "content": "I love Paris.", "reasoning_content": "I love Paris."},
]
IN_REASONING = [
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris.", "reasoning_content": "It is Paris. Say Paris."},
]


def expected(name: str, case: str) -> tuple[list[str], int]:
    """The loss text of each assistant turn with reasoning trained on, and how many turns'
    reasoning the template drops."""
    calls = CALLS_TEXT[name]
    qwen3ish = name in ("qwen3", "qwen3_5_think", "qwen3_5_nothink")
    if case == "one_query":
        if not qwen3ish:
            return [calls + END, "21 C at 14:00." + END], 2
        return [
            think("Two facts.", calls, name) + END,
            think("Both back.", "21 C at 14:00.", name) + END,
        ], 0
    if case == "follow_up":  # Qwen3/3.5 keep reasoning only after the last user message
        last = think("Guess.", "Rain.", name) if qwen3ish else "Rain."
        return [calls + END, "21 C at 14:00." + END, last + END], 2 if qwen3ish else 3
    if case == "echo":
        last = think("I love Paris.", "I love Paris.", name) if qwen3ish else "I love Paris."
        return ["I love Paris." + END, "I love Rome." + END, last + END], 0 if qwen3ish else 1
    assert case == "in_reasoning"
    if not qwen3ish:
        return ["Paris." + END], 1
    return [think("It is Paris. Say Paris.", "Paris.", name) + END], 0


def rows() -> dict[str, Any]:
    return {**agent_rows(), "echo": ECHO, "in_reasoning": IN_REASONING}


def without_reasoning(loss: str) -> str:
    return re.sub(r"^(<think>\n)?.*?\n</think>\n\n", "", loss, count=1, flags=re.S)


@pytest.fixture(scope="module")
def base_tokenizer():
    from trainer.shared.tiny import _train_tokenizer

    tok = _train_tokenizer(1024)
    tok.add_tokens(TAGS)
    return tok


def real(base_tokenizer, name: str, eos: str):
    tok = copy.deepcopy(base_tokenizer)
    tok.chat_template = (TEMPLATES / f"{name}.jinja").read_text()
    tok.eos_token = eos
    return tok


def reference_mask(tok, row: Any, loss: list[str]) -> tuple[list[int], list[bool]]:
    """The rendered ids and the mask the loss texts give, placed by position: turn k's loss
    ends at the first <|im_end|> after the k-th assistant header."""
    messages, tools = (row["messages"], row["tools"]) if isinstance(row, dict) else (row, None)
    text = tok.apply_chat_template(messages, tools=tools, tokenize=False)
    heads = [m.end() for m in re.finditer(re.escape(HEADER), text)]
    assert len(heads) == len(loss)  # every assistant turn renders its header
    spans = []
    for head, want in zip(heads, loss, strict=True):
        end = text.index(END, head) + len(END)
        assert text[end - len(want) : end] == want, (text[head:end], want)
        spans.append((end - len(want), end))
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [any(a <= s < b for a, b in spans) for s, _e in enc["offset_mapping"]]
    return enc["input_ids"], mask


def runs(tok, ids: list[int], mask: list[bool]) -> list[str]:
    out, cur = [], []
    for t, m in zip(ids, mask, strict=True):
        if m:
            cur.append(t)
        elif cur:
            out, cur = [*out, tok.decode(cur)], []
    return out + ([tok.decode(cur)] if cur else [])


@pytest.mark.parametrize("eos", ["<|im_end|>", "<|endoftext|>"])
@pytest.mark.parametrize("name", NAMES)
def test_loss_is_exactly_what_the_assistant_produces(base_tokenizer, name: str, eos: str) -> None:
    tok = real(base_tokenizer, name, eos)
    for case, row in rows().items():
        loss, dropped = expected(name, case)
        for reasoning in (True, False):
            want = loss if reasoning else [without_reasoning(x) for x in loss]
            ref_ids, ref_mask = reference_mask(tok, row, want)
            ((ids, mask),) = chat_token_masks(tok, [row], train_on_reasoning=reasoning)
            assert ids == ref_ids, (name, case)
            assert mask == ref_mask, (name, case, reasoning, runs(tok, ids, mask))
            assert runs(tok, ids, mask) == want
        counted = chat_row_tokens(tok, row)
        assert counted.reasoning_dropped == dropped, (name, case)
        assert counted.mask == chat_token_masks(tok, [row])[0][1]
        assert counted.answer_mask == chat_token_masks(tok, [row], train_on_reasoning=False)[0][1]


@pytest.mark.parametrize("name", NAMES)
def test_the_users_echoed_words_never_carry_loss(base_tokenizer, name: str) -> None:
    tok = real(base_tokenizer, name, "<|im_end|>")
    text, spans, _ = render_with_spans(tok, ECHO)
    users = [m.span() for m in re.finditer(r"<\|im_start\|>user\n.*?<\|im_end\|>", text, re.S)]
    assert len(users) == 3 and len(spans) == 3
    assert not any(a < ue and us < b for a, b in spans for us, ue in users)
    assert all(text[b - len(END) : b] == END for _a, b in spans)


def test_reasoning_turns_count_as_reasoning_tokens_without_thinking(base_tokenizer) -> None:
    """Qwen3.5 without thinking: the reasoning of a turn after the last user message carries
    loss (the dataset's reasoning-token count is not 0), and tool calls after it too."""
    tok = real(base_tokenizer, "qwen3_5_nothink", "<|endoftext|>")
    row = agent_rows()["one_query"]
    counted = chat_row_tokens(tok, row)
    reasoning = tok.decode([t for t, m, a in zip(*counted[:3], strict=True) if m and not a])
    assert "Two facts." in reasoning and "Both back." in reasoning
    answer = tok.decode([t for t, a in zip(counted.ids, counted.answer_mask, strict=True) if a])
    assert answer == XML_CALLS + END + "21 C at 14:00." + END


@pytest.mark.parametrize(
    ("messages", "words"),
    [
        ([{"role": "system", "content": "S"}, {"role": "assistant", "content": "A"}], "No user"),
        (
            [
                {"role": "user", "content": "U"},
                {"role": "system", "content": "S"},
                {"role": "assistant", "content": "A"},
            ],
            "System message must be at the beginning",
        ),
    ],
)
def test_a_row_the_template_refuses_is_named(base_tokenizer, messages, words: str) -> None:
    tok = real(base_tokenizer, "qwen3_5_think", "<|im_end|>")
    ok = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    with pytest.raises(TemplateRefused) as refused:
        chat_token_masks(tok, [ok, messages])
    assert refused.value.index == 1 and words in refused.value.message
    with pytest.raises(BadInput, match=rf"^row 3: .*{words}"):
        D.tokenize_rows(tok, ["a plain text row", ok, messages], max_length=256)


def test_a_template_that_rewrites_words_is_refused_not_guessed(base_tokenizer) -> None:
    tok = real(base_tokenizer, "qwen3", "<|im_end|>")
    tok.chat_template = "{% for m in messages %}{{ m['content'] | length }}|{% endfor %}"
    with pytest.raises(TemplateRefused, match="rewrites"):
        chat_token_masks(
            tok, [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]]
        )


def test_tool_arguments_given_as_json_text_render_the_same(base_tokenizer) -> None:
    tok = real(base_tokenizer, "qwen3", "<|im_end|>")
    row = agent_rows()["one_query"]
    as_text = copy.deepcopy(row)
    for call in as_text["messages"][2]["tool_calls"]:
        call["function"]["arguments"] = json.dumps(call["function"]["arguments"])
    assert chat_token_masks(tok, [as_text]) == chat_token_masks(tok, [row])
