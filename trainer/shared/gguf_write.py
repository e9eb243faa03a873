"""Writing GGUF files for llama.cpp and Ollama from a Hugging Face model folder and a PEFT
adapter, with the `gguf` library's writer and tensor-name maps and llama.cpp's own
quantiser. No database, no storage: folders in, files out. Torch-free at import (the
controller's export and the worker's `gguf` action both write with it).

- `refusal(model_type, peft_config=None)` -> None when the model (and adapter) can be
  written, else the reason in words. Written: dense Qwen2/Qwen2.5 (`qwen2`) and Qwen3
  (`qwen3`). Refused: MoE (`qwen3_moe`) and hybrid-attention (`qwen3_next`) models, any
  other architecture, and for the adapter-only file DoRA, per-module rank/alpha patterns,
  LoRA biases and fully trained modules (`modules_to_save`) a GGUF LoRA cannot carry.
- `merged_model(base_dir, adapter_dir)` -> the base in float32 with the adapter merged by
  PEFT's `merge_and_unload`.
- `write_model(model, base_dir, out, dtype="f16")` writes the model as GGUF, one tensor at a
  time (`write_model_steps` yields the bytes written after each, so a caller can report
  progress; only one converted tensor is held in memory): the architecture's
  hyperparameters, every weight under llama.cpp's name (1-D tensors, norms and biases, stay
  float32 as llama.cpp's converter keeps them; the rest f16 or bf16; a tied `lm_head` is
  left out and llama.cpp reuses `token_embd`), and the tokenizer as llama.cpp reads a Qwen2
  one: `tokenizer.ggml.model` "gpt2", `pre` "qwen2" for Qwen's split regex ("gpt-2" for a
  plain byte-level one; read from the tokenizer as transformers loads it), tokens padded to
  the embedding's rows with `[PAD<i>]`, token types (added special tokens CONTROL, other
  added tokens USER_DEFINED), merges, bos/eos/padding ids, whether a bos/eos is added (as
  transformers encodes) and the chat template (Hugging Face's training-only
  `{% generation %}` markers removed; llama.cpp's template engine does not know them).
- `write_lora(adapter_dir, out, model_type, n_layers)` writes the adapter alone as a GGUF
  LoRA (`general.type` "adapter", `adapter.type` "lora", `adapter.lora.alpha`; tensors
  `<llama.cpp name>.weight.lora_a` (r x in) and `.lora_b` (out x r), f32), which llama.cpp
  applies to the base model's GGUF with scale alpha/r, as PEFT does (rsLoRA's alpha/sqrt(r)
  is written as the equivalent alpha).
- `quantize(src, dst, quant)` runs `llama_cpp.llama_model_quantize` with llama.cpp's Q8_0
  or Q4_K_M file type. llama.cpp quantises a tensor only when its rows fit the type's blocks
  (32 values for Q8_0, 256 for Q4_K); a tensor that does not fit falls back to a type that
  does, which llama.cpp chooses.
- `write_merged_steps(model, base_dir, out_dir, variant, stem)` writes the merged model in
  `variant` (f16/bf16 directly; Q8_0/Q4_K_M by writing f16, quantising it, and deleting the
  f16 file), yielding `(stage, done, total)` ("write": bytes; "quantize": 0 then 1), and
  returns the file's name (`trainer.shared.files.gguf_name`). `run_steps(gen, on_step)` drains one.

Errors: `GgufRefused` (a `BadInput`) with the reason; `GgufFailed` when llama.cpp's
quantiser reports a failure. The controller raises them as its own `ExportRefused` and
`ExportFailed`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

from trainer.shared.errors import BadInput, TrainerError
from trainer.shared.export_spec import GGUF_VARIANTS
from trainer.shared.files import gguf_name, split_names

ARCHITECTURES = {"qwen2": "QWEN2", "qwen3": "QWEN3"}  # model_type -> gguf.MODEL_ARCH member
REFUSED = {
    "qwen3_moe": "a mixture-of-experts model; the GGUF export handles dense models only",
    "qwen3_next": "a hybrid linear/full-attention model; the GGUF export handles dense models only",
}
VARIANTS = GGUF_VARIANTS
DTYPES = ("f16", "bf16")
QUANTS = ("Q8_0", "Q4_K_M")
_GENERATION_TAG = re.compile(r"\{%-?\s*(?:end)?generation\s*-?%\}")


class GgufRefused(BadInput):
    """This model or adapter cannot be exported as asked; the message says why."""

    default_suggestion = "export the model merged, or pick a dense Qwen2/2.5/3 base model"


class GgufFailed(TrainerError):
    """llama.cpp could not write the file."""


def _adapter_refusal(cfg: dict[str, Any]) -> str | None:
    if cfg.get("use_dora"):
        return "a DoRA adapter has magnitude vectors a GGUF LoRA cannot carry; export it merged"
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        return "per-module ranks or alphas do not fit a GGUF LoRA's single alpha; export it merged"
    if cfg.get("modules_to_save"):
        return "fully trained modules (modules_to_save) are not LoRA weights; export it merged"
    if cfg.get("lora_bias"):
        return "LoRA biases do not fit a GGUF LoRA; export it merged"
    return None


def refusal(model_type: str, peft_config: dict[str, Any] | None = None) -> str | None:
    """None when `model_type` (and the adapter config, for an adapter-only file) can be
    written as GGUF, else why not."""
    if model_type in REFUSED:
        return f"{model_type} is {REFUSED[model_type]}"
    if model_type not in ARCHITECTURES:
        supported = ", ".join(ARCHITECTURES)
        return f"the GGUF export does not handle the {model_type!r} architecture (only {supported})"
    return _adapter_refusal(peft_config) if peft_config is not None else None


def merged_model(base_dir: Path, adapter_dir: Path) -> Any:
    """The base model (float32, CPU) with the adapter merged into its weights."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32)
    return PeftModel.from_pretrained(base, adapter_dir).merge_and_unload().eval()


def _arch(model_type: str) -> Any:
    import gguf

    reason = refusal(model_type)
    if reason:
        raise GgufRefused(reason)
    return getattr(gguf.MODEL_ARCH, ARCHITECTURES[model_type])


def _hparams(w: Any, cfg: Any, dtype: str) -> None:
    import gguf

    heads = cfg.num_attention_heads
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(heads)
    w.add_head_count_kv(getattr(cfg, "num_key_value_heads", None) or heads)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_freq_base(float(getattr(cfg, "rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    scaling = getattr(cfg, "rope_scaling", None) or {}
    if scaling.get("rope_type", scaling.get("type")) == "yarn":
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(scaling["factor"])
        w.add_rope_scaling_orig_ctx_len(scaling["original_max_position_embeddings"])
    ftype = {"f16": gguf.LlamaFileType.MOSTLY_F16, "bf16": gguf.LlamaFileType.MOSTLY_BF16}
    w.add_file_type(ftype[dtype])


def _tensor_plan(w: Any, model: Any, arch: Any, dtype: str) -> list[tuple[Any, bool]]:
    """Declare every tensor (name, shape, type, size) to the writer; returns the tensors to
    write in that order, each with whether it stays float32."""
    import gguf
    import numpy as np

    cfg = model.config
    names = gguf.get_tensor_name_map(arch, cfg.num_hidden_layers)
    raw = {"f16": None, "bf16": gguf.GGMLQuantizationType.BF16}[dtype]
    plan = []
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise GgufRefused(f"no llama.cpp tensor name for {hf_name!r}")
        shape, keep32 = tuple(tensor.shape), tensor.dim() <= 1
        np_dtype = np.dtype(np.float32 if keep32 else np.float16)
        w.add_tensor_info(
            name,
            shape,
            np_dtype,
            tensor.numel() * np_dtype.itemsize,
            raw_dtype=None if keep32 else raw,
        )
        plan.append((tensor, keep32))
    return plan


def _converted(tensor: Any, keep32: bool, dtype: str) -> Any:
    """One tensor as the bytes the file holds (float32, f16, or bf16's raw bytes)."""
    import gguf
    import numpy as np

    data = tensor.detach().float().cpu().numpy()
    if keep32:
        return data.astype(np.float32)
    if dtype == "f16":
        return data.astype(np.float16)
    return gguf.quants.quantize(data, gguf.GGMLQuantizationType.BF16)


def _token_type(tok: Any, token_id: int, added: dict[str, int]) -> int:
    import gguf

    token = tok.convert_ids_to_tokens(token_id)
    if token not in added:
        return gguf.TokenType.NORMAL
    special = tok.added_tokens_decoder[token_id].special
    return gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED


def _pre_tokenizer(tok: Any) -> str:
    """llama.cpp's name for the pre-tokenizer transformers uses (which can differ from the
    one in tokenizer.json: transformers builds Qwen2Tokenizer with Qwen's split regex)."""
    data = json.loads(tok.backend_tokenizer.to_str())
    pre = data.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    if "Split" in kinds:
        return "qwen2"
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"
    raise GgufRefused(
        f"the tokenizer's pre-tokenizer {kinds} is not one llama.cpp reads as Qwen2's"
    )


def chat_template_for_gguf(template: str) -> str:
    """The chat template without Hugging Face's `{% generation %}` training markers."""
    return _GENERATION_TAG.sub("", template)


def _tokenizer(w: Any, base_dir: Path, n_vocab: int) -> None:
    import gguf
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_dir)
    added = tok.get_added_vocab()
    known = len(tok)
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n_vocab):
        if i >= known:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(tok.convert_ids_to_tokens(i))
            types.append(_token_type(tok, i, added))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(_pre_tokenizer(tok))
    w.add_token_list(tokens)
    w.add_token_types(types)
    special = gguf.SpecialVocab(base_dir, load_merges=True, n_vocab=n_vocab)
    plain, marked = tok("a", add_special_tokens=False)["input_ids"], tok("a")["input_ids"]
    special.add_special_token["bos"] = marked[:1] != plain[:1]  # as transformers encodes
    special.add_special_token["eos"] = marked[-1:] != plain[-1:]
    template = tok.chat_template if isinstance(tok.chat_template, str) else None
    special.chat_template = chat_template_for_gguf(template) if template else None
    special.add_to_gguf(w)


def shard_paths(out: Path, shards: int) -> list[Path]:
    """The files `write_model(..., out, shards=shards)` writes: `out`, or its shards."""
    return [out.with_name(name) for name in split_names(out.name, shards)]


def write_model(model: Any, base_dir: Path, out: Path, dtype: str = "f16", shards: int = 1) -> int:
    """Write `model` (a transformers causal LM; `base_dir` holds its tokenizer) as GGUF at
    `out` in `dtype` ("f16" or "bf16"), split into `shards` files when more than one (see
    `write_model_steps`); returns the bytes written."""
    for _ in write_model_steps(model, base_dir, out, dtype, shards):
        pass
    return sum(p.stat().st_size for p in shard_paths(out, shards))


def _split(w: Any, shards: int) -> None:
    """Spread the writer's declared tensors over `shards` files in order, each tensor in the
    file where its first byte falls by equal shares (a file holds at most its share plus one
    tensor), no file left empty."""
    tensors = list(w.tensors[0].items())
    if shards > len(tensors):
        raise GgufRefused(f"cannot split {len(tensors)} tensors into {shards} GGUF files")
    total = sum(info.nbytes for _, info in tensors)
    parts: list[dict[str, Any]] = [{} for _ in range(shards)]
    start, last = 0, -1
    for i, (name, info) in enumerate(tensors):
        lowest = max(last, shards - (len(tensors) - i))  # enough tensors left for the rest
        last = min(max(start * shards // total, lowest), last + 1)
        parts[last][name] = info
        start += info.nbytes
    w.tensors = parts  # gguf's writer writes one file per entry (split.no/count/tensors.count)


def write_model_steps(
    model: Any, base_dir: Path, out: Path, dtype: str = "f16", shards: int = 1
) -> Iterator[tuple[int, int]]:
    """`write_model`, yielding (bytes of tensors written, bytes of all tensors) after each
    tensor; one converted tensor at a time is held in memory. With `shards` > 1 the model
    is llama.cpp's split GGUF in exactly that many files (`shard_paths`): the metadata in
    the first, the tensors in order, each file about an equal share of the bytes."""
    import gguf

    if dtype not in DTYPES:
        raise GgufRefused(f"GGUF precision {dtype!r} is not one of {', '.join(DTYPES)}")
    cfg = model.config
    arch = _arch(cfg.model_type)
    w = gguf.GGUFWriter(str(out), gguf.MODEL_ARCH_NAMES[arch])
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(Path(base_dir).name)
    _hparams(w, cfg, dtype)
    _tokenizer(w, Path(base_dir), cfg.vocab_size)
    plan = _tensor_plan(w, model, arch, dtype)
    if shards > 1:
        _split(w, shards)
    total = sum(t.numel() * (4 if keep32 else 2) for t, keep32 in plan)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    done = 0
    for tensor, keep32 in plan:
        data = _converted(tensor, keep32, dtype)
        w.write_tensor_data(data)
        done += data.nbytes
        yield done, total
    w.close()


def _finish(w: Any) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _lora_tensors(adapter_dir: Path) -> dict[str, Any]:
    from safetensors.numpy import load_file

    return load_file(str(adapter_dir / "adapter_model.safetensors"))


def write_lora(adapter_dir: Path, out: Path, model_type: str, n_layers: int) -> int:
    """Write the PEFT adapter in `adapter_dir` alone as a GGUF LoRA at `out` (see the
    module docstring); returns the file's size in bytes."""
    import gguf
    import numpy as np

    cfg = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    reason = refusal(model_type, cfg)
    if reason:
        raise GgufRefused(reason)
    arch = _arch(model_type)
    names = gguf.get_tensor_name_map(arch, n_layers)
    r = int(cfg["r"])
    alpha = float(cfg.get("lora_alpha", r))
    if cfg.get("use_rslora"):  # PEFT scales by alpha/sqrt(r); llama.cpp by alpha/r
        alpha = alpha * math.sqrt(r)
    w = gguf.GGUFWriter(str(out), gguf.MODEL_ARCH_NAMES[arch])
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for key, data in sorted(_lora_tensors(adapter_dir).items()):
        match = re.fullmatch(r"(?:base_model\.model\.)?(.+)\.lora_([AB])\.weight", key)
        name = names.get_name(match.group(1)) if match else None
        if name is None:
            raise GgufRefused(f"adapter tensor {key!r} has no llama.cpp counterpart")
        suffix = ".weight.lora_a" if match.group(2) == "A" else ".weight.lora_b"
        w.add_tensor(name + suffix, data.astype(np.float32))
    _finish(w)
    return out.stat().st_size


def quantize(src: Path, dst: Path, quant: str, threads: int = 0, shards: int = 1) -> int:
    """llama.cpp's quantiser: `src` (an f16/bf16 GGUF, or split in `shards` files named as
    `shard_paths` names them) to `dst` in `quant` (Q8_0 or Q4_K_M), split as `src` is;
    returns the bytes written."""
    import ctypes

    import llama_cpp

    ftypes = {
        "Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
        "Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
    }
    if quant not in ftypes:
        raise GgufRefused(f"GGUF quantisation {quant!r} is not one of {', '.join(ftypes)}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftypes[quant]
    params.nthread = threads
    params.keep_split = shards > 1
    first = shard_paths(src, shards)[0]
    # split, llama.cpp writes `<dst given>-00001-of-0000N.gguf`: it is given the name's stem
    target = dst if shards <= 1 else dst.with_name(dst.name.removesuffix(".gguf"))
    rc = llama_cpp.llama_model_quantize(
        str(first).encode(), str(target).encode(), ctypes.byref(params)
    )
    written = shard_paths(dst, shards)
    if rc != 0 or not all(p.is_file() for p in written):
        raise GgufFailed(f"llama.cpp could not quantise the model to {quant} (code {rc})")
    return sum(p.stat().st_size for p in written)


Steps = Generator[tuple[str, int, int], None, str]


def write_merged_steps(
    model: Any, base_dir: Path, out_dir: Path, variant: str, stem: str, shards: int = 1
) -> Steps:
    """Write the merged `model` as `variant` into `out_dir`, in `shards` files (see the
    module docstring); yields (stage, done, total), returns the GGUF's (first) file name."""
    if variant not in VARIANTS:
        raise GgufRefused(f"GGUF variant {variant!r} is not one of {', '.join(VARIANTS)}")
    dtype = variant if variant in DTYPES else "f16"
    full = out_dir / gguf_name(stem, dtype)
    for done, total in write_model_steps(model, base_dir, full, dtype, shards):
        yield "write", done, total
    if variant in DTYPES:
        return shard_paths(full, shards)[0].name
    yield "quantize", 0, 1
    quantised = out_dir / gguf_name(stem, variant)
    quantize(full, quantised, variant, shards=shards)
    for p in shard_paths(full, shards):
        p.unlink()
    yield "quantize", 1, 1
    return shard_paths(quantised, shards)[0].name


def run_steps(steps: Steps, on_step: Callable[[str, int, int], None] | None = None) -> str:
    """Drain a `write_merged_steps` generator, handing each step to `on_step`; returns its
    file name."""
    while True:
        try:
            step = next(steps)
        except StopIteration as end:
            return str(end.value)
        if on_step is not None:
            on_step(*step)
