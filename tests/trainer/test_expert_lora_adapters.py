# ruff: noqa: F811  (pytest fixtures imported from another test module are used as arguments)
"""Adapters with LoRA on the routed experts (`lora_on_experts`) on tiny Qwen3-Next: the merge
action folds them into the fused expert tensors; serving refuses them with a typed error.

The adapter is made as the trainer makes one: NF4 base, PEFT LoRA on attention and the
shared expert, `add_expert_lora` on the routed experts, saved by PEFT. Its B matrices are
random (non-zero), so the expert LoRA changes the logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.trainer.test_qwen3_next import TINY, _load_nf4, _probe_ids, tiny_next  # noqa: F401


@pytest.fixture(scope="module")
def expert_adapter(tiny_next: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    from peft import LoraConfig, get_peft_model

    from trainer.moe import add_expert_lora, peft_module_targets

    model, _ = _load_nf4(tiny_next, torch.float32)
    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "gate_proj", "up_proj", "down_proj"],
        init_lora_weights=False,
        base_model_name_or_path=str(tiny_next),
    )
    with peft_module_targets():
        model = get_peft_model(model, lora)
    add_expert_lora(model, r=4, alpha=8)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".expert_lora.lora_" in name and "_B." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    out = tmp_path_factory.mktemp("expert_adapter") / "adapter"
    model.peft_config["default"].base_model_name_or_path = str(tiny_next)
    model.save_pretrained(out)
    return out


def _base(tiny_next: Path):  # noqa: F811
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_next, dtype=torch.float32).eval()


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=_probe_ids(model.config.vocab_size), use_cache=False).logits


def test_the_adapter_is_recognised_by_its_expert_weights(
    expert_adapter: Path, tiny_next: Path
) -> None:  # noqa: F811
    from trainer.expert_lora import read_expert_lora

    info = read_expert_lora(expert_adapter)
    assert info is not None and info.r == 4 and info.scaling == 2.0
    assert info.modules == tuple(
        f"model.layers.{i}.mlp.experts" for i in range(TINY["num_hidden_layers"])
    )
    # An adapter without expert LoRA is not mistaken for one.
    from peft import LoraConfig, get_peft_model

    plain = tiny_next.parent / "plain_adapter"
    get_peft_model(_base(tiny_next), LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(
        plain
    )
    assert read_expert_lora(plain) is None


def test_merge_folds_the_expert_lora_into_the_fused_experts(
    expert_adapter: Path,
    tiny_next: Path,
    tmp_path: Path,
    worker_env,  # noqa: F811
) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from tests.trainer.conftest import run
    from trainer.expert_lora import LoraFusedExperts
    from trainer.model import load_adapter

    # base + adapter, unmerged: every expert's LoRA applied in the forward, as trained.
    with_adapter = load_adapter(_base(tiny_next), expert_adapter, expert_lora=True).eval()
    wrapped = [m for m in with_adapter.modules() if isinstance(m, LoraFusedExperts)]
    assert len(wrapped) == TINY["num_hidden_layers"]
    saved = load_file(str(expert_adapter / "adapter_model.safetensors"))
    got = wrapped[1].expert_lora.lora_down_proj_B["default"]
    torch.testing.assert_close(
        got, saved["base_model.model.model.layers.1.mlp.experts.expert_lora.lora_down_proj_B"]
    )
    want = _logits(with_adapter)
    # The control: the expert LoRA matters (turning it off moves the logits).
    for m in wrapped:
        m.expert_lora.enable_adapters(False)
    assert (_logits(with_adapter) - want).abs().max() > 1e-3

    out = tmp_path / "merged"
    events = run(
        {
            "job_id": "merge-experts",
            "action": "merge",
            "model": {"name_or_path": str(tiny_next)},
            "quantization": "none",
            "device": "cpu",
            "output": {"adapter_name": "merged", "local_dir": str(out)},
            "merge": {"adapter_path": str(expert_adapter), "dtype": "float32"},
        },
        worker_env,
    )
    assert events[-1]["type"] == "completed", events[-1]
    started = next(e for e in events if e["type"] == "started")
    assert started["data"]["adapter"]["expert_lora_modules"] == TINY["num_hidden_layers"]

    # Plain experts again, saved in the checkpoint's own per-expert layout (what vLLM
    # loads), and no LoRA tensor anywhere in the saved model.
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert "model.layers.0.mlp.experts.7.down_proj.weight" in keys
    assert not [k for k in keys if "lora" in k]
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(merged.model.layers[0].mlp.experts).__name__ == "Qwen3NextExperts"
    # Stated tolerance: float32, the LoRA products added into the weights (round-off only).
    torch.testing.assert_close(_logits(merged), want, rtol=1e-4, atol=1e-4)


def test_serving_refuses_the_adapter_and_keeps_serving_the_others(
    expert_adapter: Path,
    tiny_next: Path,
    tmp_path: Path,  # noqa: F811
) -> None:
    from peft import LoraConfig, PeftModel, get_peft_model

    from local.inference import Engine, ServerError
    from trainer.expert_lora import ExpertLoraNeedsMerge
    from trainer.model import load_adapter
    from trainer.moe import peft_module_targets

    base = _base(tiny_next)
    with pytest.raises(ExpertLoraNeedsMerge, match=r"merge it \(`brightrun adapters merge REF`\)"):
        load_adapter(base, expert_adapter)
    assert not isinstance(base, PeftModel) and not [
        n for n, _ in base.named_parameters() if "lora" in n
    ]

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], init_lora_weights=False)
    with peft_module_targets():
        other = get_peft_model(_base(tiny_next), lora).eval()
    other.peft_config["default"].base_model_name_or_path = str(tiny_next)
    other.save_pretrained(tmp_path / "other")
    other_logits = _logits(other)

    engine = Engine(base=str(tiny_next), served_name=str(tiny_next), device="cpu")
    base_logits = _logits(engine.model)
    engine.load_adapter("other", str(tmp_path / "other"))
    with pytest.raises(ServerError) as err:
        engine.load_adapter("experts", str(expert_adapter))
    assert err.value.status == 400 and err.value.err_type == "ExpertLoraNeedsMerge"
    assert (
        "vLLM cannot serve it as a LoRA" in err.value.message
        and "brightrun adapters merge" in err.value.message
    )
    assert set(engine.adapters) == {"other"}
    # Per-request switching still works: the other adapter and the base answer as before.
    engine.model.set_adapter(engine.adapters["other"].internal)
    torch.testing.assert_close(_logits(engine.model), other_logits, rtol=1e-5, atol=1e-5)
    with engine.model.disable_adapter():
        torch.testing.assert_close(_logits(engine.model), base_logits, rtol=1e-5, atol=1e-5)
    assert json.loads((expert_adapter / "adapter_config.json").read_text())["peft_type"] == "LORA"
