"""Setup of a training job: everything the loop needs, built in order, failing fast.

`setup(spec, env, work)` returns a `Setup`: base model files (cache, then hub), tokenizer,
dataset (download, row validation, tokenisation, the eval split), the model (quantisation,
LoRA, which layers recompute their activations), the batch plan, AdamW with the spec's
scheduler and warmup, and a parent adapter's weights when `resume_from` names one. The
method's row of `trainer.shared.methods` says what it reads and whether it has a reference
pass: DPO and ORPO read pairs (`trainer.preference`, objective in
`trainer.preference_loss`), KTO labelled answers (`trainer.kto`, `trainer.kto_loss`); the
reference log-probs (DPO, KTO) are computed here, last. The
torch and Python RNGs are seeded from `training.seed` before the model is built, so two
runs of one spec draw the same numbers. Raises the typed failures of `trainer.shared.errors`
(early stopping with no eval rows left after the split is `BadInput`).

`BatchPlan` says which samples make each optimizer step's micro-batches: each epoch's
order is a function of the seed, so a resumed job sees the batches it would have seen.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer import data as D
from trainer import grpo as R
from trainer import kto as K
from trainer import preference as P
from trainer.env import WorkerEnv
from trainer.kto_loss import Objective as KtoObjective
from trainer.kto_loss import compute_reference as kto_reference
from trainer.loss import batch_loss_sum
from trainer.model import Loaded, load_for_training, load_tokenizer, resolve_model_path
from trainer.parallel import Group
from trainer.preference_loss import Objective, compute_reference
from trainer.shared.errors import BadInput
from trainer.shared.methods import METHODS
from trainer.shared.spec import JobSpec, TrainingSpec


class BatchPlan:
    """The micro-batches of every optimizer step, and of one evaluation pass."""

    def __init__(
        self,
        t: TrainingSpec,
        train: list[D.Sample],
        eval_: list[D.Sample],
        packed: bool,
        pad_id: int,
        pairs: bool = False,
        share: bool = False,
        collate: Any = None,
    ) -> None:
        self.t, self.train, self.eval, self.packed, self.pad_id = t, train, eval_, packed, pad_id
        # Preference pairs (`trainer.preference`): a pair is one unit of up to two sequences,
        # with `share` (packed) their common prefix laid out once.
        self.capacity = 2 * t.max_length if pairs else t.max_length
        self._collate_fn: Any = collate or D.collate
        self.shared_tokens = 0
        if pairs:
            share = share and packed
            self._collate_fn = functools.partial(P.collate_pairs, share=share)
            if share:
                self.shared_tokens = P.share_prompts(train) + P.share_prompts(eval_)
        self.micro_per_epoch = len(self._micro_plan(0, train))
        self.steps_per_epoch = math.ceil(self.micro_per_epoch / t.grad_accum)
        if t.max_steps is not None:
            self.total_steps = t.max_steps
        else:
            self.total_steps = max(1, math.ceil((t.epochs or 1.0) * self.steps_per_epoch))
        self._epoch_cache: dict[int, list[list[int]]] = {}

    def _micro_plan(self, epoch: int | None, samples: list[D.Sample]) -> list[list[int]]:
        t = self.t
        return D.plan_micro_batches(
            samples,
            packed=self.packed,
            micro_batch_size=t.micro_batch_size,
            max_length=self.capacity,
            seed=t.seed,
            epoch=epoch,
        )

    def _collate(self, samples: list[Any], idx: list[int], device: Any) -> D.Batch:
        return self._collate_fn(samples, idx, packed=self.packed, pad_id=self.pad_id, device=device)

    def step_batches(self, step: int, device: Any) -> list[D.Batch]:
        """The micro-batches of optimizer step `step` (0-based)."""
        ga = self.t.grad_accum
        epoch, k = divmod(step, self.steps_per_epoch)
        if epoch not in self._epoch_cache:
            self._epoch_cache = {epoch: self._micro_plan(epoch, self.train)}
        return [
            self._collate(self.train, idx, device)
            for idx in self._epoch_cache[epoch][k * ga : (k + 1) * ga]
        ]

    def eval_batches(self, device: Any) -> Iterator[D.Batch]:
        """The micro-batches of one evaluation pass, each collated when it is needed."""
        for _idx, batch in self.unshuffled(self.eval, device):
            yield batch

    def unshuffled(self, samples: list[Any], device: Any) -> Iterator[tuple[list[int], D.Batch]]:
        """Each micro-batch of `samples` in plan order (no shuffle), with its indices."""
        for idx in self._micro_plan(None, samples):
            yield idx, self._collate(samples, idx, device)

    def summary(self) -> dict[str, Any]:
        """The plan as reported in the `started` event."""
        loss_tokens = sum(s.n_loss for s in self.train)
        return {
            "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "micro_batches_per_epoch": self.micro_per_epoch,
            "epochs": round(self.total_steps / self.steps_per_epoch, 4),
            "loss_tokens_per_epoch": loss_tokens,
            "avg_loss_tokens_per_step": round(loss_tokens / self.steps_per_epoch, 1),
        }


@dataclass
class Setup:
    """What a training job trains with (see the module docstring)."""

    spec: JobSpec
    loaded: Loaded  # the PEFT model, its device, compute dtype and facts
    batches: BatchPlan
    optimizer: Any
    scheduler: Any
    params: list[Any]  # the trainable parameters
    model_facts: dict[str, Any]
    dataset: dict[str, Any]
    preference: Any = None  # the objective of a method that is not SFT (`_objective`)
    group: Group | None = None  # one process of several (`trainer.parallel`); None: alone

    @property
    def model(self) -> Any:
        return self.loaded.model

    def loss_sum(self, batch: D.Batch) -> Any:
        lm = self.loaded
        return batch_loss_sum(lm.model, batch, lm.device, lm.compute_dtype)

    def step_loss(self, batch: D.Batch, step_batches: list[D.Batch]) -> Any:
        """`batch`'s share of its optimizer step's mean loss (the step's is their sum)."""
        if self.preference is not None:
            return self.preference.step_loss(batch, step_batches)
        return self.loss_sum(batch) / sum(b.n_loss for b in step_batches)

    def release(self) -> None:
        """Drop the model and optimizer (the job is over) so their memory can be freed."""
        self.loaded = self.optimizer = self.scheduler = None  # type: ignore[assignment]
        self.params = []


def setup(spec: JobSpec, env: WorkerEnv, work: Path, group: Group | None = None) -> Setup:
    """Build a job's `Setup` (see the module docstring); downloads go under `work`. With
    `group` (one process of several), the model is sharded (`trainer.parallel.shard`)
    before the optimizer sees its parameters."""
    import torch

    t = spec.training
    path, source = resolve_model_path(spec.model, env)
    tokenizer = load_tokenizer(path)
    method = METHODS[spec.method]
    pairs, labelled = method.data == "pairs", method.data == "labelled"
    prompts = method.data == "prompts"
    load = LOADERS[method.data]
    train, eval_, dataset = load(spec, tokenizer, work)
    if t.early_stopping is not None and not eval_:
        raise BadInput(
            f"early stopping watches the eval loss, but no rows were held out for eval "
            f"({dataset['train_samples']} training samples)",
            "raise data.eval_fraction or give an eval file with rows, or turn early stopping off",
        )
    torch.manual_seed(t.seed)
    random.seed(t.seed)
    sharding = choose_sharding(spec, path, group) if group is not None else None
    # FSDP on GPUs: the base is read into host memory and each GPU receives its shard only
    sharded = sharding is not None and sharding[0] == "fsdp"
    on_cpu = sharded and group.device_type == "cuda"
    loaded = load_for_training(spec, path, tokenizer, on_cpu=on_cpu, sharded=sharded)
    packed = loaded.packing != "padded" and not prompts  # GRPO: micro_batch_size prompts
    seqs = spec.sequences_per_row
    if on_cpu and t.gradient_checkpointing:  # nothing to measure before the shards are placed
        recompute = {"reason": "every layer (a base sharded across GPUs is not measured)"}
    else:
        recompute = plan_recompute(t, loaded, packed, seqs)
    loaded.facts["activation_checkpointing"] = recompute
    if group is not None and sharding is not None:  # after the measuring forward passes
        group = shard_model(loaded, group, *sharding)
    collate = K.collate_kto if labelled else None
    rollout = None
    if prompts:
        assert spec.grading is not None
        rollout = R.Objective(spec.grading, loaded, bool(spec.resume_from), env, t.max_length)
        collate = rollout.rollout
    batches = BatchPlan(
        t, train, eval_, packed, tokenizer.pad_token_id, pairs, loaded.shared_prompts, collate
    )
    if batches.shared_tokens:
        dataset["shared_prompt_tokens"] = batches.shared_tokens
    params = [p for p in loaded.model.parameters() if p.requires_grad]
    optimizer, scheduler = build_optimizer(t, params, loaded.device, batches.total_steps)
    load_parent(spec.resume_from, loaded.model, work)
    objective = rollout or _objective(spec, loaded, batches, dataset)
    model_facts = dict(
        loaded.facts, source=source, name_or_path=spec.model.name_or_path, folder=str(path)
    )
    return Setup(
        spec, loaded, batches, optimizer, scheduler, params, model_facts, dataset, objective, group
    )


def choose_sharding(spec: JobSpec, path: Path, group: Group) -> tuple[str, str]:
    """`trainer.shared.parallel.choose` for this job, the base's size read from its weight
    files (decided before loading: an FSDP base is loaded into host memory)."""
    from trainer.shared.parallel import choose

    size = base_bytes(path, spec.quantization)
    return choose(group.world, spec.sharding, spec.quantization, size)


def base_bytes(path: Path, quantization: str) -> float:
    """The base's weight bytes as loaded, from its weight files: their size; for an NF4
    job, read from the safetensors headers (no weight is read), the linear layers' weights
    (2-D, other than the embeddings, the LM head and the architecture's full-precision
    modules; 3-D fused experts where `trainer.moe` stores them in NF4) at NF4's bits per
    weight, the rest at 4 bytes (k-bit preparation upcasts it to float32)."""
    files = list(Path(path).glob("*.safetensors")) or list(Path(path).glob("*.bin"))
    size = float(sum(f.stat().st_size for f in files))
    if quantization != "nf4" or not files or files[0].suffix != ".safetensors":
        return size
    from safetensors import safe_open
    from transformers import AutoConfig

    from trainer.shared import arch

    caps = arch.capabilities(AutoConfig.from_pretrained(path))
    keep = ("lm_head", "embed", *caps.keep_full_precision)
    nf4_experts = caps.fused_experts and caps.experts_quantized
    bits = arch.bits_per_param("nf4")
    size = 0.0
    for f in files:
        with safe_open(f, framework="pt") as st:
            for name in st.keys():
                shape = st.get_slice(name).get_shape()
                dims = (2, 3) if nf4_experts and ".experts." in name else (2,)
                quantised = len(shape) in dims and not any(k in name for k in keep)
                size += math.prod(shape) * (bits / 8 if quantised else 4)
    return size


def shard_model(loaded: Loaded, group: Group, strategy: str, reason: str) -> Group:
    """FSDP2 on the loaded model (`trainer.parallel.shard`), once the recompute plan has
    measured it whole (its saved-tensor hooks cannot read FSDP's freed shards); facts noted:
    the frozen base's bytes, whole and on this GPU (`base_bytes_per_gpu`, rank 0's)."""
    from trainer.parallel import local_base_bytes, shard

    whole = local_base_bytes(loaded.model)
    group = shard(loaded.model, group, strategy, reason)
    loaded.facts.update(group.facts())
    loaded.facts.update(base_bytes=whole, base_bytes_per_gpu=local_base_bytes(loaded.model))
    return group


def _objective(spec: JobSpec, loaded: Loaded, batches: BatchPlan, dataset: dict[str, Any]) -> Any:
    """The objective of a method that is not SFT (None for SFT), with its reference pass
    done (its facts go to `dataset`)."""
    method = METHODS[spec.method]
    if method.data == "chat":
        return None
    dataset["method"] = spec.method
    objective: Any
    if method.data == "labelled":
        objective = KtoObjective(spec.preference_settings, loaded)
        reference = kto_reference
    else:
        objective = Objective(spec.method, spec.preference_settings, loaded)
        reference = compute_reference
    if method.reference:
        dataset.update(reference(objective, batches, bool(spec.resume_from)))
    return objective


def load_data(
    spec: JobSpec, tokenizer: Any, work: Path
) -> tuple[list[D.Sample], list[D.Sample], dict[str, Any]]:
    """Train and eval samples (a separate eval file, or a share of the train rows), and the
    dataset facts for the `started` event."""
    data, max_length = spec.data, spec.training.max_length
    assert data is not None  # a train spec has data
    reasoning = spec.training.train_on_reasoning
    train_file = D.fetch(data.train_url, data.train_path, work / "train.jsonl", "train")
    samples, stats = D.tokenize_rows(
        tokenizer, D.read_rows(train_file, "train"), max_length, train_on_reasoning=reasoning
    )
    eval_stats = None
    if data.eval_url or data.eval_path:
        eval_file = D.fetch(data.eval_url, data.eval_path, work / "eval.jsonl", "eval")
        eval_samples, eval_stats = D.tokenize_rows(
            tokenizer, D.read_rows(eval_file, "eval"), max_length, train_on_reasoning=reasoning
        )
        train_samples = samples
    else:
        train_samples, eval_samples = D.split_eval(samples, data.eval_fraction, spec.training.seed)
    dataset: dict[str, Any] = {"train": stats.as_dict(), "train_samples": len(train_samples)}
    dataset["eval_samples"] = len(eval_samples)
    if eval_stats is not None:
        dataset["eval"] = eval_stats.as_dict()
    return train_samples, eval_samples, dataset


def plan_recompute(t: TrainingSpec, lm: Loaded, packed: bool, seqs: int = 1) -> dict[str, Any]:
    """Which layers recompute their activations (see `trainer.memory`), as facts; a
    micro-batch row is `seqs` sequences with gradients (2 for a preference pair)."""
    import torch

    from trainer.memory import plan_recompute as plan

    if not t.gradient_checkpointing:
        return {"layers_recomputed": 0, "reason": "off in the job's settings"}
    if t.checkpoint_layers == "all":
        return {"reason": "every layer (checkpoint_layers: all)"}
    vocab = lm.model.get_input_embeddings().weight.shape[0]

    def forward(n: int) -> Any:
        ids = torch.randint(0, vocab, (1, n), device=lm.device)
        batch = D.Batch(
            input_ids=ids,
            position_ids=torch.arange(n, device=lm.device)[None],
            targets=torch.roll(ids, -1, dims=1),
            attention_mask=None,
            cu_seqlens=torch.tensor([0, n], dtype=torch.int32, device=lm.device)
            if packed
            else None,
            max_seqlen=n,
            n_loss=n,
            n_tokens=n,
            n_slots=n,
        )
        return batch_loss_sum(lm.model, batch, lm.device, lm.compute_dtype)

    devices = [lm.device] if lm.device.type == "cuda" else []
    lm.model.train()
    with torch.random.fork_rng(devices=devices):
        return plan(
            lm.model,
            forward,
            tokens_per_micro_batch=t.micro_batch_size * t.max_length * seqs,
            hidden_size=lm.model.get_input_embeddings().weight.shape[1],
            device=lm.device,
        )


def build_optimizer(
    t: TrainingSpec, params: list[Any], device: Any, total_steps: int
) -> tuple[Any, Any]:
    """AdamW on the trainable parameters, and the spec's learning-rate schedule."""
    import torch
    from transformers import get_scheduler

    optimizer = torch.optim.AdamW(
        params, lr=t.learning_rate, weight_decay=t.weight_decay, fused=device.type == "cuda" or None
    )
    warmup = 0 if t.lr_scheduler == "constant" else math.ceil(t.warmup_ratio * total_steps)
    scheduler = get_scheduler(
        t.lr_scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps
    )
    return optimizer, scheduler


def load_parent(src: str | None, model: Any, work: Path) -> None:
    """Start from a parent adapter's weights (`resume_from`: a folder or a URL)."""
    if not src:
        return
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    if "://" in src:
        file = D.fetch(src, None, work / "parent.safetensors", "parent adapter")
    else:
        file = Path(src) / "adapter_model.safetensors"
        if not file.is_file():
            raise BadInput(f"resume_from {src!r} has no adapter_model.safetensors")
    try:
        set_peft_model_state_dict(model, load_file(file))
    except RuntimeError as e:  # shape mismatch: a different rank or target set
        raise BadInput(
            f"the parent adapter does not fit this job's LoRA settings: {e}",
            "use the parent's rank and target modules to continue training it",
        ) from e


# Each kind of data (`trainer.shared.methods.DataKind`) and what reads it.
LOADERS: dict[str, Any] = {
    "chat": load_data,
    "pairs": P.load_pairs,
    "labelled": K.load_kto,
    "prompts": R.load_prompts,
}
