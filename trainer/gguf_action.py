"""The `gguf` action: a LoRA adapter merged into its base model and written as GGUF for
llama.cpp and Ollama, for base models too large for the controller's own export.

Lifecycle (see `trainer.actions`): the base model (folder, the volume's model cache, or
the hub, as training and `merge` resolve it) and the adapter loaded in `gguf.dtype` (on the
GPU when there is one; `trainer.merge.load`) -> `started` -> `merge_and_unload` -> the
merged model written as GGUF (`trainer.shared.gguf_write`, one tensor at a time) in
`gguf.variant`, quantised by llama.cpp (on the CPU) for Q8_0/Q4_K_M -> the Ollama
`Modelfile` (`trainer.shared.modelfile`) -> deliver: PUT each file to
`output.upload_urls[name]` (names: `trainer.shared.files.gguf_names(gguf.file_stem,
gguf.variant, gguf.shards)`: one GGUF, or llama.cpp's split GGUF in `gguf.shards` files),
and copy them to `output.local_dir` when given. A file above `gguf.max_file_bytes` fails
the job before any upload, naming its size and the limit.

Between `started` and the final event come `progress` events, each `{"stage", "step",
"steps", "fraction"}`: stage `merge`, `write` (every tenth of the tensors' bytes, with
`done_bytes`/`total_bytes`), `quantize` (Q8_0/Q4_K_M only), `upload` (after each file,
with its `file`); `step` counts the stages from 1 to `steps`.

The `completed` event's data: `name`, `base_model`, `variant`, `dtype`, `files` (name ->
bytes), `size_bytes`, `uploaded`, `seconds` per stage (and `local_dir`).

Failures: an architecture the GGUF writer does not handle, or a file without an upload URL
when upload URLs are given (checked before anything is loaded), is `bad_input`; the rest as
in `merge` (an adapter that does not fit the base is `bad_input`, one that cannot be
fetched `download_failed`).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

from trainer.env import WorkerEnv
from trainer.merge import load, started_extra
from trainer.output import EventLog, copy_folder, put_file
from trainer.report import started_data
from trainer.shared import gguf_write
from trainer.shared.errors import BadInput
from trainer.shared.files import LOG_FILES, MODELFILE, gguf_files, gguf_name, gguf_names
from trainer.shared.modelfile import base_sampling, modelfile
from trainer.shared.spec import Event, JobSpec


class _Stages:
    """Numbers the job's stages and emits their `progress` events."""

    def __init__(self, log: EventLog, names: list[str]) -> None:
        self.log, self.names = log, names

    def emit(self, stage: str, fraction: float, **extra: Any) -> Event:
        return self.log.emit(
            "progress",
            {
                "stage": stage,
                "step": self.names.index(stage) + 1,
                "steps": len(self.names),
                "fraction": round(fraction, 4),
                **extra,
            },
        )


def _write(
    merged: Any, folder: Path, out: Path, spec: JobSpec, stages: _Stages
) -> Generator[Event, None, None]:
    """Write (and quantise) the GGUF into `out` (its files: `gguf_files`), emitting
    progress."""
    g = spec.gguf
    assert g is not None
    steps = gguf_write.write_merged_steps(merged, folder, out, g.variant, g.file_stem, g.shards)
    next_tenth = 0.0
    for stage, done, total in steps:
        fraction = done / total if total else 1.0
        if stage == "write" and fraction >= next_tenth:
            next_tenth = min(1.0, int(fraction * 10 + 1) / 10)
            yield stages.emit("write", fraction, done_bytes=done, total_bytes=total)
        elif stage == "quantize":
            yield stages.emit("quantize", fraction)


def _uploads(spec: JobSpec) -> list[str]:
    """The files to PUT to upload URLs (none when only `local_dir` is given); `BadInput`
    before any work when some of them have no URL."""
    o, g = spec.output, spec.gguf
    assert o is not None and g is not None
    if not set(o.upload_urls) - set(LOG_FILES):
        return []
    names = gguf_names(g.file_stem, g.variant, g.shards)
    missing = [n for n in names if n not in o.upload_urls]
    if missing:
        raise BadInput(
            f"the GGUF export has files without an upload URL: {missing}",
            "sign an upload URL for every name `trainer.shared.files.gguf_names` lists",
        )
    return names


def _fits(spec: JobSpec, out: Path) -> None:
    """`GgufFailed` when a written file is above the store's single-upload limit (before
    any upload: the store would refuse it after the whole file was sent)."""
    g = spec.gguf
    assert g is not None
    if g.max_file_bytes is None:
        return
    for name in gguf_files(g.file_stem, g.variant, g.shards):
        size = (out / name).stat().st_size
        if size > g.max_file_bytes:
            raise gguf_write.GgufFailed(
                f"{name} is {size / 1e9:.2f} GB, above the store's single-upload limit of "
                f"{g.max_file_bytes / 1e9:.2f} GB (the export's size estimate was low); "
                "export it again with GGUF_MAX_FILE_MB lowered, so that it is split in more files"
            )


def _deliver(spec: JobSpec, out: Path, stages: _Stages) -> Generator[Event, None, list[str]]:
    """PUT each file to its upload URL (emitting progress), copy them to `local_dir`."""
    o = spec.output
    assert o is not None
    names = _uploads(spec)
    if names:
        _fits(spec, out)
    for i, name in enumerate(names, start=1):
        put_file(o.upload_urls[name], out / name)
        yield stages.emit("upload", i / len(names), file=name)
    if o.local_dir:
        copy_folder(out, Path(o.local_dir))
    return names


def gguf(
    spec: JobSpec, env: WorkerEnv, log: EventLog, t0: float
) -> Generator[Event, None, dict[str, Any]]:
    """The `gguf` action (see the module docstring)."""
    g, o = spec.gguf, spec.output
    assert g is not None and o is not None
    quantised = g.variant in gguf_write.QUANTS
    uploads = _uploads(spec)  # fail fast: every file has somewhere to go
    steps = ["merge", "write", *(["quantize"] if quantised else [])]
    stages = _Stages(log, steps + (["upload"] if uploads else []))
    work = Path(tempfile.mkdtemp(prefix=f"brightrun-{spec.job_id}-"))
    seconds: dict[str, float] = {}
    try:
        attached = load(spec, env, work)
        reason = gguf_write.refusal(attached.model.config.model_type)
        if reason:
            raise gguf_write.GgufRefused(reason)
        yield log.emit("started", started_data(spec, env, t0, **started_extra(spec, attached)))
        s0 = time.monotonic()
        yield stages.emit("merge", 0.0)
        merged, attached.model = attached.model.merge_and_unload(), None
        seconds["merge"] = time.monotonic() - s0
        out, folder = work / "gguf", attached.folder
        assert folder is not None
        out.mkdir()
        s0 = time.monotonic()
        yield from _write(merged, folder, out, spec, stages)
        del merged
        seconds["write"] = time.monotonic() - s0
        merged_name = gguf_name(g.file_stem, g.variant)  # Ollama reads one file (see modelfile)
        text = modelfile(
            merged_name, base_sampling(folder), shards=gguf_files(g.file_stem, g.variant, g.shards)
        )
        (out / MODELFILE).write_text(text, encoding="utf-8")
        s0 = time.monotonic()
        uploaded = yield from _deliver(spec, out, stages)
        seconds["deliver"] = time.monotonic() - s0
        files = {n: (out / n).stat().st_size for n in gguf_names(g.file_stem, g.variant, g.shards)}
        result: dict[str, Any] = {
            "name": o.adapter_name,
            "base_model": spec.model.name_or_path,
            "variant": g.variant,
            "dtype": g.dtype,
            "files": files,
            "size_bytes": sum(files.values()),
            "uploaded": uploaded,
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
        }
        if o.local_dir:
            result["local_dir"] = o.local_dir
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)
