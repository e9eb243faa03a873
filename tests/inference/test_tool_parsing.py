"""Reading tool calls and reasoning out of generated text (the local server, as vLLM's
hermes and qwen3 parsers do), and the tool-calling scores of the evaluation."""

from __future__ import annotations

import json

import pytest

from core.clients.inference import parse_tools_json, tool_result
from core.errors import InvalidInput
from core.tool_scores import score_calls, tool_cases
from local.inference.protocol import ChatRequest
from local.inference.tool_calls import assistant_message, parse_tool_calls, template_kwargs

NESTED = {"place": {"city": "Paris", "near": [48.8, 2.3]}, "units": "C"}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]


def request(**extra) -> ChatRequest:
    return ChatRequest(model="m", messages=[{"role": "user", "content": "q"}], **extra)


def test_parallel_calls_with_nested_arguments_become_openai_tool_calls() -> None:
    text = (
        "Checking both.\n<tool_call>\n"
        + json.dumps({"name": "get_weather", "arguments": NESTED})
        + '\n</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
    )
    content, calls = parse_tool_calls(text)
    assert content == "Checking both."
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["function"]["arguments"]) == NESTED  # JSON text, as OpenAI's
    assert len({c["id"] for c in calls}) == 2 and all(c["type"] == "function" for c in calls)


def test_a_broken_block_stays_text_and_reasoning_is_split_off() -> None:
    broken = '<tool_call>\n{"name": "get_weather", "arguments": {\n</tool_call>'
    msg, called = assistant_message("<think>\nhmm\n</think>\n\n" + broken, request(tools=TOOLS))
    assert not called and msg["content"] == broken and msg["reasoning_content"] == "hmm"
    # Without `tools` in the request, calls are not parsed (as vLLM does).
    ok = '<tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call>'
    assert assistant_message(ok, request())[0] == {"role": "assistant", "content": ok}
    msg, called = assistant_message(ok, request(tools=TOOLS))
    assert (
        called and msg["content"] is None and msg["tool_calls"][0]["function"]["arguments"] == "{}"
    )


def test_tools_and_enable_thinking_reach_the_template() -> None:
    kwargs = template_kwargs(request(tools=TOOLS, chat_template_kwargs={"enable_thinking": False}))
    assert kwargs == {"tools": TOOLS, "enable_thinking": False}


def test_pasted_tool_schemas_and_results_are_checked() -> None:
    bare = json.dumps({"name": "get_time", "parameters": {}})
    assert parse_tools_json(bare) == [{"type": "function", "function": json.loads(bare)}]
    with pytest.raises(InvalidInput, match="not valid JSON"):
        parse_tools_json("[{name: 1}]")
    with pytest.raises(InvalidInput, match=r"tools\[0\] must be a function schema"):
        parse_tools_json('[{"description": "no name"}]')
    with pytest.raises(InvalidInput, match="paste the tool's result"):
        tool_result("call-1", "  ")


def test_scores_compare_parsed_arguments_and_give_partial_credit() -> None:
    want = [("get_weather", NESTED), ("get_time", {})]
    same_json_other_order = [("get_time", {}), ("get_weather", json.loads(json.dumps(NESTED)))]
    assert score_calls(same_json_other_order, want) == {
        "parseable": 1.0,
        "name_accuracy": 1.0,
        "exact_args": 1.0,
        "arg_f1": 1.0,
    }
    wrong_city = {**NESTED, "place": {**NESTED["place"], "city": "Rome"}}
    partial = score_calls([("get_weather", wrong_city), ("get_time", {})], want)
    assert partial["name_accuracy"] == 1.0 and partial["exact_args"] == 0.0
    assert 0.5 < partial["arg_f1"] < 1.0
    nothing = score_calls([], want)
    assert nothing == {"parseable": 0.0, "name_accuracy": 0.0, "exact_args": 0.0, "arg_f1": 0.0}
    unparsed = score_calls([("get_weather", None)], [("get_weather", NESTED)])
    assert unparsed["parseable"] == 0.0 and unparsed["arg_f1"] == 0.0


def test_tool_cases_send_what_comes_before_the_first_call() -> None:
    row = {
        "tools": TOOLS,
        "messages": [
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "get_weather", "arguments": NESTED}}],
            },
            {"role": "tool", "content": "sunny"},
            {"role": "assistant", "content": "Sunny."},
        ],
    }
    plain = {
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    }
    (case,) = tool_cases([row, plain])
    assert case.messages == ({"role": "user", "content": "Weather?"},)
    assert case.tools == tuple(TOOLS) and case.expected == (("get_weather", NESTED),)


def test_vllm_parses_tool_calls_for_qwen_and_reasoning_for_qwen3() -> None:
    from core.deploy.tool_parsing import vllm_flags, worker_vllm_env

    assert vllm_flags("Qwen/Qwen2.5-7B-Instruct") == [
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "hermes",
    ]
    assert worker_vllm_env("Qwen/Qwen3-8B")["REASONING_PARSER"] == "qwen3"
    assert worker_vllm_env("meta-llama/Llama-3.1-8B-Instruct") == {}
