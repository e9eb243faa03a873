"""Overview page: a first-run guide on an empty install; running jobs with their loss and
spend, the month against the budget and the newest adapters once there is data."""

from __future__ import annotations

from core import admin, db
from core.db import repo
from core.settings import Settings
from core.users import LOCAL_ACTOR
from tests.ui.conftest import seed_dataset, seed_job, text_of


def test_empty_install_shows_the_first_run_guide(open_page) -> None:
    at = open_page("overview")
    text = text_of(at)
    assert "Welcome to BrightRun" in text and "Upload a dataset" in text
    links = [e.proto.page for e in at.get("page_link")]
    assert links == ["datasets", "train", "playground"]


def test_running_job_shows_its_loss_sparkline_and_spend(settings: Settings, open_page) -> None:
    ds = seed_dataset(settings)
    running = seed_job(
        settings,
        ds,
        status="IN_PROGRESS",
        adapter="live-bot",
        cost=0.0,
        metrics=40,
        minutes_ago=10,
        progress=0.4,
        step=40,
        total_steps=100,
    )
    done = seed_job(settings, ds, cost=12.5)
    with db.session_scope(settings) as s:
        repo.create_adapter_version(
            LOCAL_ACTOR,
            s,
            adapter_name="support-bot",
            base_model="Qwen/Qwen3-4B",
            job_id=done,
            dataset_id=ds,
            final_loss=0.8123,
        )
    at = open_page("overview")
    text = text_of(at)
    assert "Welcome" not in text
    assert "live-bot" in text and "step 40 of 100" in str(
        [p.proto.text for p in at.get("progress")]
    )
    assert len(at.get("plotly_chart")) == 2  # the running job's sparkline and the budget bar
    spend = next(m for m in at.metric if m.label == "Spend so far")
    assert spend.value.startswith("$")  # 10 minutes at $0.00116/s, and the seconds since
    assert 0.696 <= float(spend.value.lstrip("$")) < 0.71
    month = next(m for m in at.metric if m.label == "This month")
    assert month.value.startswith("$13.")  # 12.50 recorded + the running job's live cost
    assert "% of the $200.00 budget" in text
    adapters = at.dataframe[0].value
    assert (
        adapters["adapter"].tolist() == ["support-bot v1"]
        and adapters["final loss"].item() == 0.8123
    )
    at.button(key=f"overview.open.{running}").click().run()
    assert not at.exception
    assert at.title[0].value == "Jobs" and at.session_state["jobs.selected"] == running


def test_a_zero_monthly_budget_reads_as_used_up(settings: Settings, open_page) -> None:
    """An admin may stop a user's GPU spend with a $0 budget: the Overview and Costs pages
    say it is used up instead of dividing by it."""
    with db.session_scope(settings) as s:
        repo.ensure_user(LOCAL_ACTOR, s)
        admin.set_limits(LOCAL_ACTOR, s, LOCAL_ACTOR.user_id, monthly_budget_usd=0)
    ds = seed_dataset(settings)
    seed_job(settings, ds, cost=0.0)
    assert "100% of the $0.00 budget" in text_of(open_page("overview"))
    costs = open_page("costs")
    assert next(m for m in costs.metric if m.label == "Budget used").value == "100%"
    assert "The monthly budget is used up" in text_of(costs)
    seed_job(settings, ds, cost=2.0)
    assert "over 100% of the $0.00 budget" in text_of(open_page("overview"))


def test_a_live_section_slows_down_when_idle_or_slow() -> None:
    from streamlit.testing.v1 import AppTest

    def script() -> None:
        import streamlit as st

        from components import live

        st.session_state.setdefault("t.idle", live.interval("t", 5.0, active=False))
        st.session_state.setdefault("t.busy", live.interval("t", 5.0, active=True))
        st.session_state["t.render_s"] = 4.0  # the last render took 4 s
        st.session_state.setdefault("t.slow", live.interval("t", 5.0, active=True))

    at = AppTest.from_function(script).run()
    assert not at.exception
    assert at.session_state["t.busy"] == 5.0  # something runs: the sync interval
    assert at.session_state["t.idle"] >= 60.0  # nothing runs: a minute or more
    assert at.session_state["t.slow"] == 12.0  # never sooner than 3 renders' time
