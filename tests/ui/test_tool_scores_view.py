"""The Adapters page's evaluation table and figure carry the tool-calling scores when the
version's eval rows call tools, and only then."""

from __future__ import annotations

from components.quality import score_rows, tool_scores_figure

BASE = {
    "adapter": {"exact_match": 0.5, "f1": 0.6, "rouge_l": 0.7},
    "base": {"exact_match": 0.1, "f1": 0.2, "rouge_l": 0.3},
    "delta": {"exact_match": 0.4, "f1": 0.4, "rouge_l": 0.4},
}
TOOLS = {
    "rows": 4,
    "metrics": ["parseable", "name_accuracy", "exact_args", "arg_f1"],
    "adapter": {"parseable": 1.0, "name_accuracy": 0.75, "exact_args": 0.5, "arg_f1": 0.6},
    "base": {"parseable": 0.0, "name_accuracy": 0.0, "exact_args": 0.0, "arg_f1": 0.0},
    "delta": {"parseable": 1.0, "name_accuracy": 0.75, "exact_args": 0.5, "arg_f1": 0.6},
}


def test_tool_scores_join_the_table_and_get_their_figure() -> None:
    assert [r["metric"] for r in score_rows(BASE)] == ["exact match", "token F1", "ROUGE-L"]
    rows = score_rows({**BASE, "tools": TOOLS})
    by_metric = {r["metric"]: r for r in rows}
    assert by_metric["function-name accuracy"] == {
        "metric": "function-name accuracy",
        "adapter": 0.75,
        "base": 0.0,
        "difference": 0.75,
    }
    assert {"exact argument match", "argument F1", "parseable tool call"} <= set(by_metric)
    fig = tool_scores_figure(TOOLS)
    assert [t.name for t in fig.data] == ["adapter", "base"]
    assert list(fig.data[0].y) == [1.0, 0.75, 0.5, 0.6] and "4 eval rows" in fig.layout.title.text
