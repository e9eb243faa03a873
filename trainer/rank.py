"""One process of a multi-GPU training job: `python -m trainer.rank RUN_DIR` under torchrun.

`trainer.multi` writes the validated spec to `RUN_DIR/spec.json` and starts torchrun
(`trainer.torchrun`), which starts this module once per GPU. Every rank runs the same
lifecycle as a one-GPU job (`trainer.train`): setup (the model sharded, see
`trainer.parallel`) -> resume -> train -> save -> deliver -> cleanup. Only rank 0 reports:

- its events, as they happen, are appended to `RUN_DIR/events.jsonl` (one JSON line each,
  flushed) and to the volume's event log, which rank 0 alone writes; the earlier attempt's
  unreported events come first, as in `trainer.train`;
- it writes the checkpoint metadata (`trainer.sharded`), the adapter folder and
  `brightrun.json`, and uploads and copies the adapter.

The final event is not emitted here: each rank writes its outcome to `RUN_DIR/rank-R.json`
(`ok`, the `completed` data or the `failed` data, `peer_lost` when the failure is a
collective failing because of another rank: a `DistError`, or any failure that came a
collective timeout's length after the rank's last event, `ts`), and `trainer.multi` decides the job's
final event from all of them and from torchrun's own record. The process exits 0 when the
rank completed, 1 when it failed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainer.checkpoint import Progress
from trainer.env import WorkerEnv
from trainer.output import EventLog
from trainer.shared.spec import Event, JobSpec

EVENTS_STREAM = "events.jsonl"


def outcome_file(run_dir: Path, rank: int) -> Path:
    return run_dir / f"rank-{rank}.json"


def run_rank(spec: JobSpec, env: WorkerEnv, run_dir: Path) -> bool:
    """This rank's lifecycle (see the module docstring); True when it completed."""
    from trainer.parallel import close_group, init_group, peer_lost
    from trainer.report import failure_data

    group = init_group(env.collective_timeout_s, cpu=spec.device == "cpu")
    (run_dir / f"pid-{group.rank}").write_text(str(os.getpid()))
    stream = (run_dir / EVENTS_STREAM).open("a", encoding="utf-8") if group.main else None
    outcome: dict[str, Any] = {"rank": group.rank}
    progress = Progress()
    last = time.monotonic()  # when this rank last made progress (an event, every rank)
    try:
        for event in lifecycle(spec, env, group, progress, outcome):
            last = time.monotonic()
            if stream is not None:
                stream.write(event.model_dump_json() + "\n")
                stream.flush()
        outcome["ok"] = True
    except Exception as exc:  # noqa: BLE001 - every failure becomes this rank's outcome (failure_data logs it)
        data = failure_data(exc, spec)
        if progress.step:
            data["step"] = progress.step
        # gloo reports a lost peer and a timed-out collective as a plain RuntimeError: a rank
        # that failed a collective timeout's length after its last progress was waiting
        waited = time.monotonic() - last >= 0.9 * env.collective_timeout_s
        outcome.update(ok=False, data=data, peer_lost=peer_lost(exc) or waited)
    finally:
        if stream is not None:
            stream.close()
    outcome["ts"] = time.time()
    outcome_file(run_dir, group.rank).write_text(json.dumps(outcome))
    close_group()
    return bool(outcome["ok"])


def lifecycle(
    spec: JobSpec, env: WorkerEnv, group: Any, progress: Progress, outcome: dict[str, Any]
) -> Iterator[Event]:
    """setup -> resume -> train -> save -> deliver; the `completed` data goes to `outcome`."""
    from trainer.loop import train
    from trainer.report import training_started
    from trainer.setup import setup
    from trainer.sharded import ShardedCheckpoints
    from trainer.train import cleanup, deliver, save

    assert spec.output is not None
    t0 = time.monotonic()
    checkpoints = ShardedCheckpoints(env.checkpoint_dir / spec.job_id)
    elog = EventLog(checkpoints.events if group.main else None, spec.first_seq)
    if group.main:
        yield from elog.unreported
    work = Path(tempfile.mkdtemp(prefix=f"brightrun-{spec.job_id}-rank{group.rank}-"))
    run = None
    completed = False
    try:
        run = setup(spec, env, work, group)
        resumed = checkpoints.resume(run)
        progress.__dict__.update(resumed.__dict__)
        started = elog.emit("started", training_started(spec, env, t0, run, progress.resumed_from))
        yield started
        yield from train(run, progress, checkpoints, elog, env, work)
        folder = save(run, progress, started.data, work / "adapter")
        if group.main:
            adapter = deliver(spec, env, folder)
            outcome["data"] = {
                "reason": progress.stop_reason,
                "adapter": adapter,
                "summary": progress.summary(run.batches.total_steps),
            }
        completed = True
    finally:
        cleanup(run, checkpoints, completed and group.main)
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    from trainer.logs import configure_logging
    from trainer.torchrun import die_with_parent

    die_with_parent()
    args = sys.argv[1:] if argv is None else argv
    run_dir = Path(args[0])
    configure_logging()
    spec = JobSpec.model_validate_json((run_dir / "spec.json").read_text(encoding="utf-8"))
    return 0 if run_rank(spec, WorkerEnv.from_environ(), run_dir) else 1


if __name__ == "__main__":
    sys.exit(main())
