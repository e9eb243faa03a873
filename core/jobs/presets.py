"""Training presets and defaults, shared by the Train page and `brightrun train`.

`defaults()` is every setting the two offer at the job spec's defaults; `preset(name)` is
those with preset `name` applied (a preset changes only the settings it names; given
settings win over it, which the callers apply); `METHOD_PRESETS` is what each method
changes on top. Raises `InvalidInput` for an unknown preset.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.errors import InvalidInput
from trainer.shared.methods import METHODS, setting_defaults
from trainer.shared.spec import DataSpec, LoraSpec, TrainingSpec

DEFAULT_QUANTIZATION = "nf4"
# Each preset changes only the settings it names; the rest keep the spec's defaults.
PRESETS: dict[str, dict[str, Any]] = {
    "Quick try": {"lora": {"r": 8, "alpha": 16.0}, "training": {"epochs": 1.0, "max_length": 1024}},
    "Balanced": {"eval_fraction": 0.05},
    "Thorough": {
        "lora": {"r": 64, "alpha": 128.0},
        "training": {"epochs": 3.0, "learning_rate": 1e-4},
        "eval_fraction": 0.1,
    },
}
DEFAULT_PRESET = "Balanced"
# What a method changes on top of a preset (`trainer.shared.methods`: its preset, and its
# settings at their defaults): DPO, ORPO and KTO take a smaller step than SFT.
METHOD_PRESETS: dict[str, dict[str, Any]] = {
    m: {**i.preset, **({"preference": setting_defaults(m)} if i.settings else {})}
    for m, i in METHODS.items()
    if i.trains
}


def defaults() -> dict[str, Any]:
    """Every setting the Train page and `brightrun train` offer, at the job spec's defaults."""
    lo, tr = LoraSpec(), TrainingSpec()
    return {
        "lora": {"r": lo.r, "alpha": float(lo.alpha), "dropout": lo.dropout},
        "training": {
            "epochs": float(tr.epochs or 1.0),
            "learning_rate": tr.learning_rate,
            "lr_scheduler": tr.lr_scheduler,
            "warmup_ratio": tr.warmup_ratio,
            "micro_batch_size": tr.micro_batch_size,
            "grad_accum": tr.grad_accum,
            "max_length": tr.max_length,
            "packing": tr.packing,
            "gradient_checkpointing": tr.gradient_checkpointing,
            "eval_every": tr.eval_every,
            "early_stopping": tr.early_stopping,
            "train_on_reasoning": tr.train_on_reasoning,
        },
        "quantization": DEFAULT_QUANTIZATION,
        "eval_fraction": DataSpec.model_fields["eval_fraction"].default,
    }


def preset(name: str) -> dict[str, Any]:
    """The defaults with preset `name` applied (`InvalidInput` for an unknown one)."""
    if name not in PRESETS:
        raise InvalidInput(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    out = defaults()
    for key, value in PRESETS[name].items():
        out[key] = {**out[key], **value} if isinstance(value, Mapping) else value
    return out
