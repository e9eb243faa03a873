"""DPO and ORPO: the losses over pair batches, their metrics, and the reference pass.

Each pair batch (`trainer.preference.PairBatch`) goes through the model once: chosen and
rejected sequences together, packed without cross-sample attention. A sequence's score is
the sum of its answer tokens' log-probabilities (`trainer.loss.token_logps`).

DPO (Rafailov et al. 2023), per pair, with delta = (pi_c - ref_c) - (pi_r - ref_r):
`sigmoid`: -log sigmoid(beta * delta); `hinge`: max(0, 1 - beta * delta); `ipo`: (d -
1 / (2 beta))^2 with d the same difference of per-token means. The step's loss is the mean
over its pairs. Rewards are beta * (pi - ref) of each answer.

The reference: with LoRA no second model is needed. The reference log-probabilities of
every pair are computed once, at setup, without gradients and with dropout off, before the
first step: with the adapter disabled (the frozen base), or, when the job continues a
parent adapter (`resume_from`, e.g. an SFT version), with the parent's weights as loaded,
which the new adapter starts from. So the reference is exactly the model the job starts
from, the step-0 loss is log 2, and no frozen copy is kept in memory; each pair's
reference pass happens once per job instead of once per epoch.

ORPO (Hong et al. 2024), no reference: the chosen answers' cross-entropy (mean over the
step's chosen answer tokens) plus, per pair, -lambda * log sigmoid(log odds(c) - log
odds(r)), with log odds(y) = log p - log(1 - p) of the per-token mean log-probability
p; the second term is the mean over the step's pairs. Rewards are lambda * that mean.

Metrics (`take_metrics`): per logged interval and per evaluation, `rewards_chosen`,
`rewards_rejected`, `reward_margin` (means over pairs), `reward_accuracy` (share of pairs
with the higher reward on the chosen answer) and `preference_accuracy` (share of pairs
whose chosen answer the model gives the higher likelihood); eval ones prefixed `eval_`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from trainer import data as D
from trainer.loss import token_logps
from trainer.preference import PairBatch
from trainer.shared.spec import PreferenceSpec

LOG2 = math.log(2.0)


@contextlib.contextmanager
def dropout_off(model: Any) -> Iterator[None]:
    """Dropout off for the block, nothing else (bitsandbytes' CPU 4-bit layers repack
    their weights irreversibly in eval mode, which breaks training after)."""
    import torch

    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout) and m.training]
    for m in dropouts:
        m.eval()
    try:
        yield
    finally:
        for m in dropouts:
            m.train()


@dataclass
class Tally:
    pairs: int = 0
    pair_loss: float = 0.0
    nll: float = 0.0
    chosen_tokens: int = 0
    rewards_chosen: float = 0.0
    rewards_rejected: float = 0.0
    reward_correct: int = 0
    likelihood_correct: int = 0

    def metrics(self, prefix: str) -> dict[str, float]:
        n = max(self.pairs, 1)
        return {
            f"{prefix}rewards_chosen": self.rewards_chosen / n,
            f"{prefix}rewards_rejected": self.rewards_rejected / n,
            f"{prefix}reward_margin": (self.rewards_chosen - self.rewards_rejected) / n,
            f"{prefix}reward_accuracy": self.reward_correct / n,
            f"{prefix}preference_accuracy": self.likelihood_correct / n,
        }

    def loss(self) -> float:
        nll = self.nll / self.chosen_tokens if self.chosen_tokens else 0.0
        return self.pair_loss / max(self.pairs, 1) + nll


def _log1mexp(x: Any) -> Any:
    """log(1 - exp(x)) for x < 0, stable at both ends."""
    import torch

    return torch.where(x > -LOG2, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


class Objective:
    """DPO or ORPO over pair batches for one job (see the module docstring)."""

    def __init__(self, method: str, p: PreferenceSpec, loaded: Any) -> None:
        self.method, self.p, self.lm = method, p, loaded
        self.tallies = {"train": Tally(), "eval": Tally()}
        self._eval_ready = False

    def seq_logps(self, batch: PairBatch) -> tuple[Any, Any]:
        """Summed answer log-probabilities and answer token counts, both [pairs, 2]."""
        import torch

        lm = self.lm
        pick = None if batch.pick is None else (batch.pick, batch.pick_targets)
        logps, keep = token_logps(lm.model, batch, lm.device, lm.compute_dtype, pick)
        if pick is not None:  # shared prompts: each answer token names its sequence
            seg = batch.pick_seq
        else:
            seg = batch.seq_index.reshape(-1).index_select(0, keep)
        n = 2 * batch.n_pairs
        sums = torch.zeros(n, dtype=torch.float32, device=logps.device).index_add(0, seg, logps)
        counts = torch.bincount(seg, minlength=n).to(torch.float32)
        return sums.view(-1, 2), counts.view(-1, 2)

    def pair_terms(self, logps: Any, counts: Any, ref: Any) -> tuple[Any, Any]:
        """(per-pair loss term, rewards [pairs, 2]) for summed log-probs `logps`."""
        import torch.nn.functional as F

        if self.method == "orpo":
            lam, avg = self.p.orpo_lambda, logps / counts
            log_odds = (avg[:, 0] - avg[:, 1]) - (_log1mexp(avg[:, 0]) - _log1mexp(avg[:, 1]))
            return -lam * F.logsigmoid(log_odds), lam * avg.detach()
        beta, ratios = self.p.beta, logps - ref
        if self.p.loss_type == "ipo":
            d = (ratios / counts)[:, 0] - (ratios / counts)[:, 1]
            return (d - 1 / (2 * beta)) ** 2, beta * ratios.detach()
        delta = ratios[:, 0] - ratios[:, 1]
        if self.p.loss_type == "hinge":
            return (1 - beta * delta).clamp_min(0), beta * ratios.detach()
        return -F.logsigmoid(beta * delta), beta * ratios.detach()

    def _count(self, which: str, batch: PairBatch, logps: Any, rewards: Any, terms: Any) -> None:
        t = self.tallies[which]
        t.pairs += batch.n_pairs
        t.pair_loss += float(terms.detach().sum())
        t.rewards_chosen += float(rewards[:, 0].sum())
        t.rewards_rejected += float(rewards[:, 1].sum())
        t.reward_correct += int((rewards[:, 0] > rewards[:, 1]).sum())
        t.likelihood_correct += int((logps[:, 0] > logps[:, 1]).detach().sum())
        if self.method == "orpo":
            t.nll += float(-logps[:, 0].detach().sum())
            t.chosen_tokens += batch.n_chosen_loss

    def step_loss(self, batch: PairBatch, step_batches: list[D.Batch]) -> Any:
        """This micro-batch's share of the step's loss (the step's is their sum)."""
        logps, counts = self.seq_logps(batch)
        terms, rewards = self.pair_terms(logps, counts, batch.ref)
        self._count("train", batch, logps, rewards, terms)
        loss = terms.sum() / sum(b.n_pairs for b in step_batches)  # type: ignore[attr-defined]
        if self.method == "orpo":
            chosen = sum(b.n_chosen_loss for b in step_batches)  # type: ignore[attr-defined]
            loss = loss - logps[:, 0].sum() / chosen
        return loss

    def evaluate(self, batches: Iterable[PairBatch]) -> float:
        """The loss over the eval pairs; their metrics go to the next `take_metrics`."""
        import torch

        self.tallies["eval"] = Tally()
        with torch.no_grad(), dropout_off(self.lm.model):
            for batch in batches:
                logps, counts = self.seq_logps(batch)
                terms, rewards = self.pair_terms(logps, counts, batch.ref)
                self._count("eval", batch, logps, rewards, terms)
        self._eval_ready = True
        return self.tallies["eval"].loss()

    def take_metrics(self) -> dict[str, float]:
        """The train metrics since the last call, and the last evaluation's once."""
        out = self.tallies["train"].metrics("") if self.tallies["train"].pairs else {}
        self.tallies["train"] = Tally()
        if self._eval_ready:
            out.update(self.tallies["eval"].metrics("eval_"))
            self._eval_ready = False
        return out


def compute_reference(objective: Objective, plan: Any, has_parent: bool) -> dict[str, Any]:
    """Store each pair's reference log-probs on it (DPO; see the module docstring), for the
    train and eval pairs of `plan` (a `trainer.setup.BatchPlan`); returns facts: what the
    reference is, the seconds its pass took, and its preference accuracy on the eval pairs."""
    import time

    import torch

    t0, c0 = time.monotonic(), time.process_time()
    model = objective.lm.model
    off = contextlib.nullcontext() if has_parent else model.disable_adapter()
    with torch.no_grad(), dropout_off(model), off:
        for samples in (plan.train, plan.eval):
            for idx, batch in plan.unshuffled(samples, objective.lm.device):
                logps, _ = objective.seq_logps(batch)
                for i, (c, r) in zip(idx, logps.tolist(), strict=True):
                    samples[i].ref = (c, r)
    facts: dict[str, Any] = {
        "reference": "parent adapter" if has_parent else "base model",
        "reference_pass_s": round(time.monotonic() - t0, 3),
        "reference_pass_cpu_s": round(time.process_time() - c0, 3),
    }
    if plan.eval:
        right = sum(1 for s in plan.eval if s.ref[0] > s.ref[1])
        facts["reference_eval_preference_accuracy"] = right / len(plan.eval)
    return facts
