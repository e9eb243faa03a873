"""Compare runs: the read model (`core.queries.compare_jobs`), its figures
(`components.charts`) and the view on the Jobs page (AppTest)."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from components import compare_charts
from core import db, queries
from core.db import repo
from core.errors import InvalidInput, NotFound
from core.settings import Settings
from core.users import LOCAL_ACTOR, Actor
from tests.ui.conftest import open_page, seed_dataset, seed_job, text_of  # noqa: F401 - fixture

SPEC = {
    "version": 3,
    "job_id": "x",
    "lora": {"r": 16, "alpha": 32.0, "target_modules": "all-linear"},
    "training": {"learning_rate": 2e-4, "micro_batch_size": 4, "epochs": 1.0},
    "data": {"eval_fraction": 0.1, "train_url": "https://signed/secret"},
}
SCORES = {
    "status": "done",
    "adapter": {"exact_match": 0.5, "rouge_l": 0.7},
    "base": {"exact_match": 0.1, "rouge_l": 0.3},
}


def _events(
    settings: Settings, job_id: str, *, tokens_per_step: int, steps: int, evals: dict[int, float]
) -> None:
    """`steps` metrics events, one second of training and `tokens_per_step` tokens each;
    `evals` maps a step to its eval loss."""
    with db.session_scope(settings) as s:
        repo.append_events(
            LOCAL_ACTOR,
            s,
            job_id,
            [
                {
                    "seq": i,
                    "type": "metrics",
                    "ts": time.time(),
                    "data": {
                        "step": i + 1,
                        "total_steps": steps,
                        "loss": 3.0 - i / steps,
                        "lr": 1e-4 * (i + 1),
                        "tokens_per_s": float(tokens_per_step),
                        "tokens_seen": tokens_per_step * (i + 1),
                        "elapsed_s": float(i + 1),
                        **({"eval_loss": evals[i + 1]} if i + 1 in evals else {}),
                    },
                }
                for i in range(steps)
            ],
        )


def _two_runs(settings: Settings) -> tuple[str, str]:
    ds = seed_dataset(settings)
    small = {**SPEC, "training": {**SPEC["training"], "micro_batch_size": 2}}
    a = seed_job(settings, ds, adapter="small-batch", cost=0.02, spec=small, rate_per_s=0.001)
    b = seed_job(settings, ds, adapter="big-batch", cost=0.05, spec=SPEC, rate_per_s=0.001)
    _events(settings, a, tokens_per_step=100, steps=20, evals={10: 2.0, 20: 1.5})
    _events(settings, b, tokens_per_step=400, steps=10, evals={5: 1.8, 10: 1.2})
    with db.session_scope(settings) as s:
        v = repo.create_adapter_version(
            LOCAL_ACTOR, s, adapter_name="big-batch", base_model="m", job_id=b
        )
        repo.update_version(LOCAL_ACTOR, s, v.id, eval_scores=SCORES)
    return a, b


def test_runs_line_up_on_tokens_seen_and_the_differences_are_listed(settings: Settings) -> None:
    a, b = _two_runs(settings)
    with db.session_scope(settings) as s:
        cmp = queries.compare_jobs(LOCAL_ACTOR, s, [a, b])
    small, big = cmp.runs
    assert small.tokens[-1] == 2000 and big.tokens[-1] == 4000  # tokens, not steps (20 and 10)
    assert small.eval_tokens == [1000, 2000] and big.eval_tokens == [2000, 4000]
    assert big.lr[0] == pytest.approx(1e-4) and big.tokens_per_s[0] == 400
    # the loss both reached: small's best (1.5); big got there at its 2nd evaluation (10 s)
    assert cmp.target_eval_loss == 1.5
    # cost 0.05 = set-up 0.04 + 10 s x $0.001: reaching 1.5 took all of it
    assert big.cost_to_target_usd == pytest.approx(0.05)
    assert small.cost_to_target_usd == pytest.approx(0.02)  # set-up 0.0 + 20 s
    diffs = {d.name: d.values for d in cmp.settings}
    assert diffs == {"training.micro_batch_size": ["2", "4"]}  # no ids, no URLs, nothing equal
    assert small.eval_scores == {} and big.eval_scores["adapter"] == {
        "exact_match": 0.5,
        "rouge_l": 0.7,
    }
    summary = cmp.summary_table()
    assert (
        summary[1]["adapter rouge_l"] == 0.7 and summary[1]["cost to eval loss 1.5000 ($)"] == 0.05
    )
    csv = cmp.curves_csv().splitlines()
    assert csv[0] == "run,job,series,tokens_seen,loss,learning_rate,tokens_per_s"
    assert len(csv) == 1 + 20 + 2 + 10 + 2


def test_a_target_some_runs_never_reached(settings: Settings) -> None:
    a, b = _two_runs(settings)
    with db.session_scope(settings) as s:
        cmp = queries.compare_jobs(LOCAL_ACTOR, s, [a, b], target_eval_loss=1.9)
    # big's first evaluation (1.8 after 5 s) already reached it: set-up 0.04 + 5 s x $0.001
    assert cmp.runs[1].cost_to_target_usd == pytest.approx(0.045)
    with db.session_scope(settings) as s:
        cmp = queries.compare_jobs(LOCAL_ACTOR, s, [a, b], target_eval_loss=1.3)
    small, big = cmp.runs
    assert small.cost_to_target_usd is None and big.cost_to_target_usd == pytest.approx(0.05)


def test_eval_losses_of_different_methods_get_no_common_target(settings: Settings) -> None:
    """An SFT run's eval loss (cross-entropy of the answers) and a DPO run's (the preference
    loss) are different measures: no default target, and a note says why."""
    a, b = _two_runs(settings)
    with db.session_scope(settings) as s:
        job = repo.get_job(LOCAL_ACTOR, s, b)
        job.spec = {**job.spec, "method": "dpo"}
    with db.session_scope(settings) as s:
        cmp = queries.compare_jobs(LOCAL_ACTOR, s, [a, b])
    assert cmp.target_eval_loss is None and cmp.mixed_methods == ("sft", "dpo")
    assert all(r.cost_to_target_usd is None for r in cmp.runs)
    assert any(
        "SFT and DPO runs' eval losses are different losses" in n for n in cmp.metric_notes()
    )
    bars = compare_charts.cost_to_target([r.label for r in cmp.runs], [None, None], None).data[0]
    assert list(bars.text) == ["no target", "no target"]
    with db.session_scope(settings) as s:  # a target given is applied as asked
        cmp = queries.compare_jobs(LOCAL_ACTOR, s, [a, b], target_eval_loss=1.9)
    assert cmp.runs[1].cost_to_target_usd == pytest.approx(0.045) and cmp.mixed_methods


def test_the_number_of_runs_and_their_owner_are_checked(settings: Settings) -> None:
    a, b = _two_runs(settings)
    with db.session_scope(settings) as s:
        with pytest.raises(InvalidInput, match="2 to 6"):
            queries.compare_jobs(LOCAL_ACTOR, s, [a, a])
        with pytest.raises(NotFound):
            queries.compare_jobs(Actor(user_id="someone-else", email="x@example.com"), s, [a, b])


def test_the_figures_overlay_every_run(settings: Settings) -> None:
    a, b = _two_runs(settings)
    with db.session_scope(settings) as s:
        cmp = queries.compare_jobs(LOCAL_ACTOR, s, [a, b])
    fig = compare_charts.compare_curves(cmp.runs)
    names = [t.name for t in fig.data]
    assert [n for n in names if n.endswith(("train", "eval"))] == [
        "small-batch (" + a[-6:] + ") train",
        "small-batch (" + a[-6:] + ") eval",
        "big-batch (" + b[-6:] + ") train",
        "big-batch (" + b[-6:] + ") eval",
    ]
    assert list(fig.data[0].x) == cmp.runs[0].tokens
    assert fig.layout.xaxis3.title.text.startswith("tokens seen")
    assert fig.layout.xaxis.type != "log"  # 2000 and 4000 tokens: a linear axis shows both
    assert fig.data[0].mode == "lines"  # 20 points
    # A run of one logged step beside a long one: its point is drawn, on a log axis.
    short = replace(cmp.runs[1], tokens=[40], loss=[0.69], lr=[1e-5], tokens_per_s=[10.0])
    short = replace(short, eval_tokens=[40], eval_loss=[0.68])
    fig = compare_charts.compare_curves([cmp.runs[0], short])
    train = [t for t in fig.data if t.name.endswith("train")]
    assert train[1].mode == "lines+markers" and list(train[1].x) == [40]
    assert fig.layout.xaxis.type == "log" and "log scale" in fig.layout.xaxis3.title.text
    bars = compare_charts.cost_to_target(["a", "b"], [0.02, None], 1.5)
    assert (
        list(bars.data[0].text) == ["$0.0200", "not reached"] and "1.5000" in bars.layout.title.text
    )


def test_the_jobs_list_opens_a_comparison(settings: Settings, open_page) -> None:  # noqa: F811
    a, b = _two_runs(settings)
    at = open_page("jobs")
    assert at.button(key="jobs.compare").disabled
    at.multiselect(key="jobs.compare_pick").set_value([a, b]).run()
    at.button(key="jobs.compare").click().run()
    assert not at.exception, at.exception
    assert "Comparing 2 runs" in text_of(at)
    assert at.query_params["compare"] == f"{a},{b}"  # a link that opens this comparison
    assert len(at.get("plotly_chart")) == 2
    settings_table = at.dataframe[1].value
    assert list(settings_table["setting"]) == ["training.micro_batch_size"]
    at.number_input(key="jobs.compare_target").set_value(1.3).run()
    assert "not reached" in at.get("plotly_chart")[1].proto.spec
    at.button(key="jobs.compare_back").click().run()
    assert "compare" not in at.query_params and at.multiselect(key="jobs.compare_pick")


def test_the_command_line_prints_the_same_tables_and_writes_the_curves(
    settings: Settings, tmp_path
) -> None:
    from typer.testing import CliRunner

    from cli import app

    a, b = _two_runs(settings)
    out = tmp_path / "curves.csv"
    r = CliRunner().invoke(app, ["jobs", "compare", a, b, "--csv", str(out)])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split()[:4] == ["run", "job", "status", "cost"]
    big = next(line for line in lines if line.startswith("big-batch"))
    assert (
        "1.2000" in big and "0.0500" in big and "0.7000" in big
    )  # best eval loss, cost to 1.5, adapter rouge_l
    assert "settings that differ:" in lines
    assert next(line for line in lines if line.startswith("training.micro_batch_size")).split()[
        1:
    ] == ["2", "4"]
    with db.session_scope(settings) as s:
        assert out.read_text() == queries.compare_jobs(LOCAL_ACTOR, s, [a, b]).curves_csv()
    bad = CliRunner().invoke(app, ["jobs", "compare", a])
    assert bad.exit_code == 2 and "compare 2 to 6 different jobs" in bad.output


def test_method_settings_use_the_tables_labels_only_where_the_method_uses_them(
    settings: Settings,
) -> None:
    ds = seed_dataset(settings)
    pref = {"beta": 0.1, "loss_type": "sigmoid", "orpo_lambda": 0.1, "desirable_weight": 1.0}
    dpo = {**SPEC, "method": "dpo", "preference": pref}
    orpo = {**SPEC, "method": "orpo", "preference": {**pref, "orpo_lambda": 0.2}}
    sft = {**SPEC, "method": "sft", "preference": None}
    ids = [seed_job(settings, ds, adapter=n, spec=sp) for n, sp in (("d", dpo), ("o", orpo))]
    ids.append(seed_job(settings, ds, adapter="s", spec=sft))
    with db.session_scope(settings) as s:
        v = repo.create_adapter_version(
            LOCAL_ACTOR, s, adapter_name="d", base_model="m", job_id=ids[0]
        )
        margin = {"preference_accuracy": 0.9, "mean_margin": 215.29}
        scores = {"status": "done", "adapter": margin, "base": margin}
        repo.update_version(LOCAL_ACTOR, s, v.id, eval_scores=scores)
        cmp = queries.compare_jobs(LOCAL_ACTOR, s, ids)
    diffs = {d.name: d.values for d in cmp.settings}
    assert diffs["method"] == ["dpo", "orpo", "sft"]
    assert diffs["Beta (DPO, KTO)"] == ["0.1", "–", "–"]  # ORPO has no beta
    assert diffs["Lambda (ORPO)"] == ["–", "0.2", "–"]  # DPO's unused lambda is not listed
    assert not [n for n in diffs if n.startswith("preference")]
    cells = [v for row in cmp.settings_table() + cmp.summary_table() for v in row.values()]
    assert None not in cells and "None" not in cells
    notes = " ".join(cmp.metric_notes())
    assert "mean_margin: the mean, over the eval split's pairs" in notes
    assert "reward_margin: training reward margin: beta x" in notes


def test_the_pages_summary_has_one_type_per_column() -> None:
    """A score only one run has ("–" for the other) is sent as text: a column of numbers
    and "–" cannot become one Arrow column (Streamlit logged a traceback and patched it)."""
    import pandas as pd
    import pyarrow as pa

    from components.compare import one_type_per_column

    rows = [
        {"run": "sft", "cost ($)": 0.1, "adapter exact_match": 0.5},
        {"run": "dpo", "cost ($)": 0.2, "adapter exact_match": "–"},
    ]
    table = one_type_per_column(rows)
    pa.Table.from_pandas(pd.DataFrame(table))  # what st.dataframe sends
    assert [r["adapter exact_match"] for r in table] == ["0.5", "–"]
    assert [r["cost ($)"] for r in table] == [0.1, 0.2]  # a column of numbers stays numbers
    with pytest.raises(pa.ArrowInvalid):
        pa.Table.from_pandas(pd.DataFrame(rows))
