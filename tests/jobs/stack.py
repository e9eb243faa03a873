"""A whole local stack for the jobs and fault tests: the real local endpoint (a process
running the real trainer handler on the tiny model, CPU), syncer processes (`python -m
core.syncer`), SQLite or a given PostgreSQL database, the local store (or a loopback
Supabase project's Storage and Auth, `tests.state.supabase_project`), and the tiny
dataset. `make_stack` builds one (a module's fixture yields from it); `Stack` submits,
syncs and waits the way a user's session does."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import db, jobs
from core.clients.runpod import RunPodClient
from core.db import repo
from core.db.tables import TERMINAL_STATUSES
from core.settings import Settings
from core.users import LOCAL_ACTOR, Actor
from tests.jobs.conftest import ENDPOINT_KEY, ROOT, EndpointProcess, start_endpoint, wait_until
from tests.jobs.helpers import add_dataset
from tests.state.supabase_project import SupabaseProject
from tests.trainer.conftest import toy_rows

LORA = {"r": 8, "alpha": 16, "dropout": 0.0}
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


@dataclass
class Stack:
    settings: Settings
    endpoint: EndpointProcess
    model: Path
    dataset_id: str
    training: dict[str, Any] = field(default_factory=lambda: dict(TRAINING))
    syncers: list[subprocess.Popen] = field(default_factory=list)

    def submit(self, actor: Actor = LOCAL_ACTOR, **kw: Any):
        kw.setdefault("lora", LORA)
        kw.setdefault("training", self.training)
        kw.setdefault("quantization", "none")
        return jobs.submit(
            actor, self.settings, dataset_id=self.dataset_id, model=str(self.model), **kw
        )

    def client(self) -> RunPodClient:
        return RunPodClient(self.endpoint.url, ENDPOINT_KEY, backoff_s=0.05)

    def sync(self, job_id: str, actor: Actor = LOCAL_ACTOR):
        return jobs.sync(actor, self.settings, job_id)

    def events(self, job_id: str, actor: Actor = LOCAL_ACTOR) -> list:
        return jobs.events(actor, self.settings, job_id)

    def losses(self, job_id: str) -> list[float]:
        return [e.data["loss"] for e in self.events(job_id) if e.type == "metrics"]

    def wait_end(self, job_id: str, timeout_s: float = 240, actor: Actor = LOCAL_ACTOR):
        return wait_until(
            lambda: (j := self.sync(job_id, actor)).status in TERMINAL_STATUSES and j,
            timeout_s=timeout_s,
            every_s=0.3,
            what=f"job {job_id} to end",
        )

    def wait_event(self, job_id: str, type_: str, after_seq: int = -1, timeout_s: float = 180):
        def seen() -> Any:
            self.sync(job_id)
            return [e for e in self.events(job_id) if e.type == type_ and e.seq > after_seq]

        return wait_until(seen, timeout_s=timeout_s, every_s=0.2, what=f"a {type_} event")[-1]

    def cost_records(self, job_id: str) -> list:
        with db.session_scope(self.settings) as s:
            return [r for r in repo.list_cost_records(LOCAL_ACTOR, s) if r.job_id == job_id]

    def worker_pids(self) -> list[int]:
        """The endpoint's worker processes (each job runs in one)."""
        return [p for p in children(self.endpoint.proc.pid) if b"spawn_main" in cmdline(p)]

    def start_syncer(self, interval_s: float = 0.3) -> subprocess.Popen:
        env = {
            **self.endpoint.env,
            "SYNC_INTERVAL_S": str(interval_s),
            "DATABASE_URL": self.settings.database_url.get_secret_value(),
            "LOCAL_DEVICE": "cpu",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "core.syncer"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.syncers.append(proc)
        return proc

    def stop_syncers(self) -> None:
        for proc in self.syncers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait()
        self.syncers.clear()


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry.name))
    return out


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def kill(pid: int) -> None:
    """SIGKILL `pid`; one that has already exited is what the caller wanted anyway."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def assert_whole_history(stack: Stack, job_id: str) -> list:
    """Every event number from 0 stored exactly once (the database's unique (job, seq) rules
    out a duplicate; a gap is a lost event)."""
    evs = stack.events(job_id)
    seqs = [e.seq for e in evs]
    assert seqs == list(range(len(seqs))), f"events lost or repeated: {seqs}"
    return evs


def make_stack(
    root: Path,
    database_url: str = "",
    workers: int = 2,
    handler: str = "trainer.handler:handler",
    *,
    retention_s: float = 1800.0,
    max_concurrent_jobs: int = 8,
    training: dict[str, Any] | None = None,
    dataset: Callable[[Settings], str] | None = None,
    supabase: SupabaseProject | None = None,
) -> Iterator[Stack]:
    """The stack in `root`, torn down (syncers, endpoint, database engines) after use.
    `dataset` adds the jobs' dataset (default: the tiny toy rows) and returns its id.
    `supabase`: the controller keeps its files in that project's Storage and signs people
    in with its Auth (STORAGE=supabase, AUTH=supabase, its keys), instead of the local
    store and the one local user; the endpoint's processes are given none of its keys."""
    from trainer.shared.tiny import build_tiny_chat_model

    model = build_tiny_chat_model(root / "tiny", seed=0)
    data = root / "data"
    ep = start_endpoint(
        data,
        handler=handler,
        workers=workers,
        retention_s=retention_s,
        extra_env={"LOCAL_DEVICE": "cpu", "DATABASE_URL": database_url},
    )
    settings = Settings(
        _env_file=None,
        data_dir=data,
        database_url=database_url,
        gpu_cluster_api_url=ep.url,
        gpu_cluster_api_key=ENDPOINT_KEY,
        public_base_url=ep.base,
        local_device="cpu",
        max_concurrent_jobs=max_concurrent_jobs,
        model_dirs=[root],
        eval_after_job=False,
        **(supabase.settings() if supabase else {}),
    )
    db.upgrade(settings)
    dataset_id = dataset(settings) if dataset else add_dataset(settings, LOCAL_ACTOR, toy_rows())
    stack = Stack(settings, ep, model, dataset_id, dict(training or TRAINING))
    try:
        yield stack
    finally:
        stack.stop_syncers()
        ep.stop()
        db.dispose_engines()
