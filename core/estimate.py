"""Before launch: will this job fit a GPU, how long will it take, what will it cost.

Pure functions over plain data (a `JobSpec`, the model's `ModelFacts` from
`core.catalog`, the GPU table in `core.costs`, token statistics, measured throughputs):
no database, no network, no torch.

Inputs, and what wins when two sources disagree
- What the user asked for comes from the `JobSpec` (quantisation, LoRA rank/targets,
  micro-batch, max length, checkpointing, packing, epochs).
- What the trainer does with it comes from `trainer/shared/arch.py` (the same capability table
  the worker reads: which LoRA targets "all-linear" becomes, whether fused MoE experts are
  stored in NF4 under nf4, the bits per quantised weight) and from `TrainerFacts`, whose
  defaults describe BrightRun's trainer (`trainer/model.py`, `trainer/train.py`) with the
  pinned PEFT and transformers. An explicit `TrainerFacts` field wins over the table; the
  published anchors in the tests use that to describe other stacks.

Peak GPU memory (`estimate_memory`), each term shown to the user:
- Base weights: every `nn.Linear` weight of the decoder at `trainer.shared.arch.bits_per_param`
  (NF4 with double quantisation ~4.127 bits; LLM.int8 8 + 32/in_features bits; 16 bits
  unquantised). Fused MoE experts (transformers >= 5 stores them as 3-D parameters, which
  bitsandbytes does not quantise) count at NF4 only when `ArchCaps.experts_quantized`
  says the trainer stores them in NF4; otherwise at 16 bits -- every expert, not the
  active ones. Everything else (embeddings, LM head, norms, routers, biases) is 16-bit,
  upcast to fp32 by PEFT's `prepare_model_for_kbit_training` on a 4/8-bit load.
- LoRA: parameters counted exactly as PEFT creates them for the targets the trainer passes
  (`peft_lora_params`; on fused-expert models the trainer turns off PEFT's remapping of
  `gate_proj/up_proj/down_proj/gate` onto the routed experts, so those names adapt the
  shared expert) plus the trainer's own LoRA on every routed expert when the spec asks for
  it; weights, gradients and AdamW's two moments, all fp32 (16 bytes a parameter).
- Activations for `micro_batch x max_length` tokens (the longest row a packed or padded
  batch can have), bf16, per layer kind, bytes per token:
  RMSNorm 8h (fp32 input and normalised copies);
  attention 8h + 2(q_out + 2kv*d) + 2(a*d + kv*d) + 2a*d (+8(a*d + kv*d) for QK-norm,
  +4a*d for Qwen3-Next's output gate), no s^2 term (flash-attention / per-sample SDPA);
  Gated DeltaNet 8h + 2(2K + 2V + 2Hv) + 4(2K + V) + 16K + 12V (K, V: key/value widths);
  dense MLP 8h + 8i; MoE 8h + 8E + k(4h + 8m) + (8ms + 2h) for the shared expert;
  LoRA dropout 3 bytes x in_features per adapted layer (bf16 copy + mask).
  With gradient checkpointing only each layer's input is kept (2h per token per layer)
  and one layer is recomputed at a time; without it every layer's activations are kept.
- Logits and loss: BrightRun's trainer computes the loss only at labelled positions, in
  chunks of 2^24 logits (fp32 logits, exp and gradient: 12 bytes each), with a bf16 copy
  of an fp32 LM head; `TrainerFacts(loss_chunk_elements=None)` models the standard
  full-logits loss (12 bytes x tokens x vocabulary).
- Peak = weights + LoRA state + the larger of two moments: the loss (stored activations +
  logits) and the backward of the top layer (stored activations + one layer's working
  set + gradient buffers); plus CUDA context (1 GiB) and allocator headroom (8% of the
  rest: fragmentation and cached blocks).

Verdict per GPU (`fit_verdicts`): fits when the peak is at most 90% of the device memory
as the driver reports it, tight up to 100%, does not fit above; each non-fitting verdict
gets a suggestion that is checked to fit (nf4, gradient checkpointing, micro-batch 1 with
more accumulation, LoRA off the experts, a shorter max length, else a bigger GPU).

Time (`estimate_time`): training tokens (rows x mean tokens capped at max_length x
epochs, or max_steps) / packing efficiency (0.95 packed, 0.80 padded) x FLOPs per token
(6 x matmul parameters -- active parameters without the embedding lookup -- plus
6 x a*d x mean sample length per softmax-attention layer; x 4/3 with gradient
checkpointing, which recomputes the forward) / (GPU bf16 dense peak x utilisation).
Utilisation defaults (`DEFAULT_UTILISATION`): 0.40 bf16, 0.30 nf4, 0.15 int8, halved for
MoE models (per-expert matmuls are small); when finished jobs of the same model and GPU
measured their tokens/s (`measured_tokens_per_s`: real tokens per training second, read
back by `core.repo.measured_throughput`), their median replaces the whole FLOPs formula
(`TimeEstimate.basis_text` says which one an estimate used). Cost
(`estimate_cost`) = (time + cold start) x the Serverless rate, as a low-high range.

`execution_timeout_ms`, `training_time_limit_s` and `check_budget` turn a plan into the
RunPod policy and the budget check that `core/jobs.py` applies.

Raises `core.errors.InvalidInput` for settings the trainer would refuse (LoRA targets that
match nothing, half of a fused pair, expert LoRA without nf4).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from core.catalog import FUSED_EXPERT_MODEL_TYPES, ModelFacts, Weight, weights
from core.costs import DRIVER_MEMORY_MIB, GPU_TYPES, GpuType, gpu_type, rate_per_second
from core.errors import InvalidInput
from trainer.shared import arch, moe_facts
from trainer.shared.spec import JobSpec

GIB = 1 << 30
CUDA_CONTEXT_BYTES = 1 * GIB  # CUDA context, cuBLAS/cuDNN workspaces, kernels loaded
ALLOCATOR_HEADROOM = 0.08  # PyTorch caching allocator: fragmentation, cached free blocks
FIT_FRACTION = 0.90  # above this share of the device: tight
LOSS_CHUNK_ELEMENTS = 1 << 24  # trainer/kernels.py: logits computed 2^24 at a time

DEFAULT_UTILISATION: dict[str, float] = {"none": 0.40, "nf4": 0.30, "int8": 0.15}
MOE_UTILISATION_FACTOR = 0.5
PACKING_EFFICIENCY = 0.95  # packed rows: the tail no sample fills
PADDED_EFFICIENCY = 0.80  # length-grouped padded batches: pad up to the longest row
TIME_RANGE = (0.75, 1.5)  # low/high around a FLOPs-based estimate
MEASURED_RANGE = (0.9, 1.15)  # around the measured median
# Cold start: container start plus reading the weights (16-bit safetensors) -- from the
# network volume when the model is cached there (low), downloaded from the hub (high).
COLD_START_FIXED_S = (30.0, 90.0)
WEIGHT_READ_BYTES_PER_S = (2.0e9, 0.2e9)

Verdict = Literal["fits", "tight", "does_not_fit"]


@dataclass(frozen=True)
class TrainerFacts:
    """How the trainer runs a job, beyond what the spec says. Defaults: BrightRun's trainer.

    `None` fields are read from `trainer/shared/arch.py` for the model's architecture.
    """

    experts_quantized: bool | None = None  # fused experts in NF4 under nf4 (ArchCaps)
    quantized_bits: float | None = None  # bits per quantised weight (arch.bits_per_param)
    upcast_unquantized_fp32: bool = True  # prepare_model_for_kbit_training on 4/8-bit loads
    adapter_bytes: float = 4.0  # LoRA weights, fp32
    grad_bytes: float = 4.0
    optimizer_bytes: float = 8.0  # torch AdamW: exp_avg + exp_avg_sq, fp32
    loss_chunk_elements: int | None = LOSS_CHUNK_ELEMENTS  # None: full logits
    # bytes per logit at the loss peak: logits, their fp32 copy, log-softmax and gradient
    logit_bytes: float = 12.0
    # None: arch.resolve_lora_targets(spec). A tuple/str here is passed to PEFT as is.
    lora_target_modules: tuple[str, ...] | str | None = None
    lora_target_parameters: tuple[str, ...] = ()
    # PEFT >= 0.18 with transformers >= 5 maps gate_proj/up_proj/down_proj/gate onto fused
    # expert parameters for qwen3_moe/qwen3_next. None: as the trainer does -- it turns that
    # off where trainer/shared/arch.py says the experts are fused (trainer.moe.peft_module_targets),
    # so those names adapt the shared expert.
    peft_remaps_expert_names: bool | None = None
    # transformers < 5 layout: one nn.Linear per expert (gate_proj/up_proj/down_proj), which
    # module names then match; for describing runs made with that stack.
    experts_are_linear_modules: bool = False
    # LoRA on every routed expert added by the trainer itself (trainer.moe) when the spec
    # asks for it; None: when trainer/shared/arch.py says the architecture has fused experts.
    expert_lora_by_trainer: bool | None = None


def _caps(model: ModelFacts) -> arch.ArchCaps:
    return arch.capabilities(model.config)


def experts_quantized(model: ModelFacts, quantization: str, trainer: TrainerFacts) -> bool:
    """Whether the routed experts are stored in NF4 (True) or stay 16-bit (False)."""
    if not model.is_moe or quantization != "nf4":
        return False
    if not model.fused_experts:
        return True  # experts are nn.Linear: bitsandbytes quantises them
    if trainer.experts_quantized is not None:
        return trainer.experts_quantized
    caps = _caps(model)
    return caps.fused_experts and caps.experts_quantized


# --- LoRA ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoraCount:
    params: int  # all trainable LoRA parameters
    by_target: dict[str, int]  # leaf name ("q_proj", "experts.gate_up_proj") -> parameters
    target_modules: list[str] | str  # what PEFT is given
    adapted_linear: tuple[Weight, ...] = field(repr=False, default=())  # for activations
    notes: tuple[str, ...] = ()


_MOE_NAME_MAP = (("gate", "gate.weight"), ("gate_proj", "gate_up_proj"),
                 ("up_proj", "gate_up_proj"), ("down_proj", "down_proj"))


def _matches(name: str, targets: set[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def _leaf(name: str) -> str:
    parts = name.split(".")
    if parts[-1] in ("weight",):
        parts = parts[:-1]
    return ".".join(parts[-2:]) if len(parts) > 1 and parts[-2] == "experts" else parts[-1]


def peft_lora_params(
    model: ModelFacts,
    target_modules: Sequence[str] | str,
    r: int,
    *,
    target_parameters: Sequence[str] = (),
    use_dora: bool = False,
    experts_are_parameters: bool = True,
    remap_expert_names: bool = True,
    experts_as_modules: bool = False,
) -> LoraCount:
    """Trainable parameters PEFT's `get_peft_model(model, LoraConfig(...))` creates.

    Follows PEFT 0.21: a module is targeted when its name equals a target or ends with
    "." + target; "all-linear" is every `nn.Linear` but the LM head; on qwen3_moe /
    qwen3_next (transformers >= 5) the names gate_proj/up_proj/down_proj/gate are taken
    off the module targets and put on the fused expert parameters (gate_up_proj gets rank
    2r when both halves are named) and the router weight -- so the shared expert's
    projections are never adapted by those names. A 3-D expert parameter gets
    r*E*(in+out) parameters; a module r*(in+out) (+ out with DoRA).
    `experts_are_parameters=False`: the experts were replaced (the trainer's NF4 experts)
    and PEFT finds no expert parameter to wrap. `remap_expert_names=False`: the remapping is
    off and names match modules as they are. `experts_as_modules`: the transformers < 5
    layout, one nn.Linear per expert and projection (and the router an nn.Linear).
    """
    ws = weights(model)
    modules = {w.name.removesuffix(".weight"): w for w in ws if w.role in ("linear", "lm_head")}
    if model.tied_embeddings and model.model_type != "qwen":  # the LM head shares the weight
        modules["lm_head"] = Weight("lm_head.weight", (model.vocab, model.hidden), "lm_head")
    params = {w.name: w for w in ws if w.role == "router"}
    if experts_are_parameters:
        params.update({w.name: w for w in ws if w.role == "routed_experts"})
    fused = model.fused_experts and remap_expert_names and not experts_as_modules
    if model.is_moe and experts_as_modules:
        # experts as per-expert nn.Linear (transformers < 5): one stand-in per projection
        for w in ws:
            if w.role == "routed_experts":
                e, out_f, in_f = w.shape
                base = w.name.rsplit(".", 1)[0]
                if w.name.endswith("gate_up_proj"):
                    for proj in ("gate_proj", "up_proj"):
                        modules[f"{base}.{proj}"] = Weight(base + f".{proj}.weight",
                                                           (e, out_f // 2, in_f), "routed_experts")
                else:
                    modules[f"{base}.down_proj"] = Weight(base + ".down_proj.weight",
                                                          (e, out_f, in_f), "routed_experts")
            if w.role == "router":
                modules[w.name.removesuffix(".weight")] = w
        params = {}
    notes: list[str] = []
    tp = set(target_parameters)
    gate_up_rank = r
    if isinstance(target_modules, str):
        if target_modules != "all-linear":
            raise InvalidInput(
                f"LoRA target_modules {target_modules!r}: give a list of module names or "
                "'all-linear' (the planner does not evaluate regular expressions)"
            )
        linear = {n for n, w in modules.items() if w.role == "linear"}
        tm = {n.rsplit(".", 1)[-1] for n in linear}
        if fused:
            tm |= {old for old, _ in _MOE_NAME_MAP}
        else:
            tm = linear
    else:
        tm = set(target_modules)
    given = set(tm)
    if fused:
        remaining, named_halves = set(), set()
        for t in tm:
            for old, new in _MOE_NAME_MAP:
                if t == old or t.endswith("." + old):
                    tp.add(new)
                    if new == "gate_up_proj":
                        named_halves.add(old)
                    break
            else:
                remaining.add(t)
        if len(named_halves) == 1:
            (half,) = named_halves
            other = ({"gate_proj", "up_proj"} - named_halves).pop()
            raise InvalidInput(
                f"LoRA target {half!r} without {other!r}: on {model.model_type} PEFT maps both "
                "onto the fused experts' gate_up_proj; name both or neither"
            )
        if named_halves:
            gate_up_rank = 2 * r
        moved = sorted(given - remaining)
        if moved:
            notes.append(
                f"PEFT maps {', '.join(moved)} onto the routed experts and the router on "
                f"{model.model_type}, not onto the shared expert"
                + ("" if experts_are_parameters else "; the trainer's NF4 experts have no such "
                   "parameters, so those targets adapt nothing")
            )
        tm = remaining
    by: dict[str, int] = {}
    adapted: list[Weight] = []
    for name, w in modules.items():
        if not _matches(name, tm):
            continue
        if w.role == "routed_experts":  # per-expert nn.Linear stand-in
            e, out_f, in_f = w.shape
            n = e * r * (in_f + out_f) + (e * out_f if use_dora else 0)
        else:
            out_f, in_f = w.shape
            n = r * (in_f + out_f) + (out_f if use_dora else 0)
            adapted.append(w)
        key = _leaf(name + ".weight")
        by[key] = by.get(key, 0) + n
    for name, w in params.items():
        if not _matches(name, tp):
            continue
        if use_dora:
            raise InvalidInput("DoRA cannot adapt fused expert parameters; turn DoRA off")
        rank = gate_up_rank if name.endswith("gate_up_proj") else r
        if len(w.shape) == 3:
            e, out_f, in_f = w.shape
            n = rank * e * (in_f + out_f)
        else:
            out_f, in_f = w.shape
            n = rank * (in_f + out_f)
        key = _leaf(name)
        by[key] = by.get(key, 0) + n
    if not by:
        if given and fused and not tm:
            raise InvalidInput(
                f"the LoRA targets {sorted(given)} adapt nothing on {model.id}: PEFT moves them "
                "onto routed-expert parameters this model does not have as loaded"
            )
        linear_leaves = sorted({n.rsplit('.', 1)[-1] for n, w in modules.items()
                                if w.role == "linear"})
        raise InvalidInput(
            f"none of the LoRA targets {sorted(given)} is a linear layer of {model.id}; its "
            f"linear layers are {', '.join(linear_leaves)}"
        )
    unmatched = sorted(t for t in tm if not any(_matches(n, {t}) for n in modules))
    if unmatched:
        notes.append(f"LoRA targets {', '.join(unmatched)} match no layer of {model.id}")
    return LoraCount(sum(by.values()), by, sorted(given) if not isinstance(target_modules, str)
                     else target_modules, tuple(adapted), tuple(notes))


# The trainer's LoRA on fused routed experts is no LoRA vLLM can load (trainer.expert_lora).
EXPERT_LORA_SERVING = (
    "an adapter with LoRA on the routed experts is served by merging it into the base model "
    "(`brightrun adapters merge REF`, then serve the merged model), not by vLLM's multi-LoRA "
    "alongside other adapters"
)


def lora_count(spec: JobSpec, model: ModelFacts, trainer: TrainerFacts | None = None) -> LoraCount:
    """LoRA parameters of this job as the trainer builds them (PEFT + expert LoRA)."""
    trainer = trainer or TrainerFacts()
    caps = _caps(model)
    lora = spec.lora
    q_experts = experts_quantized(model, spec.quantization, trainer)
    if trainer.lora_target_modules is not None:
        targets: Any = trainer.lora_target_modules
        if not isinstance(targets, str):
            targets = list(targets)
    else:
        targets = arch.resolve_lora_targets(caps, lora.target_modules, lora.lora_on_experts)
    count = peft_lora_params(
        model,
        targets,
        lora.r,
        target_parameters=trainer.lora_target_parameters,
        use_dora=lora.use_dora,
        experts_are_parameters=not (model.fused_experts and q_experts),
        remap_expert_names=(not caps.fused_experts if trainer.peft_remaps_expert_names is None
                            else trainer.peft_remaps_expert_names),
        experts_as_modules=trainer.experts_are_linear_modules,
    )
    notes = list(count.notes)
    by = dict(count.by_target)
    if lora.lora_on_experts:
        if not model.is_moe:
            notes.append("LoRA on experts is ignored: the model has no routed experts")
        elif (caps.fused_experts if trainer.expert_lora_by_trainer is None
              else trainer.expert_lora_by_trainer):
            if spec.quantization != "nf4":
                raise InvalidInput(
                    f"LoRA on the routed experts of {model.model_type} needs quantization "
                    f"'nf4' (got {spec.quantization!r}): turn lora_on_experts off or use nf4"
                )
            n = moe_facts.expert_lora_params(model.config, lora.r)
            by["experts (trainer LoRA)"] = n
            notes.append(
                f"LoRA on all {model.experts} routed experts of every MoE layer: "
                f"{n / 1e9:.2f}B trainable parameters"
            )
            notes.append(EXPERT_LORA_SERVING)
    elif model.is_moe and any(k.startswith("experts.") for k in by):
        notes.append(
            "these LoRA targets adapt every routed expert through PEFT "
            f"({sum(v for k, v in by.items() if k.startswith('experts.')) / 1e9:.2f}B "
            "parameters)"
        )
    return replace(count, params=sum(by.values()), by_target=by, notes=tuple(notes))


# --- memory -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryTerm:
    key: str  # stable id for charts
    label: str
    bytes: int
    detail: str


@dataclass(frozen=True)
class MemoryEstimate:
    terms: tuple[MemoryTerm, ...]
    total_bytes: int
    tokens_per_micro_batch: int
    lora_params: int
    experts_quantized: bool | None  # None: dense model
    peak_moment: Literal["loss", "backward"]
    notes: tuple[str, ...] = ()

    def term(self, key: str) -> int:
        return sum(t.bytes for t in self.terms if t.key == key)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["total_gib"] = round(self.total_bytes / GIB, 2)
        return d


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def _act_bytes(spec: JobSpec) -> int:
    return 4 if spec.training.compute_dtype == "float32" else 2


def layer_activation_bytes(model: ModelFacts, i: int, adapted_in: int, dropout: bool) -> int:
    """Bytes per token kept for backward by layer `i` (bf16; see the module docstring)."""
    h, d, a, kv = model.hidden, model.head_dim, model.heads, model.kv_heads
    norm = 8 * h
    if model.layer_types[i] == "linear_attention":
        la = model.linear_attention
        assert la is not None
        k, v = la.key_heads * la.key_head_dim, la.value_heads * la.value_head_dim
        mixer = norm + 2 * (2 * k + 2 * v + 2 * la.value_heads) + 4 * (2 * k + v) + 16 * k + 12 * v
    else:
        gated = model.model_type == "qwen3_next"
        q_out = a * d * (2 if gated else 1)
        mixer = norm + 2 * (q_out + 2 * kv * d) + 2 * (a * d + kv * d) + 2 * a * d
        if model.model_type in ("qwen3", "qwen3_moe", "qwen3_next"):
            mixer += 8 * (a * d + kv * d)
        if gated:
            mixer += 4 * a * d
    if model.moe_layers[i]:
        e, k, m, ms = model.experts, model.experts_per_token, model.moe_intermediate, \
            model.shared_expert_intermediate
        ffn = norm + 8 * e + k * (4 * h + 8 * m) + ((8 * ms + 2 * h) if ms else 0)
    else:
        ffn = norm + 8 * model.intermediate
    lora = 3 * adapted_in if dropout else 0
    return mixer + ffn + lora


def estimate_memory(
    spec: JobSpec, model: ModelFacts, trainer: TrainerFacts | None = None
) -> MemoryEstimate:
    """Peak GPU memory of one training step of `spec` on `model`, term by term."""
    trainer = trainer or TrainerFacts()
    caps = _caps(model)
    quant = spec.quantization
    kbit = quant in ("nf4", "int8")
    unq_bytes = 4 if (kbit and trainer.upcast_unquantized_fp32) else 2
    if _act_bytes(spec) == 4:
        unq_bytes = 4
    q_experts = experts_quantized(model, quant, trainer)
    ws = weights(model)
    keep = tuple(caps.keep_full_precision)
    notes: list[str] = []

    def qbits(w: Weight) -> float:
        if quant == "none":
            return 8.0 * unq_bytes
        if trainer.quantized_bits is not None:
            return trainer.quantized_bits
        return arch.bits_per_param(quant, w.shape[-1])

    linear_b = other_b = embed_b = expert_b = 0.0
    linear_n = other_n = embed_n = 0
    for w in ws:
        if w.role == "linear" and not any(k in w.name for k in keep):
            linear_b += w.numel * qbits(w) / 8
            linear_n += w.numel
        elif w.role == "routed_experts":
            continue
        elif w.role in ("embedding", "lm_head"):
            embed_b += w.numel * unq_bytes
            embed_n += w.numel
        else:
            other_b += w.numel * unq_bytes
            other_n += w.numel
    n_exp = model.params.routed_experts
    if not q_experts:
        expert_b = n_exp * unq_bytes
    elif trainer.quantized_bits is None:  # as trainer.moe stores them: NF4 blocks per expert
        expert_b = moe_facts.routed_expert_nf4_bytes(model.config)
    else:
        expert_b = n_exp * trainer.quantized_bits / 8
    qdesc = {"nf4": "NF4 + double quantisation", "int8": "LLM.int8", "none": "16-bit"}[quant]
    terms = [
        MemoryTerm("base_weights", "Base weights (linear layers)", int(linear_b),
                   f"{linear_n / 1e9:.2f}B parameters, {qdesc} "
                   f"({8 * linear_b / max(linear_n, 1):.3f} bits each)"),
    ]
    if model.is_moe:
        if q_experts:
            how = f"NF4 ({8 * expert_b / n_exp:.3f} bits each)"
        else:
            how = f"{8 * unq_bytes} bits each"
            if quant == "nf4" and model.fused_experts:
                why = (
                    f"{model.model_type} stores its routed experts as fused 3-D tensors, which "
                    "bitsandbytes does not quantise, and trainer/shared/arch.py does not (yet) say the "
                    "trainer stores them in NF4"
                    + (", so prepare_model_for_kbit_training upcasts them to fp32"
                       if unq_bytes == 4 else "")
                )
                notes.append(f"routed experts are not quantised: {why}")
                how += f" ({why})"
        terms.append(MemoryTerm(
            "routed_experts", "Routed experts (all of them)", int(expert_b),
            f"{n_exp / 1e9:.2f}B parameters ({model.experts} experts x "
            f"{sum(model.moe_layers)} layers; every expert is resident, not only the "
            f"{model.experts_per_token} active per token), {how}"))
    terms.append(MemoryTerm(
        "embeddings", "Embeddings and LM head", int(embed_b),
        f"{embed_n / 1e9:.2f}B parameters ({model.vocab:,} x {model.hidden}"
        f"{', tied' if model.tied_embeddings else ' x 2'}) at {8 * unq_bytes} bits"
        + (" (fp32 after k-bit preparation)" if unq_bytes == 4 and kbit else "")))
    terms.append(MemoryTerm("other_weights", "Norms, routers, biases", int(other_b),
                            f"{other_n / 1e6:.1f}M parameters at {8 * unq_bytes} bits"))

    lc = lora_count(spec, model, trainer)
    notes += lc.notes
    p = lc.params
    terms += [
        MemoryTerm("lora_weights", "LoRA weights", int(p * trainer.adapter_bytes),
                   f"{p / 1e6:.1f}M parameters (rank {spec.lora.r}) x "
                   f"{trainer.adapter_bytes:g} bytes"),
        MemoryTerm("lora_grads", "LoRA gradients", int(p * trainer.grad_bytes),
                   f"{p / 1e6:.1f}M x {trainer.grad_bytes:g} bytes"),
        MemoryTerm("optimizer", "Optimizer state (AdamW)", int(p * trainer.optimizer_bytes),
                   f"{p / 1e6:.1f}M x {trainer.optimizer_bytes:g} bytes"),
    ]

    t = spec.training
    n_tok = t.micro_batch_size * t.max_length
    act = _act_bytes(spec)
    scale = act / 2
    dropout = spec.lora.dropout > 0
    adapted_in: dict[int, int] = {}
    for w in lc.adapted_linear:
        if ".layers." in w.name or ".h." in w.name:
            idx = int(w.name.split(".layers.")[-1].split(".")[0]) if ".layers." in w.name \
                else int(w.name.split(".h.")[-1].split(".")[0])
            adapted_in[idx] = adapted_in.get(idx, 0) + w.shape[1]
    per_layer = [
        layer_activation_bytes(model, i, adapted_in.get(i, 0), dropout) * scale
        for i in range(model.layers)
    ]
    grad_buffers = 3 * act * model.hidden * n_tok
    if t.gradient_checkpointing:
        stored = model.layers * act * model.hidden * n_tok
        stored_detail = (f"checkpointed layer inputs: {model.layers} layers x {n_tok:,} tokens "
                         f"x {model.hidden} x {act} bytes")
        working = max(per_layer) * n_tok + grad_buffers
        working_detail = (f"one layer recomputed in backward: {max(per_layer) / 1024:.1f} KiB "
                          f"per token x {n_tok:,} tokens, plus gradient buffers")
    else:
        stored = sum(per_layer) * n_tok
        stored_detail = (f"all {model.layers} layers' activations: {sum(per_layer) / 2**20:.2f} "
                         f"MiB per token x {n_tok:,} tokens (no gradient checkpointing)")
        working = grad_buffers
        working_detail = "gradient buffers of the layer in backward"
    if not t.packing or caps.packing == "padded":
        stored += t.micro_batch_size * t.max_length**2  # SDPA boolean mask for padded rows
        stored_detail += f"; attention mask {t.micro_batch_size} x {t.max_length}^2 bytes"
    head_fp32 = unq_bytes == 4
    head_copy = model.vocab * model.hidden * 2 if head_fp32 else 0
    if trainer.loss_chunk_elements is None:
        logits = int(trainer.logit_bytes * n_tok * model.vocab)
        logits_detail = (f"full logits: {n_tok:,} tokens x {model.vocab:,} vocabulary x "
                         f"{trainer.logit_bytes:g} bytes (logits, fp32 copy, log-softmax and "
                         "its gradient)")
    else:
        chunk = min(trainer.loss_chunk_elements, n_tok * model.vocab)
        logits = int(trainer.logit_bytes * chunk) + 2 * act * model.hidden * n_tok
        logits_detail = (f"loss in chunks of {chunk:,} logits x {trainer.logit_bytes:g} bytes "
                         "(fp32 logits, exp, gradient) plus the labelled hidden states and "
                         "their gradient")
    logits += head_copy
    if head_copy:
        logits_detail += f"; bf16 copy of the fp32 LM head ({_gib(head_copy)})"
    moment: Literal["loss", "backward"] = "loss" if logits >= working else "backward"
    terms.append(MemoryTerm("activations", "Activations kept for backward", int(stored),
                            stored_detail))
    if moment == "loss":
        terms.append(MemoryTerm("logits", "Logits and loss", int(logits),
                                logits_detail + f" (exceeds the backward working set, "
                                f"{_gib(working)})"))
    else:
        terms.append(MemoryTerm("recompute", "Layer in backward", int(working),
                                working_detail + f" (exceeds logits and loss, {_gib(logits)})"))
    subtotal = sum(x.bytes for x in terms)
    terms.append(MemoryTerm("cuda_context", "CUDA context and workspaces", CUDA_CONTEXT_BYTES,
                            "CUDA context, cuBLAS workspaces and loaded kernels"))
    headroom = int(ALLOCATOR_HEADROOM * subtotal)
    terms.append(MemoryTerm("headroom", "Allocator headroom", headroom,
                            f"{ALLOCATOR_HEADROOM:.0%} of the above: fragmentation and cached "
                            "blocks of PyTorch's caching allocator"))
    return MemoryEstimate(
        terms=tuple(terms),
        total_bytes=sum(x.bytes for x in terms),
        tokens_per_micro_batch=n_tok,
        lora_params=p,
        experts_quantized=q_experts if model.is_moe else None,
        peak_moment=moment,
        notes=tuple(dict.fromkeys(notes)),
    )


# --- verdicts and suggestions -------------------------------------------------------------


@dataclass(frozen=True)
class GpuVerdict:
    gpu: str
    name: str
    memory_bytes: int
    need_bytes: int
    verdict: Verdict
    suggestion: str | None = None
    suggested: dict[str, Any] | None = None  # the settings that make it fit

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def device_bytes(g: GpuType) -> int:
    """Memory of the device as the CUDA driver reports it (falls back to the label)."""
    mib = DRIVER_MEMORY_MIB.get(g.id)
    return mib * 2**20 if mib else int(g.memory_gb * 1e9)


def verdict_for(need: int, g: GpuType) -> Verdict:
    have = device_bytes(g)
    if need <= FIT_FRACTION * have:
        return "fits"
    return "tight" if need <= have else "does_not_fit"


def _with(spec: JobSpec, **changes: Any) -> JobSpec:
    training = {k: v for k, v in changes.items() if k in type(spec.training).model_fields}
    lora = {k: v for k, v in changes.items() if k in type(spec.lora).model_fields}
    top = {k: v for k, v in changes.items() if k in ("quantization",)}
    return spec.model_copy(update={
        **top,
        "training": spec.training.model_copy(update=training),
        "lora": spec.lora.model_copy(update=lora),
    })


def _fits(spec: JobSpec, model: ModelFacts, g: GpuType, trainer: TrainerFacts) -> bool:
    try:
        return verdict_for(estimate_memory(spec, model, trainer).total_bytes, g) == "fits"
    except InvalidInput:
        return False


def _ladder(spec: JobSpec, model: ModelFacts, g: GpuType,
            trainer: TrainerFacts) -> tuple[str, dict[str, Any]] | None:
    """The planner's settings ladder, applied cumulatively until the job fits `g`."""
    steps: list[tuple[str, dict[str, Any]]] = []
    t = spec.training
    if spec.quantization != "nf4":
        steps.append(("4-bit (nf4)", {"quantization": "nf4"}))
    if spec.lora.lora_on_experts:
        steps.append(("LoRA off the routed experts", {"lora_on_experts": False}))
    if not t.gradient_checkpointing:
        steps.append(("gradient checkpointing", {"gradient_checkpointing": True}))
    if t.micro_batch_size > 1:
        steps.append((f"micro-batch 1 with gradient accumulation "
                       f"{t.grad_accum * t.micro_batch_size} (same effective batch)",
                       {"micro_batch_size": 1, "grad_accum": t.grad_accum * t.micro_batch_size}))
    current = spec
    said: list[str] = []
    changes: dict[str, Any] = {}
    for text, change in steps:
        current, changes = _with(current, **change), {**changes, **change}
        said.append(text)
        if _fits(current, model, g, trainer):
            return " + ".join(said), changes
    length = current.training.max_length
    while length > 256:
        length = max(256, length // 2)
        if _fits(_with(current, max_length=length), model, g, trainer):
            return " + ".join([*said, f"max length {length}"]), {**changes, "max_length": length}
    return None


def suggest(spec: JobSpec, model: ModelFacts, g: GpuType, trainer: TrainerFacts | None = None,
            gpus: Mapping[str, GpuType] | None = None) -> tuple[str, dict[str, Any]] | None:
    """Settings that make the job fit `g` (nf4, LoRA off the experts, gradient checkpointing,
    micro-batch 1 with more accumulation, then halving the max length), else the cheapest
    bigger GPU of `gpus` (default: every type in the price table) it fits as it is, else a
    bigger GPU with lighter settings; None if nothing does."""
    trainer = trainer or TrainerFacts()
    here = _ladder(spec, model, g, trainer)
    if here:
        return here
    bigger = sorted(
        (o for o in (gpus or GPU_TYPES).values() if device_bytes(o) > device_bytes(g)),
        key=lambda o: (o.flex_per_s, device_bytes(o)),
    )
    for other in bigger:
        if _fits(spec, model, other, trainer):
            return f"a bigger GPU: {other.name}", {"gpu": other.id}
    for other in bigger:
        there = _ladder(spec, model, other, trainer)
        if there:
            return f"{there[0]} on a bigger GPU: {other.name}", {**there[1], "gpu": other.id}
    return None


def fit_verdicts(
    spec: JobSpec,
    model: ModelFacts,
    memory: MemoryEstimate | None = None,
    trainer: TrainerFacts | None = None,
    gpus: Mapping[str, GpuType] | None = None,
) -> list[GpuVerdict]:
    """fits / tight / does not fit on every GPU type, with a suggestion where it does not fit."""
    trainer = trainer or TrainerFacts()
    memory = memory or estimate_memory(spec, model, trainer)
    out = []
    for g in (gpus or GPU_TYPES).values():
        v = verdict_for(memory.total_bytes, g)
        s = suggest(spec, model, g, trainer) if v != "fits" else None
        out.append(GpuVerdict(
            gpu=g.id, name=g.name, memory_bytes=device_bytes(g), need_bytes=memory.total_bytes,
            verdict=v,
            suggestion=(s[0] if s else ("no setting BrightRun offers makes it fit one GPU"
                                        if v == "does_not_fit" else None)),
            suggested=s[1] if s else None,
        ))
    return out


# --- time and cost ------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenStats:
    """Token statistics of the training set (after the chat template)."""

    rows: int
    mean_tokens: float  # per row
    loss_fraction: float = 1.0  # share of tokens that carry loss (informational)

    def __post_init__(self) -> None:
        if self.rows < 1 or self.mean_tokens <= 0:
            raise InvalidInput(
                f"dataset statistics need at least one row and a positive mean length "
                f"(got rows={self.rows}, mean tokens={self.mean_tokens})"
            )


@dataclass(frozen=True)
class TimeEstimate:
    gpu: str
    training_tokens: int  # real tokens trained on (all epochs)
    processed_tokens: int  # including padding / the unfilled tail of packed rows
    flops_per_token: float
    utilisation: float | None  # None when measured throughput was used
    tokens_per_s: float
    seconds: float
    seconds_low: float
    seconds_high: float
    cold_start_low_s: float
    cold_start_high_s: float
    basis: str  # "flops" | "measured (n jobs)"
    measured_jobs: int = 0  # finished jobs whose median throughput was used

    @property
    def basis_text(self) -> str:
        """What the time rests on, in words a user reads next to the estimate."""
        if self.utilisation is None:
            return (f"measured: median of {self.measured_jobs} finished job"
                    f"{'' if self.measured_jobs == 1 else 's'} on this GPU "
                    f"({self.tokens_per_s:,.0f} tokens/s)")
        return f"default utilisation {self.utilisation:.0%} of the GPU's bf16 peak"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "basis_text": self.basis_text}


def measured_tokens_per_s(
    summary: Mapping[str, Any] | None, metrics: Sequence[Mapping[str, Any]] = ()
) -> float | None:
    """The throughput a finished job achieved, in the unit `estimate_time` divides by: real
    (non-padding) tokens per second of training -- the same tokens `training_tokens`
    counts, so loss-bearing and prompt tokens alike.

    From the `completed` event's summary (`tokens_seen_total / train_seconds`, all attempts
    of the job, evaluation included); else the median of its `metrics` events'
    `total_tokens_per_s`; None when neither says.
    """
    summary = summary or {}
    tokens, seconds = summary.get("tokens_seen_total"), summary.get("train_seconds")
    if isinstance(tokens, int | float) and isinstance(seconds, int | float) and tokens > 0 and seconds > 0:
        return float(tokens) / float(seconds)
    rates = [float(m["total_tokens_per_s"]) for m in metrics
             if isinstance(m.get("total_tokens_per_s"), int | float) and m["total_tokens_per_s"] > 0]
    return statistics.median(rates) if rates else None


@dataclass(frozen=True)
class CostEstimate:
    gpu: str
    tier: str
    rate_per_s: float
    usd_low: float
    usd_high: float
    billed_s_low: float
    billed_s_high: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def training_tokens(spec: JobSpec, tokens: TokenStats) -> int:
    t = spec.training
    per_row = min(tokens.mean_tokens, t.max_length)
    if t.max_steps is not None:
        eff = PACKING_EFFICIENCY if t.packing else PADDED_EFFICIENCY
        by_steps = t.max_steps * t.grad_accum * t.micro_batch_size * t.max_length * eff
        if t.epochs is None:
            return int(by_steps)
        return int(min(by_steps, tokens.rows * per_row * t.epochs))
    return int(tokens.rows * per_row * (t.epochs or 1.0))


def flops_per_token(spec: JobSpec, model: ModelFacts, sample_len: float) -> float:
    """6 x matmul parameters + causal attention, x 4/3 with gradient checkpointing."""
    p = model.params
    matmul = p.active - (0 if model.tied_embeddings else p.embedding)
    full_layers = model.layer_types.count("full_attention")
    attn = 6 * full_layers * model.heads * model.head_dim * sample_len
    f = 6 * matmul + attn
    return f * (4 / 3 if spec.training.gradient_checkpointing else 1.0)


def default_utilisation(spec: JobSpec, model: ModelFacts) -> float:
    u = DEFAULT_UTILISATION[spec.quantization]
    return u * (MOE_UTILISATION_FACTOR if model.is_moe else 1.0)


def cold_start_s(model: ModelFacts) -> tuple[float, float]:
    disk = model.params.total * 2
    return (COLD_START_FIXED_S[0] + disk / WEIGHT_READ_BYTES_PER_S[0],
            COLD_START_FIXED_S[1] + disk / WEIGHT_READ_BYTES_PER_S[1])


def estimate_time(
    spec: JobSpec,
    model: ModelFacts,
    gpu: str,
    tokens: TokenStats,
    measured_tokens_per_s: Sequence[float] = (),
    utilisation: float | None = None,
) -> TimeEstimate:
    """Training time on `gpu`; measured tokens/s of finished jobs (same model, GPU) win."""
    g = gpu_type(gpu)
    trained = training_tokens(spec, tokens)
    eff = PACKING_EFFICIENCY if spec.training.packing else PADDED_EFFICIENCY
    processed = int(trained / eff)
    fpt = flops_per_token(spec, model, min(tokens.mean_tokens, spec.training.max_length))
    measured = [float(x) for x in measured_tokens_per_s if x and x > 0]
    cold = cold_start_s(model)
    if measured:
        tps = statistics.median(measured)
        secs = trained / tps
        lo = trained / max(measured) * MEASURED_RANGE[0]
        hi = trained / min(measured) * MEASURED_RANGE[1]
        return TimeEstimate(gpu, trained, processed, fpt, None, tps, secs, min(lo, secs),
                            max(hi, secs), *cold, f"measured ({len(measured)} finished jobs)",
                            len(measured))
    u = utilisation if utilisation is not None else default_utilisation(spec, model)
    rate = g.bf16_tflops * 1e12 * u
    secs = processed * fpt / rate
    return TimeEstimate(gpu, trained, processed, fpt, u, trained / secs if secs else 0.0, secs,
                        secs * TIME_RANGE[0], secs * TIME_RANGE[1], *cold, "flops")


def estimate_cost(
    time: TimeEstimate,
    tier: str = "flex",
    price_overrides: Mapping[str, float] | None = None,
) -> CostEstimate:
    """(training time + cold start) x the Serverless rate, low and high."""
    rate = rate_per_second(time.gpu, tier, dict(price_overrides or {}))  # type: ignore[arg-type]
    lo = time.seconds_low + time.cold_start_low_s
    hi = time.seconds_high + time.cold_start_high_s
    return CostEstimate(time.gpu, tier, rate, lo * rate, hi * rate, lo, hi)


# --- budget and RunPod policy -------------------------------------------------------------


@dataclass(frozen=True)
class BudgetCheck:
    ok: bool  # False: even the low estimate exceeds the budget
    level: Literal["within", "may_exceed", "exceeds"]
    message: str


def check_budget(cost: CostEstimate, budget_usd: float) -> BudgetCheck:
    """Compare a cost range with a budget: within, may exceed (high above), exceeds (low above)."""
    if cost.usd_low > budget_usd:
        return BudgetCheck(False, "exceeds", (
            f"the job is estimated at ${cost.usd_low:.2f}-${cost.usd_high:.2f}, above its budget "
            f"of ${budget_usd:.2f}: raise the budget, train fewer tokens or pick a cheaper GPU"))
    if cost.usd_high > budget_usd:
        return BudgetCheck(True, "may_exceed", (
            f"the job may reach its ${budget_usd:.2f} budget (estimate ${cost.usd_low:.2f}-"
            f"${cost.usd_high:.2f}); it stops at the budget and keeps what it trained"))
    return BudgetCheck(True, "within", (
        f"estimated ${cost.usd_low:.2f}-${cost.usd_high:.2f}, within the ${budget_usd:.2f} budget"))


def execution_timeout_ms(time: TimeEstimate | None, budget_usd: float, rate_per_s: float) -> int:
    """RunPod `policy.executionTimeout`: the seconds the budget buys at this rate.

    Capped at 3x the high estimate (cold start included) plus 30 minutes when an estimate
    is given: a job that runs that long is stuck, not slow. At least 10 minutes.
    """
    if budget_usd <= 0:
        raise InvalidInput(f"budget must be positive (got {budget_usd})")
    seconds = budget_usd / rate_per_s if rate_per_s > 0 else math.inf
    if time is not None:
        seconds = min(seconds, 3 * (time.seconds_high + time.cold_start_high_s) + 1800)
    if math.isinf(seconds):
        seconds = 24 * 3600.0
    return int(max(600.0, seconds) * 1000)


def training_time_limit_s(timeout_ms: int, time: TimeEstimate | None = None) -> float:
    """The worker's own graceful stop (`TrainingSpec.time_limit_s`), below the hard stop.

    Leaves the cold start (high estimate) and a margin to save and upload the adapter
    (5% or 2 minutes, whichever is larger).
    """
    total = timeout_ms / 1000
    cold = time.cold_start_high_s if time is not None else 120.0
    return max(60.0, total - cold - max(120.0, 0.05 * total))


def token_stats_from_report(stats: Mapping[str, Any], valid_rows: int | None = None) -> TokenStats | None:
    """`TokenStats` from a stored dataset's inspection report (`core.datasets`), if measured:
    training rows of the split (else `valid_rows`) and the mean tokens per row."""
    per_row = ((stats or {}).get("tokens") or {}).get("per_row") or {}
    rows = ((stats or {}).get("split") or {}).get("train_rows") or valid_rows
    if not per_row.get("mean") or not rows:
        return None
    loss_share = ((stats or {}).get("tokens") or {}).get("loss_share")
    return TokenStats(rows=int(rows), mean_tokens=float(per_row["mean"]),
                      loss_fraction=float(loss_share) if loss_share else 1.0)


def oom_suggestion(spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """Lighter settings for a job (a `JobSpec` as a dict) that ran out of memory.

    One step of the planner's ladder, in order: gradient checkpointing on; 4-bit (nf4);
    half the micro-batch with twice the accumulation (same effective batch); half the max
    length (not below 256). Returns {"training": {...}, "quantization": ...} with the whole
    training section, or None when nothing lighter is left.
    """
    t = dict(spec.get("training") or {})
    quant = spec.get("quantization", "nf4")
    if not t.get("gradient_checkpointing", True):
        t["gradient_checkpointing"] = True
    elif quant != "nf4":
        quant = "nf4"
    elif int(t.get("micro_batch_size", 1)) > 1:
        mb = int(t["micro_batch_size"])
        t["micro_batch_size"] = mb // 2
        t["grad_accum"] = int(t.get("grad_accum", 1)) * mb // (mb // 2)
    elif int(t.get("max_length", 2048)) > 256:
        t["max_length"] = max(256, int(t["max_length"]) // 2)
    else:
        return None
    return {"training": t, "quantization": quant}


# --- the plan -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    model: ModelFacts
    settings: dict[str, Any]
    memory: MemoryEstimate
    verdicts: tuple[GpuVerdict, ...]
    times: tuple[TimeEstimate, ...]  # per GPU, when token statistics were given
    costs: tuple[CostEstimate, ...]
    recommended_gpu: str | None
    notes: tuple[str, ...]

    def verdict(self, gpu: str) -> GpuVerdict:
        for v in self.verdicts:
            if v.gpu == gpu:
                return v
        raise InvalidInput(f"unknown GPU type {gpu!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "settings": self.settings,
            "memory": self.memory.to_dict(),
            "verdicts": [v.to_dict() for v in self.verdicts],
            "times": [t.to_dict() for t in self.times],
            "costs": [c.to_dict() for c in self.costs],
            "recommended_gpu": self.recommended_gpu,
            "notes": list(self.notes),
        }


def plan(
    spec: JobSpec,
    model: ModelFacts,
    *,
    tokens: TokenStats | None = None,
    gpus: Sequence[str] | None = None,
    measured: Mapping[str, Sequence[float]] | None = None,
    trainer: TrainerFacts | None = None,
    tier: str = "flex",
    price_overrides: Mapping[str, float] | None = None,
) -> Plan:
    """Memory, verdict per GPU type, and (with token statistics) time and cost per GPU.

    `measured` maps a GPU type id to tokens/s that finished jobs of this model achieved on it.
    """
    trainer = trainer or TrainerFacts()
    table = {g: gpu_type(g) for g in gpus} if gpus else dict(GPU_TYPES)
    memory = estimate_memory(spec, model, trainer)
    verdicts = fit_verdicts(spec, model, memory, trainer, table)
    times: list[TimeEstimate] = []
    costs: list[CostEstimate] = []
    if tokens is not None:
        for gid in table:
            tm = estimate_time(spec, model, gid, tokens, (measured or {}).get(gid, ()))
            times.append(tm)
            costs.append(estimate_cost(tm, tier, price_overrides))
    usable = [v.gpu for v in verdicts if v.verdict == "fits"] or \
             [v.gpu for v in verdicts if v.verdict == "tight"]
    recommended = None
    if usable:
        if costs:
            by_gpu = {c.gpu: c for c in costs}
            recommended = min(usable, key=lambda gid: by_gpu[gid].usd_high)
        else:
            recommended = min(usable, key=lambda gid: table[gid].flex_per_s)
    caps = _caps(model)
    lc = lora_count(spec, model, trainer)
    settings = {
        "quantization": spec.quantization,
        "lora_r": spec.lora.r,
        "lora_targets": lc.target_modules,
        "lora_on_experts": spec.lora.lora_on_experts,
        "lora_params": lc.params,
        "micro_batch_size": spec.training.micro_batch_size,
        "grad_accum": spec.training.grad_accum,
        "max_length": spec.training.max_length,
        "gradient_checkpointing": spec.training.gradient_checkpointing,
        "packing": caps.packing if spec.training.packing else "padded",
        "experts_quantized": memory.experts_quantized,
    }
    return Plan(model, settings, memory, tuple(verdicts), tuple(times), tuple(costs),
                recommended, memory.notes)


__all__ = [
    "FUSED_EXPERT_MODEL_TYPES", "BudgetCheck", "CostEstimate", "GpuVerdict", "LoraCount",
    "MemoryEstimate", "MemoryTerm", "Plan", "TimeEstimate", "TokenStats", "TrainerFacts",
    "check_budget", "device_bytes", "estimate_cost", "estimate_memory", "estimate_time",
    "execution_timeout_ms", "experts_quantized", "fit_verdicts", "lora_count",
    "measured_tokens_per_s", "oom_suggestion", "peft_lora_params", "plan", "suggest", "token_stats_from_report",
    "training_time_limit_s", "verdict_for",
]
