"""The worker's environment, read once at the edge (the handler or the CLI) and passed in.

The trainer imports nothing from `core`, so it has its own small settings object. Variables:

- `MODEL_CACHE_DIR`: where base models are looked up before the hub and downloaded into.
  Default `/runpod-volume/models` when the network volume is mounted, else
  `<tmp>/brightrun/models`.
- `CHECKPOINT_DIR`: checkpoints go to `<CHECKPOINT_DIR>/<job id>`; a job started again with
  the same id resumes from there. Default `/runpod-volume/checkpoints` on the volume, else
  `<tmp>/brightrun/checkpoints`.
- `ADAPTER_DIR`: finished adapters are also copied to `<ADAPTER_DIR>/<adapter name>` (where
  a vLLM server sharing the volume finds them). Default `/runpod-volume/adapters` when the
  volume is mounted, else unset (no copy).
- `HF_TOKEN`: for gated or private hub models. Only ever from the worker's environment,
  never from a job payload; never logged or reported. A value starting with `{{` is a
  RunPod secret reference that did not resolve (the template names a secret that does not
  exist): the hub refuses an invalid token even for public models, so it counts as unset,
  with a warning naming the variable (never the value). Hub downloads send this token or
  none, never one huggingface_hub would read from the process environment itself.
- `CACHED_MODELS_DIR`: RunPod's cached models (a model set on the endpoint in the console,
  placed on the host before the worker starts, its download not billed), in the Hugging
  Face hub cache layout `models--ORG--NAME/snapshots/REV`. Default
  `/runpod-volume/huggingface-cache/hub`; looked in before `MODEL_CACHE_DIR` and the hub.
- `BRIGHTRUN_NO_ADAPTER_DIR`: set (to anything) for no adapter copy even on the volume;
  how `to_environ` passes `adapter_dir=None` to a multi-GPU job's processes.
- `COLLECTIVE_TIMEOUT_S`: a multi-GPU job's bound on any one collective (all-gather,
  reduce-scatter, barrier): a rank that stops answering makes the others fail after this
  many seconds instead of hanging. Default 600 (a checkpoint's save is one collective).
- `GRADER_BASE_URL`, `GRADER_API_KEY`: the OpenAI-compatible endpoint (`.../v1`) a GRPO
  job's `score_model` graders ask; unset, such a grader scores 0 with that reason. The
  key is never logged or reported, and a python grader's process never sees it.
- `BRIGHTRUN_FORCE_NAN_AT_STEP`: test hook, makes the loss of that optimizer step NaN so
  the divergence guard can be exercised end to end.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

VOLUME = Path("/runpod-volume")
RUNPOD_CACHED_MODELS = VOLUME / "huggingface-cache" / "hub"

log = logging.getLogger("brightrun.trainer")


def _hf_token(value: str | None) -> str | None:
    token = (value or "").strip() or None
    if token is not None and token.startswith("{{"):
        log.warning(
            "HF_TOKEN is an unresolved RunPod secret reference: no secret of that name exists "
            "for this endpoint, so it is treated as unset (public models only); create the "
            "secret or fix the reference in the template"
        )
        return None
    return token


@dataclass(frozen=True)
class WorkerEnv:
    model_cache_dir: Path
    checkpoint_dir: Path
    adapter_dir: Path | None
    hf_token: str | None = None
    force_nan_at_step: int | None = None
    cached_models_dir: Path = RUNPOD_CACHED_MODELS
    collective_timeout_s: float = 600.0
    grader_base_url: str | None = None
    grader_api_key: str | None = None

    def __repr__(self) -> str:  # never show the token
        return (
            f"WorkerEnv(model_cache_dir={self.model_cache_dir!s}, "
            f"checkpoint_dir={self.checkpoint_dir!s}, adapter_dir={self.adapter_dir!s}, "
            f"hf_token={'set' if self.hf_token else 'not set'})"
        )

    def public_view(self) -> dict[str, str | None]:
        return {
            "model_cache_dir": str(self.model_cache_dir),
            "checkpoint_dir": str(self.checkpoint_dir),
            "adapter_dir": str(self.adapter_dir) if self.adapter_dir else None,
            "cached_models_dir": str(self.cached_models_dir),
            "hf_token": "set" if self.hf_token else "not set",
        }

    def to_environ(self) -> dict[str, str]:
        """The variables `from_environ` reads back as this object (for the processes of a
        multi-GPU job; the token only travels in their environment, never in a file)."""
        env = {
            "MODEL_CACHE_DIR": str(self.model_cache_dir),
            "CHECKPOINT_DIR": str(self.checkpoint_dir),
            "ADAPTER_DIR": str(self.adapter_dir) if self.adapter_dir else "",
            "CACHED_MODELS_DIR": str(self.cached_models_dir),
            "COLLECTIVE_TIMEOUT_S": str(self.collective_timeout_s),
            "HF_TOKEN": self.hf_token or "",
            "BRIGHTRUN_FORCE_NAN_AT_STEP": str(self.force_nan_at_step or ""),
            "GRADER_BASE_URL": self.grader_base_url or "",
            "GRADER_API_KEY": self.grader_api_key or "",
        }
        if self.adapter_dir is None:
            env["BRIGHTRUN_NO_ADAPTER_DIR"] = "1"
        return env

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, volume: Path = VOLUME
    ) -> WorkerEnv:
        env = os.environ if environ is None else environ
        on_volume = volume.is_dir()
        local = Path(tempfile.gettempdir()) / "brightrun"

        def path(name: str, on_vol: Path, off_vol: Path | None) -> Path | None:
            if env.get(name):
                return Path(env[name])
            return on_vol if on_volume else off_vol

        nan_step = env.get("BRIGHTRUN_FORCE_NAN_AT_STEP")
        return cls(
            model_cache_dir=path("MODEL_CACHE_DIR", volume / "models", local / "models"),
            checkpoint_dir=path("CHECKPOINT_DIR", volume / "checkpoints", local / "checkpoints"),
            adapter_dir=None
            if env.get("BRIGHTRUN_NO_ADAPTER_DIR")
            else path("ADAPTER_DIR", volume / "adapters", None),
            hf_token=_hf_token(env.get("HF_TOKEN")),
            force_nan_at_step=int(nan_step) if nan_step else None,
            cached_models_dir=Path(env.get("CACHED_MODELS_DIR") or RUNPOD_CACHED_MODELS),
            collective_timeout_s=float(env.get("COLLECTIVE_TIMEOUT_S") or 600.0),
            grader_base_url=env.get("GRADER_BASE_URL") or None,
            grader_api_key=env.get("GRADER_API_KEY") or None,
        )
