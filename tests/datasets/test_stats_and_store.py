"""Token statistics with a real tokenizer and chat template; storing datasets per user;
the `brightrun dataset` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core import datasets, db
from core.clients import storage
from core.datasets import inspect_file, load_tokenizer
from core.db import repo
from core.errors import Conflict, DatasetUnusable, NotFound
from core.settings import load_settings
from core.users import LOCAL_ACTOR, Actor
from tests.datasets.helpers import chat, write_jsonl

ALICE = Actor("user-alice", "alice@example.com")
BOB = Actor("user-bob", "bob@example.com")


def test_loss_tokens_match_the_templates_assistant_mask(tmp_path: Path, tiny):
    tok = tiny.tokenizer
    rows = [
        chat("What is the capital of France?", "The capital of France is Paris."),
        {
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Colors?"},
                {"role": "assistant", "content": "red green blue"},
                {"role": "user", "content": "Animals?"},
                {"role": "assistant", "content": "cat dog bird"},
            ]
        },
    ]
    rep = inspect_file(write_jsonl(tmp_path / "d.jsonl", rows), tiny, max_length=4096)
    t = rep.tokens
    assert t["available"] and t["measured_rows"] == 2
    lengths, masked = [], 0
    for r in rows:
        enc = tok.apply_chat_template(
            r["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        lengths.append(len(enc["input_ids"]))
        masked += sum(enc["assistant_masks"])
    assert t["total"] == sum(lengths)
    assert (t["per_row"]["min"], t["per_row"]["max"]) == (min(lengths), max(lengths))
    assert t["loss_tokens"] == masked
    assert 0 < t["loss_share"] < 1
    assert sum(t["histogram"]["counts"]) == 2


def test_truncation_counts_and_rows_that_lose_every_answer_token(tmp_path: Path, tiny):
    long_question = chat("word " * 200, "short answer")
    rep = inspect_file(
        write_jsonl(tmp_path / "d.jsonl", [long_question, chat("hi", "hello")]), tiny, max_length=64
    )
    assert rep.tokens["truncated_rows"] == 1
    assert rep.tokens["rows_without_loss_after_truncation"] == 1


def test_text_rows_carry_loss_on_every_token(tmp_path: Path, tiny):
    rep = inspect_file(write_jsonl(tmp_path / "t.jsonl", [{"text": "The quick brown fox."}]), tiny)
    assert rep.tokens["loss_share"] == 1.0


def test_token_counts_are_the_trainers(tmp_path: Path, tiny):
    """The report counts tokens with the trainer's own tokenisation (`trainer.data`)."""
    import copy

    from core.datasets import TokenizerChoice
    from trainer import data as trainer_data

    tok = copy.deepcopy(tiny.tokenizer)
    tok.bos_token, tok.add_bos_token = "<|im_start|>", True  # a Llama-style tokenizer adds BOS
    choice = TokenizerChoice(tiny.model, tok)
    chats = [chat("Name a fruit.", "Mango."), chat("word " * 40, "A long question, answered.")]
    rep = inspect_file(write_jsonl(tmp_path / "c.jsonl", chats), choice, max_length=4096)
    _, stats = trainer_data.tokenize_rows(tok, [r["messages"] for r in chats], max_length=4096)
    assert (rep.tokens["total"], rep.tokens["loss_tokens"]) == (stats.tokens, stats.loss_tokens)

    doc = "The worker downloads the dataset, trains the adapter and uploads it."
    rep = inspect_file(write_jsonl(tmp_path / "t.jsonl", [{"text": doc}]), choice, max_length=4096)
    (sample,), _ = trainer_data.tokenize_rows(tok, [doc], max_length=4096)
    assert sample.input_ids[0] == tok.bos_token_id and sample.input_ids[-1] == tok.eos_token_id
    assert rep.tokens["total"] == len(sample)  # BOS and EOS counted as the trainer adds them


def test_token_statistics_can_be_capped_to_the_first_rows(tmp_path: Path, tiny):
    rows = [chat(f"q {i}", f"a {i}") for i in range(50)]
    rep = inspect_file(write_jsonl(tmp_path / "d.jsonl", rows), tiny, token_rows=10)
    assert rep.tokens["measured_rows"] == 10 and rep.tokens["sampled"]
    assert rep.tokens["total_estimate"] > rep.tokens["total"]


def test_an_unreachable_tokenizer_is_reported_not_raised(tmp_path: Path):
    choice = load_tokenizer("Qwen/No-Such-Model-For-Tests")
    assert choice.tokenizer is None and "could not be loaded" in choice.reason
    rep = inspect_file(write_jsonl(tmp_path / "d.jsonl", [chat("a", "b")]), choice)
    assert rep.usable
    assert rep.tokens == {
        "model": "Qwen/No-Such-Model-For-Tests",
        "max_length": 2048,
        "available": False,
        "reason": choice.reason,
    }
    assert inspect_file(tmp_path / "d.jsonl").tokens["available"] is False


def test_the_tiny_demo_model_is_found_by_its_catalog_id(tiny_dir: Path):
    choice = load_tokenizer("brightrun/tiny-chat", tiny_dir.parent)
    assert choice.tokenizer is not None
    missing = load_tokenizer("brightrun/tiny-chat", tiny_dir.parent / "nowhere")
    assert missing.tokenizer is None and "not built" in missing.reason


def test_add_stores_original_and_normalised_files_per_user(tmp_path: Path, env):
    settings, store = env
    rows = [{"instruction": f"Say {i}", "output": f"<b>{i}</b>"} for i in range(40)]
    src = write_jsonl(tmp_path / "my data.jsonl", rows)
    with db.session_scope(settings) as s:
        ds, rep = datasets.add_dataset(
            ALICE,
            s,
            store,
            src,
            original_filename="passwd.jsonl",  # a path is refused: tests/security
        )
        ds_id = ds.id
    with db.session_scope(settings) as s:
        ds = datasets.get_dataset(ALICE, s, ds_id)
        assert (ds.name, ds.original_filename, ds.layout, ds.valid_rows) == (
            "passwd",
            "passwd.jsonl",
            "alpaca",
            40,
        )
        assert ds.original_key == f"user-alice/{ds_id}/original"
        assert store.get_bytes("datasets", ds.original_key) == src.read_bytes()
        train = store.get_bytes("datasets", ds.normalized_key).decode().splitlines()
        ev = datasets.eval_key(ds)
        eval_lines = store.get_bytes("datasets", ev).decode().splitlines() if ev else []
        assert (
            len(train) + len(eval_lines)
            == 40
            == ds.stats["split"]["train_rows"] + ds.stats["split"]["eval_rows"]
        )
        preview = datasets.preview_rows(ALICE, s, store, ds_id, n=2)
        assert preview[0]["messages"][1]["content"].startswith("<b>")  # data, kept as text
        # Bob sees none of it.
        assert datasets.list_datasets(BOB, s) == []
        for call in (
            lambda: datasets.get_dataset(BOB, s, ds_id),
            lambda: datasets.preview_rows(BOB, s, store, ds_id),
            lambda: datasets.delete_dataset(BOB, s, store, ds_id),
            lambda: datasets.rename_dataset(BOB, s, ds_id, "x"),
        ):
            with pytest.raises(NotFound):
                call()
    assert not any(p.name == "passwd" for p in (settings.data_dir / "blobs").rglob("*"))


def test_bad_rows_are_rejected_unless_dropped_and_nothing_is_half_stored(tmp_path: Path, env):
    settings, store = env
    src = tmp_path / "mixed.jsonl"
    src.write_text(json.dumps(chat("a", "b")) + "\n{oops\n" + json.dumps(chat("c", "d")) + "\n")
    with db.session_scope(settings) as s:
        with pytest.raises(DatasetUnusable) as err:
            datasets.add_dataset(ALICE, s, store, src, "mixed")
        assert "row 2" in str(err.value) and err.value.report.valid_rows == 2
        assert datasets.list_datasets(ALICE, s) == []
    assert store.list("datasets") == []
    with db.session_scope(settings) as s:
        ds, rep = datasets.add_dataset(ALICE, s, store, src, "mixed", on_bad_rows="drop")
        assert (ds.rows, ds.valid_rows, rep.invalid_rows) == (3, 2, 1)
    with db.session_scope(settings) as s:
        with pytest.raises(Conflict):
            datasets.add_dataset(ALICE, s, store, src, "mixed", on_bad_rows="drop")
    assert len(store.list("datasets")) == 2  # the conflicting upload left nothing behind
    with db.session_scope(settings) as s:
        unusable = tmp_path / "junk.bin"
        unusable.write_bytes(b"\x00\xff" * 100)
        with pytest.raises(DatasetUnusable, match="binary"):
            datasets.add_dataset(ALICE, s, store, unusable)


def test_names_from_files_get_a_suffix_and_delete_removes_files(tmp_path: Path, env):
    settings, store = env
    src = write_jsonl(tmp_path / "support.jsonl", [chat("a", "b")])
    with db.session_scope(settings) as s:
        first, _ = datasets.add_dataset(ALICE, s, store, src)
        second, _ = datasets.add_dataset(ALICE, s, store, src)
        assert (first.name, second.name) == ("support", "support (2)")
        job = repo.create_job(ALICE, s, base_model="tiny", spec={}, dataset_id=first.id)
        with pytest.raises(Conflict):
            datasets.delete_dataset(ALICE, s, store, first.id)
        repo.update_job(ALICE, s, job.id, status="COMPLETED")
        datasets.delete_dataset(ALICE, s, store, first.id)
        assert not store.list("datasets", f"user-alice/{first.id}/")
        assert [d.id for d in datasets.list_datasets(ALICE, s)] == [second.id]


def test_cli_inspect_json_and_exit_codes(tmp_path: Path, data_dir: Path, tiny_dir: Path):
    from cli import app

    runner = CliRunner()
    good = write_jsonl(tmp_path / "good.jsonl", [chat("a", "b"), {"messages": "nope"}])
    r = runner.invoke(app, ["dataset", "inspect", str(good), "--json", "--model", str(tiny_dir)])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert (out["format"], out["rows"], out["valid_rows"], out["problems"]) == (
        "jsonl",
        2,
        1,
        {"wrong_type": 1},
    )
    assert out["tokens"]["available"] and out["tokens"]["total"] > 0
    bad = tmp_path / "bad.csv"
    bad.write_text("question,answer\na,b\n")
    r = runner.invoke(app, ["dataset", "inspect", str(bad), "--json"])
    assert r.exit_code == 2 and "no known layout" in json.loads(r.stdout)["reason"]
    r = runner.invoke(app, ["dataset", "inspect", str(bad)])
    assert r.exit_code == 2 and "no known layout" in r.output
    r = runner.invoke(app, ["dataset", "inspect", str(tmp_path / "missing.jsonl"), "--json"])
    assert r.exit_code == 2


def test_cli_add_list_preview(tmp_path: Path, data_dir: Path):
    from cli import app

    runner = CliRunner()
    src = write_jsonl(tmp_path / "faq.jsonl", [chat(f"q{i}", f"a{i}") for i in range(3)])
    r = runner.invoke(app, ["dataset", "add", str(src), "--name", "FAQ"])
    assert r.exit_code == 0, r.output
    ds_id = r.stdout.split()[1]
    r = runner.invoke(app, ["dataset", "list", "--json"])
    listed = json.loads(r.stdout)
    assert [(d["id"], d["name"], d["rows"]) for d in listed] == [(ds_id, "FAQ", 3)]
    r = runner.invoke(app, ["dataset", "preview", ds_id, "-n", "1"])
    assert json.loads(r.stdout.splitlines()[0])["messages"][0]["role"] == "user"
    r = runner.invoke(app, ["dataset", "preview", "ds-nope"])
    assert r.exit_code == 1 and "not found" in r.output
    with db.session_scope(load_settings()) as s:
        assert [d.id for d in repo.list_datasets(LOCAL_ACTOR, s)] == [ds_id]
    db.dispose_engines()
    assert storage.dataset_original_key("local", ds_id) == f"local/{ds_id}/original"
