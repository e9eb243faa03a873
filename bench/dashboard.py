"""Dashboard at scale: the pages over 5,000 jobs and 500,000 metric points, against the
same pages over an empty database, measured in the same run; and many browser sessions at
once against one server, against a single session in the same run.

    python bench/dashboard.py [--jobs 5000] [--points 500000] [--repeat 5] [--database-url URL]
    python bench/dashboard.py --sessions 1,5,10,20,50 [--no-pages] [--compare-watcher]

- data: one user's `--jobs` jobs (statuses, models, datasets, costs, finished and a few
  running) and `--points` metric events in a fresh SQLite file under bench/out/ (or the
  given PostgreSQL database, emptied first): one long finished job holds a fifth of the
  points (100,000 at the defaults), the rest are spread over the others; two jobs run.
- measured: the wall time of an AppTest run (`streamlit.testing`, the same script run a
  browser session gets, rendering excluded) of the Jobs page (the table: first page of 25,
  counted and sorted in the database), the Jobs page opened on the long job (its chart:
  downsampled in the database to 400 points, with the event log and the live numbers),
  the Overview and the Costs page; each against the same page over an empty database.
  Every run is a first view (the chart cache is cleared), and the long job is also timed
  when viewed again (its chart then comes from the cache).
  Also the read behind the long job's chart, `core.queries.metric_series`, against reading
  every metrics event of that job (what a chart without downsampling would read).
Runs alternate between the two databases, after a warm-up run of each; the median of
`--repeat` counts. Only the ratios mean something: they are against a baseline measured
in the same run on the same machine.

Sessions (`--sessions`): a real `streamlit run app.py` (the deployment's config) over a
database of `--session-jobs` jobs (two running, so Overview's live section is on), driven
through Streamlit's websocket protocol without a browser (`bench/ws_sessions.py`): for
each count, that many sessions connect at the same moment, each opens its first page
(Overview) then `--session-pages` (a navigation click each). Reported per count: the
first page's and the next pages' p50/p95 server time (rerun request to `script_finished`),
errors, the server's CPU seconds and peak RSS, and the ratio of the first page's p95 to the
single session's, measured first in the same run after a warm-up session.
`--compare-watcher` runs the same series again with Streamlit's source watcher and
post-run garbage collection switched back on (its defaults), for a before/after.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))

STATUSES = ["COMPLETED"] * 14 + ["FAILED"] * 3 + ["CANCELLED", "TIMED_OUT"]
MODELS = ["Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen3-8B", "Qwen/Qwen3-4B", "Qwen/Qwen2.5-14B-Instruct"]


def populate(url: str, n_jobs: int, n_points: int, seed: int = 0) -> str:
    """Fill the database at `url`; returns the id of the long job."""
    from sqlalchemy import insert

    from core import db
    from core.db import repo
    from core.db.tables import CostRecord, Dataset, Job, JobEvent
    from core.settings import load_settings
    from core.users import LOCAL_ACTOR

    rng = random.Random(seed)
    settings = load_settings(database_url=url)
    now = dt.datetime.now(dt.UTC)
    long_points = n_points // 5
    per_job = (n_points - long_points) // max(1, n_jobs - 1)
    with db.session_scope(settings) as s:
        repo.ensure_user(LOCAL_ACTOR, s)
        datasets = [f"ds-bench{i:05d}" for i in range(40)]
        s.execute(
            insert(Dataset),
            [
                {
                    "id": d,
                    "owner_id": "local",
                    "name": f"dataset {i}",
                    "file_format": "jsonl",
                    "layout": "messages",
                    "rows": 1000,
                    "valid_rows": 1000,
                    "stats": {},
                    "created_at": now - dt.timedelta(days=60),
                }
                for i, d in enumerate(datasets)
            ],
        )
        jobs, costs = [], []
        for i in range(n_jobs):
            started = now - dt.timedelta(minutes=10 * (n_jobs - i))
            status = (
                "IN_PROGRESS"
                if i >= n_jobs - 2
                else "COMPLETED"
                if i == n_jobs - 3
                else rng.choice(STATUSES)
            )
            secs = rng.uniform(300, 7200)
            usd = secs * 0.00116
            done = status != "IN_PROGRESS"
            jobs.append(
                {
                    "id": f"job-bench{i:05d}",
                    "owner_id": "local",
                    "action": "train",
                    "dataset_id": rng.choice(datasets),
                    "base_model": rng.choice(MODELS),
                    "adapter_name": f"bot-{i}",
                    "spec": {"lora": {"r": 16}},
                    "status": status,
                    "gpu_type": "H100_80GB_PCIE",
                    "price_tier": "flex",
                    "rate_per_s": 0.00116,
                    "budget_usd": 10.0,
                    "created_at": started,
                    "updated_at": started,
                    "started_at": started,
                    "finished_at": started + dt.timedelta(seconds=secs) if done else None,
                    "last_seq": -1,
                    "runpod_job_id": None if done else f"rp-bench{i:05d}",
                    "cost_usd": usd if done else 0.0,
                    "final_loss": rng.uniform(0.5, 2.0),
                    "progress": 1.0 if done else 0.5,
                    "step": 100,
                    "total_steps": 200,
                    "attempt": 0,
                    "auto_relaunched": False,
                }
            )
            if done:
                costs.append(
                    {
                        "owner_id": "local",
                        "job_id": jobs[-1]["id"],
                        "attempt": 0,
                        "gpu_type": "H100_80GB_PCIE",
                        "price_tier": "flex",
                        "seconds": secs,
                        "usd": usd,
                        "month": repo.month_of(started),
                        "created_at": started,
                    }
                )
        long_id = jobs[-3]["id"]  # the newest finished job holds the long series
        s.execute(insert(Job), jobs)
        s.execute(insert(CostRecord), costs)
        batch: list[dict] = []
        for j in jobs:
            n = long_points if j["id"] == long_id else per_job
            t0 = j["started_at"].timestamp()
            for k in range(n):
                data = {
                    "step": k + 1,
                    "total_steps": n,
                    "loss": 2.5 * 0.999**k + rng.uniform(0, 0.05),
                    "lr": 2e-4,
                    "tokens_per_s": rng.uniform(900, 1100),
                    "elapsed_s": k * 0.5,
                }
                if (k + 1) % 50 == 0:
                    data["eval_loss"] = data["loss"] + 0.1
                batch.append(
                    {
                        "job_id": j["id"],
                        "seq": k,
                        "type": "metrics",
                        "ts": t0 + k * 0.5,
                        "data": data,
                    }
                )
            if len(batch) >= 20_000:
                s.execute(insert(JobEvent), batch)
                batch.clear()
        if batch:
            s.execute(insert(JobEvent), batch)
        s.execute(Job.__table__.update().values(last_seq=per_job - 1).where(Job.id != long_id))
        s.execute(Job.__table__.update().values(last_seq=long_points - 1).where(Job.id == long_id))
    return long_id


def advance(url: str, job_id: str, steps: int) -> int:
    """`steps` more metrics events for the running job `job_id`, as a sync would store them
    (seq after its newest); returns the newest step."""
    from core import db
    from core.db import repo
    from core.settings import load_settings
    from core.users import LOCAL_ACTOR

    with db.session_scope(load_settings(database_url=url)) as s:
        job = repo.get_job(LOCAL_ACTOR, s, job_id)
        seq, step = job.last_seq, job.step or 0
        events = [
            {
                "seq": seq + k,
                "type": "metrics",
                "data": {"step": step + k, "loss": 1.0 / (step + k), "lr": 2e-4},
            }
            for k in range(1, steps + 1)
        ]
        repo.append_events(LOCAL_ACTOR, s, job_id, events)
        repo.update_job(LOCAL_ACTOR, s, job_id, step=step + steps)
    return step + steps


def render_s(
    data_dir: Path,
    url: str,
    page: str,
    query: dict[str, str] | None = None,
    first_view: bool = True,
) -> float:
    """Seconds of one AppTest run of `page` (a fresh browser session)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ["BRIGHTRUN_DATA_DIR"] = str(data_dir)
    os.environ["DATABASE_URL"] = url
    if first_view:
        st.cache_data.clear()  # a chart the page already read for someone is kept
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    if query:
        at.query_params.update(query)
    t0 = time.perf_counter()
    at.switch_page(f"app_pages/{page}.py").run()
    elapsed = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError(f"{page}: {at.exception}")
    return elapsed


def chart_read_s(url: str, job_id: str, downsampled: bool) -> tuple[float, int]:
    from core import db, queries
    from core.db import repo
    from core.settings import load_settings
    from core.users import LOCAL_ACTOR

    settings = load_settings(database_url=url)
    t0 = time.perf_counter()
    with db.session_scope(settings) as s:
        if downsampled:
            n = len(queries.metric_series(LOCAL_ACTOR, s, job_id).step)
        else:
            n = len(repo.list_events(LOCAL_ACTOR, s, job_id, types=["metrics"]))
    return time.perf_counter() - t0, n


def fresh(url: str | None, folder: Path) -> str:
    from core import db
    from core.settings import load_settings

    folder.mkdir(parents=True, exist_ok=True)
    if url is None:
        for p in folder.glob("brightrun.db*"):
            p.unlink()
        url = f"sqlite:///{(folder / 'brightrun.db').as_posix()}"
    else:
        from sqlalchemy import text

        engine = db.create_db_engine(url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        engine.dispose()
    db.upgrade(load_settings(database_url=url, data_dir=folder))
    return url


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=5000)
    ap.add_argument("--points", type=int, default=500_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--database-url", default=None, help="a PostgreSQL database to use (it is emptied)"
    )
    ap.add_argument("--sessions", default="", help="session counts, e.g. 1,5,10,20,50")
    ap.add_argument("--session-pages", default="jobs,adapters,costs")
    ap.add_argument("--session-jobs", type=int, default=300)
    ap.add_argument("--no-pages", action="store_true", help="only the sessions part")
    ap.add_argument("--compare-watcher", action="store_true")
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["GPU_CLUSTER_API_URL"] = "http://127.0.0.1:9/v2/none"  # nothing to sync against
    if a.sessions:
        sessions_bench(a)
    if not a.no_pages:
        pages_bench(a)


def sessions_bench(a: argparse.Namespace) -> None:
    from ws_sessions import series, server

    folder = OUT / "dashboard-sessions"
    url = fresh(None, folder)
    populate(url, a.session_jobs, a.session_jobs * 20)
    env = {"BRIGHTRUN_DATA_DIR": str(folder), "DATABASE_URL": url}
    counts = [int(n) for n in a.sessions.split(",")]
    pages = [p for p in a.session_pages.split(",") if p]
    configs = [("deployment config", [])]
    if a.compare_watcher:
        watcher = ["--server.fileWatcherType", "auto", "--runner.postScriptGC", "true"]
        configs.append(("source watcher + post-run GC (Streamlit defaults)", watcher))
    report = {"date": dt.date.today().isoformat(), "machine": machine(), "runs": []}
    for label, flags in configs:
        with server(ROOT / "app.py", env, flags) as (ws_url, pid):
            rows = series(ws_url, pid, counts, pages)
        base = rows[0]["first_p95_s"]
        print(f"{label}:")
        for r in rows:
            r["first_p95_vs_single"] = round(r["first_p95_s"] / base, 2)
            print(
                f"  {r['sessions']:3d} sessions  first p50 {r['first_p50_s']:6.3f} s"
                f" p95 {r['first_p95_s']:6.3f} s (x{r['first_p95_vs_single']:.2f})"
                f"  next p50 {r['next_p50_s']:6.3f} s p95 {r['next_p95_s']:6.3f} s"
                f"  errors {r['errors']}  server cpu {r['server_cpu_s']:5.1f} s"
                f"  rss {r['server_peak_rss_mb']} MB"
            )
        report["runs"].append({"config": label, "flags": flags, "waves": rows})
    (OUT / "dashboard_sessions.json").write_text(json.dumps(report, indent=1))


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"


def pages_bench(a: argparse.Namespace) -> None:
    empty_dir, full_dir = OUT / "dashboard-empty", OUT / "dashboard-full"
    empty_url = fresh(None, empty_dir)
    full_url = fresh(a.database_url, full_dir)
    t0 = time.perf_counter()
    long_id = populate(full_url, a.jobs, a.points)
    print(f"populated {a.jobs} jobs, {a.points} metric points in {time.perf_counter() - t0:.0f} s")

    cases = [
        ("jobs table", "jobs", None),
        ("job detail (long job)", "jobs", {"job": long_id}),
        ("overview", "overview", None),
        ("costs", "costs", None),
    ]
    results = []
    for label, page, query in cases:
        render_s(empty_dir, empty_url, page)  # warm-up: imports, caches, engines
        render_s(full_dir, full_url, page, query)
        empty, full = [], []
        for _ in range(a.repeat):
            empty.append(render_s(empty_dir, empty_url, page))
            full.append(render_s(full_dir, full_url, page, query))
        e, f = statistics.median(empty), statistics.median(full)
        results.append(
            {"case": label, "empty_s": round(e, 3), "full_s": round(f, 3), "ratio": round(f / e, 2)}
        )
        print(
            f"{label:24s} empty {e:6.3f} s   {a.jobs} jobs / {a.points} points {f:6.3f} s   ratio {f / e:5.2f}"
        )
        if query:  # the same job viewed again: its chart comes from the cache
            again = statistics.median(
                render_s(full_dir, full_url, page, query, first_view=False) for _ in range(a.repeat)
            )
            results.append(
                {
                    "case": label + ", viewed again",
                    "empty_s": round(e, 3),
                    "full_s": round(again, 3),
                    "ratio": round(again / e, 2),
                }
            )
            print(
                f"{label + ', again':24s} empty {e:6.3f} s   {a.jobs} jobs / {a.points} points {again:6.3f} s   ratio {again / e:5.2f}"
            )

    down = [chart_read_s(full_url, long_id, True) for _ in range(a.repeat)]
    every = [chart_read_s(full_url, long_id, False) for _ in range(a.repeat)]
    d, n_d = statistics.median(x for x, _ in down), down[0][1]
    r, n_r = statistics.median(x for x, _ in every), every[0][1]
    print(
        f"long job's chart read: downsampled {n_d} points {d:.3f} s; every event {n_r} points {r:.3f} s; ratio {r / d:.1f}"
    )
    report = {
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "python": platform.python_version(),
        "database": "postgresql" if a.database_url else "sqlite",
        "jobs": a.jobs,
        "points": a.points,
        "repeat": a.repeat,
        "pages": results,
        "chart_read": {
            "downsampled_s": round(d, 4),
            "downsampled_points": n_d,
            "every_event_s": round(r, 4),
            "every_event_points": n_r,
            "ratio": round(r / d, 1),
        },
    }
    (OUT / "dashboard.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
