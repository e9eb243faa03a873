"""The model cache on the network volume, and the `cache_model` action that fills it.

Layout: a hub model lives in `MODEL_CACHE_DIR/<org>--<name>[@revision]`, and counts as
cached only when its completion marker `.brightrun-complete` is there. `ensure_cached` (used
by training and merge jobs through `trainer.model.resolve_model_path`, and by the
`cache_model` action) downloads into a temporary folder next to it, writes the marker, then
renames the folder into place (atomic on one filesystem), so a job never sees half a model:
two workers caching the same model at once both download, the first rename wins and the
other copy is discarded. A leftover folder without the marker (a download that broke off)
is replaced.

The optional pre-quantised copy (`cache.quantized_copy`) is the model loaded with
bitsandbytes as the job's `quantization` (NF4 with double quantisation, or int8) and saved
in that form to `<cached folder>.<nf4|int8>`, the same way (temporary folder, marker,
rename). It is four times smaller to read at start; `quantized_copy_folder` says where it is.

A `cache_model` job (see `trainer.actions`) reports in `started` whether the model was
already cached and its `cold_start_s`; `completed` says whether it downloaded, how many
bytes, and how long it took. A model given as a local folder needs no cache.

Raises `ModelUnavailable` (unknown, gated or private repo; a local path that is not a
model) and `DownloadFailed` (the hub could not be reached), as training does.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Generator
from pathlib import Path
from typing import Any

from trainer.env import WorkerEnv
from trainer.output import EventLog
from trainer.report import started_data
from trainer.shared.errors import BadInput, DownloadFailed, ModelUnavailable
from trainer.shared.spec import Event, JobSpec, ModelSpec

MARKER = ".brightrun-complete"

# Files needed to train from a hub repo; everything else (other weight formats, images,
# ONNX/GGUF copies) is skipped.
HUB_PATTERNS = [
    "*.json",
    "*.safetensors",
    "*.jinja",
    "*.txt",
    "*.model",
    "*.tiktoken",
    "tokenizer*",
]


def _cache_folder(model: ModelSpec, env: WorkerEnv) -> Path:
    name = model.name_or_path.replace("/", "--")
    if model.revision:
        name += "@" + model.revision.replace("/", "--")
    return env.model_cache_dir / name


def _is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / MARKER).is_file()


def download_snapshot(repo_id: str, revision: str | None, dest: Path, token: str | None) -> None:
    """Download the repo's training files into `dest` (the only network call here). Without
    a token none is sent (not even one huggingface_hub would find in the environment)."""
    from huggingface_hub import snapshot_download

    snapshot_download(
        repo_id=repo_id, revision=revision, local_dir=dest, allow_patterns=HUB_PATTERNS,
        token=token or False,
    )  # fmt: skip


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _publish(tmp: Path, folder: Path) -> bool:
    """Rename a complete `tmp` into `folder`; False when another worker got there first."""
    (tmp / MARKER).write_text("ok\n")
    if folder.exists() and not _is_complete(folder):
        stale = folder.parent / f".{folder.name}.stale-{uuid.uuid4().hex[:8]}"
        os.replace(folder, stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.replace(tmp, folder)
    except OSError:
        if not _is_complete(folder):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    return True


def is_cached(model: ModelSpec, env: WorkerEnv) -> bool:
    return _is_complete(_cache_folder(model, env))


def ensure_cached(model: ModelSpec, env: WorkerEnv) -> tuple[Path, bool]:
    """The cached folder of a hub model, downloading it first when it is not complete.
    Returns (folder, whether this call downloaded: also True when another worker's copy
    won the rename and ours was discarded)."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    folder = _cache_folder(model, env)
    if _is_complete(folder):
        return folder, False
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        try:
            download_snapshot(model.name_or_path, model.revision, tmp, env.hf_token)
        except GatedRepoError as e:
            raise ModelUnavailable(
                f"base model {model.name_or_path!r} is gated on the hub",
                "accept the model's licence on huggingface.co with the account whose HF_TOKEN "
                "the endpoint uses, or pick another model",
            ) from e
        except (RepositoryNotFoundError, RevisionNotFoundError) as e:
            raise ModelUnavailable(
                f"base model {model.name_or_path!r}"
                + (f" at revision {model.revision!r}" if model.revision else "")
                + " was not found on the hub (or is private)"
            ) from e
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
            raise DownloadFailed(
                f"downloading base model {model.name_or_path!r} failed: {type(e).__name__}",
                "the hub could not be reached or the download broke off; retry later, or put "
                "the model into MODEL_CACHE_DIR on the network volume",
            ) from e
        if not (tmp / "config.json").is_file():
            raise ModelUnavailable(f"hub repo {model.name_or_path!r} has no config.json: not a model")
        _publish(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder, True


def quantized_copy_folder(model: ModelSpec, quantization: str, env: WorkerEnv) -> Path:
    folder = _cache_folder(model, env)
    return folder.parent / f"{folder.name}.{quantization}"


def ensure_quantized_copy(source: Path, target: Path, quantization: str) -> tuple[Path, bool]:
    """Save `source` loaded in `quantization` (nf4 | int8) to `target` once."""
    if _is_complete(target):
        return target, False
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    if quantization == "nf4":
        bnb = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )  # fmt: skip
    elif quantization == "int8":
        bnb = BitsAndBytesConfig(load_in_8bit=True)
    else:
        raise BadInput(f"a quantised copy needs quantization nf4 or int8 (got {quantization!r})")
    device = {"": 0} if torch.cuda.is_available() else {"": "cpu"}
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, quantization_config=bnb, dtype=torch.bfloat16, device_map=device
        )
        model.save_pretrained(tmp, safe_serialization=True)
        AutoTokenizer.from_pretrained(source).save_pretrained(tmp)
        del model
        made = _publish(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target, made


def cache_model(
    spec: JobSpec, env: WorkerEnv, log: EventLog, t0: float
) -> Generator[Event, None, dict[str, Any]]:
    """The `cache_model` action (see the module docstring)."""
    given = Path(spec.model.name_or_path).expanduser()
    if given.is_dir():
        if not (given / "config.json").is_file():
            raise ModelUnavailable(f"model folder {spec.model.name_or_path!r} has no config.json")
        yield log.emit("started", started_data(spec, env, t0, cached=True, folder=str(given)))
        return {"model": spec.model.name_or_path, "folder": str(given), "local": True,
                "already_cached": True, "downloaded": False}  # fmt: skip
    if spec.model.name_or_path.count("/") != 1:
        raise ModelUnavailable(
            f"base model {spec.model.name_or_path!r} is neither an existing folder nor a hub "
            "id like 'org/name'"
        )
    before = is_cached(spec.model, env)
    folder = _cache_folder(spec.model, env)
    yield log.emit("started", started_data(spec, env, t0, cached=before, folder=str(folder)))
    s0 = time.monotonic()
    folder, downloaded = ensure_cached(spec.model, env)
    out: dict[str, Any] = {
        "model": spec.model.name_or_path,
        "revision": spec.model.revision,
        "folder": str(folder),
        "already_cached": before,
        "downloaded": downloaded,
        "size_bytes": _folder_bytes(folder),
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
            "size_bytes": _folder_bytes(target),
            "seconds": round(time.monotonic() - q0, 3) if made else 0.0,
        }
    return out
