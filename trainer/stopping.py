"""Early stopping on eval loss: the rule, and the best weights it keeps.

`BestEval` follows a job's evaluations (`training.early_stopping`): the lowest eval loss so
far and the step it was measured at, and how many evaluations in a row have not improved.
An evaluation improves when its loss is lower than the best so far by more than
`min_delta`; any lower loss becomes the best (its weights are kept), but only an
improvement resets the count. Training stops once `patience` evaluations in a row did not
improve. The rule is plain arithmetic (no torch), so it is tested on its own.

`trainable_state` / `load_trainable` copy the trainable (LoRA) weights aside and back:
the loop keeps the best evaluation's copy and loads it before the adapter is saved; the
copy travels in checkpoints, so a resumed job keeps the best of its earlier attempts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class BestEval:
    loss: float | None = None  # the lowest eval loss so far
    step: int | None = None  # the step it was measured at
    stale: int = 0  # evaluations in a row without an improvement

    def observe(self, step: int, loss: float, min_delta: float) -> bool:
        """Count the evaluation at `step`; True when its weights are the new best."""
        if self.loss is not None and not loss < self.loss - min_delta:
            self.stale += 1
        else:
            self.stale = 0
        if self.loss is None or loss < self.loss:
            self.loss, self.step = loss, step
            return True
        return False

    def exhausted(self, patience: int) -> bool:
        """Whether `patience` evaluations in a row went without an improvement."""
        return self.stale >= patience

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def trainable_state(model: Any) -> dict[str, Any]:
    """A CPU copy of the model's trainable weights, by parameter name."""
    return {
        n: p.detach().to("cpu", copy=True).contiguous()
        for n, p in model.named_parameters()
        if p.requires_grad
    }


def load_trainable(model: Any, weights: dict[str, Any]) -> bool:
    """Copy `weights` into the model's trainable parameters; False when the names differ."""
    import torch

    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(weights) != set(named):
        return False
    with torch.no_grad():
        for n, p in named.items():
            p.copy_(weights[n].to(p.device, p.dtype))
    return True
