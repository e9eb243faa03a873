"""The model cache on the network volume (filled by `trainer.cache_action`).

Layout: a hub model lives in `MODEL_CACHE_DIR/<org>--<name>[@revision]`, and counts as
cached only when its completion marker `.brightrun-complete` is there. `ensure_cached` (used
by training and merge jobs through `trainer.model.resolve_model_path`, and by the
`cache_model` action) downloads into a temporary folder next to it, writes the marker, then
renames the folder into place (atomic on one filesystem), so a job never sees half a model:
two workers caching the same model at once both download, the first rename wins and the
other copy is discarded. A leftover folder without the marker (a download that broke off)
is replaced.

The optional pre-quantised copy (`cache.quantized_copy`, made by
`trainer.model.ensure_quantized_copy`) is saved to `<cached folder>.<nf4|int8>` the same
way (temporary folder, marker, rename: `publish`); `quantized_copy_folder` says where it is.

Raises `ModelUnavailable` (unknown, gated or private repo; a local path that is not a
model) and `DownloadFailed` (the hub could not be reached), as training does.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trainer.env import WorkerEnv
from trainer.shared.errors import DownloadFailed, ModelUnavailable
from trainer.shared.spec import ModelSpec

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


def cache_folder(model: ModelSpec, env: WorkerEnv) -> Path:
    name = model.name_or_path.replace("/", "--")
    if model.revision:
        name += "@" + model.revision.replace("/", "--")
    return env.model_cache_dir / name


def is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / MARKER).is_file()


def download_snapshot(repo_id: str, revision: str | None, dest: Path, token: str | None) -> None:
    """Download the repo's training files into `dest` (the only network call here). Without
    a token none is sent (not even one huggingface_hub would find in the environment)."""
    from huggingface_hub import snapshot_download

    snapshot_download(
        repo_id=repo_id,
        revision=revision,
        local_dir=dest,
        allow_patterns=HUB_PATTERNS,
        token=token or False,
    )


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@contextmanager
def staging(folder: Path) -> Iterator[Path]:
    """A temporary folder next to `folder` (one filesystem, so `publish` can rename it into
    place), removed afterwards whatever happened."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish(tmp: Path, folder: Path) -> bool:
    """Rename a complete `tmp` into `folder`; False when another worker got there first."""
    (tmp / MARKER).write_text("ok\n")
    if folder.exists() and not is_complete(folder):
        stale = folder.parent / f".{folder.name}.stale-{uuid.uuid4().hex[:8]}"
        os.replace(folder, stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.replace(tmp, folder)
    except OSError:
        if not is_complete(folder):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    return True


def is_cached(model: ModelSpec, env: WorkerEnv) -> bool:
    return is_complete(cache_folder(model, env))


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

    folder = cache_folder(model, env)
    if is_complete(folder):
        return folder, False
    with staging(folder) as tmp:
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
            raise ModelUnavailable(
                f"hub repo {model.name_or_path!r} has no config.json: not a model"
            )
        publish(tmp, folder)
    return folder, True


def quantized_copy_folder(model: ModelSpec, quantization: str, env: WorkerEnv) -> Path:
    folder = cache_folder(model, env)
    return folder.parent / f"{folder.name}.{quantization}"
