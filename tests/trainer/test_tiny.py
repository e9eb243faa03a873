"""The tiny chat model loads through the real from_pretrained path and is reproducible."""

from __future__ import annotations

import hashlib
from pathlib import Path

from trainer.shared.tiny import build_tiny_chat_model


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_seed_same_files_other_seed_other_weights(tiny_model: Path, tmp_path: Path) -> None:
    again = build_tiny_chat_model(tmp_path / "again", seed=0)
    other = build_tiny_chat_model(tmp_path / "other", seed=1)
    assert _digest(again) == _digest(tiny_model)
    assert _digest(other)["model.safetensors"] != _digest(tiny_model)["model.safetensors"]
    assert _digest(other)["tokenizer.json"] == _digest(tiny_model)["tokenizer.json"]


def test_loads_as_a_chat_model(tiny_model: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert model.config.model_type == "qwen2"
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert 900 <= len(tok) <= 2048
    msgs = [
        {"role": "user", "content": "What is 2+2? Ünïcode ✓"},
        {"role": "assistant", "content": "4, surely."},
    ]
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert text == (
        "<|im_start|>user\nWhat is 2+2? Ünïcode ✓<|im_end|>\n"
        "<|im_start|>assistant\n4, surely.<|im_end|>\n"
    )
    enc = tok.apply_chat_template(
        msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assert tok.decode(enc["input_ids"]) == text  # byte-level: any text round-trips
    kept = [i for i, m in zip(enc["input_ids"], enc["assistant_masks"], strict=True) if m]
    assert tok.decode(kept) == "4, surely.<|im_end|>"
    out = model(torch.tensor([enc["input_ids"]]))
    assert out.logits.shape == (1, len(enc["input_ids"]), len(tok))
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
