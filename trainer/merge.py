"""The `merge` action: a LoRA adapter merged into its base model's weights, for serving
without LoRA support.

Lifecycle (see `trainer.actions`): resolve the base model (folder, cache, or hub, as
training does) -> fetch the adapter (`merge.adapter_path`, or `merge.adapter_urls` by file
name) -> load the base in `merge.dtype` (bfloat16 by default; on the GPU when there is
one, else in CPU memory) and the adapter with PEFT (`trainer.model.load_adapter`, which
keeps a fused-expert model's shared-expert LoRA; an adapter with LoRA on the routed experts
gets that structure on the base first, `trainer.expert_lora`) -> `started` -> the routed
experts' LoRA folded into the fused expert tensors (W_e += scaling * B_e A_e, plain experts
modules again) -> `merge_and_unload` ->
save safetensors shards of at most `merge.max_shard_size_mb` plus config, generation
config and tokenizer -> deliver: PUT each file to `output.upload_urls[name]`, copy the
folder to `output.local_dir`, push it to `merge.hub_repo` with the worker's own HF_TOKEN.

Shard names do not depend on the shard count (`trainer.shared.files`), so the controller
can sign upload URLs before the job runs: `upload_names(total_bytes, max_shard_bytes)` is
every name the worker may write.

Failures: a file of the merged model that has no upload URL is `bad_input` (the URLs and
the spec disagree), an adapter whose files cannot be fetched is `download_failed`, one
that does not fit the base (other architecture or shapes) is `bad_input`. Every failure
ends as the job's `failed` event.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer import data as D
from trainer.env import WorkerEnv
from trainer.output import EventLog, copy_folder, folder_files, put_file
from trainer.report import started_data
from trainer.shared.errors import BadInput
from trainer.shared.export_spec import AdapterSource
from trainer.shared.files import INDEX, LOG_FILES, PEFT_FILES, RECORD, SINGLE, shard_name
from trainer.shared.spec import Event, JobSpec


def adapter_source(spec: JobSpec) -> AdapterSource:
    """The job's adapter section: `merge` or `gguf` (both merge an adapter first)."""
    section = spec.gguf if spec.action == "gguf" else spec.merge
    assert section is not None
    return section


def _fetch_adapter(spec: JobSpec, work: Path) -> Path:
    m = adapter_source(spec)
    if m.adapter_path:
        folder = Path(m.adapter_path)
        missing = [f for f in PEFT_FILES if not (folder / f).is_file()]
        if missing:
            raise BadInput(f"{spec.action}.adapter_path {m.adapter_path!r} lacks {missing}")
        return folder
    folder = work / "adapter"
    folder.mkdir(parents=True)
    for name in PEFT_FILES:
        D.fetch(m.adapter_urls[name], None, folder / name, f"adapter file {name}")
    return folder


def _rename_shards(folder: Path) -> list[str]:
    """Rename `model-0000i-of-0000N.safetensors` to count-free names, index rewritten."""
    index_path = folder / INDEX
    if not index_path.is_file():
        return [SINGLE]
    index = json.loads(index_path.read_text())
    old_names = sorted(set(index["weight_map"].values()))
    renamed = {old: shard_name(i) for i, old in enumerate(old_names, start=1)}
    for old, new in renamed.items():
        (folder / old).rename(folder / new)
    index["weight_map"] = {k: renamed[v] for k, v in index["weight_map"].items()}
    index_path.write_text(json.dumps(index, indent=2))
    return list(renamed.values())


def _push_to_hub(folder: Path, repo: str, private: bool, token: str | None) -> str:
    from huggingface_hub import HfApi

    if not token:
        raise BadInput(
            f"merge.hub_repo {repo!r} needs HF_TOKEN in the worker's environment",
            "set HF_TOKEN as a secret of the endpoint's template, or leave out hub_repo",
        )
    api = HfApi(token=token)
    api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo, repo_type="model", folder_path=folder, commit_message="Merged with BrightRun"
    )
    return str(getattr(info, "commit_url", "") or f"https://huggingface.co/{repo}")


@dataclass
class Attached:
    """The base model with the adapter attached, ready to merge."""

    model: Any  # the PeftModel
    tokenizer: Any
    adapter_cfg: dict[str, Any]
    expert_lora_modules: int
    source: str  # where the base model came from
    on_gpu: bool
    folder: Path | None = None  # the base model's folder (config, tokenizer, weights)


def load(spec: JobSpec, env: WorkerEnv, work: Path) -> Attached:
    """The base model (as training resolves it) with the adapter of the job's `merge` or
    `gguf` section; raises `BadInput` when the adapter does not fit the base."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.expert_lora import read_expert_lora
    from trainer.model import load_adapter, resolve_model_path

    m = adapter_source(spec)
    path, source = resolve_model_path(spec.model, env)
    adapter_dir = _fetch_adapter(spec, work)
    adapter_cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    experts = read_expert_lora(adapter_dir)
    on_gpu = spec.device != "cpu" and torch.cuda.is_available()
    device_map = {"": 0} if on_gpu else {"": "cpu"}
    base = AutoModelForCausalLM.from_pretrained(
        path, dtype=getattr(torch, m.dtype), device_map=device_map
    )
    try:
        model = load_adapter(base, adapter_dir, expert_lora=True)
    except (RuntimeError, ValueError, KeyError) as e:
        raise BadInput(
            f"the adapter does not fit base model {spec.model.name_or_path!r}: {e}",
            "merge an adapter into the base model it was trained on",
        ) from e
    tokenizer = AutoTokenizer.from_pretrained(path)
    n_experts = len(experts.modules) if experts else 0
    return Attached(model, tokenizer, adapter_cfg, n_experts, source, on_gpu, Path(path))


def started_extra(spec: JobSpec, attached: Attached) -> dict[str, Any]:
    """The `started` event's model and adapter facts of a `merge` or `gguf` job."""
    m, cfg = adapter_source(spec), attached.adapter_cfg
    return {
        "model": {
            "name_or_path": spec.model.name_or_path,
            "source": attached.source,
            "dtype": m.dtype,
            "device": "cuda" if attached.on_gpu else "cpu",
        },
        "adapter": {
            "base_model_name_or_path": cfg.get("base_model_name_or_path"),
            "r": cfg.get("r"),
            "peft_type": cfg.get("peft_type"),
            "expert_lora_modules": attached.expert_lora_modules,
        },
    }


def merge_and_save(
    spec: JobSpec, attached: Attached, folder: Path
) -> tuple[list[str], float, float]:
    """Merge the adapter into the base and save the model at `folder`; returns the shard
    names and the seconds merging and saving took."""
    from trainer.expert_lora import merge_expert_lora

    m = spec.merge
    assert m is not None
    s0 = time.monotonic()
    merge_expert_lora(attached.model)  # routed experts first: PEFT's merge does not know them
    merged = attached.model.merge_and_unload()
    merge_s = time.monotonic() - s0
    s0 = time.monotonic()
    merged.save_pretrained(
        folder, max_shard_size=int(m.max_shard_size_mb * 1e6), safe_serialization=True
    )
    attached.tokenizer.save_pretrained(folder)
    shards = _rename_shards(folder)
    record = {
        "brightrun_spec_version": spec.version,
        "merged_from": {
            "base_model": spec.model.name_or_path,
            "revision": spec.model.revision,
            "adapter": attached.adapter_cfg.get("base_model_name_or_path"),
            "job_id": spec.job_id,
        },
        "dtype": m.dtype,
    }
    (folder / RECORD).write_text(json.dumps(record, indent=1))
    del merged
    attached.model = None
    return shards, merge_s, time.monotonic() - s0


def deliver(spec: JobSpec, env: WorkerEnv, folder: Path) -> dict[str, Any]:
    """PUT every file to its upload URL, copy the folder, push it to the hub."""
    m, out = spec.merge, spec.output
    assert m is not None and out is not None
    files = folder_files(folder)
    uploaded = []
    if set(out.upload_urls) - set(LOG_FILES):
        missing = [n for n in files if n not in out.upload_urls]
        if missing:
            raise BadInput(
                f"the merged model has files without an upload URL: {missing}",
                "sign an upload URL for every file `trainer.shared.files.upload_names` lists",
            )
        for name, p in files.items():
            put_file(out.upload_urls[name], p)
            uploaded.append(name)
    result: dict[str, Any] = {
        "name": out.adapter_name,
        "base_model": spec.model.name_or_path,
        "dtype": m.dtype,
        "files": {n: p.stat().st_size for n, p in files.items()},
        "size_bytes": sum(p.stat().st_size for p in files.values()),
        "uploaded": uploaded,
    }
    if out.local_dir:
        result["local_dir"] = str(copy_folder(folder, Path(out.local_dir)))
    if m.hub_repo:
        result["hub_repo"] = m.hub_repo
        result["hub_commit"] = _push_to_hub(folder, m.hub_repo, m.hub_private, env.hf_token)
    return result


def merge(
    spec: JobSpec, env: WorkerEnv, log: EventLog, t0: float
) -> Generator[Event, None, dict[str, Any]]:
    """The `merge` action (see the module docstring)."""
    work = Path(tempfile.mkdtemp(prefix=f"brightrun-{spec.job_id}-"))
    try:
        attached = load(spec, env, work)
        yield log.emit("started", started_data(spec, env, t0, **started_extra(spec, attached)))
        folder = work / "merged"
        shards, merge_s, save_s = merge_and_save(spec, attached, folder)
        del attached
        s0 = time.monotonic()
        result = deliver(spec, env, folder)
        result = {
            **{k: result[k] for k in ("name", "base_model", "dtype")},
            "shards": shards,
            **result,
        }
        result["seconds"] = {
            "merge": round(merge_s, 3),
            "save": round(save_s, 3),
            "deliver": round(time.monotonic() - s0, 3),
        }
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)
