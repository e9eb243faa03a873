"""A training job on several GPUs, from the handler's side: torchrun, watched.

`run_multi(spec, env, t0)` is `trainer.train.run_training` for `spec.gpus` > 1, with the
same event contract: it writes the spec to a fresh run folder, starts
`python -m trainer.torchrun` (torchrun itself: one `trainer.rank` process per GPU,
`--max-restarts 0`) and yields rank 0's events as rank 0 appends them to the run folder.
When torchrun has exited it emits the one final event itself, into the volume's event log
(after rank 0's events), and uploads `events.jsonl` and `result.json`:

- `completed` with rank 0's data when every rank completed;
- else `failed`, naming the rank (`rank`, `gpus`; the message says "rank R of N"), the
  first of: a rank that failed on its own with a definite kind (out of memory, diverged,
  bad input...); a rank killed by a signal other than the SIGTERM torchrun stops the
  others with; a rank that failed on its own (kind internal; not a collective failing
  under it, see `trainer.rank`); the one rank that never reported (it hung until the
  others' collectives timed out); the rank torchrun saw end first; rank 0. Its kind, suggestion and step are that rank's when
  it reported them.

Nothing is left running: torchrun stops the other ranks when one fails, every collective
is bounded by `collective_timeout_s` (so a rank that hangs makes the others fail), a rank
still running `GRACE_S` after another reported its failure is killed (`Reaper`: a hung
process ignores torchrun's SIGTERM), and afterwards (also when the consumer stops early,
e.g. a cancelled job) any rank process still alive is killed by the pid it recorded, and
torchrun with it. Measured on the CPU: a rank killed mid-run ends the job in 0.4 s; a rank
that hangs, in the collective timeout plus about 6 s.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainer.checkpoint import Checkpoints
from trainer.env import WorkerEnv
from trainer.output import EventLog
from trainer.rank import EVENTS_STREAM, outcome_file
from trainer.report import failure_data, upload_event_log
from trainer.shared.errors import BadInput
from trainer.shared.spec import Event, JobSpec

log = logging.getLogger("brightrun.trainer")
RECORD = "torchrun.json"
POLL_S = 0.2
GRACE_S = 5.0  # after a rank reported a failure: how long torchrun gets to stop the others


def torchrun_command(run_dir: Path, gpus: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "trainer.torchrun",
        str(run_dir / RECORD),
        "--",
        "--standalone",
        "--nnodes=1",
        f"--nproc-per-node={gpus}",
        "--max-restarts=0",
        "--monitor-interval=0.2",
        "-m",
        "trainer.rank",
        str(run_dir),
    ]


def run_multi(spec: JobSpec, env: WorkerEnv, t0: float) -> Iterator[Event]:
    """Run `spec` on `spec.gpus` processes; yields its events (see the module docstring)."""
    assert spec.output is not None
    short = gpu_shortage(spec)
    if short is not None:  # the job's one failed event, its log uploaded
        elog = EventLog(Checkpoints(env.checkpoint_dir / spec.job_id).events, spec.first_seq)
        final = elog.emit("failed", {**failure_data(short, spec), "gpus": spec.gpus})
        upload_event_log(elog, final, spec.job_id, spec.output.upload_urls)
        yield final
        return
    run_dir = Path(tempfile.mkdtemp(prefix=f"brightrun-{spec.job_id}-gpus-"))
    (run_dir / "spec.json").write_text(spec.model_dump_json(), encoding="utf-8")
    logged = run_dir / "torchrun.log"
    with logged.open("wb") as out:
        proc = subprocess.Popen(
            torchrun_command(run_dir, spec.gpus),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env.to_environ()},
        )
    seen: list[Event] = []
    try:
        yield from _follow(run_dir / EVENTS_STREAM, proc, seen, Reaper(run_dir, spec.gpus))
        final_type, data = decide(run_dir, spec.gpus, seen)
    finally:
        stop_everything(run_dir, spec.gpus, proc)
    checkpoints = Checkpoints(env.checkpoint_dir / spec.job_id)
    elog = EventLog(checkpoints.events, spec.first_seq)
    final = elog.emit(final_type, data)
    upload_event_log(elog, final, spec.job_id, spec.output.upload_urls)
    if final_type == "completed":
        checkpoints.remove_log()
    if final_type == "failed":
        log.warning("torchrun's log:\n%s", logged.read_text(errors="replace")[-4000:])
    shutil.rmtree(run_dir, ignore_errors=True)
    yield final


class Reaper:
    """Once a rank has reported a failure, the ranks still running after `GRACE_S` are
    killed: torchrun stops the others with SIGTERM, which a stopped (hung) process only
    acts on once continued, and it waits 30 s before its own SIGKILL."""

    def __init__(self, run_dir: Path, gpus: int) -> None:
        self.run_dir, self.gpus, self.failed_at = run_dir, gpus, None

    def __call__(self) -> None:
        if self.failed_at is None:
            outcomes = [_read(outcome_file(self.run_dir, r)) for r in range(self.gpus)]
            if any(o is not None and not o.get("ok") for o in outcomes):
                self.failed_at = time.monotonic()
        elif time.monotonic() - self.failed_at > GRACE_S:
            for r in range(self.gpus):
                if _read(outcome_file(self.run_dir, r)) is None:
                    (self.run_dir / f"reaped-{r}").touch()
                    _kill_rank(self.run_dir, r)


def gpu_shortage(spec: JobSpec) -> BadInput | None:
    """Why this worker cannot run the job on its GPUs (fewer than asked for), or None. A
    job on the CPU (no CUDA, or `device: cpu`) runs its processes there."""
    import torch

    if spec.device == "cpu" or not torch.cuda.is_available():
        return None
    have = torch.cuda.device_count()
    if have >= spec.gpus:
        return None
    return BadInput(
        f"the job asks for {spec.gpus} GPUs and this worker has {have}",
        f"send it to the endpoint whose workers have {spec.gpus} GPUs (`brightrun deploy "
        f"--gpu-count {spec.gpus}`), or set gpus to {have}",
    )


def _follow(
    stream: Path, proc: subprocess.Popen[bytes], seen: list[Event], watch: Reaper
) -> Iterator[Event]:
    """Rank 0's events as they are appended, until torchrun has exited and all are read."""
    offset, pending = 0, b""
    while True:
        watch()
        done = proc.poll() is not None
        if stream.is_file():
            with stream.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
            offset += len(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    event = Event.model_validate_json(line)
                    seen.append(event)
                    yield event
        if done:
            return
        time.sleep(POLL_S)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def decide(run_dir: Path, gpus: int, seen: list[Event]) -> tuple[str, dict[str, Any]]:
    """The final event's type and data from the ranks' outcomes and torchrun's record."""
    outcomes = {r: _read(outcome_file(run_dir, r)) for r in range(gpus)}
    if all(o is not None and o.get("ok") for o in outcomes.values()):
        return "completed", dict(outcomes[0]["data"])  # type: ignore[index]
    failures = (_read(run_dir / RECORD) or {}).get("failures", {})
    failed = {r: o for r, o in outcomes.items() if o is not None and not o.get("ok")}
    own = sorted((o["ts"], r) for r, o in failed.items() if not o.get("peer_lost"))
    definite = [r for _, r in own if failed[r]["data"]["kind"] != "internal"]
    # ended by a signal that was not torchrun's own SIGTERM to the others
    killed = sorted(
        (f.get("ts") or 0.0, int(r))
        for r, f in failures.items()
        if outcomes[int(r)] is None and f.get("signal") not in (None, "SIGTERM")
    )
    silent = [r for r in range(gpus) if outcomes[r] is None]
    died = sorted((f.get("ts") or 0.0, int(r)) for r, f in failures.items())
    order = [*definite, *(r for _, r in killed), *(r for _, r in own)]
    order += silent if len(silent) == 1 else []
    rank = next(iter(order), died[0][1] if died else 0)
    failure = failures.get(str(rank))
    if (run_dir / f"reaped-{rank}").exists():
        failure = {**(failure or {}), "reaped": True}
    return "failed", failed_data(rank, gpus, outcomes[rank], failure, seen)


def failed_data(
    rank: int,
    gpus: int,
    outcome: dict[str, Any] | None,
    failure: dict[str, Any] | None,
    seen: list[Event],
) -> dict[str, Any]:
    """The `failed` data naming `rank`: its own report, or how torchrun saw it end."""
    steps = [e.data["step"] for e in seen if e.type == "metrics" and "step" in e.data]
    if outcome is not None and not outcome.get("ok"):
        own = dict(outcome["data"])
        own["message"] = f"rank {rank} of {gpus} failed: {own['message']}"
        return {**own, "rank": rank, "gpus": gpus}
    how = "without reporting"
    if failure and failure.get("reaped"):
        how = "without answering: the others' collectives timed out waiting for it"
    elif failure and failure.get("signal"):
        how = f"killed by {failure['signal']}"
    elif failure:
        how = f"with exit code {failure['exitcode']} without reporting"
    data: dict[str, Any] = {
        "kind": "internal",
        "message": f"rank {rank} of {gpus} ended {how}; the other ranks were stopped",
        "suggestion": "a rank killed by SIGKILL is most often the host running out of memory: "
        "retry, and if it repeats lower micro_batch_size or max_length, or use sharding fsdp",
        "rank": rank,
        "gpus": gpus,
    }
    if steps:
        data["step"] = steps[-1]
    return data


def stop_everything(run_dir: Path, gpus: int, proc: subprocess.Popen[bytes]) -> None:
    """torchrun and every rank process it started: stopped (killed when still alive)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for r in range(gpus):
        _kill_rank(run_dir, r)


def _kill_rank(run_dir: Path, rank: int) -> None:
    pid_file = run_dir / f"pid-{rank}"
    if pid_file.is_file():
        _kill(int(pid_file.read_text()))


def _kill(pid: int) -> None:
    """Kill `pid` if it is still one of this job's rank processes (pids are reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"trainer.rank" not in cmdline:
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    log.warning("rank process %d was still running; killed", pid)
