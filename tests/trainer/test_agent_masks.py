"""Loss masks of tool-calling and reasoning rows, token by token against the rendered
template: the assistant's text, tool calls and (when trained on) reasoning carry loss; tool
results, the tools preamble, system and user turns never do; `loss_weight: 0` carries none."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from trainer import data as D
from trainer.shared.tokens import chat_token_masks, tools_unrenderable_reason

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"place": {"type": "object"}}},
        },
    },
    {"type": "function", "function": {"name": "get_time", "parameters": {}}},
]
ARGS = {"place": {"city": "Paris", "near": [48.8, 2.3]}, "units": "C"}
MESSAGES = [
    {"role": "system", "content": "You help with travel."},
    {"role": "user", "content": "Weather and time in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "reasoning_content": "Two facts, two calls.",
        "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": ARGS}},
            {"type": "function", "function": {"name": "get_time", "arguments": {}}},
        ],
    },
    {"role": "tool", "content": '{"temp": 21}'},
    {"role": "tool", "content": "14:00"},
    {"role": "assistant", "content": "21 C at 14:00.", "reasoning_content": "Both are back."},
    {"role": "user", "content": "Thanks!"},
    {"role": "assistant", "content": "You are welcome.", "loss_weight": 0},
]
ROW = {"messages": MESSAGES, "tools": TOOLS}


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def rendered(tokenizer, row=ROW):
    text = tokenizer.apply_chat_template(row["messages"], tools=row["tools"], tokenize=False)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return text, enc["input_ids"], enc["offset_mapping"]


def expected_mask(tokenizer, reasoning: bool) -> list[bool]:
    """The reference, built independently of the trainer: the template's own
    {% generation %} mask, minus the last (loss_weight 0) answer, minus <think> blocks
    when reasoning is off."""
    gen = tokenizer.apply_chat_template(
        MESSAGES, tools=TOOLS, return_dict=True, return_assistant_tokens_mask=True
    )["assistant_masks"]
    text, ids, offsets = rendered(tokenizer)
    cut = text.rindex("You are welcome.")
    think = [m.span() for m in re.finditer(r"<think>\n.*?\n</think>\n\n", text, re.S)]
    return [
        bool(g) and s < cut and (reasoning or not any(a <= s < b for a, b in think))
        for g, (s, _e) in zip(gen, offsets, strict=True)
    ]


def loss_text(tokenizer, ids, mask) -> str:
    return tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])


def test_tiny_template_renders_tools_calls_results_and_reasoning(tokenizer) -> None:
    text, _, _ = rendered(tokenizer)
    assert '"name": "get_time"' in text.split("<|im_end|>")[0]  # schemas in the system turn
    call = (
        '<tool_call>\n{"name": "get_weather", "arguments": ' + json.dumps(ARGS) + "}\n</tool_call>"
    )
    assert call in text
    assert "<tool_response>\n14:00\n</tool_response>" in text
    assert "<think>\nBoth are back.\n</think>\n\n21 C at 14:00." in text
    assert tools_unrenderable_reason(tokenizer) is None


@pytest.mark.parametrize("reasoning", [True, False])
def test_mask_matches_the_template_token_by_token(tokenizer, reasoning: bool) -> None:
    ((ids, mask),) = chat_token_masks(tokenizer, [ROW], train_on_reasoning=reasoning)
    _, ref_ids, _ = rendered(tokenizer)
    assert ids == ref_ids
    assert mask == expected_mask(tokenizer, reasoning)
    learnt = loss_text(tokenizer, ids, mask)
    calls = (
        '<tool_call>\n{"name": "get_weather", "arguments": '
        + json.dumps(ARGS)
        + '}\n</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
        + "<|im_end|>"
    )
    if reasoning:
        want = (
            "<think>\nTwo facts, two calls.\n</think>\n\n"
            + calls
            + "<think>\nBoth are back.\n</think>\n\n21 C at 14:00.<|im_end|>"
        )
    else:
        want = calls + "21 C at 14:00.<|im_end|>"
    assert learnt == want
    for never in ("14:00\n</tool_response>", "temp", "travel", "Thanks", "welcome", "# Tools"):
        assert never not in learnt


def test_trainer_reads_tool_rows_and_learns_only_the_assistant(tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    plain = {
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    }
    path.write_text(json.dumps(ROW) + "\n" + json.dumps(plain) + "\n")
    rows = D.read_rows(path, "train")
    assert rows[0] == ROW and rows[1] == plain["messages"]
    samples, stats = D.tokenize_rows(tokenizer, rows, max_length=4096, train_on_reasoning=False)
    targets = [t for t in samples[0].targets if t != D.IGNORE]
    assert tokenizer.decode(targets).startswith("<tool_call>")
    assert tokenizer.decode([t for t in samples[1].targets if t != D.IGNORE]) == "Yo<|im_end|>"
    assert stats.rows == 2 and stats.dropped_rows == 0


def test_a_template_without_tools_is_named(tokenizer) -> None:
    import copy

    plain = copy.copy(tokenizer)
    plain.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    reason = tools_unrenderable_reason(plain)
    assert reason is not None and "tools" in reason


def test_a_template_that_drops_earlier_reasoning_still_masks_each_turn(tokenizer) -> None:
    """Like Qwen3's template: reasoning is rendered only after the last user message, so
    earlier turns render differently on their own; their calls and answers still carry loss
    (matching the template's own generation mask), their dropped reasoning cannot."""
    import copy

    from trainer.shared.tiny import CHAT_TEMPLATE

    qwen3_like = copy.copy(tokenizer)
    last_user = (
        "{%- set ns = namespace(last=-1) %}"
        "{%- for m in messages %}{%- if m['role'] == 'user' %}"
        "{%- set ns.last = loop.index0 %}{%- endif %}{%- endfor %}"
    )
    marker = "{%- if message.get('reasoning_content') %}"
    assert marker in CHAT_TEMPLATE
    qwen3_like.chat_template = last_user + CHAT_TEMPLATE.replace(
        marker, "{%- if message.get('reasoning_content') and loop.index0 > ns.last %}"
    )
    messages = [m for m in MESSAGES if m.get("loss_weight", 1)] + [
        {"role": "user", "content": "And tomorrow?"},
        {"role": "assistant", "content": "Rain.", "reasoning_content": "Guessing."},
    ]
    row = {"messages": messages, "tools": TOOLS}
    ((ids, mask),) = chat_token_masks(qwen3_like, [row])
    gen = qwen3_like.apply_chat_template(
        messages, tools=TOOLS, return_dict=True, return_assistant_tokens_mask=True
    )
    assert ids == gen["input_ids"] and mask == [bool(g) for g in gen["assistant_masks"]]
    learnt = loss_text(qwen3_like, ids, mask)
    assert "Two facts" not in learnt and "Both are back" not in learnt  # dropped by the template
    assert learnt.startswith("<tool_call>") and "21 C at 14:00.<|im_end|>" in learnt
    assert learnt.endswith("<think>\nGuessing.\n</think>\n\nRain.<|im_end|>")
