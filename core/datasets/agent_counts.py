"""Tool and reasoning counts over a dataset's normalised rows (`core.datasets.agent`'s
form): the report's `agent` section."""

from __future__ import annotations

from typing import Any


class AgentCounts:
    """Tool and reasoning counts over normalised rows (a report's `agent`)."""

    def __init__(self) -> None:
        self.rows = self.with_tools = self.with_calls = self.calls = 0
        self.parallel = self.with_reasoning = self.tool_results = 0

    def add(self, row: dict[str, Any]) -> None:
        self.rows += 1
        msgs = row.get("messages")
        if not msgs:
            return
        if row.get("tools"):
            self.with_tools += 1
        calls = most = results = 0
        reasoning = False
        for m in msgs:
            if len(m) == 2:  # {role, content}: nothing to count (the common case)
                continue
            n = len(m.get("tool_calls") or ())
            calls, most = calls + n, max(most, n)
            reasoning = reasoning or "reasoning_content" in m
            results += m["role"] == "tool"
        self.calls += calls
        self.with_calls += calls > 0
        self.parallel += most > 1
        self.with_reasoning += reasoning
        self.tool_results += results

    def result(self) -> dict[str, Any]:
        return {
            "rows_with_tools": self.with_tools,
            "rows_with_tool_calls": self.with_calls,
            "rows_with_parallel_calls": self.parallel,
            "tool_calls": self.calls,
            "calls_per_row": round(self.calls / self.rows, 3) if self.rows else 0.0,
            "calls_per_calling_row": round(self.calls / self.with_calls, 3)
            if self.with_calls
            else 0.0,
            "tool_results": self.tool_results,
            "rows_with_reasoning": self.with_reasoning,
        }
