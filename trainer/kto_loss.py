"""KTO: the loss over labelled single answers, its metrics, and the reference pass.

KTO (Ethayarajh et al. 2024), as TRL 1.16's `KTOTrainer` (`loss_type` "kto") computes it
on one batch. A sequence's score is the sum of its answer tokens' log-probabilities
(`trainer.loss.token_logps`); r = score - reference score of each row's answer. The KL
estimate z of a micro-batch is the mean over its rows of (score - reference score) of the
mismatched sequences (each prompt with another row's answer, `trainer.kto`), scored under
the adapter without gradients, clamped at 0 and held constant. Per row:

    desirable:    desirable_weight   * (1 - sigmoid(beta * (r - z)))
    undesirable:  undesirable_weight * (1 - sigmoid(beta * (z - r)))

The micro-batch's loss is the mean over its rows; a step of several micro-batches sums
each row's term over the step's rows (one micro-batch: exactly TRL's batch loss).
Rewards are beta * r.

The reference is the model the job starts from, as for DPO (`trainer.preference_loss`):
both sequences of every row are scored once, at setup, without gradients and with
dropout off, with the adapter disabled (or the parent's weights when the job continues
one).

Metrics (`take_metrics`): per logged interval and per evaluation, `kl` (mean z over the
micro-batches), `rewards_desirable`, `rewards_undesirable` (means over rows of each label)
and `reward_margin` (their difference); eval ones prefixed `eval_`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from trainer import data as D
from trainer.kto import KtoBatch
from trainer.loss import token_logps
from trainer.preference_loss import dropout_off
from trainer.shared.spec import PreferenceSpec


@dataclass
class Tally:
    rows: int = 0
    loss: float = 0.0
    batches: int = 0
    kl: float = 0.0
    desirable: int = 0
    rewards_desirable: float = 0.0
    rewards_undesirable: float = 0.0

    def metrics(self, prefix: str) -> dict[str, float]:
        good = self.rewards_desirable / max(self.desirable, 1)
        bad = self.rewards_undesirable / max(self.rows - self.desirable, 1)
        return {
            f"{prefix}kl": self.kl / max(self.batches, 1),
            f"{prefix}rewards_desirable": good,
            f"{prefix}rewards_undesirable": bad,
            f"{prefix}reward_margin": good - bad,
        }


def seq_sums(lm: Any, batch: D.Batch, index: Any, n: int) -> Any:
    """Summed answer log-probabilities of the batch's `n` sequences ([n], float32)."""
    import torch

    logps, keep = token_logps(lm.model, batch, lm.device, lm.compute_dtype)
    seg = index.reshape(-1).index_select(0, keep)
    return torch.zeros(n, dtype=torch.float32, device=logps.device).index_add(0, seg, logps)


class Objective:
    """KTO over labelled-answer batches for one job (see the module docstring)."""

    def __init__(self, p: PreferenceSpec, loaded: Any) -> None:
        self.p, self.lm = p, loaded
        self.tallies = {"train": Tally(), "eval": Tally()}
        self._eval_ready = False

    def scores(self, batch: KtoBatch) -> tuple[Any, Any]:
        """(the answers' scores with gradients, the mismatched answers' without)."""
        import torch

        assert batch.kl is not None
        with torch.no_grad():
            kl = seq_sums(self.lm, batch.kl, batch.kl_index, batch.n_rows)
        return seq_sums(self.lm, batch, batch.seq_index, batch.n_rows), kl

    def row_terms(self, logps: Any, kl_logps: Any, batch: KtoBatch) -> tuple[Any, Any, Any]:
        """(each row's weighted loss term, its reward, the KL estimate z)."""
        import torch

        p, ref = self.p, batch.ref
        z = (kl_logps - ref[:, 1]).mean().detach().clamp(min=0)
        r = logps - ref[:, 0]
        good = p.desirable_weight * (1 - torch.sigmoid(p.beta * (r - z)))
        bad = p.undesirable_weight * (1 - torch.sigmoid(p.beta * (z - r)))
        return torch.where(batch.labels, good, bad), p.beta * r.detach(), z

    def _count(self, which: str, batch: KtoBatch, terms: Any, rewards: Any, z: Any) -> None:
        t, labels = self.tallies[which], batch.labels
        t.rows += batch.n_rows
        t.batches += 1
        t.loss += float(terms.detach().sum())
        t.kl += float(z)
        t.desirable += int(labels.sum())
        t.rewards_desirable += float(rewards[labels].sum())
        t.rewards_undesirable += float(rewards[~labels].sum())

    def step_loss(self, batch: KtoBatch, step_batches: list[D.Batch]) -> Any:
        """This micro-batch's share of the step's loss (the step's is their sum)."""
        logps, kl = self.scores(batch)
        terms, rewards, z = self.row_terms(logps, kl, batch)
        self._count("train", batch, terms, rewards, z)
        return terms.sum() / sum(b.n_rows for b in step_batches)  # type: ignore[attr-defined]

    def evaluate(self, batches: Iterable[KtoBatch]) -> float:
        """The loss over the eval rows; their metrics go to the next `take_metrics`."""
        import torch

        self.tallies["eval"] = Tally()
        with torch.no_grad(), dropout_off(self.lm.model):
            for batch in batches:
                logps, kl = self.scores(batch)
                self._count("eval", batch, *self.row_terms(logps, kl, batch))
        self._eval_ready = True
        t = self.tallies["eval"]
        return t.loss / max(t.rows, 1)

    def take_metrics(self) -> dict[str, float]:
        """The train metrics since the last call, and the last evaluation's once."""
        out = self.tallies["train"].metrics("") if self.tallies["train"].rows else {}
        self.tallies["train"] = Tally()
        if self._eval_ready:
            out.update(self.tallies["eval"].metrics("eval_"))
            self._eval_ready = False
        return out


def compute_reference(objective: Objective, plan: Any, has_parent: bool) -> dict[str, Any]:
    """Store each row's reference log-probs (its answer, its mismatched answer) on it, for
    the train and eval rows of `plan` (a `trainer.setup.BatchPlan`); returns facts."""
    import torch

    t0, c0 = time.monotonic(), time.process_time()
    model = objective.lm.model
    off = contextlib.nullcontext() if has_parent else model.disable_adapter()
    with torch.no_grad(), dropout_off(model), off:
        for samples in (plan.train, plan.eval):
            for idx, batch in plan.unshuffled(samples, objective.lm.device):
                logps, kl = objective.scores(batch)
                for i, pair in zip(idx, zip(logps.tolist(), kl.tolist(), strict=True), strict=True):
                    samples[i].ref = pair
    return {
        "reference": "parent adapter" if has_parent else "base model",
        "reference_pass_s": round(time.monotonic() - t0, 3),
        "reference_pass_cpu_s": round(time.process_time() - c0, 3),
    }
