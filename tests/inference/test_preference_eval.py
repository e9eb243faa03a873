"""Preference accuracy on held-out pairs, through the inference server's prompt scoring
(`/v1/completions` with echo and logprobs): the server's per-pair margins equal the ones
computed directly with transformers + PEFT, for the base and for an adapter; and a
preference version evaluated as a user's is: accuracy and margin stored for adapter and
base, and with a judge the win rate against the base on the held-out prompts."""

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


def _direct_margins(
    tiny_model: Path, adapter: Path | None, pairs: list[dict] = PAIRS
) -> list[float]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.shared.tokens import answer_token_masks

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter).eval()
    prompts = [p["prompt"] for p in pairs]
    sides = [
        answer_token_masks(tok, prompts, [p[k] for p in pairs]) for k in ("chosen", "rejected")
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


def test_a_preference_version_is_scored_on_held_out_pairs_and_judged_against_the_base(
    tiny_model, adapters, server, data_dir, tmp_path
):
    import json

    from core import datasets, db, evaluate
    from core.clients.inference import InferenceClient
    from core.clients.storage import make_blob_store
    from core.db import repo
    from core.users import LOCAL_ACTOR
    from tests.inference.conftest import settings_for

    settings = settings_for(server, data_dir, eval_max_tokens=8)
    db.upgrade(settings)
    store = make_blob_store(settings)
    src = tmp_path / "pairs.jsonl"  # the plain prompt / chosen / rejected layout
    words = ["apple", "pear", "plum", "fig", "lime", "kiwi", "date", "melon", "grape", "peach"]
    words += [f"{w} tart" for w in words]
    src.write_text(
        "".join(
            json.dumps({"prompt": f"Name fruit {i}.", "chosen": f"A {w}.", "rejected": "No."})
            + "\n"
            for i, w in enumerate(words)
        )
    )
    with db.session_scope(settings) as s:
        ds, _ = datasets.add_dataset(
            LOCAL_ACTOR,
            s,
            store,
            src,
            "fruit-prefs",
            eval_fraction=0.5,  # rows split by a hash: about half
            tokenizer=datasets.load_tokenizer(str(tiny_model)),
        )
        v = repo.create_adapter_version(
            LOCAL_ACTOR,
            s,
            adapter_name="fruit-dpo",
            base_model=str(tiny_model),
            dataset_id=ds.id,
            volume_path=str(adapters["a"]),
            settings={"method": "dpo"},
        )
        version_id = v.id
        held_out = datasets.preview_rows(
            LOCAL_ACTOR, s, store, ds.id, n=100, split="eval", max_chars=100_000
        )
    n = len(held_out)
    assert ds.layout.startswith("preference") and 3 <= n < len(words)
    with InferenceClient(settings) as client:
        plain = evaluate.evaluate_version(LOCAL_ACTOR, settings, version_id, client=client)
        judged = evaluate.evaluate_version(
            LOCAL_ACTOR, settings, version_id, client=client, use_judge=True
        )
        assert f"eval-{version_id}" not in {m.id for m in client.models()}  # unloaded
    assert plain["kind"] == judged["kind"] == "preference" and plain["rows"] == n
    assert plain["judge"] is None
    for key, folder in (("adapter", adapters["a"]), ("base", None)):
        want = _direct_margins(tiny_model, folder, held_out)
        assert plain[key]["preference_accuracy"] == pytest.approx(
            sum(m > 0 for m in want) / len(want),
            abs=1e-4,  # stored to 4 places
        )
        assert plain[key]["mean_margin"] == pytest.approx(sum(want) / len(want), abs=1e-3)
    verdicts = judged["judge"]
    assert verdicts["model"] == server.base  # no EVAL_JUDGE_MODEL: the base judges
    assert sum(verdicts[k] for k in ("wins", "losses", "ties", "invalid")) == n
    with db.session_scope(settings) as s:
        stored = repo.get_version(LOCAL_ACTOR, s, version_id).eval_scores
    assert stored["status"] == "done" and stored["judge"] == verdicts
    db.dispose_engines()
