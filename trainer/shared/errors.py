"""Typed failures of a training job, and how each becomes a `failed` event.

Every failure the worker can explain is a `TrainerError` subclass carrying its kind (one of
`trainer.shared.spec.FAILURE_KINDS`), a message and a concrete suggestion. `describe_failure(exc)`
maps any exception to `(kind, message, suggestion)` by its type only: torch's
`OutOfMemoryError` is `out_of_memory`, pydantic's `ValidationError` is `bad_input`, a
`TrainerError` says its own kind, anything else is `internal`.
"""

from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import Any

from trainer.shared.spec import FailureKind


class TrainerError(Exception):
    kind: FailureKind = "internal"
    default_suggestion = "retry the job; if it fails again, report it with the job's event log"

    def __init__(self, message: str, suggestion: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.suggestion = suggestion or self.default_suggestion


class BadInput(TrainerError):
    kind: FailureKind = "bad_input"
    default_suggestion = "fix the dataset or setting named in the message and launch again"


class ModelUnavailable(TrainerError):
    kind: FailureKind = "model_unavailable"
    default_suggestion = (
        "check the base model id (e.g. 'Qwen/Qwen2.5-7B-Instruct') or folder; for a gated "
        "model, accept its licence on the hub and set HF_TOKEN on the endpoint"
    )


class DownloadFailed(TrainerError):
    kind: FailureKind = "download_failed"
    default_suggestion = (
        "the file could not be fetched: signed URLs expire, so launch the job again to get "
        "fresh ones; if the hub is down, retry later"
    )


class Diverged(TrainerError):
    kind: FailureKind = "diverged"
    default_suggestion = (
        "lower the learning rate (e.g. by 3-10x), keep max_grad_norm at 1.0, and add warmup"
    )


class Cancelled(TrainerError):
    kind: FailureKind = "cancelled"
    default_suggestion = "launch again to continue; the job resumes from its last checkpoint"


class UploadFailed(TrainerError):
    kind: FailureKind = "internal"
    default_suggestion = (
        "the adapter was trained but could not be stored: retry the job (it resumes from its "
        "last checkpoint); signed upload URLs expire, a retry gets fresh ones"
    )


def oom_suggestion(spec: Any | None) -> str:
    """What to change after running out of accelerator memory, from the job's settings."""
    if spec is None:
        return "use a smaller micro-batch or max_length, gradient checkpointing, or nf4"
    t = spec.training
    tips = []
    if t.micro_batch_size > 1:
        tips.append(
            f"micro_batch_size {max(1, t.micro_batch_size // 2)} with grad_accum "
            f"{t.grad_accum * 2} (same effective batch)"
        )
    if t.max_length > 1024:
        tips.append(f"max_length {t.max_length // 2}")
    if not t.gradient_checkpointing:
        tips.append("gradient_checkpointing on")
    if spec.quantization != "nf4":
        tips.append("quantization nf4")
    if not tips:
        tips.append("a GPU with more memory, or a smaller LoRA rank")
    return "out of accelerator memory: try " + "; ".join(tips)


VOLUME_FULL_SUGGESTION = (
    "free space on the volume (fewer checkpoints are kept with a lower CHECKPOINT_KEEP_LAST, "
    "or promote what you need and let CHECKPOINT_RETENTION_DAYS drop the rest) or make it "
    "larger, then retry the job: it resumes from its last complete checkpoint"
)


def _volume_full_message(exc: OSError) -> str:
    where = f" writing {Path(exc.filename).name}" if exc.filename else ""
    return f"the volume is full: no space left{where} ({exc.strerror or 'disk full'})"


def describe_failure(exc: BaseException, spec: Any | None = None) -> tuple[FailureKind, str, str]:
    """`(kind, message, suggestion)` for an exception, decided by its type."""
    from pydantic import ValidationError

    if isinstance(exc, TrainerError):
        return exc.kind, exc.message, exc.suggestion
    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors()
        )
        return "bad_input", f"invalid job spec: {problems}", BadInput.default_suggestion
    # Only an already imported torch can have raised its OutOfMemoryError.
    torch = sys.modules.get("torch")
    oom_types: tuple[type[BaseException], ...] = (MemoryError,)
    if torch is not None:
        oom_types += (torch.OutOfMemoryError,)
    if isinstance(exc, oom_types):
        return "out_of_memory", f"out of memory: {exc}".strip(), oom_suggestion(spec)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "volume_full", _volume_full_message(exc), VOLUME_FULL_SUGGESTION
    return (
        "internal",
        f"{type(exc).__name__}: {exc}",
        TrainerError.default_suggestion,
    )
