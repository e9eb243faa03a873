"""The `JobSpec` a training job is sent with, and the names a job's files get.

The stored spec never holds a signed URL: `PLACEHOLDER_URL` stands where the dataset, the
upload and the parent adapter URLs go; `core.jobs.dispatch` signs fresh ones at each send.
Bad values raise `InvalidInput` naming the field (`spec_errors`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from core.errors import InvalidInput
from trainer.shared.methods import Method
from trainer.shared.spec import JobSpec

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json", "brightrun.json")
LOG_FILES = ("events.jsonl", "result.json")
PLACEHOLDER_URL = "https://signed-url.invalid/"  # replaced by a fresh signed URL at each send


def spec_errors(e: ValidationError, prefix: str = "") -> str:
    """The validation errors as `field.path: message; ...` (`prefix` before each path)."""
    return "; ".join(
        f"{prefix}{'.'.join(str(p) for p in err['loc']) or 'spec'}: {err['msg']}"
        for err in e.errors()
    )


def default_adapter_name(model: str, dataset_name: str) -> str:
    raw = f"{model.rstrip('/').split('/')[-1]}-{dataset_name}"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-._")[:100]
    return slug or "adapter"


def build_spec(
    *,
    job_id: str,
    model: str,
    adapter_name: str,
    lora: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    quantization: str = "nf4",
    eval_fraction: float = 0.0,
    device: str = "auto",
    time_limit_s: float | None = None,
    with_eval_url: bool = False,
    resume_from: str | None = None,
    first_seq: int = 0,
    method: str = Method.SFT,
    preference: Mapping[str, Any] | None = None,
    grading: Mapping[str, Any] | None = None,
    gpus: int = 1,
) -> JobSpec:
    """The `JobSpec` for these settings; bad values raise `InvalidInput` naming the field.
    `resume_from` (continued training) is replaced by a fresh source at each send;
    `first_seq` is the first event number the controller has not stored (a retry's)."""
    training = dict(training or {})
    if time_limit_s is not None:
        given = training.get("time_limit_s")
        training["time_limit_s"] = min(float(given), time_limit_s) if given else time_limit_s
    try:
        return JobSpec(
            job_id=job_id,
            model={"name_or_path": model},
            data={
                "train_url": PLACEHOLDER_URL,
                "eval_fraction": eval_fraction,
                **({"eval_url": PLACEHOLDER_URL} if with_eval_url else {}),
            },
            lora=dict(lora or {}),
            quantization=quantization,
            training=training,
            output={"adapter_name": adapter_name},
            device=device,
            resume_from=resume_from,
            first_seq=first_seq,
            gpus=gpus,
            method=method,
            preference=dict(preference) if preference else None,
            grading=dict(grading) if grading else None,
        )
    except ValidationError as e:
        raise InvalidInput(f"invalid job settings: {spec_errors(e)}") from None


def with_time_limit(spec: JobSpec, time_limit_s: float) -> JobSpec:
    """The spec with the worker's time limit set (a smaller one the user gave is kept)."""
    given = spec.training.time_limit_s
    limit = min(given, time_limit_s) if given else time_limit_s
    return spec.model_copy(
        update={"training": spec.training.model_copy(update={"time_limit_s": limit})}
    )


def without_time_limit(training: Mapping[str, Any] | None) -> dict[str, Any]:
    """Training settings without the worker's time limit (the budget sets it afresh)."""
    t = dict(training or {})
    t.pop("time_limit_s", None)
    return t
