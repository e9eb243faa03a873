"""The catalog: facts derived from published configs equal what transformers builds."""

from __future__ import annotations

import json
import re

import pytest

from core.planner import (
    CATALOG,
    TINY_DIR_NAME,
    TINY_ID,
    ModelNotDescribable,
    catalog_ids,
    describe,
    weights,
)
from tests.planner.conftest import meta_model


@pytest.mark.parametrize("model_id", list(CATALOG))
def test_parameters_equal_the_architecture_built_on_the_meta_device(model_id: str) -> None:
    facts = describe(model_id)
    model = meta_model(facts.config)
    built = {n: tuple(p.shape) for n, p in model.named_parameters()}
    derived = {w.name: w.shape for w in weights(facts)}
    assert derived == built
    assert facts.params.total == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("model_id", list(CATALOG))
def test_total_parameters_match_the_model_card(model_id: str) -> None:
    """The transcribed config gives the size the model card states (within 2%)."""
    facts = describe(model_id)
    card_billions = float(re.match(r"[\d.]+", facts.card_size).group())
    assert facts.params.total / 1e9 == pytest.approx(card_billions, rel=0.02)


def test_moe_models_count_every_expert_and_the_active_share() -> None:
    moe = describe("Qwen/Qwen3-30B-A3B")
    assert moe.params.routed_experts == 48 * 128 * 3 * 2048 * 768
    assert moe.params.active / 1e9 == pytest.approx(3.3, rel=0.03)  # card: 3.3B activated
    nxt = describe("Qwen/Qwen3-Next-80B-A3B-Instruct")
    assert nxt.layer_types.count("full_attention") == 12
    assert nxt.layer_types.count("linear_attention") == 36
    assert nxt.layer_types[3] == "full_attention" and nxt.layer_types[0] == "linear_attention"
    assert (nxt.experts, nxt.experts_per_token, nxt.shared_expert_intermediate) == (512, 10, 512)
    assert nxt.params.routed_experts / nxt.params.total > 0.96  # experts are ~97% of it
    assert nxt.fused_experts and not describe("Qwen/Qwen3-8B").is_moe


def test_dense_model_facts_are_what_its_config_says() -> None:
    f = describe("qwen/qwen2.5-7b-instruct")  # ids are case-insensitive
    assert f.id == "Qwen/Qwen2.5-7B-Instruct"
    assert (f.layers, f.hidden, f.heads, f.kv_heads, f.head_dim) == (28, 3584, 28, 4, 128)
    assert f.vocab == 152064 and not f.tied_embeddings and f.attention_bias
    assert f.params.active == f.params.total
    assert f.licence == "apache-2.0" and f.chat_template == "chatml"
    assert "huggingface.co/Qwen/Qwen2.5-7B-Instruct" in f.source
    d = f.to_dict()
    json.dumps(d)
    assert d["params_total"] == f.params.total


def test_a_model_folder_is_described_from_its_config(tmp_path) -> None:
    cfg = dict(describe("Qwen/Qwen3-0.6B").config, num_hidden_layers=2)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    f = describe(str(tmp_path))
    assert f.layers == 2 and f.model_type == "qwen3"
    assert f.params.total == sum(p.numel() for p in meta_model(cfg).parameters())


def test_the_tiny_demo_model_is_described_from_its_built_folder(tmp_path) -> None:
    from trainer.shared.tiny import build_tiny_chat_model

    models = tmp_path / "models"
    with pytest.raises(ModelNotDescribable, match="python -m trainer.shared.tiny"):
        describe(TINY_ID, local_models_dir=models)
    build_tiny_chat_model(models / TINY_DIR_NAME, seed=0)
    f = describe(TINY_ID, local_models_dir=models)
    assert (f.hidden, f.layers, f.model_type) == (64, 2, "qwen2")
    cfg = json.loads((models / TINY_DIR_NAME / "config.json").read_text())
    assert f.params.total == sum(p.numel() for p in meta_model(cfg).parameters())
    assert TINY_ID in catalog_ids()


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({"model_type": "gpt_bigcode", "hidden_size": 64}, "does not know the architecture"),
        (
            {
                "model_type": "qwen2",
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "vocab_size": 100,
            },
            "no 'hidden_size'",
        ),
        ({"model_type": "qwen2_5_vl", "text_config": {"hidden_size": 64}}, "multimodal"),
    ],
)
def test_models_it_cannot_size_get_a_reason(tmp_path, config, reason) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelNotDescribable, match=reason):
        describe(str(tmp_path))


def test_unknown_hub_ids_and_empty_folders_say_why(tmp_path) -> None:
    with pytest.raises(ModelNotDescribable, match="not in BrightRun's catalog"):
        describe("someone/never-heard-of-it")
    with pytest.raises(ModelNotDescribable, match="no config.json"):
        describe(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelNotDescribable, match="not valid JSON"):
        describe(str(tmp_path))
