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


def test_runpods_bill_beside_the_jobs_shows_what_no_job_carried(
    settings: Settings, open_page, pin_clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RunPod billed the endpoint more than the jobs' recorded cost (workers kept warm,
    boots): the Costs page shows both per day and the difference. The request and the
    stand-in's answer are checked against RunPod's published v2 document."""
    from tests.deploy.contract import SKIP_REASON, load_contract
    from tests.deploy.fake_runpod import FakeRunPod

    contract = load_contract()
    if contract is None:
        pytest.skip(SKIP_REASON)
    pin_clock(dt.datetime(2026, 12, 1, 15, 0, tzinfo=dt.UTC))
    ds = seed_dataset(settings)
    seed_job(settings, ds, cost=3.0)
    seed_job(settings, ds, cost=1.5)
    fake = FakeRunPod(api_key="rp-account-key", contract=contract).start()
    try:
        fake.bills[("ep123abc", "2026-12-01")] = {
            "gpuAmount": 6.0,
            "diskAmount": 0.25,
            "feeAmount": 0.25,
        }
        fake.bills[("ep123abc", "2026-11-30")] = {"gpuAmount": 0.8}  # a warm worker, no job
        fake.bills[("another", "2026-12-01")] = {"gpuAmount": 99.0}  # not this endpoint
        monkeypatch.setenv("GPU_CLUSTER_API_URL", "https://api.runpod.ai/v2/ep123abc")
        monkeypatch.setenv("RUNPOD_API_KEY", "rp-account-key")
        monkeypatch.setenv("RUNPOD_REST_URL", fake.rest_url)
        at = open_page("costs")
    finally:
        fake.stop()
    assert fake.violations == []
    (call,) = [r for r in fake.requests if r.path == "/v2/billing/serverless"]
    assert "serverlessId=ep123abc" in call.query and "bucketSize=day" in call.query
    metric = {m.label: m.value for m in at.metric}
    assert metric["RunPod billed"] == "$7.30" and metric["Jobs recorded"] == "$4.50"
    assert metric["Not carried by a job"] == "$2.80"
    days = next(d.value for d in at.dataframe if "RunPod ($)" in d.value.columns)
    assert days["day"].tolist() == ["2026-12-01", "2026-11-30"]
    assert days["difference ($)"].tolist() == pytest.approx([2.0, 0.8])
    assert "idle or active workers kept warm" in text_of(at)
    assert "rp-account-key" not in text_of(at)


def test_without_an_account_key_the_page_says_how_to_see_runpods_bill(
    open_page, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPU_CLUSTER_API_URL", "https://api.runpod.ai/v2/ep123abc")
    monkeypatch.setenv("RUNPOD_API_KEY", "")
    at = open_page("costs")
    assert "set RUNPOD_API_KEY" in text_of(at)


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
