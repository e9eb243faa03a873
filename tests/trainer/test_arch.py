"""The architecture table: importable without torch, and the facts the planner reads."""

from __future__ import annotations

import subprocess
import sys

import pytest

from trainer.shared.arch import BITS_PER_PARAM, bits_per_param, capabilities, resolve_lora_targets


def test_importing_arch_does_not_import_torch() -> None:
    code = "import sys, trainer.shared.arch; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_dense_qwen_packs_by_position_ids_from_any_way_of_naming_it() -> None:
    from transformers import Qwen2Config

    for x in ("qwen2", "Qwen2ForCausalLM", {"model_type": "qwen2"}, Qwen2Config()):
        caps = capabilities(x)
        assert caps.packing == "position_ids"
        assert "q_proj" in caps.lora_targets and "down_proj" in caps.lora_targets
        assert not caps.fused_experts


def test_unknown_architecture_does_not_pack() -> None:
    caps = capabilities({"model_type": "mystery", "architectures": ["MysteryForCausalLM"]})
    assert caps.packing == "padded"
    assert caps.model_type == "mystery"
    assert resolve_lora_targets(caps, "all-linear", on_experts=False) == "all-linear"


def test_lora_targets_follow_the_spec() -> None:
    caps = capabilities("qwen2")
    assert resolve_lora_targets(caps, ["q_proj"], on_experts=False) == ["q_proj"]
    assert resolve_lora_targets(caps, "all-linear", on_experts=False) == list(caps.lora_targets)


def test_bits_per_parameter() -> None:
    assert BITS_PER_PARAM["nf4"] == pytest.approx(4.127, abs=1e-3)
    assert BITS_PER_PARAM["none"] == 16.0
    assert bits_per_param("int8", in_features=1024) == pytest.approx(8.03125)
    with pytest.raises(ValueError, match="unknown quantization"):
        bits_per_param("fp3")
