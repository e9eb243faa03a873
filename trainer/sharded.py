"""Checkpoints of a job on several GPUs, with `torch.distributed.checkpoint` (DCP).

`ShardedCheckpoints` is `trainer.checkpoint.Checkpoints` for a job on several GPUs.
`save(run, progress)` (every rank calls it): DCP writes the sharded LoRA
weights and optimizer state (`get_state_dict(..., ignore_frozen_params=True)`: the frozen
base is never saved) to `step-N/shards`, each rank its own part; each rank writes its RNG
state (`rng-R.pt`); rank 0 writes the scheduler and `state.json` (the progress counters,
plus `gpus` and `sharding`), then, after a barrier that every rank's files are written,
moves `latest`. Returns the folder.

`resume(run)` restores the latest into `run` (every rank calls it) and returns the
`Progress` (a fresh one when there is none). A checkpoint is only resumed by the same number of GPUs and the same
sharding it was made with, else `BadInput` says why: DCP could reshard the weights, but
the RNG states are per rank, and a single-GPU checkpoint holds none of this layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainer.checkpoint import Checkpoints, Progress, _restore_rng, _rng_state
from trainer.setup import Setup
from trainer.shared.errors import BadInput


def _state(run: Setup) -> tuple[Any, Any]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(
        run.model, run.optimizer, options=StateDictOptions(ignore_frozen_params=True)
    )


class ShardedCheckpoints(Checkpoints):
    def save(self, run: Setup, progress: Progress) -> Path:
        """Write `step-N` from every rank (see the module docstring)."""
        return save(self, run, progress)

    def resume(self, run: Setup) -> Progress:
        """The latest checkpoint's progress, restored into `run`; else a fresh one."""
        folder = self.latest()
        if folder is None:
            return Progress()
        return resume(run, folder, json.loads((folder / "state.json").read_text()))


def save(checkpoints: Checkpoints, run: Setup, progress: Progress) -> Path:
    """Write `step-N` from every rank (see the module docstring)."""
    import torch
    import torch.distributed.checkpoint as dcp

    group = run.group
    assert group is not None
    name = f"step-{progress.step:07d}"
    tmp = checkpoints.root / f".{name}.tmp"
    model_state, optim_state = _state(run)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=tmp / "shards")
    torch.save(_rng_state(), tmp / f"rng-{group.rank}.pt")
    if group.main:
        torch.save(run.scheduler.state_dict(), tmp / "scheduler.pt")
        state = {
            "step": progress.step,
            "total_steps": run.batches.total_steps,
            "tokens_loss": progress.tokens_loss,
            "tokens_total": progress.tokens_total,
            "train_seconds": progress.train_seconds,
            "metrics": progress.metrics,
            "last_eval": progress.last_eval,
            "gpus": group.world,
            "sharding": group.strategy,
        }
        (tmp / "state.json").write_text(json.dumps(state))
    group.barrier()  # every rank's files are written before rank 0 publishes them
    final = checkpoints.root / name
    if group.main:
        checkpoints.publish(tmp, name)
    group.barrier()  # no rank goes on (and may save again) before `latest` moved
    return final


def refusal(run: Setup, state: dict[str, Any]) -> BadInput | None:
    """Why this checkpoint cannot be resumed by this run, or None."""
    group = run.group
    gpus, sharding = (group.world, group.strategy) if group else (1, "single")
    made = (state.get("gpus", 1), state.get("sharding", "single"))
    if made != (gpus, sharding):
        return BadInput(
            f"the checkpoint of job {run.spec.job_id} was made on {made[0]} GPU(s) "
            f"({made[1]}); this run has {gpus} ({sharding}): each GPU's random state and "
            "shards belong to the layout they were saved with",
            f"resume with gpus {made[0]} (and the same sharding), or use a new job id",
        )
    if state.get("total_steps") != run.batches.total_steps:
        return BadInput(
            f"checkpoint of job {run.spec.job_id} was made for {state.get('total_steps')} "
            f"steps, this spec plans {run.batches.total_steps}",
            "resume with the same settings and data, or use a new job id",
        )
    return None


def resume(run: Setup, folder: Path, state: dict[str, Any]) -> Progress:
    """The checkpoint's progress, its state restored into `run` (module docstring)."""
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    refused = refusal(run, state)
    if refused is not None:
        raise refused
    assert run.group is not None
    model_state, optim_state = _state(run)
    both = {"model": model_state, "optim": optim_state}
    dcp.load(both, checkpoint_id=folder / "shards")
    set_state_dict(
        run.model,
        run.optimizer,
        model_state_dict=both["model"],
        optim_state_dict=both["optim"],
        options=StateDictOptions(ignore_frozen_params=True, strict=False),
    )
    run.scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    _restore_rng(torch.load(folder / f"rng-{run.group.rank}.pt", weights_only=False))
    return Progress(
        step=state["step"],
        tokens_loss=state["tokens_loss"],
        tokens_total=state["tokens_total"],
        train_seconds=state["train_seconds"],
        metrics=state["metrics"],
        last_eval=state.get("last_eval"),
        resumed_from=state["step"],
    )
