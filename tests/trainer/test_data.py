"""Data preparation: assistant-only labels, truncation, row errors, packing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.trainer.conftest import write_jsonl
from trainer import data as D
from trainer.shared.errors import BadInput
from trainer.shared.tokens import text_token_ids


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
    expected = [
        enc["input_ids"][t + 1] if enc["assistant_masks"][t + 1] else D.IGNORE
        for t in range(len(enc["input_ids"]) - 1)
    ] + [D.IGNORE]
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
    long_answer = [
        {"role": "user", "content": "Count."},
        {"role": "assistant", "content": " ".join(["one two three"] * 40)},
    ]
    long_question = [
        {"role": "user", "content": " ".join(["why"] * 200)},
        {"role": "assistant", "content": "Because."},
    ]
    samples, stats = D.tokenize_rows(
        tokenizer, [CONVO[1:3], long_answer, long_question], max_length=48
    )
    assert stats.truncated_rows == 2 and stats.truncated_examples == [2, 3]
    assert stats.dropped_rows == 1 and stats.dropped_examples == [3]  # no answer left
    assert [s.row for s in samples] == [1, 2]
    assert max(len(s) for s in samples) == 48


def test_bad_rows_are_named(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            {"messages": CONVO},
            "{not json",
            {"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}]},
            {"messages": [{"role": "user", "content": "only a question"}]},
        ],
    )
    with pytest.raises(BadInput) as e:
        D.read_rows(path, "train")
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


# ---------------------------------------------------------------- plain-text rows

DOC = "The worker downloads the dataset, trains the adapter and uploads it."


def test_text_rows_carry_loss_on_every_token_and_end_with_eos(tokenizer, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "text.jsonl", [{"text": DOC}, {"text": "Maybe."}])
    rows = D.read_rows(path, "train")
    assert rows == [DOC, "Maybe."]
    (a, b), stats = D.tokenize_rows(tokenizer, rows, max_length=512)
    body = tokenizer(DOC, add_special_tokens=False)["input_ids"]
    # No BOS for this (Qwen-style) tokenizer: the text, then EOS once.
    assert a.input_ids == body + [tokenizer.eos_token_id]
    # Every token but the first is a target; the last target is EOS.
    assert a.targets == a.input_ids[1:] + [D.IGNORE]
    assert a.n_loss == len(a) - 1 and tokenizer.decode(a.targets[-2:-1]) == "<|im_end|>"
    assert stats.loss_tokens == a.n_loss + b.n_loss and stats.tokens == len(a) + len(b)


def test_text_rows_start_with_bos_when_the_tokenizer_adds_one(tokenizer) -> None:
    import copy

    with_bos = copy.deepcopy(tokenizer)
    with_bos.bos_token = "<|im_start|>"
    with_bos.add_bos_token = True
    (sample,), _ = D.tokenize_rows(with_bos, [DOC], max_length=512)
    bos, eos = with_bos.bos_token_id, with_bos.eos_token_id
    assert sample.input_ids[0] == bos and sample.input_ids.count(bos) == 1
    assert sample.input_ids[-1] == eos and sample.input_ids.count(eos) == 1
    assert sample.targets[0] == sample.input_ids[1]  # the first text token is learned too


def test_text_rows_need_no_chat_template_and_pack_with_chat_rows(tokenizer) -> None:
    import copy

    base_model_tok = copy.deepcopy(tokenizer)
    base_model_tok.chat_template = None
    (only_text,), _ = D.tokenize_rows(base_model_tok, [DOC], max_length=512)
    assert only_text.n_loss == len(only_text) - 1
    with pytest.raises(BadInput, match="no chat template"):
        D.tokenize_rows(base_model_tok, [DOC, CONVO], max_length=512)

    (text, chat), _ = D.tokenize_rows(tokenizer, [DOC, CONVO], max_length=512)
    assert text.input_ids == only_text.input_ids
    assert _loss_text(tokenizer, chat) == "Mango.<|im_end|>Indigo, surely.<|im_end|>"
    batch = D.collate([text, chat], [0, 1], packed=True, pad_id=0, device="cpu")
    n = len(text)
    assert batch.position_ids[0].tolist() == list(range(n)) + list(range(len(chat)))
    # No label crosses from the document into the conversation.
    assert batch.targets[0, n - 1].item() == D.IGNORE
    assert batch.targets[0].tolist() == text.targets + chat.targets


def _doc_of(tokenizer, n_tokens: int) -> tuple[str, list[int]]:
    """A text whose tokenisation (EOS included) is exactly `n_tokens` long, and its ids."""
    source = " ".join(f"w{i % 97}" for i in range(n_tokens * 2))
    k = 1
    while len(text_token_ids(tokenizer, [source[:k]])[0]) < n_tokens:
        k += 1
    text = source[:k]
    (ids,) = text_token_ids(tokenizer, [text])
    assert len(ids) == n_tokens
    return text, ids


def test_a_long_document_is_split_into_windows_and_no_token_is_lost(tokenizer) -> None:
    max_length = 32
    doc, ids = _doc_of(tokenizer, 112)  # 3.5 x max_length
    samples, stats = D.tokenize_rows(tokenizer, [doc, "Short."], max_length=max_length)
    windows = [s for s in samples if s.row == 1]
    assert [len(w) for w in windows] == [32, 32, 32, 16]
    assert [t for w in windows for t in w.input_ids] == ids  # every token, in order
    assert windows[-1].input_ids[-1] == tokenizer.eos_token_id
    assert sum(w.input_ids.count(tokenizer.eos_token_id) for w in windows) == 1
    for w in windows:  # every token a target but the first of each window
        assert w.targets == w.input_ids[1:] + [D.IGNORE] and w.n_loss == len(w) - 1
    assert stats.split_rows == 1 and stats.split_examples == [1] and stats.windows == 4
    assert stats.truncated_rows == 0 and stats.dropped_rows == 0
    assert stats.samples == 5 and stats.tokens == len(ids) + len(samples[-1])
    facts = stats.as_dict()
    assert facts["split_rows"] == 1 and facts["windows_from_split_rows"] == 4
    assert facts["truncated_rows"] == 0


def test_windows_start_with_bos_only_once_and_never_leave_a_lone_token(tokenizer) -> None:
    import copy

    with_bos = copy.deepcopy(tokenizer)
    with_bos.bos_token = "<|im_start|>"
    with_bos.add_bos_token = True
    doc, ids = _doc_of(with_bos, 65)  # 2 x 32 + 1: the lone last token joins a 2-token window
    assert ids[0] == with_bos.bos_token_id
    samples, stats = D.tokenize_rows(with_bos, [doc], max_length=32)
    assert [len(s) for s in samples] == [32, 31, 2]
    assert [t for s in samples for t in s.input_ids] == ids
    assert [s.input_ids.count(with_bos.bos_token_id) for s in samples] == [1, 0, 0]
    assert samples[-1].targets[0] == with_bos.eos_token_id  # the EOS is still learned
    assert stats.windows == 3 and stats.loss_tokens == len(ids) - 3


def test_windows_of_one_document_stay_on_one_side_of_the_eval_split(tokenizer) -> None:
    docs = [_doc_of(tokenizer, 80)[0]] * 3 + ["Short one.", "Short two.", "Short three."]
    samples, _ = D.tokenize_rows(tokenizer, docs, max_length=32)
    train, held = D.split_eval(samples, 0.5, seed=3)
    assert {s.row for s in train}.isdisjoint({s.row for s in held})
    assert len({s.row for s in held}) == 3 and len(train) + len(held) == len(samples)


def test_long_chat_rows_are_still_truncated_not_split(tokenizer) -> None:
    long_answer = [
        {"role": "user", "content": "Count."},
        {"role": "assistant", "content": " ".join(["one two three"] * 40)},
    ]
    samples, stats = D.tokenize_rows(tokenizer, [long_answer], max_length=48)
    assert [len(s) for s in samples] == [48]
    assert stats.truncated_rows == 1 and stats.split_rows == 0 and stats.windows == 0


def test_bad_text_rows_are_named(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            {"text": DOC},
            {"text": 5},
            {"text": "   "},
            {"text": DOC, "messages": CONVO},
            {"prompt": "hi"},
        ],
    )
    with pytest.raises(BadInput) as e:
        D.read_rows(path, "train")
    msg = e.value.message
    assert "4 invalid row(s)" in msg
    assert "row 2: 'text' must be a string, not int" in msg
    assert "row 3: 'text' is empty" in msg
    assert "row 4: a row has either 'messages' or 'text', not both" in msg
    assert "row 5: expected an object with a 'messages' list or a 'text' string" in msg
