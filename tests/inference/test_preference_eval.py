"""Preference accuracy on held-out pairs, through the inference server's prompt scoring
(`/v1/completions` with echo and logprobs): the server's per-pair margins equal the ones
computed directly with transformers + PEFT, for the base and for an adapter."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

PAIRS = [
    {
        "prompt": [{"role": "user", "content": q}],
        "chosen": [{"role": "assistant", "content": c}],
        "rejected": [{"role": "assistant", "content": r}],
    }
    for q, c, r in [
        ("Name a fruit.", "An apple.", "A hammer."),
        ("What is the sky's color?", "Blue on a clear day.", "Seven."),
        ("Say yes.", "Yes.", "No, I will not say it."),
    ]
]


def _direct_margins(tiny_model: Path, adapter: Path | None) -> list[float]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.shared.tokens import answer_token_masks

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter).eval()
    prompts = [p["prompt"] for p in PAIRS]
    sides = [
        answer_token_masks(tok, prompts, [p[k] for p in PAIRS]) for k in ("chosen", "rejected")
    ]

    def score(ids: list[int], mask: list[bool]) -> float:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
        lp = torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(ids[1:])[:, None])
        return float(sum(x for x, m in zip(lp.squeeze(1).tolist(), mask[1:], strict=True) if m))

    return [score(*c) - score(*r) for c, r in zip(*sides, strict=True)]


def test_server_scores_pairs_as_a_direct_computation(tiny_model, adapters, client, server):
    from core import evaluate_preference as ep

    tok = __import__("transformers").AutoTokenizer.from_pretrained(tiny_model)
    client.load_adapter("pref-a", str(adapters["a"]))
    try:
        for model, folder in ((server.base, None), ("pref-a", adapters["a"])):
            got = ep.margins(client, tok, PAIRS, model)
            want = _direct_margins(tiny_model, folder)
            assert got == pytest.approx(want, abs=1e-3)
        assert ep.margins(client, tok, PAIRS, "pref-a") != pytest.approx(
            ep.margins(client, tok, PAIRS, server.base), abs=1e-3
        )
    finally:
        client.unload_adapter("pref-a")


def test_server_refuses_generation_on_completions(client, server):
    import openai

    with pytest.raises(openai.BadRequestError, match="scoring only"):
        client._openai.completions.create(model=server.base, prompt="Hi", max_tokens=8)
