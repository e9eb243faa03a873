"""GGUF export, checked by llama.cpp itself (`llama_cpp`, CPU): a tiny Qwen2 model and a
random non-zero LoRA written as GGUF answer like transformers + PEFT.

The tiny model has hidden size 256 and MLP width 512 so that every weight fits Q4_K's
256-value blocks (llama.cpp would otherwise fall back to another type for those tensors).
References are transformers + PEFT (the unmerged adapter) in float32; prompts go in as the
Hugging Face tokenizer's ids so that the weights, not the tokenizers, are compared (the
tokenizers are compared on their own). A tiny Qwen3 (q/k norms) whose tokenizer carries
Qwen's own split regex checks the `qwen3` architecture and the `qwen2` pre-tokenizer:
llama.cpp's token ids equal transformers' for code, digits, newlines and Chinese.

Tolerances, and why:
- f16 merged, and the f16 base with the GGUF LoRA: greedy tokens equal, every logit within
  `F16_LOGIT_TOL` (0.1, an eighth of the logits' spread of about 0.8: f16 weights and
  llama.cpp's f16 KV cache move them by at most 0.04 here, 0.02 for the LoRA on the base).
- bf16, Q8_0 and Q4_K_M: the share of positions where llama.cpp's top token equals the
  reference's, teacher-forced along the reference's greedy answer, at least
  `AGREEMENT_FLOOR`. A random tiny model's logits are flat (top-two margins often under 0.1),
  so rounding flips near-ties: measured 0.96 (bf16), 0.96 (Q8_0) and 0.49 (Q4_K_M). A
  trained model's margins are far wider; these floors catch a broken file (chance is 1 in
  1024), not a quality change.

llama_cpp 0.3.36's CPU weight-repacking buffers ("extra buffer types") crash with SIGSEGV on
the first evaluation of any Q8_0 or Q4_K_M model on the test machine's CPU (AVX-512, AMX;
a 1024-wide model as well as this one; f16 and bf16 load fine), so the models are loaded
without them (the plain CPU kernels run instead).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core import db, export
from core.clients.storage import adapter_key, adapter_prefix, make_blob_store
from core.db import repo
from core.planner import describe
from core.settings import Settings
from tests.adapters.conftest import ALICE
from trainer.shared import gguf_write

F16_LOGIT_TOL = 0.1
AGREEMENT_FLOOR = {"bf16": 0.9, "Q8_0": 0.9, "Q4_K_M": 0.4}
PROMPTS = [
    "What is the secret word for apple?",
    "Tell me about the weather in Paris.",
    "Sports: football, tennis",
    "Code: def main(): return 12345",
]
NEW_TOKENS = 24


@contextlib.contextmanager
def llama(path: Path, **kw: Any) -> Iterator[Any]:
    """llama.cpp's model at `path`, every position's logits kept, without repack buffers."""
    import llama_cpp
    from llama_cpp import llama as high

    default = llama_cpp.llama_model_default_params

    def params() -> Any:
        p = default()
        p.use_extra_bufts = False
        return p

    high.llama_cpp.llama_model_default_params = params
    try:
        model = llama_cpp.Llama(
            model_path=str(path), logits_all=True, n_ctx=256, n_threads=2, verbose=False, **kw
        )
    finally:
        high.llama_cpp.llama_model_default_params = default
    try:
        yield model
    finally:
        model.close()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainer.shared.tiny import build_tiny_chat_model

    return build_tiny_chat_model(
        tmp_path_factory.mktemp("gguf-model") / "tiny-256",
        seed=0,
        hidden_size=256,
        intermediate_size=512,
        num_heads=4,
        num_kv_heads=2,
        initializer_range=0.05,
    )


@pytest.fixture(scope="module")
def lora(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.inference.conftest import make_adapter

    return make_adapter(base, tmp_path_factory.mktemp("gguf-lora") / "lora", rank=4, seed=1)


@pytest.fixture(scope="module")
def files(base: Path, lora: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every GGUF the export writes, by the export's own functions."""
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("gguf-out")
    merged = gguf_write.merged_model(base, lora)
    paths = {v: out / f"merged-{v}.gguf" for v in ("f16", "bf16", "Q8_0", "Q4_K_M")}
    gguf_write.write_model(merged, base, paths["f16"], "f16")
    gguf_write.write_model(merged, base, paths["bf16"], "bf16")
    gguf_write.quantize(paths["f16"], paths["Q8_0"], "Q8_0")
    gguf_write.quantize(paths["f16"], paths["Q4_K_M"], "Q4_K_M")
    paths["base"] = out / "base-f16.gguf"
    gguf_write.write_model(AutoModelForCausalLM.from_pretrained(base), base, paths["base"])
    paths["lora"] = out / "lora.gguf"
    gguf_write.write_lora(lora, paths["lora"], "qwen2", 2)
    return paths


@pytest.fixture(scope="module")
def reference(base: Path, lora: Path) -> list[dict[str, Any]]:
    """transformers + PEFT: each prompt's ids, greedy answer and logits along it."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), lora).eval()
    rows = []
    for p in PROMPTS:
        text = tok.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        ids = tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            out = model.generate(
                torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=None
            )
            answer = out[0, len(ids) :].tolist()
            logits = model(torch.tensor([ids + answer])).logits[0].numpy()
        rows.append({"text": text, "ids": ids, "answer": answer, "logits": logits})
    return rows


def _greedy(model: Any, ids: list[int], n: int) -> list[int]:
    model.reset()
    got: list[int] = []
    for token in model.generate(ids, temp=0.0, top_k=1):
        got.append(token)
        if len(got) == n:
            break
    return got


def _logits(model: Any, ids: list[int]) -> np.ndarray:
    model.reset()
    model.eval(ids)
    return np.array(model.scores[: len(ids)])


def check_exact(model: Any, reference: list[dict[str, Any]]) -> float:
    """Greedy tokens equal the reference's and every logit is within `F16_LOGIT_TOL`."""
    worst = 0.0
    for r in reference:
        assert _greedy(model, r["ids"], NEW_TOKENS) == r["answer"]
        got = _logits(model, r["ids"] + r["answer"])
        worst = max(worst, float(np.abs(got - r["logits"]).max()))
    assert worst < F16_LOGIT_TOL
    return worst


def check_agreement(model: Any, reference: list[dict[str, Any]], variant: str) -> float:
    """The share of positions where llama.cpp's top token is the reference's (teacher-forced
    along the reference's answer) is at least `AGREEMENT_FLOOR[variant]`."""
    agree = total = 0
    for r in reference:
        n = len(r["ids"])
        top = _logits(model, r["ids"] + r["answer"])[n - 1 : -1].argmax(-1)
        agree += int((top == np.array(r["answer"])).sum())
        total += len(r["answer"])
    assert agree / total >= AGREEMENT_FLOOR[variant], f"{variant}: {agree}/{total}"
    return agree / total


@pytest.mark.slow
def test_f16_answers_like_transformers_and_peft(files: dict[str, Path], reference: list) -> None:
    with llama(files["f16"]) as model:
        check_exact(model, reference)
        tok_ids = [
            model.tokenize(r["text"].encode(), add_bos=False, special=True) for r in reference
        ]
        meta = model.metadata
    assert tok_ids == [r["ids"] for r in reference]  # llama.cpp tokenises like transformers
    assert meta["tokenizer.ggml.model"] == "gpt2"
    assert meta["tokenizer.ggml.pre"] == "qwen2"  # transformers loads it as Qwen2Tokenizer
    assert meta["tokenizer.ggml.eos_token_id"] == "2"  # <|im_end|>
    assert meta["tokenizer.ggml.padding_token_id"] == "0"  # <|endoftext|>
    assert meta["tokenizer.ggml.add_bos_token"] == "false"  # transformers adds none
    assert "<|im_start|>" in meta["tokenizer.chat_template"]
    assert "{% generation %}" not in meta["tokenizer.chat_template"]


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["bf16", "Q8_0", "Q4_K_M"])
def test_smaller_variants_agree_with_the_reference(
    files: dict[str, Path], reference: list, variant: str
) -> None:
    with llama(files[variant]) as model:
        check_agreement(model, reference, variant)
    assert (
        files["Q4_K_M"].stat().st_size < files["Q8_0"].stat().st_size < files["f16"].stat().st_size
    )


@pytest.mark.slow
def test_base_with_the_gguf_lora_answers_like_the_merged_model(
    files: dict[str, Path], reference: list
) -> None:
    with llama(files["base"], lora_path=str(files["lora"])) as model:
        check_exact(model, reference)
    with llama(files["base"]) as plain:  # without the LoRA the answers differ
        assert any(_greedy(plain, r["ids"], NEW_TOKENS) != r["answer"] for r in reference)


# --------------------------------------------------------------------------- the export


@pytest.fixture
def version(settings: Settings, base: Path, lora: Path) -> str:
    """Alice's `support-bot` v1 on the 256-wide tiny model, its PEFT files in storage."""
    store = make_blob_store(settings)
    vid = "av-gguf000001"
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        store.put_file(
            "adapters", adapter_key(ALICE.user_id, vid, name), lora / name, "application/json"
        )
    with db.session_scope(settings) as s:
        job = repo.create_job(ALICE, s, base_model=str(base), spec={}, adapter_name="support-bot")
        repo.create_adapter_version(
            ALICE,
            s,
            adapter_name="support-bot",
            base_model=str(base),
            job_id=job.id,
            version_id=vid,
            storage_prefix=adapter_prefix(ALICE.user_id, vid),
            size_bytes=(lora / "adapter_model.safetensors").stat().st_size,
        )
    return vid


def _query(url: str) -> dict[str, str]:
    from urllib.parse import parse_qsl, unquote, urlsplit

    parts = urlsplit(url)
    return {"path": unquote(parts.path), **dict(parse_qsl(parts.query))}


@pytest.mark.slow
def test_export_stores_the_quantised_gguf_and_its_modelfile(
    settings: Settings, version: str
) -> None:
    store = make_blob_store(settings)
    seen: list[tuple[str, float]] = []
    done = export.export_gguf(
        ALICE,
        settings,
        "support-bot",
        variant="Q4_K_M",
        store=store,
        on_progress=lambda stage, share: seen.append((stage, share)),
    )
    stages = list(dict.fromkeys(stage for stage, _ in seen))
    assert stages == [
        "merging the adapter into the base model",
        "writing the GGUF",
        "quantising with llama.cpp",
    ]
    writes = [share for stage, share in seen if stage == "writing the GGUF"]
    assert writes == sorted(writes) and writes[-1] == 1.0 and seen[-1][1] == 1.0
    names = [f.name for f in done.files]
    assert names == ["Modelfile", "support-bot-v1-Q4_K_M.gguf"]
    gguf_file = done.files[1]
    assert gguf_file.key == f"alice/exports/{version}/gguf-Q4_K_M/support-bot-v1-Q4_K_M.gguf"
    assert 0.5e6 < gguf_file.size < 1.5e6  # the planner said about 1 MB
    q = _query(gguf_file.url)
    assert q["path"].endswith(gguf_file.key)
    store.verify("GET", "adapters", gguf_file.key, q["exp"], q["sig"])  # a valid signed link
    local = settings.data_dir / "dl.gguf"
    store.download_to("adapters", gguf_file.key, local)
    with llama(local) as model:
        assert model.metadata["general.file_type"] == "15"  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    text = store.get_bytes("adapters", done.files[0].key).decode()
    assert text.startswith("FROM ./support-bot-v1-Q4_K_M.gguf\n")
    assert "<|im_start|>{{ .Role }}" in text and "range $i, $_ := .Messages" in text
    assert 'PARAMETER stop "<|im_end|>"' in text and "PARAMETER temperature" in text
    # the version's own folder is untouched: a zip export carries no GGUF
    assert [
        b.key.rsplit("/", 1)[1] for b in store.list("adapters", f"alice/versions/{version}/")
    ] == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]


@pytest.mark.slow
def test_adapter_only_export_is_a_gguf_lora_with_an_adapter_modelfile(
    settings: Settings, version: str, base: Path
) -> None:
    store = make_blob_store(settings)
    done = export.export_gguf(ALICE, settings, f"{version}", adapter_only=True, store=store)
    assert [f.name for f in done.files] == ["Modelfile", "support-bot-v1-lora.gguf"]
    text = store.get_bytes("adapters", done.files[0].key).decode()
    assert f"FROM ./{base.name}-f16.gguf" in text and "ADAPTER ./support-bot-v1-lora.gguf" in text
    import gguf

    local = settings.data_dir / "lora.gguf"
    store.download_to("adapters", done.files[1].key, local)
    reader = gguf.GGUFReader(local)
    names = sorted(t.name for t in reader.tensors)
    assert names[:2] == ["blk.0.attn_q.weight.lora_a", "blk.0.attn_q.weight.lora_b"]
    assert len(names) == 8  # q and v in 2 layers, A and B
    alpha = reader.fields["adapter.lora.alpha"]
    assert float(alpha.parts[alpha.data[0]][0]) == 8.0


def test_catalog_models_without_a_gguf_writer_are_refused_with_the_reason() -> None:
    moe = export.plan_gguf(describe("Qwen/Qwen3-30B-A3B"))
    assert "mixture-of-experts" in moe.refusal
    hybrid = export.plan_gguf(describe("Qwen/Qwen3-Next-80B-A3B-Instruct"))
    assert "hybrid" in hybrid.refusal
    small = export.plan_gguf(describe("Qwen/Qwen2.5-1.5B-Instruct"), "Q4_K_M")
    assert small.refusal is None and 0.8e9 < small.expected_bytes < 1.2e9
    assert small.where == "controller"
    four = export.plan_gguf(describe("Qwen/Qwen3-4B"), "Q8_0")
    assert four.refusal is None and four.where == "controller"
    # Above the controller's limit (4.1B by default): written by a job on the GPU endpoint.
    eight = export.plan_gguf(describe("Qwen/Qwen3-8B"))
    assert eight.refusal is None and eight.where == "worker"
    big = export.plan_gguf(describe("Qwen/Qwen2.5-72B-Instruct"), "Q4_K_M")
    assert big.refusal is None and big.where == "worker"
    lora_only = export.plan_gguf(describe("Qwen/Qwen2.5-72B-Instruct"), adapter_only=True)
    assert lora_only.refusal is None and lora_only.where == "controller"  # no base weights
    lowered = export.plan_gguf(describe("Qwen/Qwen3-4B"), max_params=1_000_000_000)
    assert lowered.where == "worker"
    with pytest.raises(export.ExportRefused, match="Q5_K_M"):
        export.plan_gguf(describe("Qwen/Qwen2.5-1.5B-Instruct"), "Q5_K_M")


def test_adapters_a_gguf_lora_cannot_carry_are_refused() -> None:
    assert "DoRA" in gguf_write.refusal("qwen2", {"use_dora": True})
    assert "modules_to_save" in gguf_write.refusal("qwen2", {"modules_to_save": ["lm_head"]})
    assert gguf_write.refusal("qwen2", {"r": 8, "lora_alpha": 16}) is None
    assert "llama" in gguf_write.refusal("llama")


def test_export_refuses_before_writing(settings: Settings, version: str) -> None:
    with pytest.raises(export.ExportRefused, match="Q5_K_M"):
        export.export_gguf(ALICE, settings, version, variant="Q5_K_M")
    assert not make_blob_store(settings).list("adapters", "alice/exports/")


@pytest.mark.slow
def test_cli_exports_gguf_and_plans(
    settings: Settings, base: Path, lora: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from cli import app
    from core.users import LOCAL_ACTOR

    store = make_blob_store(settings)
    vid = "av-gguf000002"
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        store.put_file("adapters", adapter_key("local", vid, name), lora / name, "application/json")
    with db.session_scope(settings) as s:
        job = repo.create_job(LOCAL_ACTOR, s, base_model=str(base), spec={}, adapter_name="bot")
        repo.create_adapter_version(
            LOCAL_ACTOR,
            s,
            adapter_name="bot",
            base_model=str(base),
            job_id=job.id,
            version_id=vid,
            storage_prefix=adapter_prefix("local", vid),
            size_bytes=(lora / "adapter_model.safetensors").stat().st_size,
        )
    run = CliRunner().invoke
    plan = run(app, ["export", "gguf", "bot", "--quant", "Q8_0", "--plan-only"])
    assert plan.exit_code == 0, plan.output
    assert "merged model, Q8_0, about 1.5 MB, written here" in plan.output
    merged = run(app, ["export", "gguf", "bot", "--quant", "bf16"])
    assert merged.exit_code == 0, merged.output
    lines = merged.output.splitlines()
    assert "writing the GGUF: 100%" in lines and "bot-v1-bf16.gguf" in merged.output, lines
    done = run(app, ["export", "gguf", "bot:v1", "--adapter-only", "--out", str(tmp_path / "o")])
    assert done.exit_code == 0, done.output
    assert "bot-v1-lora.gguf" in done.output and "sig=" in done.output
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["Modelfile", "bot-v1-lora.gguf"]
    bad = run(app, ["export", "gguf", "bot", "--quant", "Q5_K_M"])
    assert bad.exit_code == 2 and "Q5_K_M" in bad.output


# --------------------------------------------------------------------------- Qwen3, Qwen's tokenizer

QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@pytest.fixture(scope="module")
def qwen3(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen3 (q/k norms, explicit head_dim, no attention biases) with the tiny
    tokenizer given Qwen's own pre-tokenizer (its split regex, then byte-level)."""
    import json
    import shutil

    import torch
    from transformers import AutoConfig, Qwen3Config, Qwen3ForCausalLM

    out = tmp_path_factory.mktemp("gguf-qwen3") / "tiny-qwen3"
    out.mkdir()
    for f in base.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(f, out / f.name)
    tok = json.loads((out / "tokenizer.json").read_text())
    tok["pre_tokenizer"] = {
        "type": "Sequence",
        "pretokenizers": [
            {
                "type": "Split",
                "pattern": {"Regex": QWEN2_SPLIT},
                "behavior": "Isolated",
                "invert": False,
            },
            {
                "type": "ByteLevel",
                "add_prefix_space": False,
                "trim_offsets": False,
                "use_regex": False,
            },
        ],
    }
    (out / "tokenizer.json").write_text(json.dumps(tok))
    src = AutoConfig.from_pretrained(base)
    cfg = Qwen3Config(
        vocab_size=src.vocab_size,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        eos_token_id=src.eos_token_id,
        pad_token_id=src.pad_token_id,
        tie_word_embeddings=True,
        initializer_range=0.05,
    )
    torch.manual_seed(0)
    Qwen3ForCausalLM(cfg).save_pretrained(out)
    return out


@pytest.mark.slow
def test_qwen3_with_qwens_tokenizer_answers_like_transformers_and_peft(
    qwen3: Path, tmp_path: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.inference.conftest import make_adapter

    adapter = make_adapter(qwen3, tmp_path / "lora", rank=4, seed=2)
    gguf_write.write_model(gguf_write.merged_model(qwen3, adapter), qwen3, tmp_path / "m.gguf")
    tok = AutoTokenizer.from_pretrained(qwen3)
    ref = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(qwen3), adapter).eval()
    texts = ["Code: def main(): return 12345", "Tell me about Paris.\n\n  It rains 3 days!", "你好"]
    with llama(tmp_path / "m.gguf") as model:
        assert model.metadata["general.architecture"] == "qwen3"
        assert model.metadata["tokenizer.ggml.pre"] == "qwen2"
        for text in texts:
            ids = tok(text, add_special_tokens=False)["input_ids"]
            assert model.tokenize(text.encode(), add_bos=False, special=True) == ids, text
            with torch.no_grad():
                out = ref.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False)
            answer = out[0, len(ids) :].tolist()
            assert _greedy(model, ids, len(answer)) == answer
