"""GRPO: prompts in, graded samples, the policy update (method grpo; settings `JobSpec.grading`).

Input: normalised prompts JSONL (OpenAI's reinforcement fine-tuning rows), one per line:

    {"messages": [{"role", "content"}, ...ending with a user message], ...other fields}

The other fields are the row as graders see it (`{{item.field}}`; `item` is the whole
row). A row without messages, or whose messages do not end with a user message, raises
`BadInput` naming it. A prompt longer than `max_length` minus `max_completion_length`
tokens is dropped (the first such rows are named in the `started` event's dataset facts),
so no sequence is longer than the plan counted.

A micro-batch is `micro_batch_size` prompts (`PromptSample`). Collating one is the
rollout (`Objective.rollout`, given to the batch plan as its collate): without gradients
and with dropout off, the policy samples `num_generations` completions of each prompt
(`trainer.grpo_sampling`: at the spec's temperature among the 50 likeliest tokens, up to
`max_completion_length` new tokens, ending at the end-of-turn token, which is kept). The
backend (`build_sampler`, once per job): vLLM in the worker with the adapter's current
weights (`trainer.grpo_vllm`) where `vllm` imports and the job runs on one CUDA device;
elsewhere (the CPU, a GPU image without vLLM, several GPUs) the lean transformers sampler,
which draws what transformers' `generate` draws, each prompt prefilled once for its group.
Each completion is decoded, scored by every grader (`trainer.shared.graders`; python
graders in `trainer.sandbox`), its reward is the sum of their scores, and the advantages
are normalised within each prompt's group (`trainer.grpo_loss.advantages`). The reference
log-probabilities (the adapter disabled, or the parent's weights) are computed there too
when `kl_beta` > 0.

Scoring: where the attention is BrightRun's varlen SDPA on a model whose every layer is
softmax attention without a sliding window (`shares_prompts`), the micro-batch is one row
with each prompt laid out once, followed by its completions (`group_rows`): a completion
attends to its prompt and to itself, at the positions it has after the prompt, so its
log-probabilities and their gradients are those of the prompt and completion scored apart,
from fewer tokens (the prompt's activations receive each completion's gradient, as they
would in G copies). Elsewhere each completion is a padded sequence behind its prompt. The
prompt carries no loss; the step's loss is `trainer.grpo_loss.policy_loss` on the
completions' tokens (one update per generation: the sampling log-probabilities are the
current ones).

Metrics (`take_metrics`): `reward` (mean), `reward_<grader>` for each grader,
`completion_length` (mean tokens), `clip_ratio`, `kl` (kl_beta > 0), `grader_failures`, and
`samples`: a few completions of the interval's last micro-batch (`trainer.grpo_shown`: the
prompt's last user message and the completion, each cut short, the reward and each
grader's score); on evaluation, the same numbers over the eval prompts prefixed `eval_`,
and the eval "loss" is minus the mean reward. A grader failing on most samples stops the
job (`BadInput`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer import data as D
from trainer.grpo_loss import GrpoSettings, advantages, policy_loss
from trainer.grpo_sampling import POLICY_TOP_K, SampleSettings
from trainer.grpo_shown import shown_samples
from trainer.loss import token_logps
from trainer.preference_loss import dropout_off
from trainer.sandbox import Limits, run_python
from trainer.shared import graders as G
from trainer.shared.errors import BadInput
from trainer.shared.grpo_spec import GrpoSpec


@dataclass
class PromptSample:
    messages: list[dict[str, str]]
    item: dict[str, Any]
    row: int
    ids: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_loss(self) -> int:
        return 0


def read_prompts(path: Path, what: str, tokenizer: Any) -> list[PromptSample]:
    """Every prompt row of a file, tokenised with the generation prompt; `BadInput` names
    the first bad rows."""
    out, bad = [], []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            bad.append(f"row {lineno}: not valid JSON ({e.msg})")
            continue
        msgs = row.get("messages") if isinstance(row, dict) else None
        if not isinstance(msgs, list) or not msgs or not isinstance(msgs[-1], dict):
            bad.append(f"row {lineno}: needs 'messages', a list ending with a user message")
            continue
        if msgs[-1].get("role") != "user":
            bad.append(f"row {lineno}: the messages end with {msgs[-1].get('role')!r}, not user")
            continue
        messages = [{"role": m["role"], "content": str(m.get("content", ""))} for m in msgs]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        out.append(PromptSample(messages, row, lineno, list(ids)))
    if bad or not out:
        raise BadInput(
            f"{what} data: " + ("; ".join(bad[:5]) if bad else "no rows"),
            "GRPO trains on prompts: rows with 'messages' ending with a user turn",
        )
    return out


def load_prompts(
    spec: Any, tokenizer: Any, work: Path
) -> tuple[list[PromptSample], list[PromptSample], dict[str, Any]]:
    data = spec.data
    train_file = D.fetch(data.train_url, data.train_path, work / "train.jsonl", "train")
    room = spec.training.max_length - spec.grading.max_completion_length
    train, long_rows = _fitting(read_prompts(train_file, "train", tokenizer), room, "train")
    facts: dict[str, Any] = {"kind": "prompts", "train": {"rows": len(train)}}
    if data.eval_url or data.eval_path:
        eval_file = D.fetch(data.eval_url, data.eval_path, work / "eval.jsonl", "eval")
        eval_, _ = _fitting(read_prompts(eval_file, "eval", tokenizer), room, "eval")
    else:
        train, eval_ = D.split_eval(train, data.eval_fraction, spec.training.seed)  # type: ignore[arg-type,assignment]
    facts["train"]["dropped_long_prompts"] = long_rows
    facts["train_samples"] = len(train)
    facts["eval_samples"] = len(eval_)
    return train, eval_, facts  # type: ignore[return-value]


def _fitting(
    prompts: list[PromptSample], room: int, what: str
) -> tuple[list[PromptSample], list[int]]:
    """The prompts that leave room for a whole completion within `max_length`, and the rows
    of those that do not (dropped: a sequence never exceeds what the plan counted)."""
    kept = [p for p in prompts if len(p) <= room]
    if not kept:
        raise BadInput(
            f"no {what} prompt leaves room for a completion: each needs at most {room} tokens "
            "(max_length minus max_completion_length)",
            "raise training.max_length or lower grading.max_completion_length",
        )
    return kept, [p.row for p in prompts if len(p) > room][:5]


@dataclass
class GrpoBatch(D.SharedPromptBatch):
    completion_mask: Any = None  # [completions, longest completion] bool
    advantages: Any = None  # [completions]
    ref: Any = None  # [completions, longest] reference log-probs (kl_beta > 0)
    rewards: Any = None  # [completions, graders]
    n_completions: int = 0
    shown: Any = None  # `shown_samples` of this micro-batch
    # Shared prompts (`group_rows`): `pick`, `pick_targets`, `layout` (D.SharedPromptBatch).


def group_rows(prompts: list[list[int]], completions: list[list[int]], device: Any) -> GrpoBatch:
    """The micro-batch as one row: each prompt once, then each of its completions but the
    last token (which predicts nothing), each tail at the positions it has after its prompt
    (module docstring). A completion's first token is predicted by its prompt's last
    position, every other token by the tail position before it."""
    g = len(completions) // len(prompts)
    ids: list[int] = []
    pos: list[int] = []
    layout: list[tuple[int, ...]] = []
    pick: list[int] = []
    targets: list[int] = []
    for j, prompt in enumerate(prompts):
        start, k = len(ids), len(prompt)
        ids += prompt
        pos += range(k)
        tails = []
        for c in completions[j * g : (j + 1) * g]:
            at = len(ids)
            pick += [start + k - 1, *range(at, at + len(c) - 1)]
            targets += c
            ids += c[:-1]
            pos += range(k, k + len(c) - 1)
            tails.append(len(c) - 1)
        layout.append((start, k, *tails))
    return GrpoBatch.laid_out(ids, pos, pick, targets, layout, device)


def shares_prompts(loaded: Any) -> bool:
    """Whether scoring lays each prompt out once for its completions (`group_rows`): the
    model was loaded for it (`trainer.shared.arch.shares_prompts`: every layer softmax
    attention without a sliding window) with BrightRun's varlen SDPA, which reads the
    layout."""
    from trainer.kernels import ATTN_IMPLEMENTATION

    attention = getattr(loaded.model.config, "_attn_implementation", None)
    return loaded.shared_prompts and attention == ATTN_IMPLEMENTATION


def sampler_backend(device: Any) -> str:
    """ "vllm" or "transformers" for a job on `device` (`trainer.grpo_sampling.choose_backend`)."""
    import torch

    from trainer.grpo_sampling import choose_backend, vllm_importable

    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    return choose_backend(vllm_importable(), device.type == "cuda", distributed)


def build_sampler(lm: Any, pad_id: int, device: Any, max_length: int) -> Any:
    """The sampling backend for this worker (`sampler_backend`); `max_length`: the longest
    prompt and completion together."""
    from trainer.grpo_sampling import LeanSampler

    if sampler_backend(device) == "vllm":
        from trainer.grpo_vllm import PolicyOnVllm

        return PolicyOnVllm(lm, max_length)
    return LeanSampler(lm.model, pad_id, device, lm.compute_dtype)


@dataclass
class Tally:
    completions: int = 0
    reward: float = 0.0
    per_grader: dict[str, float] = field(default_factory=dict)
    length: int = 0
    clip: float = 0.0
    kl: float = 0.0
    batches: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)

    def metrics(self, prefix: str) -> dict[str, float]:
        n, b = max(self.completions, 1), max(self.batches, 1)
        out = {f"{prefix}reward": self.reward / n, f"{prefix}completion_length": self.length / n}
        out.update({f"{prefix}reward_{k}": v / n for k, v in self.per_grader.items()})
        if self.batches:
            out.update({f"{prefix}clip_ratio": self.clip / b, f"{prefix}kl": self.kl / b})
        return out


def score_model_client(env: Any) -> Any:
    """`score_model` graders' runner: the chat completion of the grader's `model` at the
    worker's `GRADER_BASE_URL` (`trainer.env`), its `sampling_params` passed on; None
    when no endpoint is set. An endpoint error is the grader's failure on that sample."""
    base = getattr(env, "grader_base_url", None)
    if not base:
        return None
    import urllib.request

    key = env.grader_api_key or ""

    def ask(grader: Any, messages: list[dict[str, str]]) -> str:
        body = {
            "model": grader["model"],
            "messages": messages,
            **(grader.get("sampling_params") or {}),
        }
        req = urllib.request.Request(
            base.rstrip("/") + "/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        )
        with urllib.request.urlopen(req, timeout=60) as r:  # noqa: S310 (the worker's setting)
            answer = json.loads(r.read())
        return str(answer["choices"][0]["message"]["content"] or "")

    return ask


class Objective:
    """GRPO for one job (see the module docstring)."""

    def __init__(
        self, s: GrpoSpec, loaded: Any, has_parent: bool, env: Any, max_length: int
    ) -> None:
        self.s, self.lm, self.has_parent = s, loaded, has_parent
        self.max_length = max_length  # a prompt and its completion (`load_prompts`)
        self.graders = [G.parse(g) for g in s.graders]
        self.settings = GrpoSettings(
            loss_type=s.loss_type,
            epsilon=s.epsilon,
            beta=s.kl_beta,
            max_completion_length=s.max_completion_length,
            scale_rewards=s.scale_rewards,
        )
        limits = Limits(wall_s=s.python_wall_s, cpu_s=s.python_cpu_s)
        self.runners = G.Runners(
            python=lambda src, smp, item: run_python(src, smp, item, limits),
            model=score_model_client(env),
        )
        self.health = G.Health()
        self.sampling = SampleSettings(
            temperature=s.temperature,
            max_new_tokens=s.max_completion_length,
            stop_ids=(loaded.tokenizer.eos_token_id,),
            top_k=POLICY_TOP_K,
        )
        self._sampler: Any = None
        self.share = shares_prompts(loaded)
        loaded.facts["grpo_sampling"] = {  # in the `started` event's model facts
            "backend": sampler_backend(loaded.device),
            "prompt_laid_out_once": self.share,
        }
        self.tallies = {"train": Tally(), "eval": Tally()}
        self._eval_ready = False
        self._which = "train"

    # ----------------------------------------------------------------- rollout

    def rollout(
        self, samples: list[PromptSample], idx: list[int], *, packed: bool, pad_id: int, device: Any
    ) -> GrpoBatch:
        """The micro-batch of prompts `idx`: sampled, graded, collated (module docstring)."""
        prompts = [samples[i] for i in idx]
        completions = self.sampler(pad_id, device).sample(
            [p.ids for p in prompts], self.s.num_generations, self.sampling
        )
        texts = self.lm.tokenizer.batch_decode(completions, skip_special_tokens=True)
        rewards = self._grade(prompts, texts)
        if self.share:
            base = group_rows([p.ids for p in prompts], completions, device)
        else:
            base = self._padded(prompts, completions, pad_id, device)
        batch = self._collate(base, completions, rewards, device)
        names = [grader.name for grader in self.graders]
        batch.shown = shown_samples(prompts, texts, rewards, names, self.s.num_generations)
        return batch

    def sampler(self, pad_id: int, device: Any) -> Any:
        """The sampling backend (`trainer.grpo_sampling.choose_backend`), built once."""
        if self._sampler is None:
            self._sampler = build_sampler(self.lm, pad_id, device, self.max_length)
        return self._sampler

    def _padded(
        self, prompts: list[PromptSample], completions: list[list[int]], pad_id: int, device: Any
    ) -> D.Batch:
        """One padded sequence per completion: its prompt, then it (the prompt carries no loss)."""
        g = self.s.num_generations
        seqs = []
        for k, ids in enumerate(completions):
            prompt = prompts[k // g].ids
            full = prompt + ids
            targets = [
                full[t + 1] if t + 1 >= len(prompt) else D.IGNORE for t in range(len(full) - 1)
            ]
            seqs.append(D.Sample(full, targets + [D.IGNORE], len(ids), prompts[k // g].row))
        return D.collate(seqs, list(range(len(seqs))), packed=False, pad_id=pad_id, device=device)

    def _grade(self, prompts: list[PromptSample], texts: list[str]) -> Any:
        import torch

        g = self.s.num_generations
        rewards = torch.zeros(len(texts), len(self.graders))
        for k, text in enumerate(texts):
            sample = G.make_sample(text)
            for j, grader in enumerate(self.graders):
                score = G.grade(grader, sample, prompts[k // g].item, self.runners)
                self.health.record(grader.name, score)
                rewards[k, j] = score.value
        try:
            self.health.check()
        except G.GraderFailing as e:
            raise BadInput(e.message, e.suggestion) from e
        return rewards

    def _collate(
        self, base: D.Batch, completions: list[list[int]], rewards: Any, device: Any
    ) -> GrpoBatch:
        import torch

        longest = max(len(c) for c in completions)
        mask = torch.tensor([[1] * len(c) + [0] * (longest - len(c)) for c in completions])
        adv = advantages(rewards.sum(1), self.s.num_generations, self.s.scale_rewards)
        batch = GrpoBatch(
            **{
                **vars(base),
                "completion_mask": mask.bool().to(device),
                "advantages": adv.to(device),
                "rewards": rewards,
                "n_completions": len(completions),
            }
        )
        if self.s.kl_beta > 0:
            import contextlib

            off = contextlib.nullcontext() if self.has_parent else self.lm.model.disable_adapter()
            with torch.no_grad(), dropout_off(self.lm.model), off:
                batch.ref = self.token_matrix(batch)
        return batch

    # ----------------------------------------------------------------- loss

    def token_matrix(self, batch: GrpoBatch) -> Any:
        """Per-token log-probs of each completion, [completions, longest] (0 past its end)."""
        import torch

        lm = self.lm
        pick = (batch.pick, batch.pick_targets) if batch.layout is not None else None
        flat, _ = token_logps(lm.model, batch, lm.device, lm.compute_dtype, pick)
        out = torch.zeros(batch.completion_mask.shape, dtype=torch.float32, device=flat.device)
        return out.masked_scatter(batch.completion_mask, flat)

    def _terms(self, batch: GrpoBatch, step_tokens: int) -> Any:
        logps = self.token_matrix(batch)
        loss, m = policy_loss(
            logps,
            None,
            batch.ref,
            batch.advantages,
            batch.completion_mask,
            self.settings,
            step_tokens=step_tokens,
        )
        t = self.tallies[self._which]
        t.completions += batch.n_completions
        t.reward += float(batch.rewards.sum())
        for j, grader in enumerate(self.graders):
            t.per_grader[grader.name] = t.per_grader.get(grader.name, 0.0) + float(
                batch.rewards[:, j].sum()
            )
        t.length += int(batch.completion_mask.sum())
        t.clip += m["clip_ratio"]
        t.kl += m.get("kl", 0.0)
        t.batches += 1
        t.samples = batch.shown or t.samples
        return loss

    def step_loss(self, batch: GrpoBatch, step_batches: list[D.Batch]) -> Any:
        """This micro-batch's share of the step's loss (the step's is their sum)."""
        self._which = "train"
        tokens = sum(int(b.completion_mask.sum()) for b in step_batches)  # type: ignore[attr-defined]
        loss = self._terms(batch, tokens)
        if self.settings.loss_type != "dapo":
            loss = loss / len(step_batches)
        return loss

    def evaluate(self, batches: Any) -> float:
        """Minus the mean reward over the eval prompts; their metrics go to the next
        `take_metrics`."""
        import torch

        self.tallies["eval"] = Tally()
        self._which = "eval"
        with torch.no_grad(), dropout_off(self.lm.model):
            for batch in batches:
                self._terms(batch, int(batch.completion_mask.sum()))
        self._which = "train"
        self._eval_ready = True
        t = self.tallies["eval"]
        return -t.reward / max(t.completions, 1)

    def take_metrics(self) -> dict[str, Any]:
        """The train metrics since the last call, and the last evaluation's once."""
        out: dict[str, Any] = {}
        if self.tallies["train"].completions:
            out.update(self.tallies["train"].metrics(""))
            if self.tallies["train"].samples:
                out["samples"] = self.tallies["train"].samples
        self.tallies["train"] = Tally()
        if self._eval_ready:
            out.update(self.tallies["eval"].metrics("eval_"))
            self._eval_ready = False
        failures = {k: v for k, v in self.health.failed.items() if v}
        if failures:
            out["grader_failures"] = failures
        return out
