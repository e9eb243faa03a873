"""Whether the base model's chat template can train on a dataset's tool calls.

A dataset whose rows define tools or call them (its stored report's `agent` counts) is
rendered with the model's own chat template; a template that drops the function schemas
or the assistant's tool calls would train on rows missing what they are about, so the
launch is refused at plan time with the reason (`trainer.shared.tokens`
`tools_unrenderable_reason`), not at step 0 on the GPU. A tokenizer that cannot be loaded
here (not cached, no hub) leaves a note; the worker checks again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.datasets import load_tokenizer
from core.errors import InvalidInput
from trainer.shared.tokens import tools_unrenderable_reason


def uses_tools(dataset: Any) -> bool:
    agent = (getattr(dataset, "stats", None) or {}).get("agent") or {}
    return bool(agent.get("rows_with_tools") or agent.get("rows_with_tool_calls"))


def template_problem(model: str, dataset: Any, models_dir: Path) -> tuple[InvalidInput | None, str]:
    """(the refusal, or None; a note when the template could not be checked)."""
    if dataset is None or not uses_tools(dataset):
        return None, ""
    choice = load_tokenizer(model, models_dir)
    if choice.tokenizer is None:
        return None, f"the chat template was not checked for tool calls: {choice.reason}"
    reason = tools_unrenderable_reason(choice.tokenizer)
    if reason is None:
        return None, ""
    return (
        InvalidInput(
            f"dataset {dataset.name!r} has tool calls, but {model!r} cannot train on them: "
            f"{reason}; pick a model whose chat template renders tools (Qwen2.5 or Qwen3 "
            "instruct models do)"
        ),
        "",
    )
