"""LoRA parameter counts: the planner's count equals what PEFT creates on the same model."""

from __future__ import annotations

import pytest

from core.errors import InvalidInput
from core.planner import (
    CATALOG,
    TrainerFacts,
    describe,
    facts_from_config,
    lora_count,
    peft_lora_params,
)
from tests.planner.conftest import make_spec, peft_trainable
from trainer.shared import arch

R = 8


@pytest.mark.parametrize("model_id", list(CATALOG))
@pytest.mark.parametrize("which", ["trainer default", "all-linear"])
def test_lora_parameters_match_peft(model_id: str, which: str) -> None:
    facts = describe(model_id)
    if which == "all-linear":
        targets = "all-linear"
    else:
        targets = arch.resolve_lora_targets(arch.capabilities(facts.config), "all-linear", False)
    expected = peft_trainable(facts.config, r=R, lora_alpha=16, target_modules=targets)
    assert peft_lora_params(facts, targets, R).params == expected


@pytest.mark.parametrize(
    ("model_id", "lora"),
    [
        ("Qwen/Qwen2.5-0.5B-Instruct", {"target_modules": ["q_proj", "v_proj"]}),
        ("Qwen/Qwen2.5-0.5B-Instruct", {"target_modules": ["lm_head", "q_proj"]}),  # tied head
        (
            "Qwen/Qwen2.5-0.5B-Instruct",
            {"target_modules": ["q_proj", "down_proj"], "use_dora": True},
        ),
        (
            "Qwen/Qwen3-30B-A3B",
            {
                "target_modules": ["q_proj"],
                "target_parameters": ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"],
            },
        ),
        ("Qwen/Qwen3-30B-A3B", {"target_modules": ["q_proj", "gate"]}),  # the router
        (
            "Qwen/Qwen3-Next-80B-A3B-Instruct",
            {"target_modules": ["q_proj", "shared_expert.gate_proj", "shared_expert.up_proj"]},
        ),
    ],
)
def test_special_targets_match_peft(model_id: str, lora: dict) -> None:
    facts = describe(model_id)
    expected = peft_trainable(facts.config, r=R, lora_alpha=16, **lora)
    got = peft_lora_params(
        facts,
        lora["target_modules"],
        R,
        target_parameters=lora.get("target_parameters", ()),
        use_dora=lora.get("use_dora", False),
    )
    assert got.params == expected


def test_peft_moves_expert_names_off_the_shared_expert_and_says_so() -> None:
    """On qwen3_next, "shared_expert.gate_proj" adapts every routed expert (PEFT 0.21)."""
    facts = describe("Qwen/Qwen3-Next-80B-A3B-Instruct")
    got = peft_lora_params(facts, ["shared_expert.gate_proj", "shared_expert.up_proj"], R)
    assert set(got.by_target) == {"experts.gate_up_proj"}
    assert any("not onto the shared expert" in n for n in got.notes)


def test_half_of_a_fused_pair_is_refused_like_peft_refuses_it() -> None:
    facts = describe("Qwen/Qwen3-30B-A3B")
    with pytest.raises(ValueError, match="without also targeting"):
        peft_trainable(facts.config, r=R, target_modules=["q_proj", "gate_proj"])
    with pytest.raises(InvalidInput, match="'gate_proj' without 'up_proj'"):
        peft_lora_params(facts, ["q_proj", "gate_proj"], R)


def test_targets_matching_nothing_name_the_linear_layers() -> None:
    with pytest.raises(InvalidInput, match="q_proj"):
        peft_lora_params(describe("Qwen/Qwen3-8B"), ["attention.wq"], R)


def test_expert_lora_needs_nf4_and_is_counted_with_it() -> None:
    facts = describe("Qwen/Qwen3-Next-80B-A3B-Instruct")
    forced = TrainerFacts(expert_lora_by_trainer=True, experts_quantized=True)
    on = make_spec(facts.id, "nf4", lora={"r": 16, "lora_on_experts": True})
    off = make_spec(facts.id, "nf4", lora={"r": 16})
    extra = lora_count(on, facts, forced).params - lora_count(off, facts, forced).params
    # one rank-16 pair per expert for gate_up_proj (2048 -> 2 x 512) and down_proj (512 -> 2048)
    assert extra == 48 * 512 * (16 * (2048 + 1024) + 16 * (512 + 2048))
    with pytest.raises(InvalidInput, match="needs quantization 'nf4'"):
        lora_count(make_spec(facts.id, "none", lora={"lora_on_experts": True}), facts, forced)


@pytest.mark.parametrize("model_id", ["Qwen/Qwen3-30B-A3B", "Qwen/Qwen3-Next-80B-A3B-Instruct"])
def test_the_trainers_lora_on_fused_expert_models_matches_peft(model_id: str) -> None:
    """The trainer turns PEFT's expert-name remapping off (trainer.moe.peft_module_targets),
    so gate_proj/up_proj/down_proj adapt the shared expert, never the routed experts."""
    moe = pytest.importorskip("trainer.moe")
    facts = describe(model_id)
    caps = arch.capabilities(facts.config)
    if not caps.fused_experts:
        pytest.skip(f"trainer/shared/arch.py has no fused-experts entry for {facts.model_type}")
    targets = arch.resolve_lora_targets(caps, "all-linear", False)
    with moe.peft_module_targets():
        expected = peft_trainable(facts.config, r=R, lora_alpha=16, target_modules=targets)
    spec = make_spec(model_id, "nf4", lora={"r": R})
    got = lora_count(spec, facts)
    assert got.params == expected
    assert not any(k.startswith("experts.") for k in got.by_target)


def test_with_nf4_experts_peft_adapts_only_what_the_planner_says(tmp_path) -> None:
    """On a real (tiny) model whose experts the trainer stored in NF4."""
    moe = pytest.importorskip("trainer.moe")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = {
        "model_type": "qwen3_next",
        "architectures": ["Qwen3NextForCausalLM"],
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "vocab_size": 256,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 32,
        "linear_num_key_heads": 2,
        "linear_key_head_dim": 16,
        "linear_num_value_heads": 4,
        "linear_value_head_dim": 16,
        "linear_conv_kernel_dim": 4,
        "full_attention_interval": 4,
        "tie_word_embeddings": False,
    }
    facts = facts_from_config(cfg, id="tiny-next")
    caps = arch.capabilities(cfg)
    targets = arch.resolve_lora_targets(caps, "all-linear", False)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg))
    moe.quantize_experts(model)
    with moe.peft_module_targets(caps.fused_experts):
        pm = get_peft_model(model, LoraConfig(r=4, target_modules=targets, task_type="CAUSAL_LM"))
    spec = make_spec("tiny-next", "nf4", lora={"r": 4})
    assert (
        lora_count(spec, facts, TrainerFacts(experts_quantized=True)).params
        == pm.get_nb_trainable_parameters()[0]
    )
