"""Whether a LoRA adapter fits the base model it is about to be served on, read from the
files alone (no torch): vLLM 0.32.0 loads an adapter whose target modules are not modules
of the base, or whose weights have another model's shapes, and answers with it; BrightRun's
client refuses such an adapter before it asks the server.

`misfit(adapter_dir, base_dir)` returns why the adapter does not fit, or None when it fits
or when either folder, or the base's architecture, is not something checked here (a hub id
the dashboard cannot see, a model that is not Llama/Qwen-shaped): the server decides then.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

# Llama/Qwen-shaped decoder layers: module -> (input width, output width) from the config.
_SHAPED = ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "MistralForCausalLM")
_ALSO_TARGETABLE = {"embed_tokens", "lm_head"}


def _widths(cfg: dict[str, Any]) -> dict[str, tuple[int, int]]:
    hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    kv = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    inter = int(cfg["intermediate_size"])
    return {
        "q_proj": (hidden, heads * head_dim),
        "k_proj": (hidden, kv * head_dim),
        "v_proj": (hidden, kv * head_dim),
        "o_proj": (heads * head_dim, hidden),
        "gate_proj": (hidden, inter),
        "up_proj": (hidden, inter),
        "down_proj": (inter, hidden),
    }


def _tensor_shapes(path: Path) -> dict[str, list[int]]:
    """Names and shapes from a safetensors file's header."""
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


def misfit(adapter_dir: str | Path, base_dir: str | Path) -> str | None:
    adapter, base = Path(adapter_dir), Path(base_dir)
    try:
        acfg = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
        bcfg = json.loads((base / "config.json").read_text(encoding="utf-8"))
        weights = adapter / "adapter_model.safetensors"
        shapes = _tensor_shapes(weights) if weights.is_file() else {}
    except (OSError, ValueError, struct.error):
        return None
    if not set(bcfg.get("architectures") or ()) & set(_SHAPED):
        return None
    try:
        widths = _widths(bcfg)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    targets = acfg.get("target_modules")
    if isinstance(targets, list):
        unknown = sorted(set(targets) - set(widths) - _ALSO_TARGETABLE)
        if unknown:
            return f"its target modules {unknown} are not modules of the base (it has {sorted(widths)})"
    for name, shape in shapes.items():
        parts = name.split(".")
        module = next((p for p in reversed(parts) if p in widths), None)
        if module is None or len(shape) != 2:
            continue
        d_in, d_out = widths[module]
        if ("lora_A" in parts and shape[1] != d_in) or ("lora_B" in parts and shape[0] != d_out):
            return f"its {module} weights have shape {shape}, which does not fit the base ({d_in} in, {d_out} out)"
    return None
