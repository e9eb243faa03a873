"""Qwen3-Next QLoRA on the CPU: NF4 routed experts, their memory, exact hybrid packing.

A tiny random Qwen3NextConfig (4 layers: 3 Gated DeltaNet + 1 full attention, all MoE with
8 experts and a shared expert) is saved and loaded through `from_pretrained`, exactly as a
real checkpoint, then through the trainer's own loading path (`trainer.model`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

TINY = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    linear_num_key_heads=4,
    linear_num_value_heads=16,
    linear_key_head_dim=16,
    linear_value_head_dim=16,
    moe_intermediate_size=64,
    shared_expert_intermediate_size=64,
    num_experts=8,
    num_experts_per_tok=2,
    layer_types=["linear_attention"] * 3 + ["full_attention"],
    max_position_embeddings=1024,
    initializer_range=0.05,
)

GIB = 1024**3


@pytest.fixture(scope="module")
def tiny_next(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random tiny Qwen3-Next + the trained tiny chat tokenizer, saved like a checkpoint."""
    from transformers import AutoTokenizer, Qwen3NextConfig, Qwen3NextForCausalLM

    from trainer.shared.tiny import build_tiny_chat_model

    root = tmp_path_factory.mktemp("qwen3_next")
    tok = AutoTokenizer.from_pretrained(
        build_tiny_chat_model(root / "tok", hidden_size=32, num_layers=1)
    )
    config = Qwen3NextConfig(
        vocab_size=len(tok),
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.pad_token_id,
        **TINY,
    )
    torch.manual_seed(0)
    model = Qwen3NextForCausalLM(config).to(torch.bfloat16)
    out = root / "model"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _load_nf4(model_dir: Path, dtype=torch.float32):
    """from_pretrained in NF4 (bitsandbytes) + the architecture's post_load hook."""
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from trainer import arch_hooks
    from trainer.shared import arch

    caps = arch.capabilities("qwen3_next")
    model = AutoModelForCausalLM.from_pretrained(
        model_dir,
        dtype=dtype,
        quantization_config=BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
            llm_int8_skip_modules=["lm_head", *caps.keep_full_precision],
        ),
    )
    model.config.use_cache = False
    facts = arch_hooks.post_load(
        model, SimpleNamespace(quantization="nf4"), arch.capabilities(model.config)
    )
    return model, facts


# ---------------------------------------------------------------- memory


def test_experts_load_in_nf4_at_4_13_bits_and_match_bitsandbytes(tiny_next: Path) -> None:
    import bitsandbytes.functional as bnbF
    from transformers import AutoModelForCausalLM

    from trainer.moe import NF4Experts, memory_report
    from trainer.shared.arch import NF4_BITS, capabilities

    assert capabilities("qwen3_next").experts_quantized
    bf16 = AutoModelForCausalLM.from_pretrained(tiny_next, dtype=torch.bfloat16)
    original = bf16.model.layers[1].mlp.experts.down_proj.detach()
    model, facts = _load_nf4(tiny_next, torch.bfloat16)

    experts = [m for m in model.modules() if isinstance(m, NF4Experts)]
    assert len(experts) == TINY["num_hidden_layers"]
    stayed = [n for n, p in model.named_parameters() if n.endswith(("gate_up_proj", "down_proj"))]
    assert not stayed, f"fused expert tensors stayed 16-bit: {stayed}"
    report = memory_report(model)
    bits = report["routed_experts"]["bits_per_param"]
    assert bits == pytest.approx(NF4_BITS, rel=0.10)
    assert facts["experts_quantized"] and facts["expert_bits_per_param"] == pytest.approx(
        bits, rel=0.01
    )

    # Expert by expert, the storage is what bitsandbytes' own quantize_4bit gives.
    nf4 = model.model.layers[1].mlp.experts
    for e in (0, 5):
        packed, qs = bnbF.quantize_4bit(
            original[e], blocksize=64, compress_statistics=True, quant_type="nf4"
        )
        assert torch.equal(packed.flatten(), nf4.down_proj_nf4[e])
        assert torch.equal(qs.absmax, nf4.down_proj_absmax[e])
        assert torch.equal(bnbF.dequantize_4bit(packed, qs), nf4.dequantize("down_proj", e))


def test_whole_model_footprint_is_what_parameter_counts_and_bits_predict(tiny_next: Path) -> None:
    from transformers import AutoModelForCausalLM

    from trainer.moe import memory_report, predict_footprint
    from trainer.shared.arch import NF4_BITS, UNQUANTIZED_BITS
    from trainer.shared.moe_facts import routed_expert_nf4_bytes, routed_expert_params

    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(
            AutoModelForCausalLM.from_pretrained(tiny_next, device_map="meta").config,
            dtype=torch.bfloat16,
        )
    predicted = predict_footprint(meta)
    model, _ = _load_nf4(tiny_next, torch.bfloat16)
    measured = memory_report(model)

    # Every group, byte for byte, as predicted from the shapes alone.
    for group in ("routed_experts", "linear_nf4", "embeddings", "lm_head", "router", "total"):
        assert measured[group]["params"] == predicted[group]["params"], group
        assert measured[group]["bytes"] == pytest.approx(predicted[group]["bytes"], rel=0.01), group
    # The planner's arithmetic (params x bits) lands within 10% of what is stored.
    quantized = measured["routed_experts"]["params"] + measured["linear_nf4"]["params"]
    rest = measured["total"]["params"] - quantized
    simple = (quantized * NF4_BITS + rest * UNQUANTIZED_BITS) / 8
    assert measured["total"]["bytes"] == pytest.approx(simple, rel=0.10)
    # The torch-free facts agree with the module.
    config = model.config
    assert routed_expert_params(config) == measured["routed_experts"]["params"]
    assert routed_expert_nf4_bytes(config) == measured["routed_experts"]["bytes"]
    # The planner's weight terms for the same model (as loaded, before fp32 upcasting).
    assert measured["total"]["bytes"] == pytest.approx(_planner_weight_bytes(tiny_next), rel=0.10)


def _planner_weight_bytes(model_dir: Path) -> int:
    import json

    from core.planner import TrainerFacts, estimate_memory, facts_from_config
    from trainer.shared.spec import JobSpec

    facts = facts_from_config(
        json.loads((model_dir / "config.json").read_text()), id="tiny-qwen3-next"
    )
    spec = JobSpec.model_validate(
        {
            "job_id": "plan",
            "model": {"name_or_path": str(model_dir)},
            "data": {"train_path": "rows.jsonl"},
            "quantization": "nf4",
            "output": {"adapter_name": "plan"},
        }
    )
    est = estimate_memory(spec, facts, TrainerFacts(upcast_unquantized_fp32=False))
    assert est.experts_quantized
    return sum(
        est.term(k) for k in ("base_weights", "routed_experts", "embeddings", "other_weights")
    )


def test_real_size_qwen3_next_fits_80gb_only_with_quantized_experts() -> None:
    from transformers import Qwen3NextConfig

    from trainer.moe import predict_config_footprint
    from trainer.shared.moe_facts import (
        QWEN3_NEXT_80B_A3B,
        expert_lora_params,
        routed_expert_params,
    )

    config = Qwen3NextConfig(**{k: v for k, v in QWEN3_NEXT_80B_A3B.items() if k != "model_type"})
    fp = predict_config_footprint(config)
    total_params = fp["total"]["params"]
    assert 79e9 < total_params < 82e9  # "80B"
    assert routed_expert_params(config) == fp["routed_experts"]["params"]
    assert fp["routed_experts"]["params"] / total_params > 0.95
    assert fp["total"]["bytes"] < 45 * GIB  # all weights, experts in NF4
    experts_bf16 = (
        fp["total"]["bytes"] + fp["routed_experts"]["params"] * 2 - fp["routed_experts"]["bytes"]
    )
    assert experts_bf16 > 140 * GIB  # what a stock 4-bit load needs: does not fit 80 GB
    assert expert_lora_params(config, 16) == 48 * 512 * 16 * (2048 + 1024 + 512 + 2048)


def test_experts_quantised_while_loading_equal_those_quantised_after(tiny_next: Path) -> None:
    """The loader path that never holds all experts in bf16 stores exactly the same NF4."""
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM

    from trainer import arch_hooks
    from trainer.model import build_quantization_config
    from trainer.shared import arch

    caps = arch.capabilities("qwen3_next")
    spec = SimpleNamespace(quantization="nf4")
    qconfig = build_quantization_config(spec.quantization, torch.bfloat16, caps.keep_full_precision)
    with arch_hooks.load_context(spec, caps, torch.bfloat16):
        streamed = AutoModelForCausalLM.from_pretrained(
            tiny_next, dtype=torch.bfloat16, quantization_config=qconfig
        )
    facts = arch_hooks.post_load(streamed, spec, caps)
    assert facts["experts_quantized_while_loading"] == TINY["num_hidden_layers"]
    after, _ = _load_nf4(tiny_next, torch.bfloat16)
    for (name, a), (_, b) in zip(streamed.named_buffers(), after.named_buffers(), strict=True):
        if "experts" in name:
            assert torch.equal(a, b), name
    ids = torch.randint(
        0, streamed.config.vocab_size, (1, 20), generator=torch.Generator().manual_seed(4)
    )
    streamed.train(), after.train()
    with torch.no_grad():
        assert torch.equal(
            streamed(input_ids=ids, use_cache=False).logits,
            after(input_ids=ids, use_cache=False).logits,
        )
    # the architecture's own experts class is back once loading is done
    fresh = AutoModelForCausalLM.from_config(streamed.config)
    assert type(fresh.model.layers[0].mlp.experts).__name__ == "Qwen3NextExperts"


# ---------------------------------------------------------------- correctness


def test_quantized_experts_forward_matches_the_dequantized_reference(tiny_next: Path) -> None:
    from transformers import AutoModelForCausalLM

    from trainer.moe import NF4Experts

    model, _ = _load_nf4(tiny_next, torch.bfloat16)
    nf4 = model.model.layers[2].mlp.experts
    assert isinstance(nf4, NF4Experts)
    reference = AutoModelForCausalLM.from_pretrained(tiny_next, dtype=torch.bfloat16)
    ref = reference.model.layers[2].mlp.experts
    with torch.no_grad():
        ref.gate_up_proj.copy_(nf4.dequantize("gate_up_proj"))
        ref.down_proj.copy_(nf4.dequantize("down_proj"))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(48, TINY["hidden_size"], generator=g).to(torch.bfloat16)
    top = torch.stack(
        [torch.randperm(6, generator=g)[:2] for _ in range(48)]
    )  # experts 6, 7 unused
    weights = torch.rand(48, 2, generator=g).to(torch.bfloat16)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y, y_ref = nf4(x1, top, weights), ref(x2, top, weights)
    # Stated tolerance: bf16 rounding (the CPU kernel is dequantise-then-matmul, bit-identical).
    torch.testing.assert_close(y, y_ref, rtol=1.6e-2, atol=1e-3)
    y.float().square().sum().backward()
    y_ref.float().square().sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1.6e-2, atol=1e-3)

    # The whole model: NF4 experts vs the same model with those experts dequantised.
    for layer, ref_layer in zip(model.model.layers, reference.model.layers, strict=True):
        with torch.no_grad():
            ref_layer.mlp.experts.gate_up_proj.copy_(layer.mlp.experts.dequantize("gate_up_proj"))
            ref_layer.mlp.experts.down_proj.copy_(layer.mlp.experts.dequantize("down_proj"))
        layer.mlp.experts, ref_layer.mlp.experts = ref_layer.mlp.experts, layer.mlp.experts
    ids = torch.randint(0, model.config.vocab_size, (2, 24), generator=g)
    with torch.no_grad():
        dequantized = model(input_ids=ids).logits
        for layer, ref_layer in zip(model.model.layers, reference.model.layers, strict=True):
            layer.mlp.experts = ref_layer.mlp.experts
        quantized = model(input_ids=ids).logits
    torch.testing.assert_close(quantized, dequantized, rtol=1.6e-2, atol=1e-2)


def _per_sample_losses(model, samples, *, packed: bool, boundaries: str = "cu") -> list[float]:
    """Next-token loss of each sample, from one packed row or from each sample alone.

    In training mode, as the trainer runs it (bitsandbytes' CPU inference kernel, used in
    eval mode, computes in bf16 whatever the compute dtype).
    """
    import torch.nn.functional as F

    model.train()
    losses = []
    with torch.no_grad():
        if not packed:
            for s in samples:
                logits = model(input_ids=s[None]).logits[0]
                losses.append(F.cross_entropy(logits[:-1].float(), s[1:]).item())
            return losses
        ids = torch.cat(samples)[None]
        pos = torch.cat([torch.arange(len(s)) for s in samples])[None]
        kw = {}
        if boundaries == "cu":
            cu = torch.tensor([0, *torch.tensor([len(s) for s in samples]).cumsum(0).tolist()])
            kw = dict(cu_seq_lens_q=cu.int(), cu_seq_lens_k=cu.int())
        logits = model(input_ids=ids, position_ids=pos, **kw).logits[0]
        start = 0
        for s in samples:
            part = logits[start : start + len(s)]
            losses.append(F.cross_entropy(part[:-1].float(), s[1:]).item())
            start += len(s)
    return losses


def test_packed_rows_give_each_sample_its_loss_alone(tiny_next: Path) -> None:
    from trainer.kernels import register_attention

    model, facts = _load_nf4(tiny_next, torch.float32)
    assert facts["linear_attention_layers"] == 3
    g = torch.Generator().manual_seed(2)
    samples = [torch.randint(0, model.config.vocab_size, (n,), generator=g) for n in (9, 70, 17, 3)]
    alone = _per_sample_losses(model, samples, packed=False)
    # From position ids alone (sdpa builds the block-diagonal mask from them) ...
    model.config._attn_implementation = "sdpa"
    by_positions = _per_sample_losses(model, samples, packed=True, boundaries="positions")
    # ... and from the varlen boundaries the trainer's packed batches carry.
    model.config._attn_implementation = register_attention()
    by_cu = _per_sample_losses(model, samples, packed=True, boundaries="cu")
    # Stated tolerance: float32 round-off, 1e-5 absolute on a loss of ~7.
    assert by_positions == pytest.approx(alone, abs=1e-5)
    assert by_cu == pytest.approx(alone, abs=1e-5)


def test_without_boundaries_the_linear_attention_leaks_across_samples(tiny_next: Path) -> None:
    """The control for the test above: stock layers carry state from one sample into the next."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_next, dtype=torch.float32)
    model.config.use_cache = False
    g = torch.Generator().manual_seed(2)
    samples = [torch.randint(0, model.config.vocab_size, (n,), generator=g) for n in (9, 70, 17, 3)]
    alone = _per_sample_losses(model, samples, packed=False)
    leaked = _per_sample_losses(model, samples, packed=True, boundaries="positions")
    assert leaked[0] == pytest.approx(alone[0], abs=1e-5)  # the first sample has no predecessor
    assert max(abs(a - b) for a, b in zip(alone[1:], leaked[1:], strict=True)) > 1e-3
    with pytest.raises(ValueError, match="packed sequences"):  # transformers' torch fallback
        _per_sample_losses(model, samples, packed=True, boundaries="cu")


# ---------------------------------------------------------------- QLoRA training


def _state(model, trainable: bool) -> dict[str, torch.Tensor]:
    """Trainable parameters, or everything frozen: parameters and buffers (the NF4 experts)."""
    out = {
        n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad == trainable
    }
    if not trainable:
        out.update({n: b.detach().clone() for n, b in model.named_buffers()})
    return out


def _probe_ids(vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (1, 40), generator=torch.Generator().manual_seed(5))


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    model.train()  # the training-time kernels (no dropout in this model)
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


@pytest.mark.slow
@pytest.mark.parametrize("on_experts", [False, True], ids=["attention+shared", "with_experts"])
def test_qlora_job_trains_only_lora_and_the_adapter_reloads(
    tiny_next: Path, tmp_path: Path, worker_env, on_experts: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trainer's own job (packed rows, assistant-only loss) on NF4 Qwen3-Next."""
    import json
    import time

    from peft import PeftModel

    from tests.trainer.conftest import make_spec, toy_rows, write_jsonl
    from trainer import train as lifecycle
    from trainer.moe import add_expert_lora, peft_module_targets
    from trainer.shared.moe_facts import expert_lora_params
    from trainer.shared.spec import JobSpec

    class Probe:
        def __init__(self) -> None:
            real_setup, real_cleanup = lifecycle.setup, lifecycle.cleanup

            def setup(*args):
                run = real_setup(*args)
                self.before = (_state(run.model, True), _state(run.model, False))
                return run

            def cleanup(run, *args) -> None:
                model = run.model
                self.after = (_state(model, True), _state(model, False))
                self.logits = _logits(model, _probe_ids(model.config.vocab_size))
                real_cleanup(run, *args)

            monkeypatch.setattr(lifecycle, "setup", setup)
            monkeypatch.setattr(lifecycle, "cleanup", cleanup)

        def run(self, spec: JobSpec, env):
            return lifecycle.run_training(spec, env, time.monotonic())

    data = write_jsonl(tmp_path / "toy.jsonl", toy_rows(repeat=2))
    spec = JobSpec.model_validate(
        make_spec(
            tiny_next,
            data,
            quantization="nf4",
            lora={"lora_on_experts": on_experts},
            training={"max_steps": 8, "learning_rate": 5e-3, "max_length": 128, "grad_accum": 1},
            output={"adapter_name": "q3n", "local_dir": str(tmp_path / "out")},
        )
    )
    job = Probe()
    events = list(job.run(spec, worker_env))
    assert events[0].type == "started" and events[-1].type == "completed", events[-1]
    facts = events[0].data["model"]
    assert facts["packing"] == "seq_boundaries" and facts["linear_attention_layers"] == 3
    assert facts["experts_quantized"]
    # quantised as the checkpoint streamed in: no layer's experts were ever all in 16-bit
    assert facts["experts_quantized_while_loading"] == TINY["num_hidden_layers"]
    assert {"in_proj_qkvz", "out_proj", "q_proj", "gate_proj"} <= set(facts["lora_targets"])
    if on_experts:
        config = json.loads((tiny_next / "config.json").read_text())
        assert facts["expert_lora_params"] == expert_lora_params(config, 8)
    else:
        assert "expert_lora_params" not in facts
    losses = [e.data["loss"] for e in events if e.type == "metrics"]
    assert sum(losses[-3:]) / 3 < 0.8 * losses[0], losses

    # The frozen base (4-bit linears, NF4 experts, embeddings) is untouched; every LoRA
    # matrix moved: attention, linear attention, shared expert, and experts when asked.
    lora_before, base_before = job.before
    lora_after, base_after = job.after
    assert any("experts.gate_up_proj_nf4" in n for n in base_before)
    for name, value in base_before.items():
        assert torch.equal(value, base_after[name]), name
    assert lora_before.keys() == lora_after.keys()
    for name, value in lora_before.items():
        assert not torch.equal(value, lora_after[name]), name
    for part in ("linear_attn", "self_attn", "shared_expert."):
        assert any(part in n for n in lora_before), part
    assert any(".experts.expert_lora." in n for n in lora_before) is on_experts

    # The delivered adapter loads with PEFT onto a fresh NF4 base and gives the same logits.
    base, _ = _load_nf4(tiny_next, torch.float32)
    if on_experts:
        add_expert_lora(base, r=8, alpha=16)
    with peft_module_targets():
        reloaded = PeftModel.from_pretrained(base, tmp_path / "out")
    got = _logits(reloaded, _probe_ids(base.config.vocab_size))
    # Stated tolerance: float32, same kernels; only summation order may differ.
    torch.testing.assert_close(got, job.logits, rtol=1e-4, atol=1e-4)


def test_random_nf4_build_from_meta_stores_what_a_load_stores(tiny_next: Path) -> None:
    """The benchmark's meta-init path: same groups and bytes as from_pretrained + post_load."""
    from transformers import AutoConfig

    from trainer.moe import build_random_nf4_model, memory_report

    config = AutoConfig.from_pretrained(tiny_next)
    built = build_random_nf4_model(config, "cpu", seed=0)
    loaded, _ = _load_nf4(tiny_next, torch.bfloat16)
    got, want = memory_report(built), memory_report(loaded)
    for group in ("routed_experts", "linear_nf4", "embeddings", "lm_head", "total"):
        assert got[group]["params"] == want[group]["params"], group
        assert got[group]["bytes"] == pytest.approx(want[group]["bytes"], rel=0.01), group
    ids = torch.randint(0, config.vocab_size, (1, 16))
    with torch.no_grad():
        logits = built(input_ids=ids, use_cache=False).logits
    assert torch.isfinite(logits).all()


def test_qwen3_moe_is_one_table_entry_away(tmp_path: Path) -> None:
    """Another fused-expert MoE (Qwen3-30B-A3B's architecture) takes the same path."""
    from transformers import AutoModelForCausalLM, Qwen3MoeConfig

    from trainer import arch_hooks
    from trainer.model import build_quantization_config
    from trainer.moe import NF4Experts
    from trainer.shared import arch

    config = Qwen3MoeConfig(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        moe_intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        num_experts=8,
        num_experts_per_tok=2,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).to(torch.bfloat16).save_pretrained(tmp_path / "m")
    caps = arch.capabilities(config)
    assert caps.fused_experts and caps.experts_quantized and caps.packing == "position_ids"
    spec = type("Spec", (), {"quantization": "nf4"})()
    with arch_hooks.load_context(spec, caps, torch.bfloat16):
        model = AutoModelForCausalLM.from_pretrained(
            tmp_path / "m",
            dtype=torch.bfloat16,
            quantization_config=build_quantization_config(
                spec.quantization, torch.bfloat16, caps.keep_full_precision
            ),
        )
    facts = arch_hooks.post_load(model, spec, caps)
    assert facts["expert_modules"] == 2 and facts["experts_quantized_while_loading"] == 2
    assert all(isinstance(layer.mlp.experts, NF4Experts) for layer in model.model.layers)
    model.train()
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=torch.arange(12)[None], use_cache=False).logits).all()


# ---------------------------------------------------------------- adapters after training


def test_merge_and_inference_keep_the_shared_expert_lora(
    tiny_next: Path, tmp_path: Path, worker_env
) -> None:
    """`trainer.model.load_adapter`, used by the merge action and the local inference server,
    loads a fused-expert model's adapter as training attached it, shared expert included."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from local.inference import Engine
    from tests.trainer.conftest import run
    from trainer.model import load_adapter
    from trainer.moe import peft_module_targets

    def base():
        return AutoModelForCausalLM.from_pretrained(tiny_next, dtype=torch.float32).eval()

    def logits(model) -> torch.Tensor:
        with torch.no_grad():
            return model(input_ids=_probe_ids(model.config.vocab_size), use_cache=False).logits

    def shared_expert_lora(model) -> list[str]:
        return [n for n, _ in model.named_parameters() if "shared_expert." in n and "lora_" in n]

    # An adapter as the trainer saves one: LoRA on attention and on the shared expert's
    # gate/up/down projections (non-zero, so it changes the logits).
    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "gate_proj", "up_proj", "down_proj"],
        init_lora_weights=False,
    )
    with peft_module_targets():
        trained = get_peft_model(base(), lora).eval()
    assert shared_expert_lora(trained)
    adapter = tmp_path / "adapter"
    trained.save_pretrained(adapter)
    want = logits(trained)
    # The control: plain PEFT loading drops the shared expert's LoRA (upstream peft issue).
    plain = PeftModel.from_pretrained(base(), adapter).eval()
    assert not shared_expert_lora(plain) and (logits(plain) - want).abs().max() > 1e-3

    loaded = load_adapter(base(), adapter).eval()
    assert shared_expert_lora(loaded)
    torch.testing.assert_close(logits(loaded), want, rtol=1e-5, atol=1e-5)

    # The merge action: the merged weights give base + adapter.
    out = tmp_path / "merged"
    events = run(
        {
            "job_id": "merge-q3n",
            "action": "merge",
            "model": {"name_or_path": str(tiny_next)},
            "quantization": "none",
            "device": "cpu",
            "output": {"adapter_name": "merged", "local_dir": str(out)},
            "merge": {"adapter_path": str(adapter), "dtype": "float32"},
        },
        worker_env,
    )
    assert events[-1]["type"] == "completed", events[-1]
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    # Stated tolerance: float32, the LoRA product added into the weights (round-off only).
    torch.testing.assert_close(logits(merged), want, rtol=1e-4, atol=1e-4)

    # The local inference server, serving the adapter by name.
    engine = Engine(base=str(tiny_next), served_name=str(tiny_next), device="cpu")
    engine.load_adapter("q3n", str(adapter))
    engine.model.set_adapter(engine.adapters["q3n"].internal)
    assert shared_expert_lora(engine.model)
    torch.testing.assert_close(logits(engine.model), want, rtol=1e-5, atol=1e-5)
