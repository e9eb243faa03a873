"""Training presets: named starting points for a job's settings, in the job spec's terms.

A preset names only the fields it changes; everything else keeps the spec's defaults
(`trainer.spec`). Settings given explicitly win over the preset. The command line
(`brightrun train --preset`) applies them with `apply_preset`; the Train page's preset
selector carries the same values (a test holds the two together).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.errors import InvalidInput

PRESETS: dict[str, dict[str, Any]] = {
    "Quick try": {"lora": {"r": 8, "alpha": 16.0}, "training": {"epochs": 1.0, "max_length": 1024}},
    "Balanced": {"eval_fraction": 0.05},
    "Thorough": {"lora": {"r": 64, "alpha": 128.0}, "training": {"epochs": 3.0, "learning_rate": 1e-4},
                 "eval_fraction": 0.1},
}  # fmt: skip


def apply_preset(name: str | None, lora: Mapping[str, Any], training: Mapping[str, Any],
                 eval_fraction: float | None) -> tuple[dict[str, Any], dict[str, Any], float]:  # fmt: skip
    """(lora, training, eval_fraction): the preset's values under the given ones (None in
    `eval_fraction` and missing keys mean "not given"). No preset: the given values only."""
    if name and name not in PRESETS:
        raise InvalidInput(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    p = PRESETS.get(name or "", {})
    frac = eval_fraction if eval_fraction is not None else p.get("eval_fraction", 0.0)
    return {**p.get("lora", {}), **lora}, {**p.get("training", {}), **training}, float(frac)
