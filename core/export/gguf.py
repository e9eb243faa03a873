"""A version as GGUF for llama.cpp and Ollama, kept in storage: written in the controller for
small base models, by a `gguf` job on the GPU endpoint for larger ones.

`export_gguf(actor, settings, ref, variant="f16", adapter_only=False)` -> `GgufExport`:

- merged (the default): the base model with the version's adapter merged by PEFT's
  `merge_and_unload`, written as GGUF in f16 or bf16 (`trainer.shared.gguf_write`, which the
  worker writes with too), then, for Q8_0 or Q4_K_M, quantised by llama.cpp's own
  `llama_model_quantize`. A base of at most `settings.gguf_local_max_params` parameters is
  merged in float32 on the controller's CPU and the export comes back with its files; a
  larger one goes to a `gguf` job (`core.export.gguf_job`: the base from the worker's
  volume cache) and the export comes back with the job's id and no files yet:
  `gguf_job_status` follows it and gives the files once it completed;
- `adapter_only`: the adapter alone as a GGUF LoRA (f32, about the adapter's own size), for
  use with a GGUF of the base model (`llama-cli -m base.gguf --lora adapter.gguf`, Ollama's
  `ADAPTER`); always written here (it needs the base's config, not its weights).

Beside it goes an Ollama `Modelfile` (`trainer.shared.modelfile`): `FROM` the GGUF (the
adapter-only one says `FROM` the base's GGUF and `ADAPTER` the LoRA), the ChatML template in
Ollama's Go-template form, stops, and the base's sampling defaults.

Files written here go to storage under `<owner>/exports/<version id>/gguf-<variant>/`
(outside the version's own folder, so a zip export does not carry them); a job's under
`<owner>/jobs/<job id>/gguf/`. Each comes back with its size and a signed download link
(`DOWNLOAD_URL_TTL_S`). A job uploads each file in one signed PUT, which a store takes up to
a limit (`GGUF_MAX_FILE_MB`, 5 GiB: S3's); a job's GGUF expected above it is written as
llama.cpp's split GGUF (`gguf_shards`: each file its share of the bytes plus at most the
embedding table, under 90% of the limit), which llama.cpp loads from the first file and
Ollama after `llama-gguf-split --merge` (the Modelfile says so).

The base model is read from the tiny demo model's folder, a model folder, or the Hugging
Face Hub (weights, config and tokenizer only, or config and tokenizer for the adapter
alone; `settings.hf_token` for gated models).

Refused (`ExportRefused`, an `InvalidInput`) before any download: an architecture the GGUF
writer does not handle (`gguf_write.refusal`: dense Qwen2/2.5/3 only, MoE and hybrid
models named as such), an adapter a GGUF LoRA cannot carry (adapter-only), an unknown
variant; a job's base that does not fit the job's GPU even in bfloat16 (`PlanRefused`).
`plan_gguf(facts, variant, adapter_only, adapter_bytes, max_params, max_file_bytes)` gives
the expected file size, where it would be written, in how many files and the refusal,
without doing anything; `gguf_plans(actor, settings, ref)` all of them for a version (the
page and `--plan-only`). llama.cpp's failures are `ExportFailed`.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from core import adapters, planner
from core.clients.storage import make_blob_store
from core.db import session_scope
from core.errors import InvalidInput
from core.export.gguf_job import STAGES, GgufFile, launch_gguf, max_file_bytes, stored_file
from core.export.hub import ExportFailed, build_folder
from core.settings import Settings
from core.users import Actor
from trainer.shared import gguf_write
from trainer.shared.files import MODELFILE, gguf_name
from trainer.shared.modelfile import base_sampling, modelfile, slug

VARIANTS = gguf_write.VARIANTS
# Bytes per weight: f16/bf16 2; Q8_0 34 bytes per 32; Q4_K_M mixes Q4_K (4.5 bits) with
# Q6_K (6.56 bits) for half the attention V and FFN down weights: about 4.9 bits.
BYTES_PER_PARAM = {"f16": 2.0, "bf16": 2.0, "Q8_0": 34 / 32, "Q4_K_M": 4.9 / 8}
LOCAL_MAX_PARAMS: int = Settings.model_fields["gguf_local_max_params"].default
MAX_FILE_BYTES = int(Settings.model_fields["gguf_max_file_mb"].default * 2**20)
ESTIMATE_MARGIN = 0.9  # of the limit: the expected size is an estimate (Q4_K_M's mix)


Progress = Callable[[str, float], None]  # (stage in words, share of that stage done)


class ExportRefused(InvalidInput):
    """This model or adapter cannot be exported as asked; the message says why."""


@dataclass(frozen=True)
class GgufPlan:
    model: str
    variant: str
    adapter_only: bool
    params: int
    expected_bytes: int
    refusal: str | None  # why it cannot be exported; None when it can
    where: Literal["controller", "worker"] = "controller"  # who merges and writes it
    shards: int = 1  # files of llama.cpp's split GGUF a `gguf` job writes (see `gguf_shards`)


@dataclass(frozen=True)
class GgufExport:
    version_id: str
    label: str
    variant: str
    adapter_only: bool
    files: list[GgufFile]  # empty while a job writes it
    job_id: str | None = None  # the `gguf` job writing it (see `gguf_job_status`)


def gguf_shards(expected_bytes: int, largest_bytes: int, max_file_bytes: int) -> int:
    """How many files a worker's GGUF of about `expected_bytes` is split into so that each
    stays under `max_file_bytes`: a file holds its equal share plus at most one tensor
    (`largest_bytes`), with a margin for the estimate; 0 when one tensor alone is too big."""
    room = max_file_bytes * ESTIMATE_MARGIN - largest_bytes
    if expected_bytes <= max_file_bytes * ESTIMATE_MARGIN:
        return 1
    return math.ceil(expected_bytes / room) if room > 0 else 0


def plan_gguf(
    facts: Any,
    variant: str = "f16",
    adapter_only: bool = False,
    adapter_bytes: int = 0,
    max_params: int = LOCAL_MAX_PARAMS,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> GgufPlan:
    """The expected size of the export, where it is written, in how many files, and why it
    would be refused (see the module doc)."""
    if variant not in VARIANTS:
        raise ExportRefused(f"GGUF variant {variant!r} is not one of {', '.join(VARIANTS)}")
    params = int(facts.params.total)
    reason = gguf_write.refusal(facts.model_type)
    where = "worker" if not adapter_only and params > max_params else "controller"
    expected = adapter_bytes if adapter_only else int(params * BYTES_PER_PARAM[variant])
    shards = 1
    if where == "worker":  # the embedding table is the largest tensor
        largest = int(facts.vocab * facts.hidden * BYTES_PER_PARAM[variant])
        shards = gguf_shards(expected, largest, max_file_bytes)
        if not shards and reason is None:
            reason = (
                f"one tensor alone ({largest / 1e9:.1f} GB) is above the store's single-upload "
                f"limit ({max_file_bytes / 1e9:.1f} GB, GGUF_MAX_FILE_MB)"
            )
    return GgufPlan(facts.id, variant, adapter_only, params, expected, reason, where, shards)


def gguf_plans(actor: Actor, settings: Settings, ref: str) -> list[GgufPlan]:
    """The plan of every merged variant, then of the adapter alone, for version `ref`;
    `ModelNotDescribable` when the planner cannot size its base."""
    with session_scope(settings) as s:
        v = adapters.resolve(actor, s, ref)
        base, size = v.base_model, v.size_bytes or 0
    facts = planner.describe(base, local_models_dir=settings.data_dir / "models")
    limit, most = settings.gguf_local_max_params, max_file_bytes(settings)
    merged = [plan_gguf(facts, q, False, size, limit, most) for q in VARIANTS]
    return [*merged, plan_gguf(facts, "f16", True, size, limit, most)]


def base_folder(settings: Settings, base: str, *, weights: bool = True) -> Path:
    """A local folder holding `base`'s config and tokenizer, and its weights unless
    `weights` is False (see the module doc)."""
    if base.lower() == planner.TINY_ID:
        folder = settings.data_dir / "models" / planner.TINY_DIR_NAME
        if not (folder / "config.json").is_file():
            from trainer.shared.tiny import build_tiny_chat_model

            build_tiny_chat_model(folder, seed=0)
        return folder
    if (Path(base) / "config.json").is_file():
        return Path(base)
    from huggingface_hub import snapshot_download

    token = settings.hf_token.get_secret_value() or None
    patterns = ["*.json", "merges.txt", "vocab.json", "*.jinja"]
    patterns += ["*.safetensors"] if weights else []
    return Path(snapshot_download(base, allow_patterns=patterns, token=token))


@dataclass(frozen=True)
class _Version:
    id: str
    base: str
    label: str


def _version(actor: Actor, settings: Settings, ref: str) -> _Version:
    with session_scope(settings) as s:
        v = adapters.resolve(actor, s, ref)
        return _Version(v.id, v.base_model, adapters.label(adapters.adapter_name_of(s, v), v))


def _checked(settings: Settings, base: str, variant: str, adapter_only: bool) -> GgufPlan:
    try:
        facts = planner.describe(base, local_models_dir=settings.data_dir / "models")
    except planner.ModelNotDescribable as e:
        raise ExportRefused(f"cannot size {base} for a GGUF export: {e}") from None
    plan = plan_gguf(
        facts, variant, adapter_only, 0, settings.gguf_local_max_params, max_file_bytes(settings)
    )
    if plan.refusal:
        raise ExportRefused(plan.refusal)
    return plan


def _progress_of(on_progress: Progress | None) -> Any:
    """A `run_steps` callback reporting (stage in words, share of the stage done)."""
    if on_progress is None:
        return None

    def step(stage: str, done: int, total: int) -> None:
        on_progress(STAGES.get(stage, stage), done / total if total else 1.0)

    return step


def _write_here(
    settings: Settings,
    v: _Version,
    src: Path,
    out: Path,
    plan: GgufPlan,
    on_progress: Progress | None = None,
) -> None:
    """Write the GGUF and its Modelfile into `out` (`src`: the version's PEFT files)."""
    base_dir = base_folder(settings, v.base, weights=not plan.adapter_only)
    stem = slug(v.label)
    if plan.adapter_only:
        config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
        cfg = json.loads((src / "adapter_config.json").read_text(encoding="utf-8"))
        reason = gguf_write.refusal(config["model_type"], cfg)
        if reason:
            raise ExportRefused(reason)
        lora = gguf_name(stem, "lora")
        gguf_write.write_lora(src, out / lora, config["model_type"], config["num_hidden_layers"])
        base_gguf = gguf_name(slug(Path(v.base).name), "f16")
        text = modelfile(base_gguf, base_sampling(base_dir), adapter=lora)
    else:
        if on_progress is not None:
            on_progress(STAGES["merge"], 0.0)
        model = gguf_write.merged_model(base_dir, src)
        steps = gguf_write.write_merged_steps(model, base_dir, out, plan.variant, stem)
        name = gguf_write.run_steps(steps, _progress_of(on_progress))
        text = modelfile(name, base_sampling(base_dir))
    (out / MODELFILE).write_text(text, encoding="utf-8")


def export_gguf(
    actor: Actor,
    settings: Settings,
    ref: str,
    *,
    variant: str = "f16",
    adapter_only: bool = False,
    store: Any = None,
    client: Any = None,
    gpu_type: str | None = None,
    budget_usd: float | None = None,
    on_progress: Progress | None = None,
) -> GgufExport:
    """Write version `ref` as GGUF with its Modelfile here and store both with signed links,
    or launch the `gguf` job that does (see the module doc; `client`, `gpu_type` and
    `budget_usd` are the job's). A merged export written here reports its stages to
    `on_progress(stage in words, share of that stage done)` as it goes."""
    store = store or make_blob_store(settings)
    v = _version(actor, settings, ref)
    plan = _checked(settings, v.base, variant, adapter_only)
    if plan.where == "worker":
        job, _ = launch_gguf(
            actor,
            settings,
            v.id,
            variant,
            slug(v.label),
            shards=plan.shards,
            budget_usd=budget_usd,
            gpu_type=gpu_type,
            client=client,
            store=store,
        )
        return GgufExport(v.id, v.label, variant, False, [], job.id)
    with tempfile.TemporaryDirectory(prefix="brightrun-gguf-") as tmp:
        src, out = Path(tmp) / "adapter", Path(tmp) / "out"
        out.mkdir()
        with session_scope(settings) as s:
            build_folder(actor, s, store, v.id, src)
        try:
            _write_here(settings, v, src, out, plan, on_progress)
        except gguf_write.GgufRefused as e:
            raise ExportRefused(e.message) from None
        except gguf_write.GgufFailed as e:
            raise ExportFailed(e.message) from None
        files = _store(store, actor.user_id, v.id, "adapter" if adapter_only else variant, out)
    return GgufExport(v.id, v.label, variant, adapter_only, files)


def export_prefix(owner_id: str, version_id: str, variant: str) -> str:
    return f"{owner_id}/exports/{version_id}/gguf-{variant}/"


def _store(store: Any, owner: str, vid: str, variant: str, out: Path) -> list[GgufFile]:
    prefix = export_prefix(owner, vid, variant)
    files = []
    for p in sorted(out.iterdir()):
        key = prefix + p.name
        size = store.put_file("adapters", key, p, "application/octet-stream")
        files.append(stored_file(store, key, size))
    return files
