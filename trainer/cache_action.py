"""The `cache_model` action: a base model into the worker's model cache (`trainer.cache`).

A `cache_model` job (see `trainer.actions`) reports in `started` whether the model was
already cached and its `cold_start_s`; `completed` says whether it downloaded, how many
bytes, and how long it took, and, with `cache.quantized_copy`, the pre-quantised copy
(`trainer.model.ensure_quantized_copy`). A model given as a local folder needs no cache.

Raises `ModelUnavailable` (unknown, gated or private repo; a local path that is not a
model) and `DownloadFailed` (the hub could not be reached), as training does.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

from trainer.cache import (
    cache_folder,
    ensure_cached,
    folder_bytes,
    is_cached,
    quantized_copy_folder,
)
from trainer.env import WorkerEnv
from trainer.model import ensure_quantized_copy
from trainer.output import EventLog
from trainer.report import started_data
from trainer.shared.errors import ModelUnavailable
from trainer.shared.spec import Event, JobSpec


def cache_model(
    spec: JobSpec, env: WorkerEnv, log: EventLog, t0: float
) -> Generator[Event, None, dict[str, Any]]:
    """The `cache_model` action (see the module docstring)."""
    given = Path(spec.model.name_or_path).expanduser()
    if given.is_dir():
        if not (given / "config.json").is_file():
            raise ModelUnavailable(f"model folder {spec.model.name_or_path!r} has no config.json")
        yield log.emit("started", started_data(spec, env, t0, cached=True, folder=str(given)))
        return {
            "model": spec.model.name_or_path,
            "folder": str(given),
            "local": True,
            "already_cached": True,
            "downloaded": False,
        }
    if spec.model.name_or_path.count("/") != 1:
        raise ModelUnavailable(
            f"base model {spec.model.name_or_path!r} is neither an existing folder nor a hub "
            "id like 'org/name'"
        )
    before = is_cached(spec.model, env)
    folder = cache_folder(spec.model, env)
    yield log.emit("started", started_data(spec, env, t0, cached=before, folder=str(folder)))
    s0 = time.monotonic()
    folder, downloaded = ensure_cached(spec.model, env)
    out: dict[str, Any] = {
        "model": spec.model.name_or_path,
        "revision": spec.model.revision,
        "folder": str(folder),
        "already_cached": before,
        "downloaded": downloaded,
        "size_bytes": folder_bytes(folder),
        "download_s": round(time.monotonic() - s0, 3) if downloaded else 0.0,
    }
    if spec.cache is not None and spec.cache.quantized_copy:
        q0 = time.monotonic()
        target = quantized_copy_folder(spec.model, spec.quantization, env)
        target, made = ensure_quantized_copy(folder, target, spec.quantization)
        out["quantized_copy"] = {
            "quantization": spec.quantization,
            "folder": str(target),
            "made_now": made,
            "size_bytes": folder_bytes(target),
            "seconds": round(time.monotonic() - q0, 3) if made else 0.0,
        }
    return out
