"""llama.cpp's split GGUF, for an export too large for one upload: the 256-wide tiny model of
`test_gguf` written in 3 files (f16), and quantised to Q8_0 split the same way by llama.cpp
(`keep_split`), loaded by llama.cpp from the first file.

- Each file carries llama.cpp's split keys (`split.no`, `split.count`,
  `split.tensors.count`); the files hold every tensor once, the metadata in the first.
- The split f16 model holds the same tensors as the single file: llama.cpp's logits are
  equal to the single file's bit for bit, and its answers are the reference's.
- The split Q8_0 model agrees with the reference as often as the single Q8_0 file must.
- The controller's count (`gguf_shards`): one file under 90% of the limit; else enough that
  an equal share plus the largest tensor stays under it; 0 when one tensor is too big.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.export.gguf import MAX_FILE_BYTES, gguf_shards, plan_gguf
from core.planner import describe
from tests.adapters.test_gguf import (  # noqa: F401 - fixtures
    _logits,
    base,
    check_agreement,
    check_exact,
    files,
    llama,
    lora,
    reference,
)
from trainer.shared import gguf_write
from trainer.shared.files import gguf_files, gguf_names


@pytest.fixture(scope="module")
def split(base: Path, lora: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """The merged model as f16 and Q8_0, each in 3 files, by the worker's own steps (each in
    its folder: a Q8_0 is quantised from f16 files of the same names, then deleted)."""
    out = tmp_path_factory.mktemp("gguf-split")
    merged = gguf_write.merged_model(base, lora)
    for variant in ("f16", "Q8_0"):
        (out / variant).mkdir()
        steps = gguf_write.write_merged_steps(merged, base, out / variant, variant, "bot", 3)
        assert gguf_write.run_steps(steps) == f"bot-{variant}-00001-of-00003.gguf"
        assert sorted(p.name for p in (out / variant).iterdir()) == gguf_files("bot", variant, 3)
    return out


def _gguf(path: Path) -> Any:
    import gguf

    return gguf.GGUFReader(str(path))


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return None if field is None else field.contents()


@pytest.mark.slow
def test_each_file_carries_llama_cpp_s_split_keys(
    split: Path,
    files: dict[str, Path],  # noqa: F811
) -> None:
    whole = _gguf(files["f16"])
    names: list[str] = []
    for i, name in enumerate(gguf_files("bot", "f16", 3)):
        part = _gguf(split / "f16" / name)
        assert (_field(part, "split.no"), _field(part, "split.count")) == (i, 3)
        assert _field(part, "split.tensors.count") == len(whole.tensors)
        assert part.tensors, f"{name} holds no tensor"
        assert (_field(part, "tokenizer.ggml.model") is not None) == (i == 0)
        names += [t.name for t in part.tensors]
    assert names == [t.name for t in whole.tensors]  # every tensor once, in order
    sizes = [(split / "f16" / n).stat().st_size for n in gguf_files("bot", "f16", 3)]
    largest = max(int(t.n_bytes) for t in whole.tensors)
    assert max(sizes) <= sum(sizes) / 3 + largest + 2**20  # a share, one tensor, metadata


@pytest.mark.slow
def test_split_f16_answers_exactly_as_the_single_file(
    split: Path,
    files: dict[str, Path],  # noqa: F811
    reference: list,  # noqa: F811
) -> None:
    first = split / "f16" / gguf_files("bot", "f16", 3)[0]
    with llama(first) as parts:
        check_exact(parts, reference)
        got = [_logits(parts, r["ids"] + r["answer"]) for r in reference]
    with llama(files["f16"]) as whole:
        want = [_logits(whole, r["ids"] + r["answer"]) for r in reference]
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_split_q8_0_agrees_with_the_reference(split: Path, reference: list) -> None:  # noqa: F811
    with llama(split / "Q8_0" / gguf_files("bot", "Q8_0", 3)[0]) as model:
        assert model.metadata["split.count"] == "3"
        check_agreement(model, reference, "Q8_0")


def test_shard_names_are_llama_cpp_s() -> None:
    assert gguf_names("bot-v1", "Q8_0") == ["bot-v1-Q8_0.gguf", "Modelfile"]
    assert gguf_names("bot-v1", "Q8_0", 2) == [
        "bot-v1-Q8_0-00001-of-00002.gguf",
        "bot-v1-Q8_0-00002-of-00002.gguf",
        "Modelfile",
    ]


def test_the_controller_counts_files_under_the_limit() -> None:
    gib = 2**30
    assert gguf_shards(4 * gib, gib, 5 * gib) == 1  # under 90% of the limit: one file
    n = gguf_shards(15 * gib, gib, 5 * gib)
    assert 15 * gib / n + gib <= 0.9 * 5 * gib and 15 * gib / (n - 1) + gib > 0.9 * 5 * gib
    assert gguf_shards(15 * gib, 5 * gib, 5 * gib) == 0  # one tensor alone is too big
    # Qwen2.5-7B at Q8_0 (about 8 GB) is two files of S3's 5 GiB; at Q4_K_M (4.7 GB), one
    facts = describe("Qwen/Qwen2.5-7B-Instruct")
    q8 = plan_gguf(facts, "Q8_0", max_params=0, max_file_bytes=MAX_FILE_BYTES)
    q4 = plan_gguf(facts, "Q4_K_M", max_params=0, max_file_bytes=MAX_FILE_BYTES)
    assert (q8.where, q8.shards, q4.shards) == ("worker", 2, 1)
    tiny_limit = plan_gguf(facts, "f16", max_params=0, max_file_bytes=2**20)
    assert tiny_limit.shards == 0 and "one tensor alone" in (tiny_limit.refusal or "")
    small = describe("Qwen/Qwen2.5-1.5B-Instruct")
    here = plan_gguf(small, "Q8_0", max_file_bytes=2**20)  # written here: stored by TUS
    assert here.where == "controller" and here.shards == 1


def test_the_worker_refuses_to_upload_a_file_above_the_limit(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from trainer.gguf_action import _fits

    for name in gguf_files("bot", "Q8_0", 2):
        (tmp_path / name).write_bytes(b"x" * 1000)
    section = SimpleNamespace(file_stem="bot", variant="Q8_0", shards=2, max_file_bytes=1000)
    _fits(SimpleNamespace(gguf=section), tmp_path)  # at the limit: uploaded
    (tmp_path / gguf_files("bot", "Q8_0", 2)[1]).write_bytes(b"x" * 1001)
    with pytest.raises(gguf_write.GgufFailed, match=r"00002-of-00002.gguf is .* above"):
        _fits(SimpleNamespace(gguf=section), tmp_path)
