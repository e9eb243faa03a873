"""A version as GGUF for llama.cpp and Ollama, written in the controller and kept in storage.

`export_gguf(actor, settings, ref, variant="f16", adapter_only=False)` -> `GgufExport`:

- merged (the default): the base model with the version's adapter merged by PEFT's
  `merge_and_unload`, written as GGUF in f16 or bf16 (`core.export.gguf_write`), then, for
  Q8_0 or Q4_K_M, quantised by llama.cpp's own `llama_model_quantize`;
- `adapter_only`: the adapter alone as a GGUF LoRA (f32, about the adapter's own size), for use with a GGUF of the base
  model (`llama-cli -m base.gguf --lora adapter.gguf`, Ollama's `ADAPTER`).

Beside it goes an Ollama `Modelfile` (`modelfile(...)`): `FROM` the GGUF (the adapter-only
one says `FROM` the base's GGUF and `ADAPTER` the LoRA), the ChatML template in Ollama's
Go-template form, `<|im_end|>`/`<|endoftext|>` as stops, and the base's sampling defaults
from its `generation_config.json` (else Qwen's: temperature 0.7, top_p 0.8, top_k 20,
repeat_penalty 1.05) as `PARAMETER` lines.

The files go to storage under `<owner>/exports/<version id>/gguf-<variant>/` (outside the
version's own folder, so a zip export does not carry them); each comes back with its size
and a signed download link (`DOWNLOAD_URL_TTL_S`).

The base model is read from the tiny demo model's folder, a model folder, or the Hugging
Face Hub (weights, config and tokenizer only; `settings.hf_token` for gated models).

Refused (`ExportRefused`, an `InvalidInput`) before any download: an architecture the GGUF
writer does not handle (`gguf_write.refusal`: dense Qwen2/2.5/3 only, MoE and hybrid
models named as such), a base above `LOCAL_MAX_PARAMS` parameters (the merge runs in
float32 on the controller's CPU; larger models need a worker job, which BrightRun does not
run yet), an adapter a GGUF LoRA cannot carry (adapter-only), an unknown variant.
`plan_gguf(facts, variant, adapter_only, adapter_bytes)` gives the expected file size and
the refusal, without doing anything; `gguf_plans(actor, settings, ref)` all of them for a
version (the page and `--plan-only`).
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import adapters, planner
from core.clients.storage import DOWNLOAD_URL_TTL_S, make_blob_store
from core.db import session_scope
from core.export import gguf_write
from core.export.gguf_write import ExportRefused
from core.export.hub import build_folder
from core.settings import Settings
from core.users import Actor

VARIANTS = ("f16", "bf16", "Q8_0", "Q4_K_M")
# Bytes per weight: f16/bf16 2; Q8_0 34 bytes per 32; Q4_K_M mixes Q4_K (4.5 bits) with
# Q6_K (6.56 bits) for half the attention V and FFN down weights: about 4.9 bits.
BYTES_PER_PARAM = {"f16": 2.0, "bf16": 2.0, "Q8_0": 34 / 32, "Q4_K_M": 4.9 / 8}
# Up to Qwen3-4B: the float32 merge plus the f16 copies held until written take about 6
# bytes per parameter of controller memory (about 25 GB at 4B).
LOCAL_MAX_PARAMS = 4_100_000_000
QWEN_SAMPLING = {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repeat_penalty": 1.05}
STOPS = ("<|im_end|>", "<|endoftext|>")
OLLAMA_CHATML = """{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if ne .Role "system" }}<|im_start|>{{ .Role }}
{{ .Content }}{{ if not (and $last (eq .Role "assistant")) }}<|im_end|>
{{ end }}
{{- end }}
{{- if and $last (ne .Role "assistant") }}<|im_start|>assistant
{{ end }}
{{- end }}"""


@dataclass(frozen=True)
class GgufPlan:
    model: str
    variant: str
    adapter_only: bool
    params: int
    expected_bytes: int
    refusal: str | None  # why it cannot be exported here; None when it can


@dataclass(frozen=True)
class GgufFile:
    name: str
    key: str
    size: int
    url: str


@dataclass(frozen=True)
class GgufExport:
    version_id: str
    label: str
    variant: str
    adapter_only: bool
    files: list[GgufFile]


def plan_gguf(
    facts: Any,
    variant: str = "f16",
    adapter_only: bool = False,
    adapter_bytes: int = 0,
    max_params: int = LOCAL_MAX_PARAMS,
) -> GgufPlan:
    """The expected size of the export and why it would be refused (see the module doc)."""
    if variant not in VARIANTS:
        raise ExportRefused(f"GGUF variant {variant!r} is not one of {', '.join(VARIANTS)}")
    params = int(facts.params.total)
    reason = gguf_write.refusal(facts.model_type)
    if reason is None and not adapter_only and params > max_params:
        reason = (
            f"{facts.id} has {params / 1e9:.1f}B parameters; the controller merges and writes "
            f"GGUF only up to {max_params / 1e9:.1f}B (a GPU worker job for larger models is "
            "not available yet); export the adapter alone (--adapter-only) instead"
        )
    expected = adapter_bytes if adapter_only else int(params * BYTES_PER_PARAM[variant])
    return GgufPlan(facts.id, variant, adapter_only, params, expected, reason)


def gguf_plans(actor: Actor, settings: Settings, ref: str) -> list[GgufPlan]:
    """The plan of every merged variant, then of the adapter alone, for version `ref`;
    `ModelNotDescribable` when the planner cannot size its base."""
    with session_scope(settings) as s:
        v = adapters.resolve(actor, s, ref)
        base, size = v.base_model, v.size_bytes or 0
    facts = planner.describe(base, local_models_dir=settings.data_dir / "models")
    merged = [plan_gguf(facts, q, False, size) for q in VARIANTS]
    return [*merged, plan_gguf(facts, "f16", True, size)]


def _sampling(base_dir: Path) -> dict[str, float]:
    found = dict(QWEN_SAMPLING)
    path = base_dir / "generation_config.json"
    if path.is_file():
        cfg = json.loads(path.read_text(encoding="utf-8"))
        names = {"repetition_penalty": "repeat_penalty"}
        for key in ("temperature", "top_p", "top_k", "repetition_penalty"):
            if cfg.get(key) is not None:
                found[names.get(key, key)] = cfg[key]
    return found


def modelfile(gguf_name: str, sampling: dict[str, float], *, adapter: str | None = None) -> str:
    """An Ollama Modelfile for the ChatML (Qwen `<|im_start|>`/`<|im_end|>`) format."""
    lines = []
    if adapter:
        lines += [
            "# The base model's GGUF (f16 or bf16, the same model the adapter was trained on)",
            f"FROM ./{gguf_name}",
            f"ADAPTER ./{adapter}",
        ]
    else:
        lines.append(f"FROM ./{gguf_name}")
    lines += ["", f'TEMPLATE """{OLLAMA_CHATML}"""', ""]
    lines += [f'PARAMETER stop "{s}"' for s in STOPS]
    lines += [f"PARAMETER {k} {v}" for k, v in sampling.items()]
    return "\n".join(lines) + "\n"


def base_folder(settings: Settings, base: str) -> Path:
    """A local folder holding `base`'s config, tokenizer and weights (see the module doc)."""
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
    patterns = ["*.json", "*.safetensors", "merges.txt", "vocab.json", "*.jinja"]
    return Path(snapshot_download(base, allow_patterns=patterns, token=token))


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-") or "model"


def _write(base_dir: Path, adapter_dir: Path, out: Path, variant: str, name: str) -> str:
    """Write the merged model as `variant` into `out`; returns the GGUF's file name."""
    model = gguf_write.merged_model(base_dir, adapter_dir)
    dtype = variant if variant in gguf_write.DTYPES else "f16"
    full = out / f"{name}-{dtype}.gguf"
    gguf_write.write_model(model, base_dir, full, dtype)
    del model
    if variant in gguf_write.DTYPES:
        return full.name
    quantised = out / f"{name}-{variant}.gguf"
    gguf_write.quantize(full, quantised, variant)
    full.unlink()
    return quantised.name


def _version(actor: Actor, settings: Settings, ref: str, store: Any, dest: Path) -> Any:
    with session_scope(settings) as s:
        v, record = build_folder(actor, s, store, ref, dest)
        return v.id, v.base_model, record["label"]


def _check(settings: Settings, base: str, variant: str, adapter_only: bool, dest: Path) -> None:
    try:
        facts = planner.describe(base, local_models_dir=settings.data_dir / "models")
    except planner.ModelNotDescribable as e:
        raise ExportRefused(f"cannot size {base} for a GGUF export: {e}") from None
    plan = plan_gguf(facts, variant, adapter_only)
    if plan.refusal:
        raise ExportRefused(plan.refusal)
    if adapter_only:
        cfg = json.loads((dest / "adapter_config.json").read_text(encoding="utf-8"))
        reason = gguf_write.refusal(facts.model_type, cfg)
        if reason:
            raise ExportRefused(reason)


def export_gguf(
    actor: Actor,
    settings: Settings,
    ref: str,
    *,
    variant: str = "f16",
    adapter_only: bool = False,
    store: Any = None,
) -> GgufExport:
    """Write version `ref` as GGUF with its Modelfile, store both and sign links to them."""
    store = store or make_blob_store(settings)
    with tempfile.TemporaryDirectory(prefix="brightrun-gguf-") as tmp:
        src, out = Path(tmp) / "adapter", Path(tmp) / "out"
        out.mkdir()
        vid, base, label = _version(actor, settings, ref, store, src)
        _check(settings, base, variant, adapter_only, src)
        base_dir = base_folder(settings, base)
        name = _slug(label)
        if adapter_only:
            config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
            lora = f"{name}-lora.gguf"
            gguf_write.write_lora(
                src, out / lora, config["model_type"], config["num_hidden_layers"]
            )
            text = modelfile(
                f"{_slug(Path(base).name)}-f16.gguf", _sampling(base_dir), adapter=lora
            )
        else:
            gguf_name = _write(base_dir, src, out, variant, name)
            text = modelfile(gguf_name, _sampling(base_dir))
        (out / "Modelfile").write_text(text, encoding="utf-8")
        files = _store(store, actor.user_id, vid, "adapter" if adapter_only else variant, out)
    return GgufExport(vid, label, variant, adapter_only, files)


def export_prefix(owner_id: str, version_id: str, variant: str) -> str:
    return f"{owner_id}/exports/{version_id}/gguf-{variant}/"


def _store(store: Any, owner: str, vid: str, variant: str, out: Path) -> list[GgufFile]:
    prefix = export_prefix(owner, vid, variant)
    files = []
    for p in sorted(out.iterdir()):
        key = prefix + p.name
        size = store.put_file("adapters", key, p, "application/octet-stream")
        url = store.signed_download_url("adapters", key, DOWNLOAD_URL_TTL_S)
        files.append(GgufFile(p.name, key, size, url))
    return files
