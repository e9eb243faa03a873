"""Soak: many users' short jobs through the local stack while faults are injected, then a
full reconcile; what was expected against what was stored.

    python bench/soak.py [--quick] [--users N] [--jobs M] [--backfill off|on|both]
                         [--json FILE] [--seed S]

- stack: the local endpoint (`python -m local.endpoint`, the real trainer handler on the
  tiny model, CPU, 2 workers, with the soak's ledger: `bench.soak_ledger`) behind a
  loopback fault proxy, three syncer processes (`core.syncer`, recording what each pull
  hands them), SQLite (or `--database-url`), the local store.
- load: N users x M jobs (a few training steps each), submitted at once.
- faults, at random every few seconds until every job ended: a worker process SIGKILLed
  (at most a third of the jobs; each such job is retried once, resuming from its
  checkpoint), a syncer SIGKILLed (and a new one started), a burst of 429/503 answers
  from the proxy.
- then the syncers stop and one full reconcile (`core.jobs.reconcile`) runs.
- expected: every event a worker emitted, from the workers' own ledger, which the product
  never reads (not the `events.jsonl` the worker uploads: the syncer itself falls back to
  that at a job's end); stored: the database. Lost = emitted and not stored; duplicated =
  a (job, seq) that `/stream` delivered to the syncers more than once, counted from their
  own records before the database's unique (job, seq) absorbs it; stuck = a job not ended
  after the reconcile; dollars: the job's cost against its cost records (one per attempt).
  The counts are `bench.soak_ledger.tally`.
- `--backfill`: each run once with the end-of-job backfill (the final output's events and
  the uploaded `events.jsonl`) switched off, so that what is stored is what the live path
  delivered, and once with it on, as the product runs (`both`, the default, reports both).

`--quick`: 2 users x 2 jobs per run (a few minutes). `--json FILE` writes the report. The
exit status is 1 when any run lost, duplicated or stored an event no worker emitted, left
a job stuck, or its dollars do not match.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the project's packages before bench/ (bench/trainer.py is a script)

from bench import soak_ledger  # noqa: E402 - after the path is set

KEY = "soak-endpoint-key"
TRAINING = {
    "max_steps": 6,
    "learning_rate": 3e-3,
    "micro_batch_size": 2,
    "grad_accum": 1,
    "max_length": 96,
    "checkpoint_every": 2,
    "compute_dtype": "float32",
    "warmup_ratio": 0.0,
}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FaultProxy:
    """Forwards to the endpoint; `burst(n)` answers the next n calls 429 or 503 instead."""

    def __init__(self, upstream: str) -> None:
        import httpx

        self.upstream, self.pending, self.answered = upstream, 0, 0
        self.lock = threading.Lock()
        client = httpx.Client(timeout=60)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:  # signed URLs are credentials
                pass

            def _any(self) -> None:
                with proxy.lock:
                    fault = proxy.pending > 0
                    proxy.pending -= fault
                    proxy.answered += fault
                if fault:
                    code = random.choice((429, 503))
                    self.send_response(code)
                    self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    r = client.request(
                        self.command,
                        proxy.upstream + self.path,
                        content=body,
                        headers={k: v for k, v in self.headers.items() if k.lower() != "host"},
                    )
                    self.send_response(r.status_code)
                    kind = r.headers.get("content-type", "application/json")
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(r.content)))
                    self.end_headers()
                    self.wfile.write(r.content)
                except httpx.TransportError:
                    self.send_error(502)  # the endpoint did not answer: a gateway would say so
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the caller (a syncer just killed) is gone

            do_GET = do_POST = _any

        self.port = _free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def burst(self, n: int) -> None:
        with self.lock:
            self.pending += n


class Stack:
    def __init__(self, root: Path, database_url: str, workers: int, backfill: bool) -> None:
        from trainer.shared.tiny import build_tiny_chat_model

        self.root, self.data = root, root / "data"
        self.ledger, self.deliveries = root / "ledger", root / "deliveries"
        for folder in (self.data, self.ledger, self.deliveries):
            folder.mkdir(parents=True)
        self.backfill = backfill
        self.model = build_tiny_chat_model(root / "tiny", seed=0)
        port = _free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.env = {
            **os.environ,
            "BRIGHTRUN_DATA_DIR": str(self.data),
            "GPU_CLUSTER_API_URL": f"{self.base}/v2/local",
            "GPU_CLUSTER_API_KEY": KEY,
            "PUBLIC_BASE_URL": self.base,
            "LOCAL_DEVICE": "cpu",
            "OMP_NUM_THREADS": "1",
            "DATABASE_URL": database_url,
            "EVAL_AFTER_JOB": "false",
            "MAX_CONCURRENT_JOBS": "50",
            "SOAK_LEDGER_DIR": str(self.ledger),
        }
        log = open(root / "endpoint.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.endpoint = subprocess.Popen(
            [sys.executable, "-m", "local.endpoint", "--handler", "bench.soak_ledger:handler"]
            + ["--workers", str(workers)],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.proxy = FaultProxy(self.base)
        self.syncer_env = {
            **self.env,
            "GPU_CLUSTER_API_URL": f"http://127.0.0.1:{self.proxy.port}/v2/local",
            "SYNC_INTERVAL_S": "0.5",
            "SOAK_DELIVERY_DIR": str(self.deliveries),
            "SOAK_BACKFILL": "on" if backfill else "off",
        }
        self.syncers: list[subprocess.Popen] = []

    def wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/ping", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.3)
        raise RuntimeError("the local endpoint did not start")

    def start_syncer(self) -> None:
        self.syncers.append(
            subprocess.Popen(
                [sys.executable, "-m", "bench.soak_ledger"],
                cwd=ROOT,
                env=self.syncer_env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    def kill_syncer(self, rng: random.Random) -> None:
        victim = self.syncers.pop(rng.randrange(len(self.syncers)))
        victim.kill()
        victim.wait()
        self.start_syncer()

    def kill_worker(self, rng: random.Random) -> bool:
        workers = [p for p in _children(self.endpoint.pid) if b"spawn_main" in _cmdline(p)]
        if not workers:
            return False
        try:
            os.kill(rng.choice(workers), signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True

    def stop(self) -> None:
        for p in [*self.syncers, self.endpoint]:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
        self.proxy.httpd.shutdown()


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _settings(stack: Stack):
    from core.settings import Settings

    return Settings(
        _env_file=None,
        data_dir=stack.data,
        database_url=stack.env["DATABASE_URL"],
        gpu_cluster_api_url=stack.syncer_env["GPU_CLUSTER_API_URL"],
        gpu_cluster_api_key=KEY,
        public_base_url=stack.base,
        local_device="cpu",
        max_concurrent_jobs=50,
        monthly_budget_usd=10_000.0,
        model_dirs=[stack.root],
        eval_after_job=False,
    )


def _add_users(settings, n: int) -> list[tuple[Any, str]]:
    """N users, each with a small chat dataset in the store."""
    from core.clients.storage import dataset_normalized_key, make_blob_store
    from core.db import repo, session_scope
    from core.users import Actor

    store = make_blob_store(settings)
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"q{i}"},
                {"role": "assistant", "content": f"a{i}"},
            ]
        }
        for i in range(16)
    ]
    out = []
    for i in range(n):
        actor = Actor(f"soak-user-{i}", f"user{i}@soak.local")
        dataset_id = repo.new_id("ds")
        key = dataset_normalized_key(actor.user_id, dataset_id)
        body = "".join(json.dumps(r) + "\n" for r in rows).encode()
        store.put_bytes("datasets", key, body, "application/x-ndjson")
        with session_scope(settings) as s:
            repo.ensure_user(actor, s)
            repo.create_dataset(
                actor,
                s,
                name="soak",
                file_format="jsonl",
                layout="messages",
                rows=len(rows),
                valid_rows=len(rows),
                normalized_key=key,
                dataset_id=dataset_id,
            )
        out.append((actor, dataset_id))
    return out


def _inject(
    stack: Stack, rng: random.Random, stop: threading.Event, counts: Counter, max_worker_kills: int
) -> None:
    """A fault every few seconds; at most `max_worker_kills` workers killed (each costs a
    job its attempt), the rest syncer kills and 429/503 bursts."""
    while not stop.wait(rng.uniform(3.0, 8.0)):
        fault = rng.choice(("worker_kill", "syncer_kill", "syncer_kill", "burst_429_5xx"))
        if fault == "worker_kill" and (
            counts[fault] >= max_worker_kills or not stack.kill_worker(rng)
        ):
            continue
        if fault == "syncer_kill":
            stack.kill_syncer(rng)
        if fault == "burst_429_5xx":
            stack.proxy.burst(rng.randint(3, 12))
        counts[fault] += 1


def _measure(settings, stack: Stack, submitted: list[tuple[Any, str]]) -> dict[str, Any]:
    from core import jobs
    from core.db import repo, session_scope

    report: dict[str, Any] = Counter()
    statuses: Counter = Counter()
    stored: dict[str, list[int]] = {}
    ended: dict[str, str] = {}
    for actor, job_id in submitted:
        job = jobs.get(actor, settings, job_id)
        statuses[f"{job.status}:{job.failure_kind or job.stop_reason or '-'}"] += 1
        ended[job_id] = job.status
        events = jobs.events(actor, settings, job_id)
        stored[job_id] = [e.seq for e in events]
        starts = [e for e in events if e.type == "started"]
        report["retried_jobs_resumed_from_a_checkpoint"] += len(starts) > 1 and bool(
            (starts[-1].data or {}).get("resumed_from_step")
        )
        with session_scope(settings) as s:
            records = [r for r in repo.list_cost_records(actor, s) if r.job_id == job_id]
        report["dollars_jobs"] += float(job.cost_usd or 0.0)
        report["dollars_cost_records"] += sum(r.usd for r in records)
        report["cost_mismatches"] += abs(sum(r.usd for r in records) - (job.cost_usd or 0)) > 1e-6
    ledger = soak_ledger.read_ledger(stack.ledger)
    emitted = {job: stages["emitted"] for job, stages in ledger.items()}
    deliveries = soak_ledger.read_deliveries(stack.deliveries)
    out = dict(report)
    out.update(soak_ledger.tally(emitted, deliveries, stored, ended))
    out["lost_never_handed_over"] = soak_ledger.lost_never_handed(ledger, stored)
    out.update(jobs=len(submitted), statuses=dict(statuses))
    for k in ("dollars_jobs", "dollars_cost_records"):
        out[k] = round(out.get(k, 0.0), 6)
    out.setdefault("cost_mismatches", 0)
    return out


def _until_ended(settings, submitted: list[tuple[Any, str]], counts: Counter, deadline: float):
    """Wait for every job to end; a job whose worker was killed is retried once (it resumes
    from its checkpoint), as a user would."""
    from core import jobs
    from core.db.tables import TERMINAL_STATUSES

    while time.monotonic() < deadline:
        ended = 0
        for actor, job_id in submitted:
            job = jobs.get(actor, settings, job_id)
            if job.status == "FAILED" and job.failure_kind == "internal" and job.attempt == 0:
                jobs.retry(actor, settings, job_id)
                counts["retries"] += 1
            else:
                ended += job.status in TERMINAL_STATUSES
        if ended == len(submitted):
            return
        time.sleep(1.0)


def _submit_all(settings, stack: Stack, users, per_user: int) -> list[tuple[Any, str]]:
    from core import jobs

    submitted = []
    for actor, dataset_id in users:
        for _ in range(per_user):
            job = jobs.submit(
                actor,
                settings,
                dataset_id=dataset_id,
                model=str(stack.model),
                lora={"r": 8, "alpha": 16, "dropout": 0.0},
                training=TRAINING,
                quantization="none",
                budget_usd=1.0,
            )
            submitted.append((actor, job.id))
    return submitted


def run(args: argparse.Namespace, backfill: bool) -> dict[str, Any]:
    """One soak run (module docstring), the end-of-job backfill on or off."""
    from core import db, jobs

    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="brightrun-soak-"))
    stack = Stack(root, args.database_url, workers=2, backfill=backfill)
    counts: Counter = Counter()
    stop = threading.Event()
    t0 = time.monotonic()
    try:
        stack.wait_ready()
        settings = _settings(stack)
        db.upgrade(settings)
        users = _add_users(settings, args.users)
        for _ in range(3):
            stack.start_syncer()
        submitted = _submit_all(settings, stack, users, args.jobs)
        kills = max(1, len(submitted) // 3)
        injector = threading.Thread(
            target=_inject, args=(stack, rng, stop, counts, kills), daemon=True
        )
        injector.start()
        _until_ended(settings, submitted, counts, time.monotonic() + args.timeout_s)
        stop.set()
        injector.join()
        for p in stack.syncers:
            p.kill()
            p.wait()
        stack.syncers.clear()
        with soak_ledger.installed(stack.deliveries, backfill):
            reconcile = jobs.reconcile(settings)
        report = _measure(settings, stack, submitted)
        report.update(
            backfill="on" if backfill else "off",
            users=args.users,
            jobs_per_user=args.jobs,
            faults=dict(counts),
            proxy_fault_answers=stack.proxy.answered,
            reconcile_errors=len(reconcile.errors),
            wall_s=round(time.monotonic() - t0, 1),
            date=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            machine=f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}",
            database="postgresql" if args.database_url.startswith("postgres") else "sqlite",
        )
        return report
    finally:
        stop.set()
        stack.stop()
        db.dispose_engines()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python bench/soak.py", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="2 users x 2 jobs (a few minutes)")
    p.add_argument("--users", type=int, default=4)
    p.add_argument("--jobs", type=int, default=3, help="jobs per user")
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--timeout-s", type=float, default=1800.0)
    p.add_argument("--database-url", default="", help="empty: SQLite in a throwaway folder")
    p.add_argument(
        "--backfill",
        choices=("off", "on", "both"),
        default="both",
        help="the end-of-job backfill (final output, uploaded log) in each run",
    )
    p.add_argument("--json", type=Path, help="write the report to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.users, args.jobs, args.timeout_s = 2, 2, min(args.timeout_s, 600.0)
    modes = ("off", "on") if args.backfill == "both" else (args.backfill,)
    reports = {f"backfill_{mode}": run(args, backfill=mode == "on") for mode in modes}
    text = json.dumps(reports, indent=2, sort_keys=True)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    checks = ("lost", "duplicated", "stored_not_emitted", "stuck", "cost_mismatches")
    sys.exit(1 if any(r[k] for r in reports.values() for k in checks) else 0)


if __name__ == "__main__":
    main()
