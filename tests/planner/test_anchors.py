"""Published measurements the memory estimate must land near. Tolerances are stated per test.

Where a published run used a different software stack than BrightRun's trainer, the test
describes that stack with `TrainerFacts` (LoRA dtype, optimizer, loss, quantised bits) and
keeps the model shapes exactly as published ("same shapes"). Published "G"/"GiB" figures
are read as GiB (2^30 bytes), as PyTorch and nvidia-smi report them.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from core.planner import (
    GPU_TYPES,
    TrainerFacts,
    describe,
    estimate_memory,
    facts_from_config,
    fit_verdicts,
    plan,
    verdict_for,
)
from tests.planner.conftest import GIB, make_spec
from trainer.shared import arch

QWEN3_NEXT = "Qwen/Qwen3-Next-80B-A3B-Instruct"
GPUS_80GB = ("A100_80GB", "H100_80GB_PCIE", "H100_80GB_SXM")


def test_qlora_paper_65b_fits_one_48gb_gpu() -> None:
    """QLoRA (Dettmers et al., 2023): LLaMA-65B fine-tuned on a single 48 GB GPU.

    Their setup (qlora.py, the paper's hyperparameters): NF4 + double quantisation, LoRA
    r=64 on every linear layer with the adapters cast to bf16, paged 32-bit AdamW,
    gradient checkpointing, 512-token sequences at micro-batch 1 (the paper's memory
    breakdown), embeddings back in bf16. Expected: fits or tight on a 48 GB card.
    """
    llama_65b = facts_from_config(
        {
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "hidden_size": 8192,
            "intermediate_size": 22016,
            "num_hidden_layers": 80,
            "num_attention_heads": 64,
            "num_key_value_heads": 64,
            "vocab_size": 32000,
            "tie_word_embeddings": False,
            "max_position_embeddings": 2048,
        },
        id="huggyllama/llama-65b",
    )
    assert llama_65b.params.total / 1e9 == pytest.approx(65.2, rel=0.01)
    spec = make_spec(
        "huggyllama/llama-65b",
        "nf4",
        lora={"r": 64, "dropout": 0.05},
        micro_batch_size=1,
        max_length=512,
        gradient_checkpointing=True,
    )
    qlora_stack = TrainerFacts(
        adapter_bytes=2,
        grad_bytes=2,
        optimizer_bytes=8,
        upcast_unquantized_fp32=False,
        loss_chunk_elements=None,
    )
    mem = estimate_memory(spec, llama_65b, qlora_stack)
    a6000 = GPU_TYPES["A6000_48GB"]
    assert verdict_for(mem.total_bytes, a6000) in ("fits", "tight")
    assert 40 * GIB < mem.total_bytes < 48 * GIB


# Qwen (first generation) README, "Profiling of Memory and Speed": Qwen-72B Q-LoRA on one
# A100-SXM4-80G, batch size 1, flash-attention 2, gradient checkpointing (finetune.py).
QWEN_72B_QLORA_GIB = {256: 61.4, 512: 61.4, 1024: 62.9, 2048: 64.1, 4096: 68.0, 8192: 75.6}


@pytest.mark.parametrize("length", sorted(QWEN_72B_QLORA_GIB))
def test_qwen_72b_qlora_profile_within_15_percent(length: int) -> None:
    """Same shapes as Qwen/Qwen-72B's config.json (hidden 8192, 80 layers, 64 heads without
    GQA, MLP 2 x 24576, vocab 152064) and Qwen's finetune.py: GPTQ int4 (group 128: 4 bits +
    fp16 scale + 4-bit zero per 128 weights), LoRA r=64 on c_attn, c_proj, w1, w2, fp16 with
    DeepSpeed ZeRO-2 (fp16 LoRA weights and gradients, fp32 master weights and Adam
    moments: 2 + 2 + 12 bytes), rows padded to the length, fp16 full-logits loss (8 bytes a
    logit: logits, shifted copy, log-softmax, gradient). Tolerance: 15%."""
    qwen_72b = facts_from_config(
        {
            "model_type": "qwen",
            "architectures": ["QWenLMHeadModel"],
            "hidden_size": 8192,
            "intermediate_size": 49152,
            "kv_channels": 128,
            "num_hidden_layers": 80,
            "num_attention_heads": 64,
            "vocab_size": 152064,
            "tie_word_embeddings": False,
            "seq_length": 32768,
        },
        id="Qwen/Qwen-72B-Chat-Int4",
    )
    assert qwen_72b.params.total / 1e9 == pytest.approx(72.3, rel=0.01)
    qwen_stack = TrainerFacts(
        quantized_bits=4 + 20 / 128,
        upcast_unquantized_fp32=False,
        adapter_bytes=2,
        grad_bytes=2,
        optimizer_bytes=12,
        loss_chunk_elements=None,
        logit_bytes=8,
        lora_target_modules=("c_attn", "c_proj", "w1", "w2"),
    )
    spec = make_spec(
        "Qwen/Qwen-72B-Chat-Int4",
        "nf4",
        lora={"r": 64, "dropout": 0.05},
        micro_batch_size=1,
        max_length=length,
        gradient_checkpointing=True,
        packing=False,
    )
    predicted = estimate_memory(spec, qwen_72b, qwen_stack).total_bytes / GIB
    assert predicted == pytest.approx(QWEN_72B_QLORA_GIB[length], rel=0.15)


# axolotl examples/qwen3-next: Qwen3-Next-80B-A3B-Instruct QLoRA, experts quantised,
# LoRA r=16 on attention, linear attention, the shared expert and the routers; micro-batch
# 2 x 2048 packed tokens, gradient checkpointing, 8-bit AdamW, cut cross-entropy.
AXOLOTL_TARGETS = (
    "linear_attn.in_proj_ba",
    "linear_attn.in_proj_qkvz",
    "linear_attn.out_proj",
    "shared_expert.up_proj",
    "shared_expert.down_proj",
    "shared_expert.gate_proj",
    "shared_expert_gate",
    "mlp.gate",
    "q_proj",
    "v_proj",
    "k_proj",
    "o_proj",
)


@pytest.mark.parametrize(("on_experts", "published_gib"), [(False, 47.0), (True, 71.0)])
def test_axolotl_qwen3_next_with_quantised_experts_within_15_percent(
    on_experts: bool, published_gib: float
) -> None:
    """Experts quantised is an explicit input here, so this holds whatever the trainer
    does today; the module names mean what they meant in that run (one nn.Linear per
    expert, no PEFT remapping onto fused parameters). Tolerance: 15%."""
    facts = describe(QWEN3_NEXT)
    axolotl_stack = TrainerFacts(
        experts_quantized=True,
        expert_lora_by_trainer=True,
        peft_remaps_expert_names=False,
        experts_are_linear_modules=True,
        optimizer_bytes=2,
        lora_target_modules=AXOLOTL_TARGETS,
    )
    spec = make_spec(
        QWEN3_NEXT,
        "nf4",
        lora={"r": 16, "alpha": 8, "lora_on_experts": on_experts},
        micro_batch_size=2,
        max_length=2048,
        gradient_checkpointing=True,
    )
    predicted = estimate_memory(spec, facts, axolotl_stack).total_bytes / GIB
    assert predicted == pytest.approx(published_gib, rel=0.15)


def test_qwen3_next_in_bf16_does_not_fit_an_80gb_gpu() -> None:
    facts = describe(QWEN3_NEXT)
    mem = estimate_memory(make_spec(QWEN3_NEXT, "none"), facts)
    weights = sum(
        mem.term(k) for k in ("base_weights", "routed_experts", "embeddings", "other_weights")
    )
    assert weights / 1e9 == pytest.approx(160, rel=0.05)  # ~160 GB of bf16 weights
    verdicts = {v.gpu: v for v in fit_verdicts(make_spec(QWEN3_NEXT, "none"), facts, mem)}
    for gpu in GPUS_80GB:
        assert verdicts[gpu].verdict == "does_not_fit"


def test_qwen3_next_nf4_does_not_fit_while_experts_are_not_quantised() -> None:
    facts = describe(QWEN3_NEXT)
    spec = make_spec(QWEN3_NEXT, "nf4")
    p = plan(spec, facts, trainer=TrainerFacts(experts_quantized=False))
    for gpu in GPUS_80GB:
        assert p.verdict(gpu).verdict == "does_not_fit"
    why = " ".join(p.notes)
    assert "routed experts are not quantised" in why and "bitsandbytes does not quantise" in why


def test_the_expert_flag_is_read_from_the_trainers_capability_table(monkeypatch) -> None:
    """Flip `ArchCaps.experts_quantized` and the nf4 verdict on an 80 GB GPU flips with it."""
    facts = describe(QWEN3_NEXT)
    spec = make_spec(QWEN3_NEXT, "nf4", micro_batch_size=1, max_length=2048)
    caps = arch.capabilities(facts.config)
    monkeypatch.setitem(
        arch.ARCH_TABLE, "qwen3_next", replace(caps, fused_experts=True, experts_quantized=False)
    )
    assert plan(spec, facts).verdict("H100_80GB_SXM").verdict == "does_not_fit"
    monkeypatch.setitem(
        arch.ARCH_TABLE, "qwen3_next", replace(caps, fused_experts=True, experts_quantized=True)
    )
    quantised = plan(spec, facts)
    assert quantised.verdict("H100_80GB_SXM").verdict == "fits"
    assert quantised.settings["experts_quantized"] is True
