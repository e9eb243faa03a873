"""The names of the files a worker writes: the keys of `OutputSpec.upload_urls`.

The controller signs one upload URL per name before the job runs, so these names are part
of the contract, defined here once.

- A training job's adapter folder: `ADAPTER_FILES` (PEFT's weights and config, plus
  `brightrun.json`: the spec without URLs, summary, metrics). `adapter_config.json` and
  `adapter_model.safetensors` (`PEFT_FILES`) are what a merge needs of an adapter.
- Every job, whether it succeeds or fails: `LOG_FILES`, the full event log and the final
  result.
- A merge: `upload_names(total_bytes, max_shard_bytes)` is every name it may write: the
  config and tokenizer files (`CONFIG_FILES`), the single `model.safetensors` or the
  shards `model-00001.safetensors`, ... (`shard_name(i)`, independent of the shard count)
  with `model.safetensors.index.json` mapping every tensor to its file. `max_shards`
  bounds the count: greedy sharding closes a shard only when the next tensor would not
  fit, so two neighbouring shards together hold more than the limit.
- A GGUF export: `gguf_names(stem, variant, shards)`, the GGUF file (`<stem>-<variant>.gguf`,
  or `<stem>-lora.gguf` for the adapter alone) and the Ollama `Modelfile` beside it. A file
  too large for one upload is written as llama.cpp's split GGUF in exactly `shards` files
  (`gguf_files`: `<stem>-<variant>-00001-of-00003.gguf`, ...; llama.cpp names them with
  their count, so the count is fixed before the job runs and the URLs signed for it).
"""

from __future__ import annotations

import math

EVENTS = "events.jsonl"
RESULT = "result.json"
LOG_FILES = (EVENTS, RESULT)

RECORD = "brightrun.json"
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json", RECORD)

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
# Everything but the weights that save_pretrained / a tokenizer may write.
CONFIG_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    RECORD,
)


def shard_name(i: int) -> str:
    return f"model-{i:05d}.safetensors"


def max_shards(total_bytes: int, max_shard_bytes: int) -> int:
    """An upper bound on the shard count of greedy sharding (see the module docstring)."""
    return max(1, 2 * math.ceil(total_bytes / max(1, max_shard_bytes)) + 1)


def upload_names(total_bytes: int, max_shard_bytes: int) -> list[str]:
    """Every file name a merge of a model of `total_bytes` may write."""
    n = max_shards(total_bytes, max_shard_bytes)
    return [*CONFIG_FILES, SINGLE, INDEX, *(shard_name(i) for i in range(1, n + 1))]


MODELFILE = "Modelfile"


def gguf_name(stem: str, variant: str) -> str:
    """The GGUF file of a merged model in `variant`, or of the adapter alone ("lora")."""
    return f"{stem}-{variant}.gguf"


def split_names(name: str, shards: int) -> list[str]:
    """The GGUF file `name`, or its `shards` files in order when it is split, named as
    llama.cpp names them (`x.gguf` -> `x-00001-of-00003.gguf`, ...)."""
    if shards <= 1:
        return [name]
    stem = name.removesuffix(".gguf")
    return [f"{stem}-{i:05d}-of-{shards:05d}.gguf" for i in range(1, shards + 1)]


def gguf_files(stem: str, variant: str, shards: int = 1) -> list[str]:
    """The GGUF file of an export, or its shards in order when it is split."""
    return split_names(gguf_name(stem, variant), shards)


def gguf_names(stem: str, variant: str, shards: int = 1) -> list[str]:
    """Every file a GGUF export writes (see the module docstring)."""
    return [*gguf_files(stem, variant, shards), MODELFILE]
