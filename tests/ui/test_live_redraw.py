"""A live section redraws only what changed. Against a real `streamlit run` of the
dashboard, spoken to through Streamlit's websocket protocol as a browser tab would
(`bench.ws_sessions`): a running job's page and the Overview are opened, their live
sections (`run_every` fragments) asked for as the browser's timer asks, with no new data,
then again after the job logged more steps.

- Unchanged data: the job's chart, its event log and the Overview's sparklines are not sent
  again: the server sends a reference to what the browser already holds, which it can only
  do when the element is byte-for-byte the one sent before (nothing in a figure may depend
  on the clock), and only for elements of `global.minCachedMessageSize` (.streamlit/
  config.toml) or more. A redraw sends a small part of what the page did. A browser does
  not draw an identical figure again (measured in `bench/redraws.py`).
- New data: the chart that changed is sent in full, holding the new steps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from bench import dashboard as bench
from bench.ws_sessions import Redraws, Run, live_redraws, server
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

UNREACHABLE = "http://127.0.0.1:9/v2/none"  # the page's sync finds no endpoint: no new data


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """A dashboard over six jobs, two of them running (about 100 logged steps each); yields
    its websocket URL, the database URL and the id of the newest running job."""
    folder = tmp_path_factory.mktemp("redraw")
    url = bench.fresh(None, folder)
    bench.populate(url, 6, 600)
    env = {
        "BRIGHTRUN_DATA_DIR": str(folder),
        "DATABASE_URL": url,
        "GPU_CLUSTER_API_URL": UNREACHABLE,
        "OMP_NUM_THREADS": "1",
    }
    with server(ROOT / "app.py", env, [], log_dir=folder / "logs") as (ws_url, _pid):
        yield ws_url, url, "job-bench00005"


def _charts(run: Run) -> list[bytes]:
    return [m.body for m in run.of("delta:plotly_chart")]


def _held_back(r: Redraws, kinds: list[str]) -> None:
    """The live section's elements of these kinds, drawn by the page's first run, come back
    in each unchanged redraw as references to that run's messages, never again whole."""
    drawn = {m.hash: m.kind for m in r.first.sent if m.kind in kinds}
    for run in r.unchanged:
        for kind in kinds:
            assert not run.of(kind), f"an unchanged {kind} was sent again"
        refs = [drawn.get(m.ref, m.ref) for m in run.of("ref_hash")]
        assert sorted(refs) == sorted(kinds), refs


def test_a_running_job_s_redraw_sends_only_what_changed(
    dashboard: tuple[str, str, str],
) -> None:
    ws_url, db_url, job = dashboard
    steps: list[int] = []
    r = live_redraws(
        ws_url, "jobs", f"job={job}", lambda: steps.append(bench.advance(db_url, job, 5))
    )
    assert not r.first.error and all(not run.error for run in [*r.unchanged, r.changed])
    _held_back(r, ["delta:plotly_chart", "delta:dataframe"])  # the chart, the event log
    for run in r.unchanged:
        assert run.size < 0.2 * r.first.size, (run.size, r.first.size)
    assert len(_charts(r.changed)) == 1  # the new steps: the chart comes whole
    (spec,) = _charts(r.changed)
    assert steps[0] in json.loads(spec)["data"][0]["x"]
    assert r.changed.size > r.unchanged[-1].size + len(spec) // 2


def test_the_overview_sends_a_card_s_sparkline_again_only_when_its_job_moves(
    dashboard: tuple[str, str, str],
) -> None:
    ws_url, db_url, job = dashboard
    r = live_redraws(ws_url, "", "", lambda: bench.advance(db_url, job, 5), n=2)
    assert not r.first.error
    _held_back(r, ["delta:plotly_chart"] * 2)  # a sparkline per running job, a few kB each
    (moved,) = _charts(r.changed)  # the job that moved; the other card's stays a reference
    assert moved not in _charts(r.first) and len(r.changed.of("ref_hash")) >= 1


def test_a_figure_of_equal_data_is_the_same_bytes() -> None:
    """What the redraws above rely on, without a server: a figure holds nothing that
    changes between two builds of the same data."""
    from components import charts

    a = charts.training_curves([1, 2], [2.0, 1.5], [2], [1.7], [2e-4] * 2, [900.0] * 2)
    b = charts.training_curves([1, 2], [2.0, 1.5], [2], [1.7], [2e-4] * 2, [900.0] * 2)
    assert a.to_json() == b.to_json()
    assert len(charts.sparkline([2.0 - i / 100 for i in range(100)]).to_json()) < 3000
