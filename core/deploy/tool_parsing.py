"""vLLM's tool-call and reasoning parsers for the served base model.

Qwen models write tool calls as `<tool_call>{"name", "arguments"}</tool_call>` (the hermes
format) and Qwen3 models think in `<think>` blocks; vLLM turns them into OpenAI
`tool_calls` and `reasoning_content` only when started with `--enable-auto-tool-choice
--tool-call-parser hermes` (and `--reasoning-parser qwen3`). RunPod's worker-vllm reads the
same settings from ENABLE_AUTO_TOOL_CHOICE, TOOL_CALL_PARSER and REASONING_PARSER.
BrightRun's tiny demo model (`brightrun/tiny-chat`, served from a `tiny-chat` folder) is a
Qwen2 model that writes hermes calls and never thinks: the tool-call parser only. Other
families get nothing here (their parser differs; set it by hand).
"""

from __future__ import annotations

from core.planner.catalog import TINY_DIR_NAME


def parsers_for(model: str) -> dict[str, str]:
    """{'tool_call_parser': ..., 'reasoning_parser'?: ...} for `model`, {} when unknown."""
    name = model.lower().rsplit("/", 1)[-1]
    if name == TINY_DIR_NAME:
        return {"tool_call_parser": "hermes"}
    if not name.startswith("qwen"):
        return {}
    out = {"tool_call_parser": "hermes"}
    if name.startswith("qwen3"):
        out["reasoning_parser"] = "qwen3"
    return out


def worker_vllm_env(model: str) -> dict[str, str]:
    """The worker-vllm environment that turns the parsers on for `model`."""
    parsers = parsers_for(model)
    if not parsers:
        return {}
    env = {"ENABLE_AUTO_TOOL_CHOICE": "true", "TOOL_CALL_PARSER": parsers["tool_call_parser"]}
    if "reasoning_parser" in parsers:
        env["REASONING_PARSER"] = parsers["reasoning_parser"]
    return env


def vllm_flags(model: str) -> list[str]:
    """The same as `vllm serve` flags."""
    parsers = parsers_for(model)
    if not parsers:
        return []
    flags = ["--enable-auto-tool-choice", "--tool-call-parser", parsers["tool_call_parser"]]
    if "reasoning_parser" in parsers:
        flags += ["--reasoning-parser", parsers["reasoning_parser"]]
    return flags
