"""Launching again from what was stored: the one place a launch is rebuilt from a spec.

A relaunch (`core.jobs.lifecycle.relaunch`), the out-of-memory relaunch
(`core.jobs.oom`), a retry (`core.jobs.lifecycle.retry`, through
`LaunchRequest.spec_settings`) and a continued training
(`core.jobs.lifecycle.continue_training`, from the settings a version keeps, which are its
job's) all start from a stored spec and go through `request_from_spec`. Every
`LaunchRequest` field comes from the spec (LoRA, training without its time limit,
quantisation, eval fraction, method and preference settings) or from the launch's own
fields the caller passes (model, dataset, adapter name, budget, GPU type, the version it
continues), with the caller's changes over them. A field neither gives is a `TypeError`:
a field added to `LaunchRequest` cannot be dropped silently by one of these paths, as
`method`, `preference` and the version continued once were. `request_for_job` is the same
for a stored job. Bad stored settings raise `InvalidInput` naming the field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from core import planner
from core.db.tables import Job
from core.jobs.preflight import LaunchRequest
from core.jobs.presets import DEFAULT_QUANTIZATION
from core.jobs.spec import without_time_limit
from trainer.shared.methods import Method


def spec_settings(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The `LaunchRequest` fields a stored spec (or a version's settings) holds."""
    return {
        "lora": spec.get("lora"),
        "training": without_time_limit(spec.get("training")),
        "quantization": spec.get("quantization") or DEFAULT_QUANTIZATION,
        "eval_fraction": (spec.get("data") or {}).get("eval_fraction", 0.0),
        "method": spec.get("method") or Method.SFT,
        "preference": spec.get("preference"),
        "grading": spec.get("grading"),
        "gpus": spec.get("gpus") or 1,
    }


def request_from_spec(spec: Mapping[str, Any], **launch: Any) -> LaunchRequest:
    """The request that launches `spec` again: its settings, with `launch` over them (the
    launch's own fields, all of them, and any changed setting). See the module docstring."""
    given = {**spec_settings(spec), **launch}
    missing = sorted({f.name for f in dataclasses.fields(LaunchRequest)} - given.keys())
    if missing:
        raise TypeError(f"a launch rebuilt from a stored spec lacks {', '.join(missing)}")
    return LaunchRequest.build(**given)


def request_for_job(job: Job, **changes: Any) -> LaunchRequest:
    """The request that launches `job` again (same model, dataset, adapter name, budget,
    GPU type, version continued and settings), with `changes` over it."""
    own = {
        "model": job.base_model,
        "dataset_id": job.dataset_id,
        "adapter_name": job.adapter_name,
        "budget_usd": job.budget_usd,
        "gpu_type": job.gpu_type if job.gpu_type in planner.GPU_TYPES else None,
        "resume_from_version_id": job.resume_from_version_id,
    }
    return request_from_spec(job.spec or {}, **{**own, **changes})
