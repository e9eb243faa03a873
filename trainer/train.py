"""One training job as a fixed lifecycle: setup -> train -> save -> deliver -> cleanup.

`run_training(spec, env, t0)` takes a validated spec (`trainer.actions.run_job` validates
payloads) and is a generator of `trainer.shared.spec.Event`s, numbered by `seq`: first the
earlier attempts' events the controller never stored (`EventLog.unreported`), then
`started` once setup is done, `metrics` and `checkpoint` events from the loop
(`trainer.loop`), then exactly one `completed` or `failed` as the last event. It never
raises for a job that fails: the failure becomes the final event (kind decided by
exception type, see `trainer.shared.errors`), with the step reached when there was one.

Setup (`trainer.setup`) fails fast, in this order: base model files (cache, then hub),
tokenizer, dataset (download, row validation, tokenisation), model load (quantisation,
LoRA), batch plan, optimizer, parent adapter; then the latest checkpoint is resumed
(`trainer.checkpoint`): a job started again with the same id continues from it and
continues the event numbering. The checkpoint folder is removed once the job completed
and its files were delivered.

Output: a PEFT adapter folder (`adapter_config.json` naming the base model as given in
the spec, `adapter_model.safetensors`) plus `brightrun.json` (spec without URLs, summary,
metrics); uploaded to `spec.output.upload_urls` by file name, copied to
`ADAPTER_DIR/<adapter name>` and to `spec.output.local_dir` when set. `events.jsonl` and
`result.json` are uploaded at the end, also after a failure. A job stopped by
`time_limit_s` saves and delivers what it trained and completes with reason `time_limit`;
one stopped by `training.early_stopping` completes with reason `early_stopping`, and with
early stopping on the adapter is always the best evaluated weights (the summary's
`best_step` and `best_eval_loss`; its `eval_loss` is then the adapter's).
"""

from __future__ import annotations

import gc
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainer.checkpoint import Checkpoints, Progress, save_adapter
from trainer.env import WorkerEnv
from trainer.loop import train
from trainer.output import EventLog, copy_folder, folder_files, upload_files
from trainer.report import failure_data, public_config, training_started, upload_event_log
from trainer.setup import Setup, setup
from trainer.shared.files import RECORD
from trainer.shared.spec import SPEC_VERSION, Event, JobSpec


def run_training(spec: JobSpec, env: WorkerEnv, t0: float) -> Iterator[Event]:
    """Run one training job; yields its events (see the module docstring)."""
    assert spec.output is not None  # a train spec has output
    checkpoints = Checkpoints(env.checkpoint_dir / spec.job_id)
    elog = EventLog(checkpoints.events, spec.first_seq)
    work = Path(tempfile.mkdtemp(prefix=f"brightrun-{spec.job_id}-"))
    yield from elog.unreported  # the earlier attempt's events the controller missed
    run: Setup | None = None
    progress = Progress()
    completed = False
    final: Event
    try:
        run = setup(spec, env, work)
        progress = checkpoints.resume(run)
        started = elog.emit("started", training_started(spec, env, t0, run, progress.resumed_from))
        yield started
        yield from train(run, progress, checkpoints, elog, env, work)
        folder = save(run, progress, started.data, work / "adapter")
        adapter = deliver(spec, env, folder)
        completed = True
        summary = progress.summary(run.batches.total_steps)
        final = elog.emit(
            "completed", {"reason": progress.stop_reason, "adapter": adapter, "summary": summary}
        )
    except Exception as exc:  # noqa: BLE001 - every failure becomes the failed event (report.failure_data logs it)
        data = failure_data(exc, spec)
        if progress.step:
            data["step"] = progress.step
        final = elog.emit("failed", data)
    finally:
        cleanup(run, checkpoints, completed)
    upload_event_log(elog, final, spec.job_id, spec.output.upload_urls)
    shutil.rmtree(work, ignore_errors=True)
    if completed:
        checkpoints.remove_log()
    yield final


def save(run: Setup, progress: Progress, started: dict[str, Any], out: Path) -> Path:
    """The adapter folder at `out`: PEFT's files and `brightrun.json` (on several GPUs every
    rank calls it, and rank 0 alone writes the folder)."""
    save_adapter(run.model, run.spec, out, run.group)
    if run.group is not None and not run.group.main:
        return out
    record = {
        "brightrun_spec_version": SPEC_VERSION,
        "spec": public_config(run.spec),
        "summary": progress.summary(run.batches.total_steps),
        "model": started["model"],
        "dataset": started["dataset"],
        "metrics": progress.metrics,
    }
    (out / RECORD).write_text(json.dumps(record, indent=1))
    return out


def deliver(spec: JobSpec, env: WorkerEnv, folder: Path) -> dict[str, Any]:
    """Upload the adapter's files and copy the folder; returns the `adapter` facts."""
    assert spec.output is not None
    files = folder_files(folder)
    uploaded = upload_files(files, spec.output.upload_urls)
    locations: dict[str, Any] = {"uploaded": uploaded}
    if env.adapter_dir is not None:
        locations["adapter_dir"] = str(
            copy_folder(folder, env.adapter_dir / spec.output.adapter_name)
        )
    if spec.output.local_dir:
        locations["local_dir"] = str(copy_folder(folder, Path(spec.output.local_dir)))
    return {
        "name": spec.output.adapter_name,
        "base_model": spec.model.name_or_path,
        "files": {n: p.stat().st_size for n, p in files.items()},
        "size_bytes": sum(p.stat().st_size for p in files.values()),
        **locations,
    }


def cleanup(run: Setup | None, checkpoints: Checkpoints, completed: bool) -> None:
    """Free the model's memory; once the job completed, remove its checkpoints."""
    if run is not None:
        run.release()
    gc.collect()
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if completed:
        checkpoints.clear()
