"""Peak GPU memory of one training step (`estimate_memory`), each term shown to the user.

- Base weights: every `nn.Linear` weight of the decoder at `trainer.shared.arch.bits_per_param`
  (NF4 with double quantisation ~4.127 bits; LLM.int8 8 + 32/in_features bits; 16 bits
  unquantised). Fused MoE experts (transformers >= 5 stores them as 3-D parameters, which
  bitsandbytes does not quantise) count at NF4 only when `ArchCaps.experts_quantized`
  says the trainer stores them in NF4; otherwise at 16 bits -- every expert, not the
  active ones. Everything else (embeddings, LM head, norms, routers, biases) is 16-bit,
  upcast to fp32 by PEFT's `prepare_model_for_kbit_training` on a 4/8-bit load.
- LoRA (`core.planner.lora_params`): weights, gradients and AdamW's two moments, all fp32
  (16 bytes a parameter).
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
- KV cache of sampling (`kv_cache`), only for a method whose table row `generates`
  (settings in `JobSpec.grading`): the micro-batch's `micro_batch_size` prompts x
  `num_generations` sequences of up to `max_length` tokens (prompt + completion) x the
  softmax-attention layers x kv heads x head dim x 2 (keys and values) x 2 bytes (4 in
  float32). Counted on top of the training step: PyTorch's caching allocator keeps its
  blocks after sampling. (A linear-attention layer's fixed-size state is not counted, nor
  the share of the GPU a vLLM sampler reserves for itself, `trainer.grpo_vllm`.)
- Peak = weights + LoRA state + the larger of two moments: the loss (stored activations +
  logits) and the backward of the top layer (stored activations + one layer's working
  set + gradient buffers) + the sampling KV cache; plus CUDA context (1 GiB) and allocator
  headroom (8% of the rest: fragmentation and cached blocks).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from core.planner.facts import ModelFacts, Weight
from core.planner.lora_params import LoraCount, lora_count
from core.planner.trainer_facts import TrainerFacts, capabilities, experts_quantized
from core.planner.weights import weights
from trainer.shared import arch, moe_facts
from trainer.shared.spec import JobSpec

GIB = 1 << 30
CUDA_CONTEXT_BYTES = 1 * GIB  # CUDA context, cuBLAS/cuDNN workspaces, kernels loaded
ALLOCATOR_HEADROOM = 0.08  # PyTorch caching allocator: fragmentation, cached free blocks


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


def _unquantized_bytes(spec: JobSpec, trainer: TrainerFacts) -> int:
    """Bytes per weight the quantisation leaves alone: fp32 after k-bit preparation."""
    if spec.quantization in ("nf4", "int8") and trainer.upcast_unquantized_fp32:
        return 4
    return 4 if _act_bytes(spec) == 4 else 2


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
        e, k, m, ms = (
            model.experts,
            model.experts_per_token,
            model.moe_intermediate,
            model.shared_expert_intermediate,
        )
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
    unq_bytes = _unquantized_bytes(spec, trainer)
    q_experts = experts_quantized(model, spec.quantization, trainer)
    notes: list[str] = []
    terms = _weight_terms(spec, model, trainer, unq_bytes, q_experts, notes)
    lc = lora_count(spec, model, trainer)
    notes += lc.notes
    terms += _lora_terms(spec, lc.params, trainer)
    activations, moment = _activation_terms(spec, model, trainer, lc, unq_bytes)
    terms += activations
    terms += _kv_cache_terms(spec, model)
    subtotal = sum(x.bytes for x in terms)
    terms.append(
        MemoryTerm(
            "cuda_context",
            "CUDA context and workspaces",
            CUDA_CONTEXT_BYTES,
            "CUDA context, cuBLAS workspaces and loaded kernels",
        )
    )
    headroom = int(ALLOCATOR_HEADROOM * subtotal)
    terms.append(
        MemoryTerm(
            "headroom",
            "Allocator headroom",
            headroom,
            f"{ALLOCATOR_HEADROOM:.0%} of the above: fragmentation and cached "
            "blocks of PyTorch's caching allocator",
        )
    )
    return MemoryEstimate(
        terms=tuple(terms),
        total_bytes=sum(x.bytes for x in terms),
        tokens_per_micro_batch=spec.training.micro_batch_size
        * spec.training.max_length
        * spec.sequences_per_row,
        lora_params=lc.params,
        experts_quantized=q_experts if model.is_moe else None,
        peak_moment=moment,
        notes=tuple(dict.fromkeys(notes)),
    )


# --- weights ------------------------------------------------------------------------------


def _weight_terms(
    spec: JobSpec,
    model: ModelFacts,
    trainer: TrainerFacts,
    unq_bytes: int,
    q_experts: bool,
    notes: list[str],
) -> list[MemoryTerm]:
    """Base weights, routed experts, embeddings and the rest; adds notes to `notes`."""
    quant = spec.quantization
    linear_b, linear_n, embed_b, embed_n, other_b, other_n = _dense_weight_bytes(
        model, quant, trainer, unq_bytes
    )
    qdesc = {"nf4": "NF4 + double quantisation", "int8": "LLM.int8", "none": "16-bit"}[quant]
    terms = [
        MemoryTerm(
            "base_weights",
            "Base weights (linear layers)",
            int(linear_b),
            f"{linear_n / 1e9:.2f}B parameters, {qdesc} "
            f"({8 * linear_b / max(linear_n, 1):.3f} bits each)",
        ),
    ]
    if model.is_moe:
        terms.append(_expert_term(model, quant, trainer, unq_bytes, q_experts, notes))
    kbit = quant in ("nf4", "int8")
    terms.append(
        MemoryTerm(
            "embeddings",
            "Embeddings and LM head",
            int(embed_b),
            f"{embed_n / 1e9:.2f}B parameters ({model.vocab:,} x {model.hidden}"
            f"{', tied' if model.tied_embeddings else ' x 2'}) at {8 * unq_bytes} bits"
            + (" (fp32 after k-bit preparation)" if unq_bytes == 4 and kbit else ""),
        )
    )
    terms.append(
        MemoryTerm(
            "other_weights",
            "Norms, routers, biases",
            int(other_b),
            f"{other_n / 1e6:.1f}M parameters at {8 * unq_bytes} bits",
        )
    )
    return terms


def _dense_weight_bytes(
    model: ModelFacts, quant: str, trainer: TrainerFacts, unq_bytes: int
) -> tuple[float, int, float, int, float, int]:
    """Bytes and parameters of the quantisable linear layers, of the embeddings and LM head,
    and of everything else but the routed experts."""
    keep = tuple(capabilities(model).keep_full_precision)

    def qbits(w: Weight) -> float:
        if quant == "none":
            return 8.0 * unq_bytes
        if trainer.quantized_bits is not None:
            return trainer.quantized_bits
        return arch.bits_per_param(quant, w.shape[-1])

    linear_b = other_b = embed_b = 0.0
    linear_n = other_n = embed_n = 0
    for w in weights(model):
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
    return linear_b, linear_n, embed_b, embed_n, other_b, other_n


def _expert_term(
    model: ModelFacts,
    quant: str,
    trainer: TrainerFacts,
    unq_bytes: int,
    q_experts: bool,
    notes: list[str],
) -> MemoryTerm:
    """Every routed expert, resident whether active or not."""
    n_exp = model.params.routed_experts
    if not q_experts:
        expert_b = n_exp * unq_bytes
    elif trainer.quantized_bits is None:  # as trainer.moe stores them: NF4 blocks per expert
        expert_b = moe_facts.routed_expert_nf4_bytes(model.config)
    else:
        expert_b = n_exp * trainer.quantized_bits / 8
    if q_experts:
        how = f"NF4 ({8 * expert_b / n_exp:.3f} bits each)"
    else:
        how = f"{8 * unq_bytes} bits each"
        if quant == "nf4" and model.fused_experts:
            why = (
                f"{model.model_type} stores its routed experts as fused 3-D tensors, which "
                "bitsandbytes does not quantise, and trainer/shared/arch.py does not (yet) say the "
                "trainer stores them in NF4"
                + (
                    ", so prepare_model_for_kbit_training upcasts them to fp32"
                    if unq_bytes == 4
                    else ""
                )
            )
            notes.append(f"routed experts are not quantised: {why}")
            how += f" ({why})"
    return MemoryTerm(
        "routed_experts",
        "Routed experts (all of them)",
        int(expert_b),
        f"{n_exp / 1e9:.2f}B parameters ({model.experts} experts x "
        f"{sum(model.moe_layers)} layers; every expert is resident, not only the "
        f"{model.experts_per_token} active per token), {how}",
    )


def _lora_terms(spec: JobSpec, p: int, trainer: TrainerFacts) -> list[MemoryTerm]:
    return [
        MemoryTerm(
            "lora_weights",
            "LoRA weights",
            int(p * trainer.adapter_bytes),
            f"{p / 1e6:.1f}M parameters (rank {spec.lora.r}) x {trainer.adapter_bytes:g} bytes",
        ),
        MemoryTerm(
            "lora_grads",
            "LoRA gradients",
            int(p * trainer.grad_bytes),
            f"{p / 1e6:.1f}M x {trainer.grad_bytes:g} bytes",
        ),
        MemoryTerm(
            "optimizer",
            "Optimizer state (AdamW)",
            int(p * trainer.optimizer_bytes),
            f"{p / 1e6:.1f}M x {trainer.optimizer_bytes:g} bytes",
        ),
    ]


def kv_bytes_per_token(spec: JobSpec, model: ModelFacts) -> int:
    """Bytes of keys and values one token keeps in the KV cache: softmax-attention layers
    x kv heads x head dim x 2 x the compute dtype's bytes."""
    return _attention_layers(model) * model.kv_heads * model.head_dim * 2 * _act_bytes(spec)


def _attention_layers(model: ModelFacts) -> int:
    """The layers that keep keys and values (a linear-attention layer keeps a fixed state)."""
    return sum(1 for kind in model.layer_types if kind != "linear_attention")


def kv_cache_bytes(spec: JobSpec, model: ModelFacts) -> int:
    """Bytes of the sampled micro-batch's KV cache (module docstring); 0 when the method
    does not generate."""
    g = spec.grading  # set exactly for a generating method (JobSpec checks)
    if g is None:
        return 0
    seqs = spec.training.micro_batch_size * g.num_generations
    return seqs * spec.training.max_length * kv_bytes_per_token(spec, model)


def _kv_cache_terms(spec: JobSpec, model: ModelFacts) -> list[MemoryTerm]:
    n = kv_cache_bytes(spec, model)
    if not n:
        return []
    g = spec.grading
    assert g is not None
    layers = _attention_layers(model)
    return [
        MemoryTerm(
            "kv_cache",
            "KV cache of sampling",
            n,
            f"{spec.training.micro_batch_size} prompts x {g.num_generations} completions x "
            f"{spec.training.max_length:,} tokens (prompt + completion) x {layers} layers x "
            f"{model.kv_heads} kv heads x {model.head_dim} x 2 (keys, values) x "
            f"{_act_bytes(spec)} bytes",
        )
    ]


# --- activations, logits and the peak moment ---------------------------------------------


def _activation_terms(
    spec: JobSpec, model: ModelFacts, trainer: TrainerFacts, lc: LoraCount, unq_bytes: int
) -> tuple[list[MemoryTerm], Literal["loss", "backward"]]:
    """Activations kept for backward, plus the larger of the loss and the backward of one
    layer (and which of the two is the peak)."""
    stored, stored_detail, working, working_detail = _kept_and_working(spec, model, lc)
    logits, logits_detail = _loss_peak(spec, model, trainer, unq_bytes)
    moment: Literal["loss", "backward"] = "loss" if logits >= working else "backward"
    terms = [MemoryTerm("activations", "Activations kept for backward", int(stored), stored_detail)]
    if moment == "loss":
        terms.append(
            MemoryTerm(
                "logits",
                "Logits and loss",
                int(logits),
                logits_detail + f" (exceeds the backward working set, {_gib(working)})",
            )
        )
    else:
        terms.append(
            MemoryTerm(
                "recompute",
                "Layer in backward",
                int(working),
                working_detail + f" (exceeds logits and loss, {_gib(logits)})",
            )
        )
    return terms, moment


def _adapted_inputs(lc: LoraCount) -> dict[int, int]:
    """Per decoder layer: the summed in_features of its LoRA-adapted linear layers."""
    adapted_in: dict[int, int] = {}
    for w in lc.adapted_linear:
        if ".layers." in w.name or ".h." in w.name:
            idx = (
                int(w.name.split(".layers.")[-1].split(".")[0])
                if ".layers." in w.name
                else int(w.name.split(".h.")[-1].split(".")[0])
            )
            adapted_in[idx] = adapted_in.get(idx, 0) + w.shape[1]
    return adapted_in


def _kept_and_working(
    spec: JobSpec, model: ModelFacts, lc: LoraCount
) -> tuple[float, str, float, str]:
    """Bytes kept for backward and bytes of the backward working set, with their details."""
    t = spec.training
    n_tok = t.micro_batch_size * t.max_length * spec.sequences_per_row
    act = _act_bytes(spec)
    dropout = spec.lora.dropout > 0
    adapted_in = _adapted_inputs(lc)
    per_layer = [
        layer_activation_bytes(model, i, adapted_in.get(i, 0), dropout) * (act / 2)
        for i in range(model.layers)
    ]
    grad_buffers = 3 * act * model.hidden * n_tok
    if t.gradient_checkpointing:
        stored = model.layers * act * model.hidden * n_tok
        stored_detail = (
            f"checkpointed layer inputs: {model.layers} layers x {n_tok:,} tokens "
            f"x {model.hidden} x {act} bytes"
        )
        working = max(per_layer) * n_tok + grad_buffers
        working_detail = (
            f"one layer recomputed in backward: {max(per_layer) / 1024:.1f} KiB "
            f"per token x {n_tok:,} tokens, plus gradient buffers"
        )
    else:
        stored = sum(per_layer) * n_tok
        stored_detail = (
            f"all {model.layers} layers' activations: {sum(per_layer) / 2**20:.2f} "
            f"MiB per token x {n_tok:,} tokens (no gradient checkpointing)"
        )
        working = grad_buffers
        working_detail = "gradient buffers of the layer in backward"
    if not t.packing or capabilities(model).packing == "padded":
        stored += t.micro_batch_size * t.max_length**2  # SDPA boolean mask for padded rows
        stored_detail += f"; attention mask {t.micro_batch_size} x {t.max_length}^2 bytes"
    return stored, stored_detail, working, working_detail


def _loss_peak(
    spec: JobSpec, model: ModelFacts, trainer: TrainerFacts, unq_bytes: int
) -> tuple[int, str]:
    """Bytes at the loss: logits (full or chunked) plus a bf16 copy of an fp32 LM head."""
    n_tok = spec.training.micro_batch_size * spec.training.max_length * spec.sequences_per_row
    act = _act_bytes(spec)
    head_copy = model.vocab * model.hidden * 2 if unq_bytes == 4 else 0
    if trainer.loss_chunk_elements is None:
        logits = int(trainer.logit_bytes * n_tok * model.vocab)
        logits_detail = (
            f"full logits: {n_tok:,} tokens x {model.vocab:,} vocabulary x "
            f"{trainer.logit_bytes:g} bytes (logits, fp32 copy, log-softmax and "
            "its gradient)"
        )
    else:
        chunk = min(trainer.loss_chunk_elements, n_tok * model.vocab)
        logits = int(trainer.logit_bytes * chunk) + 2 * act * model.hidden * n_tok
        logits_detail = (
            f"loss in chunks of {chunk:,} logits x {trainer.logit_bytes:g} bytes "
            "(fp32 logits, exp, gradient) plus the labelled hidden states and "
            "their gradient"
        )
    logits += head_copy
    if head_copy:
        logits_detail += f"; bf16 copy of the fp32 LM head ({_gib(head_copy)})"
    return logits, logits_detail
