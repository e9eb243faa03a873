"""The sections of the jobs that take a trained adapter elsewhere (`JobSpec.merge`,
`JobSpec.gguf`): which adapter, and what to make of it. Pydantic only (no torch).

Both name the adapter as exactly one of `adapter_path` (a folder the worker sees) or
`adapter_urls` (signed URLs of `adapter_config.json` and `adapter_model.safetensors`, by
file name), and load the base model in `dtype` before merging the adapter into it.

- `MergeSpec` (action `merge`): the merged model saved as safetensors shards of at most
  `max_shard_size_mb`, optionally pushed to `hub_repo` with the worker's own HF_TOKEN.
- `GgufSpec` (action `gguf`): the merged model written as GGUF in `variant` (`f16` or
  `bf16`; `Q8_0` or `Q4_K_M` quantised from the f16 file by llama.cpp), with an Ollama
  Modelfile; the files are named `trainer.shared.files.gguf_names(file_stem, variant,
  shards)`: one GGUF, or llama.cpp's split GGUF in `shards` files when one file would be
  above `max_file_bytes` (the controller chooses the count; the worker refuses to upload a
  file above the limit).
"""

from __future__ import annotations

import re
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

GgufVariant = Literal["f16", "bf16", "Q8_0", "Q4_K_M"]
GGUF_VARIANTS: tuple[str, ...] = get_args(GgufVariant)
LoadDtype = Literal["bfloat16", "float16", "float32"]
_STEM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class AdapterSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    adapter_path: str | None = None
    adapter_urls: dict[str, str] = Field(default_factory=dict)
    dtype: LoadDtype = "bfloat16"

    @model_validator(mode="after")
    def _one_adapter(self) -> AdapterSource:
        what = "merge" if isinstance(self, MergeSpec) else "gguf"
        if bool(self.adapter_path) == bool(self.adapter_urls):
            raise ValueError(
                "give the adapter to merge as exactly one of adapter_path or adapter_urls"
            )
        missing = {"adapter_config.json", "adapter_model.safetensors"} - set(self.adapter_urls)
        if self.adapter_urls and missing:
            raise ValueError(f"{what}.adapter_urls lacks {sorted(missing)}")
        return self


class MergeSpec(AdapterSource):
    """A `merge` job (see the module docstring)."""

    max_shard_size_mb: float = Field(5000.0, gt=0, le=50_000)
    hub_repo: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$"
    )
    hub_private: bool = True


class GgufSpec(AdapterSource):
    """A `gguf` job (see the module docstring)."""

    variant: GgufVariant = "f16"
    file_stem: str = Field(description="the GGUF file's name before '-<variant>.gguf'")
    shards: int = Field(1, ge=1, le=999, description="files of llama.cpp's split GGUF")
    max_file_bytes: int | None = Field(
        None, gt=0, description="the largest file the store takes in one upload"
    )

    @field_validator("file_stem")
    @classmethod
    def _stem(cls, v: str) -> str:
        if not _STEM.match(v) or ".." in v:
            raise ValueError(
                f"gguf.file_stem {v!r} must be 1-128 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        return v
