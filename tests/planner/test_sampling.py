"""A generating method's sampling in the plan: its time (decoding bound by memory bandwidth,
plus the prefill) and its KV cache, checked against the formula worked by hand."""

from __future__ import annotations

import math
from typing import Any

import pytest

from core.planner import (
    DECODE_BANDWIDTH_EFFICIENCY,
    GPU_TYPES,
    LOCAL_CPU,
    MEMORY_BANDWIDTH_GB_S,
    TokenStats,
    describe,
    estimate_local_time,
    estimate_memory,
    estimate_time,
    plan,
    sampling_seconds,
    training_tokens,
)
from trainer.shared import arch
from trainer.shared.methods import METHODS
from trainer.shared.spec import DataSpec, JobSpec, ModelSpec, OutputSpec, TrainingSpec

Q7 = "Qwen/Qwen2.5-7B-Instruct"
H100 = "H100_80GB_SXM"
GENERATES = next(m for m, i in METHODS.items() if i.generates)
CHAT = next(m for m, i in METHODS.items() if not i.generates and i.data == "chat")
TOKENS = TokenStats(rows=800, mean_tokens=100)  # prompts of 100 tokens
GRADER = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "operation": "eq",
}


def _spec(method: Any = GENERATES, generations: int = 8, completion: int = 256) -> JobSpec:
    grading = (
        {"graders": [GRADER], "num_generations": generations, "max_completion_length": completion}
        if METHODS[method].generates
        else None
    )
    return JobSpec(
        job_id="plan-sampling",
        model=ModelSpec(name_or_path=Q7),
        data=DataSpec(train_path="train.jsonl"),
        output=OutputSpec(adapter_name="plan-sampling"),
        quantization="none",
        method=method,
        grading=grading,
        training=TrainingSpec(max_length=1024, micro_batch_size=2, grad_accum=4, epochs=1.0),
    )


def test_sampling_adds_decode_and_prefill_time_worked_by_hand() -> None:
    t = estimate_time(_spec(), describe(Q7), H100, TOKENS)
    # Qwen2.5-7B: 7,615,616,512 parameters, untied 152,064 x 3,584 embedding: matmul
    # parameters 7,070,619,136, read at 2 bytes each per decode step; KV cache per token
    # 28 layers x 4 kv heads x 128 x 2 x 2 bytes = 57,344.
    matmul = 7_615_616_512 - 152_064 * 3_584
    kv_token = 28 * 4 * 128 * 2 * 2
    rollouts = math.ceil(800 / (2 * 4)) * 4  # 100 optimizer steps x 4 micro-batches
    context = 2 * 8 * (100 + 256 / 2)  # sequences x mean context while decoding
    step_bytes = 2 * matmul + context * kv_token
    decode = rollouts * 256 * step_bytes / (3350e9 * DECODE_BANDWIDTH_EFFICIENCY)
    prefill = rollouts * 2 * 100 * 2 * matmul / (989.4e12 * t.utilisation)
    scoring = t.processed_tokens * t.flops_per_token / (989.4e12 * t.utilisation)
    assert t.sampling_seconds == pytest.approx(decode + prefill, rel=1e-9)
    assert t.seconds == pytest.approx(scoring + decode + prefill, rel=1e-9)
    assert t.seconds_high == pytest.approx(1.5 * t.seconds)  # the range holds sampling
    assert decode > 100 * prefill  # decoding, not the prefill, is the cost
    assert "sampling" in t.basis_text


def test_sampling_and_the_plans_time_and_cost_grow_with_completions() -> None:
    model = describe(Q7)

    def cost(spec: JobSpec) -> tuple[float, float, float]:
        t = estimate_time(spec, model, H100, TOKENS)
        p = plan(spec, model, tokens=TOKENS, gpus=[H100])
        return t.sampling_seconds, t.seconds, p.costs[0].usd_high

    base = cost(_spec())
    for longer in (cost(_spec(completion=512)), cost(_spec(generations=16))):
        assert all(a > b for a, b in zip(longer, base, strict=True))


def test_kv_cache_is_a_term_of_the_breakdown_worked_by_hand() -> None:
    model = describe(Q7)
    mem = estimate_memory(_spec(), model)
    # 2 prompts x 8 completions x 1,024 tokens x 28 layers x 4 kv heads x 128 x 2 x 2 bytes
    assert mem.term("kv_cache") == 2 * 8 * 1024 * 28 * 4 * 128 * 2 * 2 == 939_524_096
    assert estimate_memory(_spec(generations=16), model).term("kv_cache") == 2 * 939_524_096


def test_a_method_that_does_not_generate_has_neither_term() -> None:
    spec, model = _spec(CHAT), describe(Q7)
    assert "kv_cache" not in [t.key for t in estimate_memory(spec, model).terms]
    t = estimate_time(spec, model, H100, TOKENS)
    assert t.sampling_seconds == 0.0 and "sampling" not in t.basis_text
    assert t.seconds == pytest.approx(
        t.processed_tokens * t.flops_per_token / (989.4e12 * t.utilisation)
    )


def test_the_local_cpu_samples_at_its_own_bandwidth() -> None:
    spec, model = _spec(), describe(Q7)
    local = estimate_local_time(spec, model, TOKENS)
    assert local.sampling_seconds == pytest.approx(
        sampling_seconds(spec, model, LOCAL_CPU.id, TOKENS, local.utilisation)
    )
    assert local.sampling_seconds > estimate_time(spec, model, H100, TOKENS).sampling_seconds


def test_the_completions_are_trained_tokens_and_a_shared_prompt_counts_once() -> None:
    spec, model = _spec(), describe(Q7)
    assert training_tokens(spec, TOKENS) == 800 * 8 * (100 + 256)
    assert training_tokens(spec, TOKENS, shared_prompts=True) == 800 * (100 + 8 * 256)
    shared = spec.training.packing and arch.prefix_sharing_exact(
        arch.capabilities(model.config).packing, model.config
    )
    t = estimate_time(spec, model, H100, TOKENS)
    assert t.training_tokens == training_tokens(spec, TOKENS, shared_prompts=bool(shared))


def test_every_gpu_type_has_a_memory_bandwidth() -> None:
    assert set(MEMORY_BANDWIDTH_GB_S) == {*GPU_TYPES, LOCAL_CPU.id}
