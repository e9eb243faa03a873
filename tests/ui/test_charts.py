"""The plotly figures are pure functions of plain data: what each draws, checked on its traces."""

from __future__ import annotations

import pytest

from components import charts


def test_token_histogram_marks_the_cut_off_and_colours_what_it_truncates() -> None:
    fig = charts.token_histogram(
        [0, 100, 200, 300, 400], [5, 4, 3, 2], max_length=250, truncated_share=0.2
    )
    bar = fig.data[0]
    assert list(bar.y) == [5, 4, 3, 2]
    assert list(bar.marker.color) == [charts.ACCENT, charts.ACCENT, charts.BAD, charts.BAD]
    cut = fig.layout.shapes[0]
    assert cut.x0 == cut.x1 == 250
    assert "20.0% of rows truncated" in fig.layout.annotations[0].text
    far = charts.token_histogram([30, 32, 34], [5, 4], max_length=2048, truncated_share=0.0)
    assert not far.layout.shapes and "beyond the longest row" in far.layout.annotations[0].text
    assert far.layout.xaxis.range[1] < 40  # the bars keep the width of the chart
    text = charts.token_histogram([0, 100, 200], [5, 4], 150, 0.25, over="split into windows")
    assert "25.0% of rows split into windows" in text.layout.annotations[0].text


def test_training_curves_draw_eval_loss_only_when_there_is_some() -> None:
    with_eval = charts.training_curves(
        [1, 2, 3], [3.0, 2.0, 1.0], [3], [1.5], [1e-4] * 3, [10.0] * 3
    )
    without = charts.training_curves(
        [1, 2], [3.0, 2.0], [], [], [1e-4] * 2, [10.0] * 2, downsampled=True
    )
    assert [t.name for t in with_eval.data] == [
        "train loss",
        "eval loss",
        "learning rate",
        "tokens/s",
    ]
    assert list(with_eval.data[1].y) == [1.5]
    assert "eval loss" not in [t.name for t in without.data]
    assert "downsampled" in without.layout.title.text


def test_serverless_against_pod_crosses_at_the_break_even() -> None:
    grid = [0.25, 0.5, 1.0]
    fig = charts.serverless_vs_pod(
        grid, [4.0] * 3, [8.0, 4.0, 2.0], actual_utilisation=0.05, break_even=0.5
    )
    serverless, pod = fig.data
    assert list(serverless.y) == [4.0] * 3 and list(pod.y) == [8.0, 4.0, 2.0]
    marks = {a.text: s.x0 for a, s in zip(fig.layout.annotations, fig.layout.shapes, strict=True)}
    assert marks["break-even 50%"] == pytest.approx(50)
    assert marks["your utilisation 5.0%"] == pytest.approx(25)  # drawn at the grid's edge


def test_dollar_axes_never_go_below_zero_nor_label_minor_ticks_without_the_dollar() -> None:
    from components import compare_charts

    none = compare_charts.cost_to_target(["a", "b"], [None, None], None)  # every bar empty
    assert none.layout.yaxis.rangemode == "nonnegative" and none.layout.yaxis.tickprefix == "$"
    pod = charts.serverless_vs_pod([0.5, 1.0], [4.0] * 2, [8.0, 4.0], 0.1, 0.5)
    assert pod.layout.yaxis.type == "log" and pod.layout.yaxis.dtick == 1  # $1, $10, $100


def test_memory_breakdown_lists_terms_largest_first_against_the_device() -> None:
    fig = charts.memory_breakdown(
        [("LoRA", 0.5), ("base weights", 4.0), ("activations", 1.5)], 80.0, "H100"
    )
    assert list(fig.data[0].y) == ["base weights", "activations", "LoRA"] and list(
        fig.data[0].x
    ) == [4.0, 1.5, 0.5]
    assert fig.layout.title.text == "Peak GPU memory: 6.0 GiB (8%)"
    assert fig.layout.title.subtitle.text == "of 80 GiB on H100"


def test_month_keys_are_categories_not_dates() -> None:
    assert (
        charts.spend_bars({"2026-10": 1.0, "2026-11": 2.0}, "Spend per month").layout.xaxis.type
        == "category"
    )


def test_budget_bar_turns_red_over_budget() -> None:
    assert charts.budget_bar(250.0, 200.0).data[0].marker.color == charts.BAD
    assert charts.budget_bar(10.0, 200.0).data[0].marker.color == charts.GOOD


def test_a_shared_figure_is_built_once_for_equal_arguments() -> None:
    from components import charts

    built = []

    def build(amounts: dict, title: str, *, horizontal: bool = False):
        built.append(title)
        return charts.spend_bars(amounts, title, horizontal=horizontal)

    a = charts.shared_figure(build, {"x": 1.0, "y": 2.0}, "t")
    assert charts.shared_figure(build, {"x": 1.0, "y": 2.0}, "t") is a  # equal by value
    assert charts.shared_figure(build, {"y": 2.0, "x": 1.0}, "t") is not a  # order is drawn
    assert charts.shared_figure(build, {"x": 1.0, "y": 2.0}, "t", horizontal=True) is not a
    assert built == ["t", "t", "t"]


def test_the_learning_rate_panel_starts_at_zero_in_the_metric_s_notation() -> None:
    fig = charts.training_curves([1, 2, 3], [3.0, 2.0, 1.0], [], [], [2e-4] * 3, [10.0] * 3)
    axis = fig.layout.yaxis2  # a constant 2e-4 was drawn as "0" on a -1..1 axis
    assert axis.tickformat == ".1e"
    assert axis.range[0] == 0 and axis.range[1] == pytest.approx(2.2e-4)
    unknown = charts.training_curves([1], [3.0], [], [], [None], [10.0])
    assert unknown.layout.yaxis2.range is None


def _figures():
    """One figure of each builder the pages draw, on small data."""
    from types import SimpleNamespace

    from components import compare_charts, quality

    return {
        "sparkline": charts.sparkline([3.0, 2.0, 1.0]),
        "training": charts.training_curves([1, 2], [3.0, 2.0], [2], [2.5], [1e-4] * 2, [9.0] * 2),
        "histogram": charts.token_histogram([0, 100, 200], [5, 4], 150, 0.25),
        "memory": charts.memory_breakdown([("LoRA", 0.5)], 80.0, "H100"),
        "spend": charts.spend_bars({"2026-11": 2.0}, "Spend"),
        "budget": charts.budget_bar(10.0, 200.0),
        "pod": charts.serverless_vs_pod([0.5, 1.0], [4.0] * 2, [8.0, 4.0], 0.1, 0.5),
        "preference": charts.preference_curves(
            SimpleNamespace(
                step=[1, 2],
                reward_margin=[0.1, 0.2],
                accuracy=[0.5, 0.6],
                eval_step=[2],
                eval_accuracy=[0.5],
            )
        ),
        "method": charts.method_curves(
            SimpleNamespace(step=[1, 2], groups={"reward": {"reward": [0.1, 0.3]}})
        ),
        "compare": compare_charts.compare_curves([]),
        "cost": compare_charts.cost_to_target(["a"], [0.5], 1.2),
        "quality": quality.quality_vs_cost([]),
        "tools": quality.tool_scores_figure(
            {"metrics": ["arg_f1"], "rows": 3, "adapter": {"arg_f1": 0.9}, "base": {"arg_f1": 0.2}}
        ),
    }


def test_every_figure_carries_the_slim_template_and_looks_as_plotly_white() -> None:
    import json

    import plotly.io as pio

    full = pio.templates["plotly_white"].to_plotly_json()
    slim = charts.TEMPLATE.to_plotly_json()
    assert len(json.dumps(slim)) < 1500 < 6000 < len(json.dumps(full))
    for kind in charts.TRACE_TYPES:  # the look of the traces drawn: unchanged
        assert slim["data"][kind] == full["data"][kind]
    for key in ("xaxis", "yaxis", "font", "colorway", "paper_bgcolor", "plot_bgcolor"):
        assert slim["layout"][key] == full["layout"][key]
    for name, fig in _figures().items():
        drawn = {t.type for t in fig.data}
        assert drawn <= set(charts.TRACE_TYPES), f"{name} draws {drawn}: add it to TRACE_TYPES"
        assert fig.layout.template.to_plotly_json() == slim, name


def test_the_compare_view_draws_learning_rates_as_the_job_page_does() -> None:
    from types import SimpleNamespace

    from components import compare_charts

    curves = dict(tokens=[1, 2], loss=[2.0, 1.0], lr=[1e-4, 2e-4], tokens_per_s=[9.0, 9.0])
    run = SimpleNamespace(label="a", job_id="j", eval_tokens=[], eval_loss=[], **curves)
    axis = compare_charts.compare_curves([run]).layout.yaxis2
    assert axis.tickformat == ".1e" and axis.range[1] == pytest.approx(2.2e-4)
