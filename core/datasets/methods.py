"""Which training methods a dataset's layout can be trained with, and why none when none.

A layout is data of one kind (`trainer.shared.methods.DataKind`): the preference layouts
(`core.datasets.preference.PREFERENCE_LAYOUTS`) are `pairs`, the KTO layout is `labelled`,
the prompts layout is `prompts`, every other layout (chat and text) is `chat`.
`methods_for(layout)` is the methods the table trains on that kind, in its order (the order
the Train page offers them); `untrainable_reason(layout)` says why a layout has no method
(None when it has one). The Train page offers only these methods; `core.jobs.preflight`
refuses the rest.
"""

from __future__ import annotations

from core.datasets.preference import PREFERENCE_LAYOUTS
from trainer.shared.methods import KTO_LAYOUT, METHODS, PROMPTS_LAYOUT, DataKind, Method, for_data

_KINDS: dict[str, DataKind] = {KTO_LAYOUT: "labelled", PROMPTS_LAYOUT: "prompts"}


def data_kind(layout: str) -> DataKind:
    """The kind of data a layout holds."""
    if layout in _KINDS:
        return _KINDS[layout]
    if layout in PREFERENCE_LAYOUTS or layout.startswith("preference"):
        return "pairs"
    return "chat"


def methods_for(layout: str) -> tuple[Method, ...]:
    """The methods that can train data of `layout`, in the order the Train page offers them."""
    return for_data(data_kind(layout))


def untrainable_reason(layout: str) -> str | None:
    """Why no method trains data of `layout`, or None when one does."""
    if methods_for(layout):
        return None
    kind = data_kind(layout)
    waiting = [i.not_trained for i in METHODS.values() if i.data == kind and not i.trains]
    return waiting[0] if waiting else f"no method trains {kind} data"
