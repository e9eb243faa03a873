"""Data preparation: assistant-only labels, truncation, row errors, packing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.trainer.conftest import write_jsonl
from trainer import data as D
from trainer.errors import BadInput


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


CONVO = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Name a fruit."},
    {"role": "assistant", "content": "Mango."},
    {"role": "user", "content": "And a colour?"},
    {"role": "assistant", "content": "Indigo, surely."},
]


def _loss_text(tokenizer, sample: D.Sample) -> str:
    return tokenizer.decode([t for t in sample.targets if t != D.IGNORE])


def test_labels_cover_exactly_the_assistant_turns(tokenizer) -> None:
    (sample,), stats = D.tokenize_rows(tokenizer, [CONVO], max_length=512)
    # The loss-bearing tokens, in order, spell each answer and its end-of-turn token, and
    # nothing of the system prompt, the questions or the template's role headers.
    assert _loss_text(tokenizer, sample) == "Mango.<|im_end|>Indigo, surely.<|im_end|>"
    # Every target is the next input token where it is not masked.
    for t, target in enumerate(sample.targets[:-1]):
        assert target in (D.IGNORE, sample.input_ids[t + 1])
    assert sample.targets[-1] == D.IGNORE
    # Same mask as the template's own {% generation %} markers.
    enc = tokenizer.apply_chat_template(
        CONVO, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    expected = [enc["input_ids"][t + 1] if enc["assistant_masks"][t + 1] else D.IGNORE
                for t in range(len(enc["input_ids"]) - 1)] + [D.IGNORE]
    assert sample.targets == expected
    assert stats.loss_tokens == sample.n_loss == sum(enc["assistant_masks"])


def test_template_without_generation_markers_gives_the_same_labels(tokenizer) -> None:
    import copy

    plain = copy.copy(tokenizer)
    plain.chat_template = tokenizer.chat_template.replace("{% generation %}", "").replace(
        "{% endgeneration %}", ""
    )
    (a,), _ = D.tokenize_rows(tokenizer, [CONVO], max_length=512)
    (b,), _ = D.tokenize_rows(plain, [CONVO], max_length=512)
    assert a.targets == b.targets


def test_truncated_and_dropped_rows_are_counted(tokenizer) -> None:
    long_answer = [{"role": "user", "content": "Count."},
                   {"role": "assistant", "content": " ".join(["one two three"] * 40)}]
    long_question = [{"role": "user", "content": " ".join(["why"] * 200)},
                     {"role": "assistant", "content": "Because."}]
    samples, stats = D.tokenize_rows(
        tokenizer, [CONVO[1:3], long_answer, long_question], max_length=48
    )
    assert stats.truncated_rows == 2 and stats.truncated_examples == [2, 3]
    assert stats.dropped_rows == 1 and stats.dropped_examples == [3]  # no answer left
    assert [s.row for s in samples] == [1, 2]
    assert max(len(s) for s in samples) == 48


def test_bad_rows_are_named(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [
        {"messages": CONVO},
        "{not json",
        {"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}]},
        {"messages": [{"role": "user", "content": "only a question"}]},
    ])
    with pytest.raises(BadInput) as e:
        D.read_chat_rows(path, "train")
    msg = e.value.message
    assert "3 invalid row(s)" in msg
    assert "row 2: not valid JSON" in msg
    assert "row 3: messages[1].role 'bot'" in msg
    assert "row 4: no non-empty assistant message" in msg


def test_best_fit_decreasing_fills_bins_without_splitting() -> None:
    lengths = [70, 10, 30, 60, 40, 20, 90, 5]
    bins = D.pack_bfd(lengths, 100)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 100 for b in bins)
    assert len(bins) == 4  # 325 tokens: 4 bins is the minimum


def test_packed_batch_restarts_positions_per_sample(tokenizer) -> None:
    samples, _ = D.tokenize_rows(tokenizer, [CONVO, CONVO[:3]], max_length=512)
    batch = D.collate(samples, [0, 1], packed=True, pad_id=0, device="cpu")
    n0, n1 = len(samples[0]), len(samples[1])
    assert batch.input_ids.shape == (1, n0 + n1)
    assert batch.position_ids[0].tolist() == list(range(n0)) + list(range(n1))
    assert batch.cu_seqlens.tolist() == [0, n0, n0 + n1]
    assert batch.n_slots == batch.n_tokens == n0 + n1
    padded = D.collate(samples, [0, 1], packed=False, pad_id=0, device="cpu")
    assert padded.input_ids.shape == (2, n0)
    assert padded.attention_mask[1].tolist() == [1] * n1 + [0] * (n0 - n1)
    assert padded.n_slots == 2 * n0
