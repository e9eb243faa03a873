"""Memory breakdown, verdicts and suggestions, time, cost and budget helpers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.errors import InvalidInput
from core.planner import (
    GPU_TYPES,
    MOE_UTILISATION_FACTOR,
    PACKING_EFFICIENCY,
    TokenStats,
    TrainerFacts,
    check_budget,
    describe,
    device_bytes,
    estimate_cost,
    estimate_memory,
    estimate_time,
    execution_timeout_ms,
    fit_verdicts,
    oom_suggestion,
    plan,
    rate_per_second,
    token_stats_from_report,
    training_time_limit_s,
    verdict_for,
)
from tests.planner.conftest import GIB, make_spec
from trainer.shared import arch

Q7 = "Qwen/Qwen2.5-7B-Instruct"


def _apply(spec, suggested: dict[str, Any]):
    training = {k: v for k, v in suggested.items() if k in type(spec.training).model_fields}
    lora = {k: v for k, v in suggested.items() if k in type(spec.lora).model_fields}
    return spec.model_copy(
        update={
            "quantization": suggested.get("quantization", spec.quantization),
            "training": spec.training.model_copy(update=training),
            "lora": spec.lora.model_copy(update=lora),
        }
    )


def test_the_breakdown_adds_up_and_names_every_term() -> None:
    mem = estimate_memory(make_spec(Q7), describe(Q7))
    keys = [t.key for t in mem.terms]
    assert len(keys) == len(set(keys))
    assert {
        "base_weights",
        "embeddings",
        "lora_weights",
        "lora_grads",
        "optimizer",
        "activations",
        "cuda_context",
        "headroom",
    } <= set(keys)
    assert mem.total_bytes == sum(t.bytes for t in mem.terms)
    assert all(t.bytes >= 0 and t.label and t.detail for t in mem.terms)
    d = json.loads(json.dumps(mem.to_dict()))
    assert d["total_gib"] == pytest.approx(mem.total_bytes / GIB, abs=0.01)


def test_base_weights_follow_the_quantisation() -> None:
    facts = describe(Q7)
    by = {
        q: estimate_memory(make_spec(Q7, q), facts).term("base_weights")
        for q in ("nf4", "int8", "none")
    }
    assert by["nf4"] < by["int8"] < by["none"]
    assert by["nf4"] == pytest.approx(facts.params.linear * arch.NF4_BITS / 8, rel=1e-6)
    assert by["none"] == facts.params.linear * 2


def test_lora_state_is_sixteen_bytes_a_parameter_by_default() -> None:
    mem = estimate_memory(make_spec(Q7, lora={"r": 32}), describe(Q7))
    state = mem.term("lora_weights") + mem.term("lora_grads") + mem.term("optimizer")
    assert state == 16 * mem.lora_params
    assert (
        mem.lora_params
        == 2 * estimate_memory(make_spec(Q7, lora={"r": 16}), describe(Q7)).lora_params
    )


def test_activations_grow_with_tokens_and_shrink_with_checkpointing() -> None:
    facts = describe(Q7)
    short = estimate_memory(make_spec(Q7, max_length=1024, micro_batch_size=1), facts)
    long = estimate_memory(make_spec(Q7, max_length=4096, micro_batch_size=1), facts)
    assert long.term("activations") == pytest.approx(4 * short.term("activations"), rel=0.01)
    no_ckpt = estimate_memory(
        make_spec(Q7, max_length=4096, micro_batch_size=1, gradient_checkpointing=False), facts
    )
    assert no_ckpt.term("activations") > 5 * long.term("activations")


def test_full_logits_cost_twelve_bytes_a_logit_and_chunking_avoids_it() -> None:
    facts = describe(Q7)
    spec = make_spec(Q7, micro_batch_size=4, max_length=4096)
    full = estimate_memory(spec, facts, TrainerFacts(loss_chunk_elements=None))
    chunked = estimate_memory(spec, facts)
    lm_head_copy = facts.vocab * facts.hidden * 2  # bf16 copy of the fp32 head
    assert full.peak_moment == "loss"
    assert full.term("logits") == 12 * 4 * 4096 * facts.vocab + lm_head_copy
    assert chunked.total_bytes < full.total_bytes - 10 * GIB


def test_moe_weights_count_every_expert() -> None:
    facts = describe("Qwen/Qwen3-30B-A3B")
    mem = estimate_memory(make_spec(facts.id, "none"), facts)
    assert mem.term("routed_experts") == facts.params.routed_experts * 2
    assert "every expert is resident" in next(
        t.detail for t in mem.terms if t.key == "routed_experts"
    )


@pytest.mark.parametrize(
    ("model", "quant", "training", "gpu"),
    [
        ("Qwen/Qwen2.5-72B-Instruct", "none", {}, "H100_80GB_SXM"),
        (
            "Qwen/Qwen2.5-32B-Instruct",
            "nf4",
            {"micro_batch_size": 8, "max_length": 8192, "gradient_checkpointing": False},
            "A40_48GB",
        ),
        ("Qwen/Qwen3-8B", "none", {"micro_batch_size": 16, "max_length": 4096}, "A40_48GB"),
    ],
)
def test_a_suggestion_is_given_where_it_does_not_fit_and_it_makes_it_fit(
    model: str, quant: str, training: dict, gpu: str
) -> None:
    facts = describe(model)
    spec = make_spec(model, quant, **training)
    v = next(x for x in fit_verdicts(spec, facts) if x.gpu == gpu)
    assert v.verdict == "does_not_fit" and v.suggestion and v.suggested
    if "gpu" in v.suggested:
        other = GPU_TYPES[v.suggested["gpu"]]
        assert verdict_for(estimate_memory(spec, facts).total_bytes, other) == "fits"
    else:
        lighter = estimate_memory(_apply(spec, v.suggested), facts)
        assert verdict_for(lighter.total_bytes, GPU_TYPES[gpu]) == "fits"


def test_verdict_thresholds_use_the_driver_reported_memory() -> None:
    h100 = GPU_TYPES["H100_80GB_SXM"]
    have = device_bytes(h100)
    assert have == 81559 * 2**20
    assert verdict_for(int(0.89 * have), h100) == "fits"
    assert verdict_for(int(0.95 * have), h100) == "tight"
    assert verdict_for(have + 1, h100) == "does_not_fit"


def test_time_follows_the_flops_formula_and_its_documented_utilisation() -> None:
    facts = describe(Q7)
    spec = make_spec(Q7, max_length=1024, epochs=2)
    tokens = TokenStats(rows=10_000, mean_tokens=500)
    t = estimate_time(spec, facts, "H100_80GB_SXM", tokens)
    assert t.training_tokens == 10_000 * 500 * 2
    assert t.processed_tokens == int(t.training_tokens / PACKING_EFFICIENCY)
    assert t.utilisation == 0.30  # nf4 default
    rate = GPU_TYPES["H100_80GB_SXM"].bf16_tflops * 1e12 * t.utilisation
    assert t.seconds == pytest.approx(t.processed_tokens * t.flops_per_token / rate)
    matmul = facts.params.total - facts.params.embedding
    assert t.flops_per_token > 6 * matmul * 4 / 3  # checkpointing recomputes the forward
    double = estimate_time(spec, facts, "H100_80GB_SXM", TokenStats(rows=20_000, mean_tokens=500))
    assert double.seconds == pytest.approx(2 * t.seconds)
    assert t.seconds_low < t.seconds < t.seconds_high
    moe = describe("Qwen/Qwen3-30B-A3B")
    assert estimate_time(make_spec(moe.id), moe, "A100_80GB", tokens).utilisation == pytest.approx(
        0.30 * MOE_UTILISATION_FACTOR
    )


def test_measured_throughput_of_finished_jobs_replaces_the_formula() -> None:
    facts = describe(Q7)
    tokens = TokenStats(rows=1000, mean_tokens=1000)
    t = estimate_time(make_spec(Q7), facts, "A100_80GB", tokens, [2000.0, 3000.0, 2500.0])
    assert t.tokens_per_s == 2500.0 and t.utilisation is None
    assert t.seconds == pytest.approx(1_000_000 / 2500)
    assert t.seconds_low <= 1_000_000 / 3000 and t.seconds_high >= 1_000_000 / 2000


def test_cost_is_time_plus_cold_start_at_the_serverless_rate() -> None:
    facts = describe(Q7)
    t = estimate_time(make_spec(Q7), facts, "A100_80GB", TokenStats(rows=5000, mean_tokens=800))
    c = estimate_cost(t)
    rate = rate_per_second("A100_80GB")
    assert c.usd_low == pytest.approx((t.seconds_low + t.cold_start_low_s) * rate)
    assert c.usd_high == pytest.approx((t.seconds_high + t.cold_start_high_s) * rate)
    assert c.usd_low < c.usd_high
    dearer = estimate_cost(t, price_overrides={"A100_80GB": 10.0})
    assert dearer.usd_high == pytest.approx(c.billed_s_high * 10.0 / 3600)


def test_budget_check_levels() -> None:
    facts = describe(Q7)
    c = estimate_cost(
        estimate_time(make_spec(Q7), facts, "A100_80GB", TokenStats(rows=5000, mean_tokens=800))
    )
    assert check_budget(c, c.usd_high * 2).level == "within"
    may = check_budget(c, (c.usd_low + c.usd_high) / 2)
    assert may.ok and may.level == "may_exceed"
    over = check_budget(c, c.usd_low / 2)
    assert not over.ok and over.level == "exceeds" and "budget" in over.message


def test_execution_timeout_is_what_the_budget_buys_capped_by_the_estimate() -> None:
    facts = describe(Q7)
    t = estimate_time(make_spec(Q7), facts, "A100_80GB", TokenStats(rows=50_000, mean_tokens=800))
    rate = rate_per_second("A100_80GB")
    small = execution_timeout_ms(t, budget_usd=2.0, rate_per_s=rate)
    assert small == int(max(600, 2.0 / rate) * 1000)
    huge = execution_timeout_ms(t, budget_usd=10_000.0, rate_per_s=rate)
    assert huge == int((3 * (t.seconds_high + t.cold_start_high_s) + 1800) * 1000)
    assert execution_timeout_ms(None, 0.01, rate) == 600_000  # never below 10 minutes
    limit = training_time_limit_s(small, t)
    assert limit < small / 1000 - t.cold_start_high_s
    with pytest.raises(InvalidInput):
        execution_timeout_ms(t, 0, rate)


def test_plan_recommends_the_cheapest_gpu_that_fits_and_serialises() -> None:
    facts = describe(Q7)
    p = plan(make_spec(Q7), facts, tokens=TokenStats(rows=2000, mean_tokens=600))
    fitting = {v.gpu for v in p.verdicts if v.verdict == "fits"}
    costs = {c.gpu: c.usd_high for c in p.costs}
    assert p.recommended_gpu == min(fitting, key=costs.__getitem__)
    d = json.loads(json.dumps(p.to_dict(), default=str))
    assert d["memory"]["terms"][0]["bytes"] > 0 and len(d["verdicts"]) == len(GPU_TYPES)


def test_oom_suggestion_walks_the_ladder() -> None:
    spec = make_spec(
        Q7, "none", micro_batch_size=4, grad_accum=2, gradient_checkpointing=False
    ).model_dump(mode="json")
    step1 = oom_suggestion(spec)
    assert step1["training"]["gradient_checkpointing"] and step1["quantization"] == "none"
    step2 = oom_suggestion({**spec, **step1})
    assert step2["quantization"] == "nf4"
    step3 = oom_suggestion({**spec, **step2})
    assert (step3["training"]["micro_batch_size"], step3["training"]["grad_accum"]) == (2, 4)
    last = {
        "quantization": "nf4",
        "training": {"micro_batch_size": 1, "max_length": 256, "gradient_checkpointing": True},
    }
    assert oom_suggestion(last) is None


def test_token_stats_come_from_a_dataset_report() -> None:
    report = {
        "tokens": {"per_row": {"mean": 321.5}, "loss_share": 0.4},
        "split": {"train_rows": 900},
    }
    stats = token_stats_from_report(report, valid_rows=1000)
    assert (stats.rows, stats.mean_tokens, stats.loss_fraction) == (900, 321.5, 0.4)
    assert stats.shared_tokens == 0.0
    assert token_stats_from_report({"tokens": {"available": False}}, 1000) is None
    with pytest.raises(InvalidInput):
        TokenStats(rows=0, mean_tokens=10)


def test_a_preference_pair_counts_its_prompt_once_where_the_trainer_shares_it() -> None:
    """DPO on a dense model: chosen and rejected share the prompt's tokens, so a pair costs
    prompt + both answers; on a hybrid model (linear-attention layers) both whole sides."""
    report = {
        "tokens": {
            "per_row": {"mean": 500.0},
            "preference": {"prompt_tokens": {"min": 10, "median": 300.0, "max": 900}},
        },
        "split": {"train_rows": 1000},
    }
    stats = token_stats_from_report(report, valid_rows=1000)
    assert stats.shared_tokens == 300.0
    dense, hybrid = describe(Q7), describe("Qwen/Qwen3-Next-80B-A3B-Instruct")

    def spec(model: str, method: str, **training: Any) -> Any:
        s = make_spec(model, max_length=1024, epochs=1, **training)
        return s.model_copy(update={"method": method})

    for method in ("dpo", "orpo"):
        t = estimate_time(spec(Q7, method), dense, "H100_80GB_SXM", stats)
        assert t.training_tokens == 1000 * 700
        t = estimate_time(spec(hybrid.id, method), hybrid, "H100_80GB_SXM", stats)
        assert t.training_tokens == 1000 * 1000
    padded = spec(Q7, "dpo", packing=False)
    assert estimate_time(padded, dense, "H100_80GB_SXM", stats).training_tokens == 1000 * 1000
    sft = make_spec(Q7, max_length=1024, epochs=1)
    assert estimate_time(sft, dense, "H100_80GB_SXM", stats).training_tokens == 1000 * 500
