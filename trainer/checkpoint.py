"""A training job's progress, and its checkpoints on the volume.

`Progress` is what the loop advances: the step, tokens seen, training seconds across
attempts, the metrics so far, the last eval loss, why training stopped, and with early
stopping the best evaluation and a copy of its weights (`trainer.stopping`).

Checkpoints (`Checkpoints(root)`, `root` = `CHECKPOINT_DIR/<job id>`) hold in `step-N`:
LoRA weights, optimizer, scheduler, RNG states and the progress counters (with early
stopping also the best evaluation and its weights, `best.safetensors`); `latest` names
the newest, written last, so a checkpoint is used only once complete. The data position
follows from the step number (each epoch's batch order is a function of the seed). The
event log of the job's attempts is `root/events.jsonl`. `resume(run)` returns the
progress of the latest checkpoint (its weights, optimizer, scheduler and RNG states
restored into `run`), or a fresh `Progress`; it raises `BadInput` when the checkpoint was
made for other settings.

`publish_adapter(run, step, ...)` also writes a checkpoint as a PEFT adapter folder that an
inference server sharing the volume can load while the job runs.

A job on several GPUs checkpoints with `torch.distributed.checkpoint`
(`trainer.sharded.ShardedCheckpoints`, the same folders): each rank writes its own shards
of the LoRA weights and optimizer state to `step-N/shards`, rank 0 the rest, and only rank
0 moves `latest`, after every rank has written. This class refuses to resume one. The adapter it saves or publishes is one ordinary PEFT folder, written by
rank 0 from the weights gathered whole.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.env import WorkerEnv
from trainer.output import copy_folder
from trainer.parallel import Group
from trainer.setup import Setup
from trainer.shared.errors import BadInput
from trainer.shared.files import EVENTS
from trainer.shared.spec import JobSpec
from trainer.stopping import BestEval, load_trainable, trainable_state


@dataclass
class Progress:
    step: int = 0
    tokens_loss: int = 0
    tokens_total: int = 0
    train_seconds: float = 0.0  # across attempts
    metrics: list[dict[str, Any]] = field(default_factory=list)
    last_eval: float | None = None
    stop_reason: str = "finished"
    resumed_from: int | None = None
    best: BestEval | None = None  # with early stopping: the lowest eval loss so far
    best_weights: dict[str, Any] | None = field(default=None, repr=False)

    def summary(self, total_steps: int) -> dict[str, Any]:
        """The `completed` event's summary. With early stopping, `eval_loss` is the adapter's
        (the best evaluation's) and `best_step`/`best_eval_loss` say which step it is."""
        last = next((m for m in reversed(self.metrics) if "loss" in m), None)
        best: dict[str, Any] = {}
        if self.best is not None:
            best = {"best_step": self.best.step, "best_eval_loss": self.best.loss}
        return {
            "steps": self.step,
            "total_steps": total_steps,
            "final_loss": last["loss"] if last else None,
            "eval_loss": self.last_eval,
            "tokens_seen": self.tokens_loss,
            "tokens_seen_total": self.tokens_total,
            "train_seconds": round(self.train_seconds, 3),
            "stop_reason": self.stop_reason,
            **best,
        }


class Checkpoints:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.events = root / EVENTS

    def latest(self) -> Path | None:
        pointer = self.root / "latest"
        if not pointer.is_file():
            return None
        folder = self.root / pointer.read_text().strip()
        return folder if (folder / "state.json").is_file() else None

    def resume(self, run: Setup) -> Progress:
        """The latest checkpoint's progress, its state restored into `run`; else a fresh one."""
        import torch
        from safetensors.torch import load_file

        folder = self.latest()
        if folder is None:
            return Progress()
        state = json.loads((folder / "state.json").read_text())
        if state.get("gpus", 1) != 1:
            raise BadInput(
                f"the checkpoint of job {run.spec.job_id} was made on {state['gpus']} GPUs "
                f"({state.get('sharding')}); this run has 1: each GPU's random state and shards "
                "belong to the layout they were saved with",
                f"resume with gpus {state['gpus']} (and the same sharding), or use a new job id",
            )
        total = run.batches.total_steps
        if state.get("total_steps") != total:
            raise BadInput(
                f"checkpoint of job {run.spec.job_id} was made for {state.get('total_steps')} "
                f"steps, this spec plans {total}",
                "resume with the same settings and data, or use a new job id",
            )
        if not load_trainable(run.model, load_file(folder / "trainable.safetensors")):
            raise BadInput(
                "the checkpoint's LoRA weights do not match this job's LoRA settings",
                "resume with the same settings, or use a new job id",
            )
        best_file = folder / "best.safetensors"
        run.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
        run.scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
        _restore_rng(torch.load(folder / "rng.pt", weights_only=False))
        return Progress(
            step=state["step"],
            tokens_loss=state["tokens_loss"],
            tokens_total=state["tokens_total"],
            train_seconds=state["train_seconds"],
            metrics=state["metrics"],
            last_eval=state.get("last_eval"),
            resumed_from=state["step"],
            best=BestEval(**state["best"]) if state.get("best") else None,
            best_weights=load_file(best_file) if best_file.is_file() else None,
        )

    def save(self, run: Setup, progress: Progress) -> Path:
        """Write `step-N` (all but the newest removed after); returns its folder."""
        import torch
        from safetensors.torch import save_file

        name = f"step-{progress.step:07d}"
        tmp = self.root / f".{name}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        save_file(trainable_state(run.model), tmp / "trainable.safetensors")
        if progress.best_weights is not None:
            save_file(progress.best_weights, tmp / "best.safetensors")
        torch.save(run.optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(run.scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(_rng_state(), tmp / "rng.pt")
        state = {
            "step": progress.step,
            "total_steps": run.batches.total_steps,
            "tokens_loss": progress.tokens_loss,
            "tokens_total": progress.tokens_total,
            "train_seconds": progress.train_seconds,
            "metrics": progress.metrics,
            "last_eval": progress.last_eval,
            "best": progress.best.as_dict() if progress.best is not None else None,
        }
        (tmp / "state.json").write_text(json.dumps(state))
        return self.publish(tmp, name)

    def publish(self, tmp: Path, name: str) -> Path:
        """`tmp` becomes `step-N`, named by `latest`; older checkpoints are removed."""
        final = self.root / name
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        (self.root / "latest.tmp").write_text(name)
        (self.root / "latest.tmp").replace(self.root / "latest")
        for old in self.root.glob("step-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def clear(self) -> None:
        """Remove the checkpoints (the job completed)."""
        for p in self.root.glob("step-*"):
            shutil.rmtree(p, ignore_errors=True)
        (self.root / "latest").unlink(missing_ok=True)

    def remove_log(self) -> None:
        """Remove the event log, and the folder when nothing else is left in it."""
        self.events.unlink(missing_ok=True)
        if self.root.is_dir() and not any(self.root.iterdir()):
            self.root.rmdir()


def _rng_state() -> dict[str, Any]:
    import torch

    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "python": random.getstate(),
    }


def _restore_rng(rng: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    random.setstate(rng["python"])


def save_adapter(model: Any, spec: JobSpec, dest: Path, group: Group | None = None) -> Path:
    """The PEFT adapter folder at `dest`, its config naming the base model as the spec does.
    With `group` every rank must call it; rank 0 writes the folder from the gathered weights."""
    cfg = model.peft_config["default"]
    cfg.base_model_name_or_path, cfg.revision = spec.model.name_or_path, spec.model.revision
    if group is not None:
        from trainer.parallel import full_trainable_state

        whole = full_trainable_state(model)
        if not group.main:
            return dest
        model.save_pretrained(dest, safe_serialization=True, state_dict=whole)
    else:
        model.save_pretrained(dest, safe_serialization=True)
    (dest / "README.md").unlink(missing_ok=True)
    return dest


def publish_adapter(run: Setup, step: int, env: WorkerEnv, work: Path) -> dict[str, Any]:
    """The checkpoint also as a PEFT adapter folder, which an inference server sharing the
    volume can load while the job runs: `ADAPTER_DIR/.checkpoints/<job id>/step-N` (kept
    after later checkpoints, so that any of them can be promoted to a version)."""
    if env.adapter_dir is None:
        return {}
    tmp = save_adapter(run.model, run.spec, work / f"checkpoint-adapter-{step}", run.group)
    if run.group is not None and not run.group.main:
        return {}
    dest = env.adapter_dir / ".checkpoints" / run.spec.job_id / f"step-{step}"
    copy_folder(tmp, dest)
    shutil.rmtree(tmp, ignore_errors=True)
    return {"adapter_path": str(dest)}
