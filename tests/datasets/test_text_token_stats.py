"""Token statistics for plain-text (`{"text"}`) datasets: measured with any tokenizer (a base
model has no chat template), long documents reported as the trainer's windows, and a mixed
dataset (as the trainer accepts it) whose chat rows cannot be measured says so."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from core.datasets import TokenizerChoice, inspect_file, token_statistics
from tests.datasets.helpers import chat, write_jsonl
from trainer import data as trainer_data

DOCS = [
    "The worker downloads the dataset, trains the adapter and uploads it.",
    "Continued pretraining teaches a base model the words of a new field.",
]


@pytest.fixture(scope="module")
def base_model(tiny) -> TokenizerChoice:
    """The tiny model's tokenizer without a chat template, as a base model ships it."""
    tok = copy.deepcopy(tiny.tokenizer)
    tok.chat_template = None
    return TokenizerChoice("base-model", tok)


def test_a_text_dataset_is_measured_without_a_chat_template(tmp_path: Path, base_model):
    rep = inspect_file(write_jsonl(tmp_path / "t.jsonl", [{"text": d} for d in DOCS]), base_model)
    t = rep.tokens
    assert t["available"] and t["measured_rows"] == 2 and t["unmeasured_chat_rows"] == 0
    _, stats = trainer_data.tokenize_rows(base_model.tokenizer, DOCS, max_length=4096)
    assert t["total"] == stats.tokens  # the trainer's own count, EOS included
    assert t["loss_share"] == 1.0 and sum(t["histogram"]["counts"]) == 2


def test_long_documents_are_reported_as_the_trainers_windows(tmp_path: Path, base_model):
    long_doc = " ".join(DOCS * 12)
    rows = [long_doc, DOCS[0], long_doc + " Again."]
    rep = inspect_file(
        write_jsonl(tmp_path / "t.jsonl", [{"text": r} for r in rows]), base_model, max_length=32
    )
    _, stats = trainer_data.tokenize_rows(base_model.tokenizer, rows, max_length=32)
    t = rep.tokens
    assert stats.split_rows == 2 and stats.windows > 2 * 4
    assert (t["split_rows"], t["windows"]) == (stats.split_rows, stats.windows)
    assert t["truncated_rows"] == 0 and t["rows_without_loss_after_truncation"] == 0
    assert t["total"] == stats.tokens  # nothing cut: every token of every document counts


def test_long_chat_rows_are_still_reported_as_truncated(tiny):
    t = token_statistics(
        [chat("word " * 100, "an answer"), {"text": "word " * 100}], tiny, max_length=32
    )
    assert t["measured_rows"] == 2 and t["truncated_rows"] == 1 and t["split_rows"] == 1
    assert t["rows_without_loss_after_truncation"] == 1


def test_chat_rows_without_a_template_are_reported_as_not_measurable(tmp_path: Path, base_model):
    rows = [
        {"text": DOCS[0]},
        chat("Name a fruit.", "Mango."),
        {"text": DOCS[1]},
        chat("Hi", "Hello"),
    ]
    t = token_statistics(rows, base_model)
    assert t["available"] and t["measured_rows"] == 2
    assert t["unmeasured_chat_rows"] == 2
    assert "'base-model' has no chat template" in t["unmeasured_reason"]
    _, stats = trainer_data.tokenize_rows(base_model.tokenizer, DOCS, max_length=4096)
    assert t["total"] == stats.tokens and not t["sampled"]

    only_chat = inspect_file(write_jsonl(tmp_path / "c.jsonl", rows[1::2]), base_model).tokens
    assert only_chat["available"] is False and "has no chat template" in only_chat["reason"]


def test_a_sampled_estimate_scales_by_the_measurable_rows(base_model):
    rows = [{"text": "same words here"}] * 20 + [chat("q", "a")] * 20
    t = token_statistics(rows, base_model, token_rows=10)
    assert t["measured_rows"] == 10 and t["sampled"] and t["unmeasured_chat_rows"] == 20
    assert t["total_estimate"] == 2 * t["total"]  # 20 text rows, 10 measured
