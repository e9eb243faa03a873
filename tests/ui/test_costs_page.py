"""Costs page: spend per month, GPU type, model and job, the budget status, and Serverless
against an always-on pod at the utilisation actually had."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from core import db
from core.db import repo
from core.settings import Settings
from core.users import LOCAL_ACTOR
from tests.ui.conftest import seed_dataset, seed_job, text_of


def test_no_spend_yet(open_page) -> None:
    at = open_page("costs")
    assert "No GPU time recorded yet" in text_of(at)
    assert next(m for m in at.metric if m.label == "Budget used").value == "0%"


@pytest.mark.parametrize(
    "today",
    [
        dt.datetime(2026, 12, 1, 1, 0, tzinfo=dt.UTC),
        dt.datetime(2026, 12, 17, 13, 0, tzinfo=dt.UTC),
    ],
    ids=["first-hour-of-the-month", "mid-month"],
)
def test_spend_breakdowns_budget_and_the_pod_comparison(
    settings: Settings, open_page, pin_clock, today: dt.datetime
) -> None:
    """Jobs finished half an hour ago: their GPU time (about 41 h, $170) can exceed the
    hours the month has had so far, which takes several pods side by side to match."""
    pin_clock(today)
    ds = seed_dataset(settings)
    first = seed_job(settings, ds, cost=150.0, model="Qwen/Qwen3-8B")
    seed_job(settings, ds, cost=20.0, model="Qwen/Qwen3-4B")
    with db.session_scope(settings) as s:
        repo.record_cost(
            LOCAL_ACTOR, s, job_id=first, seconds=3600, usd=4.18, attempt=5, month="2025-12"
        )
    at = open_page("costs")
    text = text_of(at)
    assert next(m for m in at.metric if m.label == "Budget used").value == "85%"
    assert "More than 80% of the monthly budget is used." in text
    assert at.selectbox(key="costs.month").options[-1] == "2025-12"
    titles = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("Spend per month" in t for t in titles) and any("Per model" in t for t in titles)
    per_job = at.dataframe[0].value
    assert (
        per_job["cost ($)"].tolist() == [150.0, 20.0]
        and per_job["model"].tolist()[0] == "Qwen/Qwen3-8B"
    )
    assert "your jobs kept a GPU busy" in text and "Always-on pod" in text
    assert any("your utilisation" in t for t in titles)
    pod = next(m for m in at.metric if m.label == "Always-on pod").value
    serverless = next(m for m in at.metric if m.label == "Serverless").value
    assert float(pod.strip("$").replace(",", "")) > 0 and serverless.startswith("$170.")
    hours_so_far = (today - today.replace(day=1, hour=0)).total_seconds() / 3600
    busy = 170 / 0.00116 / 3600
    pods = math.ceil(busy / hours_so_far)
    assert (f"{pods} pods (your jobs ran side by side)" in text) == (pods > 1)
    assert float(pod.strip("$").replace(",", "")) == pytest.approx(
        pods * hours_so_far * 1.99, abs=0.01
    )

    at.selectbox(key="costs.month").select("2025-12").run()
    assert next(m for m in at.metric if m.label == "Spent in 2025-12").value == "$4.18"
    # a whole month with one busy hour: the pod would have been on 744 hours
    assert "**1.00 h** of the **744 h**" in text_of(at)
    assert (
        next(m for m in at.metric if m.label == "Always-on pod").value == "$1,480.56"
    )  # 744 h × $1.99


def test_the_volume_shows_its_usage_and_monthly_cost(settings: Settings, open_page) -> None:
    volume = settings.data_dir / "volume"
    (volume / "checkpoints" / "job-x" / "step-0000002").mkdir(parents=True)
    (volume / "checkpoints" / "job-x" / "step-0000002" / "w.bin").write_bytes(b"0" * 3_000_000)
    (volume / "models").mkdir()
    (volume / "models" / "m.bin").write_bytes(b"0" * 1_000_000)
    at = open_page("costs")
    text = text_of(at)
    # 4 MB at RunPod's $0.07 per GB-month
    assert at.expander[0].label == "Volume: 4.0 MB, $0.0003 a month"
    assert "models: 1.0 MB" in text and "checkpoints: 3.0 MB" in text
    assert "$0.07 per GB-month" in text and "dropped after 14 days unless promoted" in text
