"""The training loop: optimizer steps until the plan's last step or the time limit.

`train(run, progress, checkpoints, elog, env, work)` is a generator of events: `metrics`
every `log_every` optimizer steps (and after each evaluation, and at the last step),
`checkpoint` after each checkpoint. It advances `progress` in place.

Each step: the step's micro-batches forward and backward, the loss averaged over the
loss-bearing tokens of the whole step; gradient clipping; a non-finite loss or gradient
norm raises `Diverged` before the optimizer applies it; then AdamW and the scheduler.
`time_limit_s` (seconds of training in this attempt) stops the loop after the current
step, with `progress.stop_reason` "time_limit". A step that runs out of memory while
some layers keep their activations is run again once with every layer recomputed.
Evaluation switches off dropout only (`trainer.preference_loss.dropout_off`). Preference
jobs (DPO, ORPO) take their loss and extra metrics from `run.preference`.

With `training.early_stopping` each evaluation goes through its rule (`trainer.stopping`):
a new best eval loss has its weights copied aside; once `patience` evaluations in a row
did not improve, the loop stops after that step's metrics with `progress.stop_reason`
"early_stopping". However the loop ends, the best weights are then loaded back (the
current ones evaluated first when they were not), so the adapter saved is the best one.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer import data as D
from trainer.checkpoint import Checkpoints, Progress, publish_adapter
from trainer.env import WorkerEnv
from trainer.output import EventLog
from trainer.parallel import local_share, scalar
from trainer.preference_loss import dropout_off
from trainer.setup import Setup
from trainer.shared.errors import BadInput, Diverged
from trainer.shared.spec import Event
from trainer.stopping import BestEval, load_trainable, trainable_state

log = logging.getLogger("brightrun.trainer")


@dataclass
class Attempt:
    """This attempt's own counters (throughput is per attempt; `Progress` spans attempts)."""

    start: float
    base_train_seconds: float
    step_seconds: float = 0.0
    tokens_loss: int = 0
    tokens_total: int = 0
    recompute_fallback_used: bool = False


@dataclass
class StepResult:
    loss: float
    grad_norm: float
    lr: float
    n_loss: int
    n_tokens: int
    note: str | None = None


def peak_memory(device: Any | None) -> tuple[int, str]:
    import resource

    if device is not None and device.type == "cuda":
        import torch

        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "peak_rss"


def train(
    run: Setup,
    progress: Progress,
    checkpoints: Checkpoints,
    elog: EventLog,
    env: WorkerEnv,
    work: Path,
) -> Iterator[Event]:
    """Train from `progress.step` to the plan's end (see the module docstring)."""
    import torch

    t, device, total = run.spec.training, run.loaded.device, run.batches.total_steps
    run.model.train()
    attempt = Attempt(start=time.monotonic(), base_train_seconds=progress.train_seconds)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if t.early_stopping is not None and progress.best is None:
        progress.best = BestEval()
    evaluated_at = None
    while progress.step < total:
        if t.time_limit_s is not None and time_up(run, attempt, t.time_limit_s):
            progress.stop_reason = "time_limit"
            break
        s0 = time.monotonic()
        result = optimizer_step(
            run, run.batches.step_batches(progress.step, device), progress.step, attempt, env
        )
        _count(progress, attempt, result, s0)
        eval_loss = None
        last = progress.step == total
        if run.batches.eval and ((t.eval_every and progress.step % t.eval_every == 0) or last):
            eval_loss = progress.last_eval = evaluate(run)
            evaluated_at = progress.step
        stop = eval_loss is not None and judge_eval(run, progress, eval_loss) and not last
        if progress.step % t.log_every == 0 or eval_loss is not None or last:
            m = metrics_record(run, progress, attempt, result, eval_loss)
            # the adapter's record and checkpoints keep the numbers, not GRPO's sample texts
            progress.metrics.append({k: v for k, v in m.items() if k != "samples"})
            yield elog.emit("metrics", m)
        if stop:
            progress.stop_reason = "early_stopping"
            break
        if t.checkpoint_every and progress.step % t.checkpoint_every == 0 and not last:
            path = checkpoints.save(run, progress)
            adapter = publish_adapter(run, progress.step, env, work)
            yield elog.emit("checkpoint", {"step": progress.step, "path": str(path), **adapter})
    if progress.stop_reason == "time_limit" and run.batches.eval and progress.last_eval is None:
        progress.last_eval = evaluate(run)
        evaluated_at = progress.step
    keep_best_weights(run, progress, evaluated_at)


def time_up(run: Setup, attempt: Attempt, limit_s: float) -> bool:
    """Whether this attempt's training time is spent; on several GPUs, whether any rank's
    is (one decision for all, or a rank would wait in a collective the others left)."""
    up = time.monotonic() - attempt.start >= limit_s
    return run.group.any(up) if run.group is not None else up


def judge_eval(run: Setup, progress: Progress, eval_loss: float) -> bool:
    """Early stopping's rule on this evaluation (keeping the weights of a new best); True
    when training should stop. Always False without early stopping."""
    es = run.spec.training.early_stopping
    if es is None or progress.best is None:
        return False
    if progress.best.observe(progress.step, eval_loss, es.min_delta):
        progress.best_weights = trainable_state(run.model)
    return progress.best.exhausted(es.patience)


def keep_best_weights(run: Setup, progress: Progress, evaluated_at: int | None) -> None:
    """With early stopping: the best evaluated weights back into the model (the current
    ones evaluated first when they were not), and `last_eval` theirs."""
    best = progress.best
    if best is None or not run.batches.eval:
        return
    if evaluated_at != progress.step and best.step != progress.step:
        progress.last_eval = evaluate(run)
        judge_eval(run, progress, progress.last_eval)
    if best.step != progress.step and progress.best_weights is not None:
        if not load_trainable(run.model, progress.best_weights):
            raise BadInput(
                "the best weights kept in the checkpoint do not match this job's LoRA settings",
                "retry with the job's own settings, or launch it again under a new id",
            )
        log.info("adapter: the weights of step %s (eval loss %.4f)", best.step, best.loss)
    progress.last_eval = best.loss


def _count(progress: Progress, attempt: Attempt, result: StepResult, s0: float) -> None:
    progress.step += 1
    attempt.step_seconds += time.monotonic() - s0
    progress.train_seconds = attempt.base_train_seconds + (time.monotonic() - attempt.start)
    attempt.tokens_loss += result.n_loss
    attempt.tokens_total += result.n_tokens
    progress.tokens_loss += result.n_loss
    progress.tokens_total += result.n_tokens


def optimizer_step(
    run: Setup, batches: list[D.Batch], step: int, attempt: Attempt, env: WorkerEnv
) -> StepResult:
    """One optimizer step over `batches` (step `step`, 0-based); raises `Diverged`."""
    import torch

    n_loss = sum(b.n_loss for b in batches)
    note = None
    try:
        step_loss = forward_backward(run, batches, step, env)
    except torch.OutOfMemoryError:
        # on several GPUs the others are already in the step's collectives: no retry
        note = None if run.group is not None else fall_back_to_recompute_all(run, attempt, step)
        if note is None:
            raise
        step_loss = forward_backward(run, batches, step, env)
    grad_norm = torch.nn.utils.clip_grad_norm_(run.params, run.spec.training.max_grad_norm)
    if run.group is not None:  # each rank summed its own micro-batches' share
        step_loss = run.group.sum(step_loss)
    loss_value, norm_value = float(step_loss), scalar(grad_norm)
    if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
        raise Diverged(
            f"training diverged at step {step + 1}: loss {loss_value}, gradient norm {norm_value}"
        )
    lr = run.scheduler.get_last_lr()[0]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return StepResult(loss_value, norm_value, lr, n_loss, sum(b.n_tokens for b in batches), note)


def forward_backward(run: Setup, batches: list[D.Batch], step: int, env: WorkerEnv) -> Any:
    """Gradients of the step's mean loss, accumulated over its micro-batches (this rank's
    share of them when the job runs on several GPUs: `trainer.parallel.local_share`)."""
    import torch

    step_loss = torch.zeros((), device=run.loaded.device)
    for b, scale in local_share(run.group, batches):
        loss = run.step_loss(b, batches)
        if env.force_nan_at_step == step + 1:
            loss = loss * float("nan")
        (loss * scale if scale != 1.0 else loss).backward()
        if scale:
            step_loss += loss.detach()
    return step_loss


def fall_back_to_recompute_all(run: Setup, attempt: Attempt, step: int) -> str | None:
    """After an out-of-memory step with some layers kept: recompute all, once."""
    import torch

    from trainer.memory import recompute_all

    facts = run.loaded.facts.get("activation_checkpointing", {})
    if (
        attempt.recompute_fallback_used
        or not facts.get("layers")
        or (facts.get("layers_recomputed") == facts.get("layers"))
    ):
        return None
    attempt.recompute_fallback_used = True
    run.optimizer.zero_grad(set_to_none=True)
    n = recompute_all(run.model)
    gc.collect()
    if run.loaded.device.type == "cuda":
        torch.cuda.empty_cache()
    log.warning("step %d ran out of memory; recomputing all %d layers", step + 1, n)
    return f"ran out of memory with some layers kept; all {n} layers are recomputed from now on"


def evaluate(run: Setup) -> float | None:
    """Mean loss per loss-bearing token over the eval samples (per pair for preference
    tuning, whose other eval metrics go to the next metrics event); None without any."""
    import torch

    if not run.batches.eval:
        return None
    if run.preference is not None:
        return run.preference.evaluate(run.batches.eval_batches(run.loaded.device))
    total, n = 0.0, 0
    with torch.no_grad(), dropout_off(run.model):
        for batch in run.batches.eval_batches(run.loaded.device):
            total += float(run.loss_sum(batch))
            n += batch.n_loss
    return total / max(n, 1)


def metrics_record(
    run: Setup, progress: Progress, attempt: Attempt, result: StepResult, eval_loss: float | None
) -> dict[str, Any]:
    """The `metrics` event's data after a step."""
    mem, mem_kind = peak_memory(run.loaded.device)
    seconds = max(attempt.step_seconds, 1e-9)
    m: dict[str, Any] = {
        "step": progress.step,
        "total_steps": run.batches.total_steps,
        "epoch": round(progress.step / run.batches.steps_per_epoch, 4),
        "loss": result.loss,
        "lr": result.lr,
        "grad_norm": result.grad_norm,
        "tokens_seen": progress.tokens_loss,
        "tokens_seen_total": progress.tokens_total,
        "tokens_per_s": round(attempt.tokens_loss / seconds, 2),
        "total_tokens_per_s": round(attempt.tokens_total / seconds, 2),
        "elapsed_s": round(progress.train_seconds, 3),
        "peak_memory_bytes": mem,
        "memory_kind": mem_kind,
    }
    if run.preference is not None:
        m.update(run.preference.take_metrics())
    if eval_loss is not None:
        m["eval_loss"] = eval_loss
    if result.note:
        m["note"] = result.note
    return m
