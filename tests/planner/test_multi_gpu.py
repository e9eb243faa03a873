"""Plans past one GPU: memory per GPU with sharding, the smallest count per GPU type, and
time and cost for that count (`core.planner.multi_gpu`).

The published sizes: Qwen2.5-72B in bf16 is 145 GB of weights and Qwen3-Next-80B 159 GB,
neither fits one 80 GB GPU; sharded by FSDP2 they need 3 H100s at 2k tokens, and
Qwen2.5-72B 4 at 8k (activations and its untied 2.5 GB embeddings and head, kept whole on
every GPU, leave too little of a third). One H200 is too small, two are enough.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core import planner
from core.planner.multi_gpu import counts, per_gpu_memory
from trainer.shared.spec import JobSpec

GIB = 1 << 30


def _spec(model: str, max_length: int, **over: Any) -> JobSpec:
    return JobSpec(
        job_id="plan",
        model={"name_or_path": model},
        data={"train_path": "rows.jsonl"},
        output={"adapter_name": "a"},
        quantization="none",
        training={"max_length": max_length, "micro_batch_size": 1},
        **over,
    )


@pytest.mark.parametrize(
    ("model", "max_length", "h100s"),
    [
        ("Qwen/Qwen2.5-72B-Instruct", 2048, 3),
        ("Qwen/Qwen2.5-72B-Instruct", 8192, 4),
        ("Qwen/Qwen3-Next-80B-A3B-Instruct", 2048, 3),
        ("Qwen/Qwen3-Next-80B-A3B-Instruct", 8192, 3),
    ],
)
def test_big_bf16_lora_jobs_get_the_gpu_count_that_fits(
    model: str, max_length: int, h100s: int
) -> None:
    spec, facts = _spec(model, max_length), planner.describe(model)
    by_gpu = {c.gpu: c for c in counts(spec, facts)}
    h100, h200 = by_gpu["H100_80GB_SXM"], by_gpu["H200_141GB"]
    assert (h100.count, h200.count) == (h100s, 2)
    assert h100.sharding == "fsdp"
    assert planner.estimate_memory(spec, facts).total_bytes > 141e9  # no single GPU
    fewer = per_gpu_memory(spec, facts, h100s - 1)
    assert fewer.total_bytes > 0.9 * h100.memory_bytes > h100.memory.total_bytes


def test_sharding_divides_weights_and_lora_state_but_not_activations() -> None:
    model = "Qwen/Qwen2.5-72B-Instruct"
    spec, facts = _spec(model, 2048), planner.describe(model)
    one, four = planner.estimate_memory(spec, facts), per_gpu_memory(spec, facts, 4)
    for key in ("base_weights", "lora_weights", "lora_grads", "optimizer"):
        assert four.term(key) == one.term(key) // 4
    for key in ("embeddings", "cuda_context"):
        assert four.term(key) == one.term(key)
    layer = one.term("base_weights") / facts.layers
    assert four.term("communication") > 2 * layer  # two layers gathered whole, and NCCL's
    assert "4 GPUs, fsdp" in four.notes[-1]


def test_small_and_8bit_bases_are_replicated_with_the_reason() -> None:
    small = "Qwen/Qwen2.5-1.5B-Instruct"
    spec = _spec(small, 2048, gpus=2)
    p = planner.plan(spec, planner.describe(small), gpus=["H100_80GB_SXM"])
    assert p.settings["gpus"] == 2 and p.settings["sharding"] == "ddp"
    assert "fit on every GPU" in p.memory.notes[-1]
    one = planner.estimate_memory(spec, planner.describe(small))
    assert p.memory.term("base_weights") == one.term("base_weights")  # whole on each GPU
    q = _spec("Qwen/Qwen2.5-72B-Instruct", 2048, gpus=2).model_copy(update={"quantization": "int8"})
    mem = per_gpu_memory(q, planner.describe("Qwen/Qwen2.5-72B-Instruct"), 2)
    assert "bitsandbytes" in mem.notes[-1]


def test_a_big_4bit_base_is_sharded_and_a_small_one_replicated() -> None:
    """As the worker does (`trainer.setup.base_bytes`): the rule reads an NF4 base's 4-bit
    size, so 72B in NF4 (about 38 GiB) is sharded and 1.5B (about 1 GiB) replicated."""
    for model, gpus, strategy in (
        ("Qwen/Qwen2.5-72B-Instruct", 2, "fsdp"),
        ("Qwen/Qwen2.5-1.5B-Instruct", 2, "ddp"),
    ):
        spec = _spec(model, 2048, gpus=gpus).model_copy(update={"quantization": "nf4"})
        facts = planner.describe(model)
        one, two = planner.estimate_memory(spec, facts), per_gpu_memory(spec, facts, gpus)
        assert f"{gpus} GPUs, {strategy}: the nf4 base's" in two.notes[-1]
        whole = one.term("base_weights")
        assert two.term("base_weights") == (whole // gpus if strategy == "fsdp" else whole)
        assert two.term("embeddings") == one.term("embeddings")  # never sharded


def test_time_and_cost_count_every_gpu() -> None:
    model = "Qwen/Qwen2.5-72B-Instruct"
    facts, tokens = planner.describe(model), planner.TokenStats(rows=2000, mean_tokens=800)
    one = planner.plan(_spec(model, 2048), facts, tokens=tokens, gpus=["H100_80GB_SXM"])
    three = planner.plan(_spec(model, 2048, gpus=3), facts, tokens=tokens, gpus=["H100_80GB_SXM"])
    assert three.verdicts[0].verdict == "fits" and one.verdicts[0].verdict == "does_not_fit"
    rate = planner.rate_per_second("H100_80GB_SXM", "flex", {})
    cost, time = three.costs[0], three.times[0]
    assert cost.rate_per_s == pytest.approx(3 * rate)
    assert cost.usd_high == pytest.approx(3 * rate * (time.seconds_high + time.cold_start_high_s))
    assert time.seconds < one.times[0].seconds / 2  # 3 GPUs at 85% each
    best = one.recommended_count
    assert best is not None and best.count is not None and best.count >= 2
    assert best.cost is not None and best.cost.rate_per_s == pytest.approx(
        best.count * planner.rate_per_second(best.gpu, "flex", {})
    )
    assert one.to_dict()["recommended_count"] == {"gpu": best.gpu, "count": best.count}


def _tiny_moe(folder: Path) -> Path:
    """A random tiny Qwen3-Next (fused routed experts, stored in NF4 by `trainer.moe`)."""
    import torch
    from transformers import Qwen3NextConfig, Qwen3NextForCausalLM

    from tests.trainer.test_qwen3_next import TINY

    torch.manual_seed(0)
    model = Qwen3NextForCausalLM(Qwen3NextConfig(vocab_size=512, **TINY))
    model.to(torch.bfloat16).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(("kind", "compute_dtype"), [("dense", "float32"), ("moe", "bfloat16")])
def test_the_worker_reads_the_base_size_the_planner_counts(
    tmp_path: Path, kind: str, compute_dtype: str
) -> None:
    """The rule's one input from both sides: the planner's weight terms, and the worker's
    reading of the weight files before it loads them (`trainer.setup.base_bytes`, NF4 from
    the safetensors headers), within 1% (file headers, rounding) on the tiny dense model
    (float32 files) and a tiny MoE (bfloat16 files), each job computing in its files'
    dtype as a bf16 checkpoint's does: they pick the same sharding unless a base is within
    1% of the threshold."""
    from trainer.setup import base_bytes
    from trainer.shared.tiny import build_tiny_chat_model

    if kind == "moe":
        folder = _tiny_moe(tmp_path / "moe")
    else:
        folder = build_tiny_chat_model(tmp_path / "tiny", seed=0)
    facts = planner.describe(str(folder))
    weights = ("base_weights", "routed_experts", "embeddings", "other_weights")
    for quantization in ("none", "nf4"):
        spec = _spec(str(folder), 256, gpus=2, device="cpu")
        training = spec.training.model_copy(update={"compute_dtype": compute_dtype})
        spec = spec.model_copy(update={"quantization": quantization, "training": training})
        counted = sum(planner.estimate_memory(spec, facts).term(k) for k in weights)
        assert base_bytes(folder, quantization) == pytest.approx(counted, rel=0.01)


def test_nf4_routed_experts_stay_whole_on_every_gpu() -> None:
    """`trainer.moe` keeps fused experts in NF4 buffers, which FSDP2 does not shard: on 2
    GPUs Qwen3-Next-80B in NF4 has its linear layers halved, its experts whole."""
    model = "Qwen/Qwen3-Next-80B-A3B-Instruct"
    spec = _spec(model, 2048, gpus=2).model_copy(update={"quantization": "nf4"})
    facts = planner.describe(model)
    one, two = planner.estimate_memory(spec, facts), per_gpu_memory(spec, facts, 2)
    assert "2 GPUs, fsdp" in two.notes[-1]
    assert two.term("base_weights") == one.term("base_weights") // 2
    assert two.term("routed_experts") == one.term("routed_experts") > 0
