"""Which training methods a dataset's layout can be trained with, and why none when none.

`methods_for(layout)`: SFT for chat and text layouts, DPO and ORPO for preference pairs
(`core.datasets.preference.PREFERENCE_LAYOUTS`), none for KTO data (`core.datasets.kto`).
`untrainable_reason(layout)` says why a layout has no method (None when it has one). The
Train page offers only these methods; `core.jobs.preflight` refuses the rest.
"""

from __future__ import annotations

from core.datasets import kto
from core.datasets.preference import PREFERENCE_LAYOUTS

PAIR_METHODS = ("dpo", "orpo")
_NONE: dict[str, str] = {"kto": kto.NO_METHOD}


def methods_for(layout: str) -> tuple[str, ...]:
    """The methods that can train data of `layout`, in the order the Train page offers them."""
    if layout in _NONE:
        return ()
    if layout in PREFERENCE_LAYOUTS or layout.startswith("preference"):
        return PAIR_METHODS
    return ("sft",)


def untrainable_reason(layout: str) -> str | None:
    """Why no method trains data of `layout`, or None when one does."""
    return _NONE.get(layout)
