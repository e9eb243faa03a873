"""Live sections: what one redraw costs when nothing changed, and when something did.

    python bench/redraws.py [--jobs 300] [--redraws 10] [--no-browser]

A real `streamlit run app.py` over `--jobs` jobs (two running, ~100 logged steps each, as
`bench/dashboard.py` fills them). The running job's page syncs it on each redraw against
a GPU endpoint that answers at once that the job runs and has nothing new (`quiet_endpoint`),
so no new data arrives unless the bench adds it. Through Streamlit's websocket protocol
(`bench/ws_sessions.py`, a session naming the messages it holds as a browser does), for
the Jobs page of a running job and for the Overview: the first page, then `--redraws`
reruns of the live section with no new data, then one after the job logged 5 more steps.
Reported: bytes sent and server time (rerun request to the run's end) of each, how many
charts came whole and how many as references, and the unchanged redraw's bytes as a share
of the first page's.

Two configurations, same run, same data: the deployment's (`.streamlit/config.toml`:
elements of 1 kB or more the browser holds come back as references) and Streamlit's
default (10 kB). The figures' template is measured on its own: the Jobs page's chart
built with the full "plotly_white" and with the slim template the dashboard uses.

With a browser (Debian's chromium through Playwright, unless `--no-browser`): the Jobs
page open in a tab for 4 redraw intervals with no new data, then 2 after new steps,
counting changes to the chart's DOM (a MutationObserver on the Plotly element): a chart
the browser draws again changes its DOM.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.dashboard import OUT, advance, fresh, machine, populate  # noqa: E402
from bench.ws_sessions import Redraws, live_redraws, server  # noqa: E402


def quiet_endpoint() -> str:
    """A RunPod v2 endpoint whose every job is IN_PROGRESS with an empty stream."""

    class Quiet(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # /v2/quiet/status/{id}, /v2/quiet/stream/{id}
            body = json.dumps(
                {"id": self.path.rsplit("/", 1)[-1], "status": "IN_PROGRESS", "stream": []}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{srv.server_address[1]}/v2/quiet"


CONFIGS = [
    ("deployment config (references from 1 kB)", []),
    ("Streamlit default (references from 10 kB)", ["--global.minCachedMessageSize", "10000"]),
]


def summary(r: Redraws) -> dict:
    def charts(run):  # charts sent whole, and references
        return len(run.of("delta:plotly_chart")), len(run.of("ref_hash"))

    same = r.unchanged
    return {
        "first_bytes": r.first.size,
        "first_s": round(r.first.seconds, 3),
        "unchanged_bytes_p50": int(statistics.median(x.size for x in same)),
        "unchanged_s_p50": round(statistics.median(x.seconds for x in same), 3),
        "unchanged_charts_whole_refs": charts(same[-1]),
        "unchanged_share_of_first": round(
            statistics.median(x.size for x in same) / r.first.size, 3
        ),
        "changed_bytes": r.changed.size,
        "changed_s": round(r.changed.seconds, 3),
        "changed_charts_whole_refs": charts(r.changed),
    }


def template_bytes(url: str, job_id: str) -> dict:
    """The Jobs page's chart of `job_id` as JSON, with the full and the slim template."""
    from components import charts
    from core import db, queries
    from core.settings import load_settings
    from core.users import LOCAL_ACTOR

    with db.session_scope(load_settings(database_url=url)) as s:
        m = queries.metric_series(LOCAL_ACTOR, s, job_id)
    fig = charts.training_curves(m.step, m.loss, m.eval_step, m.eval_loss, m.lr, m.tokens_per_s)
    slim = len(fig.to_json())
    fig.update_layout(template="plotly_white")
    spark = charts.sparkline(list(m.loss))
    spark_slim = len(spark.to_json())
    spark.update_layout(template="plotly_white")
    return {
        "chart_full_template": len(fig.to_json()),
        "chart_slim_template": slim,
        "sparkline_full_template": len(spark.to_json()),
        "sparkline_slim_template": spark_slim,
    }


OBSERVE = """() => { window.__mutations = 0;
  for (const el of document.querySelectorAll('.js-plotly-plot'))
    new MutationObserver(ms => { window.__mutations += ms.length; })
      .observe(el, {subtree: true, childList: true, attributes: true, characterData: true});
  return document.querySelectorAll('.js-plotly-plot').length; }"""


def browser(http: str, url: str, job_id: str, every_s: float) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = b.new_page()
            page.goto(f"{http}/jobs?job={job_id}")
            page.wait_for_selector(".js-plotly-plot", timeout=120_000)
            time.sleep(every_s)
            charts = page.evaluate(OBSERVE)
            time.sleep(4 * every_s)
            unchanged = page.evaluate("window.__mutations")
            page.evaluate("() => { window.__mutations = 0; }")
            advance(url, job_id, 5)
            time.sleep(2 * every_s)
            changed = page.evaluate("window.__mutations")
        finally:
            b.close()
    return {
        "charts": charts,
        "dom_changes_unchanged_4_redraws": unchanged,
        "dom_changes_after_new_steps": changed,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--redraws", type=int, default=10)
    ap.add_argument("--no-browser", action="store_true")
    a = ap.parse_args()
    folder = OUT / "redraws"
    url = fresh(None, folder)
    populate(url, a.jobs, a.jobs * 100)
    job = f"job-bench{a.jobs - 1:05d}"  # running
    env = {
        "BRIGHTRUN_DATA_DIR": str(folder),
        "DATABASE_URL": url,
        "GPU_CLUSTER_API_URL": quiet_endpoint(),
        "RUNPOD_API_KEY": "bench-key",
        "OMP_NUM_THREADS": "1",
    }
    report = {"date": dt.date.today().isoformat(), "machine": machine(), "runs": []}
    report["template"] = template_bytes(url, job)
    print("template:", json.dumps(report["template"]))
    for label, flags in CONFIGS:
        with server(ROOT / "app.py", env, flags) as (ws_url, _pid):
            run = {"config": label}
            for name, page, query in (("jobs", "jobs", f"job={job}"), ("overview", "", "")):
                r = live_redraws(ws_url, page, query, lambda: advance(url, job, 5), a.redraws)
                run[name] = summary(r)
                print(f"{label} · {name}: {json.dumps(run[name])}")
            if not a.no_browser and not flags:
                http = ws_url.replace("ws://", "http://").split("/_stcore")[0]
                run["browser"] = browser(http, url, job, every_s=5.0)
                print(f"{label} · browser: {json.dumps(run['browser'])}")
            report["runs"].append(run)
    (OUT / "redraws.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
