"""How long a job trains (`estimate_time`), and what finished jobs measured.

Training tokens (rows x mean tokens capped at max_length x epochs, or max_steps; a
generating method's row is its prompt -- laid out once for its group where prefixes may be
shared -- and `num_generations` completions counted at `max_completion_length`) / packing
efficiency (0.95 packed, 0.80 padded) x FLOPs per token (6 x matmul parameters -- active
parameters without the embedding lookup -- plus 6 x a*d x mean sample length per
softmax-attention layer; x 4/3 with gradient checkpointing, which recomputes the forward) /
(GPU bf16 dense peak x utilisation). Utilisation defaults (`DEFAULT_UTILISATION`): 0.40
bf16, 0.30 nf4, 0.15 int8, halved for MoE models (per-expert matmuls are small). When
finished jobs of the same model and GPU measured their tokens/s (`measured_tokens_per_s`:
real tokens per training second, read back by `core.db.repo.measured_throughput`), their
median replaces the whole FLOPs formula (`TimeEstimate.basis_text` says which one an
estimate used). Cold start: container start plus reading the 16-bit weights.

Sampling (`sampling_seconds`), for a method whose table row `generates` (its settings in
`JobSpec.grading`): each micro-batch of `micro_batch_size` prompts (optimizer steps x
`grad_accum` of them) samples `num_generations` completions of each, up to
`max_completion_length` tokens. Decoding is bound by memory bandwidth: every decode step of
the batch reads the weights once (`decode_weight_bytes`: the matmul weights -- a MoE's
active ones -- at the job's quantisation, the LM head at 16 bits) and the batch's KV cache
(`micro_batch_size` x `num_generations` sequences of prompt + half the completion on
average, `memory.kv_bytes_per_token` each), at `DECODE_BANDWIDTH_EFFICIENCY` of the GPU's
peak bandwidth (`pricing.MEMORY_BANDWIDTH_GB_S`). So a micro-batch decodes in
max_completion_length x bytes per decode step / (bandwidth x efficiency), plus its
prefill: 2 x matmul parameters x its prompts' tokens (`prompt_tokens`: the dataset's mean
row, capped at max_length - max_completion_length) at the FLOPs rate the training uses. A
batch large enough to make decoding compute-bound is not modelled. The sampling seconds are
added to the FLOPs-based time (its range and cost follow); a measured throughput already holds
them (finished jobs' training seconds include their sampling). A generating method's
forward without gradients at every step is the reference pass, counted only when
`grading.kl_beta` > 0.

`estimate_local_time`: the same on the local endpoint's CPU (`LOCAL_CPU`), where a small
model's step is mostly fixed work (the optimizer, logging, checkpoints) rather than FLOPs:
each optimizer step adds `LOCAL_STEP_S`, and the cold start is the worker's start
(imports, loading the model from disk), `LOCAL_COLD_START_S`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from core.errors import InvalidInput
from core.planner.facts import ModelFacts
from core.planner.memory import kv_bytes_per_token
from core.planner.pricing import LOCAL_CPU, MEMORY_BANDWIDTH_GB_S, gpu_type
from trainer.shared import arch
from trainer.shared.methods import METHODS
from trainer.shared.spec import JobSpec, TrainingSpec

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
# The local endpoint's CPU: fixed seconds per optimizer step, and the worker's start.
LOCAL_STEP_S = (0.005, 3.0)
LOCAL_COLD_START_S = (1.0, 60.0)
# Sampling: the share of the GPU's peak memory bandwidth a decode step reads weights at
# (an assumed default: vLLM reaches more, transformers' step-by-step decoding less).
DECODE_BANDWIDTH_EFFICIENCY = 0.5


@dataclass(frozen=True)
class TokenStats:
    """Token statistics of the training set (after the chat template)."""

    rows: int
    mean_tokens: float  # per row
    loss_fraction: float = 1.0  # share of tokens that carry loss (informational)
    shared_tokens: float = 0.0  # preference pairs: the prompt's tokens (median), both sides'

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
    sampling_seconds: float = 0.0  # a generating method's sampling, within `seconds`

    @property
    def basis_text(self) -> str:
        """What the time rests on, in words a user reads next to the estimate."""
        if self.utilisation is None:
            return (
                f"measured: median of {self.measured_jobs} finished job"
                f"{'' if self.measured_jobs == 1 else 's'} on this GPU "
                f"({self.tokens_per_s:,.0f} tokens/s)"
            )
        sampling = (
            f"; sampling {self.sampling_seconds:,.0f} s (decoding at "
            f"{DECODE_BANDWIDTH_EFFICIENCY:.0%} of the memory bandwidth)"
            if self.sampling_seconds
            else ""
        )
        if self.gpu == LOCAL_CPU.id:
            return (
                f"this machine's CPU: {LOCAL_STEP_S[0]:g}-{LOCAL_STEP_S[1]:g} s per optimizer "
                "step plus the FLOPs, and the worker's start (loading the model)" + sampling
            )
        return f"default utilisation {self.utilisation:.0%} of the GPU's bf16 peak" + sampling

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
    if (
        isinstance(tokens, int | float)
        and isinstance(seconds, int | float)
        and tokens > 0
        and seconds > 0
    ):
        return float(tokens) / float(seconds)
    rates = [
        float(m["total_tokens_per_s"])
        for m in metrics
        if isinstance(m.get("total_tokens_per_s"), int | float) and m["total_tokens_per_s"] > 0
    ]
    return statistics.median(rates) if rates else None


def token_stats_from_report(
    stats: Mapping[str, Any], valid_rows: int | None = None
) -> TokenStats | None:
    """`TokenStats` from a stored dataset's inspection report (`core.datasets`), if measured:
    training rows of the split (else `valid_rows`) and the mean tokens per row."""
    per_row = ((stats or {}).get("tokens") or {}).get("per_row") or {}
    rows = ((stats or {}).get("split") or {}).get("train_rows") or valid_rows
    if not per_row.get("mean") or not rows:
        return None
    measured = (stats or {}).get("tokens") or {}
    loss_share = measured.get("loss_share")
    prompt = ((measured.get("preference") or {}).get("prompt_tokens") or {}).get("median")
    return TokenStats(
        rows=int(rows),
        mean_tokens=float(per_row["mean"]),
        loss_fraction=float(loss_share) if loss_share else 1.0,
        shared_tokens=float(prompt or 0.0),
    )


def _efficiency(t: TrainingSpec) -> float:
    """Share of processed tokens that are real: packed rows, or padded batches."""
    return PACKING_EFFICIENCY if t.packing else PADDED_EFFICIENCY


def prompt_tokens(spec: JobSpec, tokens: TokenStats) -> float:
    """A generating method's prompt: the dataset's mean row (a prompt), capped where the
    worker drops longer ones (max_length - max_completion_length)."""
    room = spec.training.max_length - (spec.grading.max_completion_length if spec.grading else 0)
    return min(tokens.mean_tokens, max(room, 1))


def sequence_tokens(spec: JobSpec, tokens: TokenStats) -> float:
    """One trained sequence's tokens: the mean row capped at max_length; a generating
    method's prompt and one completion at its longest."""
    if spec.grading is not None:  # set exactly for a generating method (JobSpec checks)
        return prompt_tokens(spec, tokens) + spec.grading.max_completion_length
    return min(tokens.mean_tokens, spec.training.max_length)


def training_tokens(spec: JobSpec, tokens: TokenStats, shared_prompts: bool = False) -> int:
    """Tokens the job trains on; a preference pair is two sequences (prompt + chosen,
    prompt + rejected; a pair's measured length is its prompt and longer answer), its
    prompt computed once where the trainer shares it (`shared_prompts`); a generating
    method's row is its prompt (once where shared) and its completions."""
    t, seqs = spec.training, spec.sequences_per_row
    per_row = sequence_tokens(spec, tokens) * seqs
    if shared_prompts and seqs == 2:
        per_row -= min(tokens.shared_tokens, tokens.mean_tokens, t.max_length)
    elif shared_prompts and spec.grading is not None:
        per_row -= prompt_tokens(spec, tokens) * (seqs - 1)
    if t.max_steps is not None:
        by_steps = (
            t.max_steps * t.grad_accum * t.micro_batch_size * t.max_length * seqs * _efficiency(t)
        )
        if t.epochs is None:
            return int(by_steps)
        return int(min(by_steps, tokens.rows * per_row * t.epochs))
    return int(tokens.rows * per_row * (t.epochs or 1.0))


def matmul_params(model: ModelFacts) -> int:
    """Parameters a token's forward multiplies by: active ones without the embedding lookup."""
    p = model.params
    return p.active - (0 if model.tied_embeddings else p.embedding)


def flops_per_token(spec: JobSpec, model: ModelFacts, sample_len: float) -> float:
    """6 x matmul parameters + causal attention, x 4/3 with gradient checkpointing; a
    method's forwards without gradients (`trainer.shared.methods`) add 2 x matmul + a third
    of the attention per token they score: the reference pass's sequences once per job,
    and the sequences scored at every step (KTO's mismatched answers; a generating method's
    reference pass when `grading.kl_beta` > 0). Sampling is `sampling_seconds`."""
    matmul = matmul_params(model)
    full_layers = model.layer_types.count("full_attention")
    attn = 6 * full_layers * model.heads * model.head_dim * sample_len
    f = 6 * matmul + attn
    f *= 4 / 3 if spec.training.gradient_checkpointing else 1.0
    m = METHODS[spec.method]
    forward = (2 * matmul + attn / 3) / m.grad_sequences  # per trained token
    f += forward * m.reference_sequences / max(spec.training.epochs or 1.0, 1.0)
    kl = spec.grading is not None and spec.grading.kl_beta > 0
    return f + forward * (m.step_sequences + (1 if kl else 0))


def default_utilisation(spec: JobSpec, model: ModelFacts) -> float:
    u = DEFAULT_UTILISATION[spec.quantization]
    return u * (MOE_UTILISATION_FACTOR if model.is_moe else 1.0)


def cold_start_s(model: ModelFacts) -> tuple[float, float]:
    disk = model.params.total * 2
    return (
        COLD_START_FIXED_S[0] + disk / WEIGHT_READ_BYTES_PER_S[0],
        COLD_START_FIXED_S[1] + disk / WEIGHT_READ_BYTES_PER_S[1],
    )


def decode_weight_bytes(spec: JobSpec, model: ModelFacts) -> float:
    """Bytes of weights one decode step reads: the matmul weights (a MoE's active ones) at
    the job's quantisation, the LM head at 16 bits (32 in float32)."""
    unq = 4 if spec.training.compute_dtype == "float32" else 2
    head = model.vocab * model.hidden
    bits = (
        8.0 * unq
        if spec.quantization == "none"
        else arch.bits_per_param(spec.quantization, model.hidden)
    )
    return (matmul_params(model) - head) * bits / 8 + head * unq


def sampling_seconds(
    spec: JobSpec, model: ModelFacts, gpu: str, tokens: TokenStats, utilisation: float
) -> float:
    """Seconds a generating method samples for on `gpu` (module docstring); 0 for others."""
    g = spec.grading
    if g is None:
        return 0.0
    t = spec.training
    rollouts = optimizer_steps(spec, tokens) * t.grad_accum  # micro-batches sampled
    bandwidth = MEMORY_BANDWIDTH_GB_S[gpu] * 1e9 * DECODE_BANDWIDTH_EFFICIENCY
    prompt = prompt_tokens(spec, tokens)
    context = t.micro_batch_size * g.num_generations * (prompt + g.max_completion_length / 2)
    step_bytes = decode_weight_bytes(spec, model) + context * kv_bytes_per_token(spec, model)
    decode = rollouts * g.max_completion_length * step_bytes / bandwidth
    prefill = rollouts * t.micro_batch_size * prompt * 2 * matmul_params(model)
    return decode + prefill / (gpu_type(gpu).bf16_tflops * 1e12 * utilisation)


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
    packing = arch.capabilities(model.config).packing if spec.training.packing else "padded"
    shared = arch.shares_prompts(spec.method, packing, model.config)
    trained = training_tokens(spec, tokens, shared)
    processed = int(trained / _efficiency(spec.training))
    fpt = flops_per_token(spec, model, sequence_tokens(spec, tokens))
    measured = [float(x) for x in measured_tokens_per_s if x and x > 0]
    cold = cold_start_s(model)
    if measured:
        tps = statistics.median(measured)
        secs = trained / tps
        lo = trained / max(measured) * MEASURED_RANGE[0]
        hi = trained / min(measured) * MEASURED_RANGE[1]
        return TimeEstimate(
            gpu,
            trained,
            processed,
            fpt,
            None,
            tps,
            secs,
            min(lo, secs),
            max(hi, secs),
            *cold,
            f"measured ({len(measured)} finished jobs)",
            len(measured),
        )
    u = utilisation if utilisation is not None else default_utilisation(spec, model)
    rate = g.bf16_tflops * 1e12 * u
    sampling = sampling_seconds(spec, model, gpu, tokens, u)
    secs = processed * fpt / rate + sampling
    return TimeEstimate(
        gpu,
        trained,
        processed,
        fpt,
        u,
        trained / secs if secs else 0.0,
        secs,
        secs * TIME_RANGE[0],
        secs * TIME_RANGE[1],
        *cold,
        "flops",
        sampling_seconds=sampling,
    )


def optimizer_steps(spec: JobSpec, tokens: TokenStats) -> int:
    """Optimizer steps the job takes: `max_steps` when set (fewer when its epochs end
    first), else rows x epochs over the rows each step takes (unpacked: one per sample)."""
    t = spec.training
    per_step = t.micro_batch_size * t.grad_accum
    by_epochs = math.ceil(tokens.rows * (t.epochs or 1.0) / per_step)
    if t.max_steps is None:
        return by_epochs
    return t.max_steps if t.epochs is None else min(t.max_steps, by_epochs)


def estimate_local_time(spec: JobSpec, model: ModelFacts, tokens: TokenStats) -> TimeEstimate:
    """Training time on the local endpoint's CPU (see the module docstring)."""
    flops = estimate_time(spec, model, LOCAL_CPU.id, tokens)
    steps = optimizer_steps(spec, tokens)
    lo, hi = (steps * s for s in LOCAL_STEP_S)
    return replace(
        flops,
        seconds=flops.seconds + (lo + hi) / 2,
        seconds_low=flops.seconds_low + lo,
        seconds_high=flops.seconds_high + hi,
        cold_start_low_s=LOCAL_COLD_START_S[0],
        cold_start_high_s=LOCAL_COLD_START_S[1],
    )
