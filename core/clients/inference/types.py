"""Errors and value types of the inference client (see `core.clients.inference`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from core.errors import BrightRunError, InvalidInput

# --------------------------------------------------------------------------- errors


class InferenceError(BrightRunError):
    """The inference server could not answer as asked."""


class InferenceUnavailable(InferenceError):
    """The server at INFERENCE_URL is not reachable, or is not an OpenAI-compatible API."""


class InferenceAuthError(InferenceError):
    """The server refused INFERENCE_API_KEY."""


class ModelNotServed(InferenceError):
    """The server neither serves the model or adapter nor could resolve it."""


class AdapterLoadFailed(InferenceError):
    """The adapter was found but the server would not load it."""


class AdapterBaseMismatch(AdapterLoadFailed):
    """The adapter was trained on a different base model than the one served."""


class RuntimeLoadingDisabled(AdapterLoadFailed):
    """The server has no /v1/load_lora_adapter (vLLM without runtime LoRA updating)."""


class RequestRejected(InferenceError):
    """The server refused the request itself (sampling values, context length)."""


# --------------------------------------------------------------------------- values


class LoadMode(StrEnum):
    SERVED = "served"  # already listed by /v1/models
    RUNTIME = "runtime"  # loaded now with POST /v1/load_lora_adapter
    RESOLVER = "resolver"  # left to the server's filesystem resolver on first use


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of one request. The defaults here are the only defaults."""

    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 256
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= 2.0:
            raise InvalidInput(f"temperature {self.temperature} must be between 0 and 2")
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidInput(f"top_p {self.top_p} must be above 0 and at most 1")
        if not 1 <= self.max_tokens <= 32768:
            raise InvalidInput(f"max_tokens {self.max_tokens} must be between 1 and 32768")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise InvalidInput(f"seed {self.seed} must be a non-negative integer")
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,) if self.stop else ())
        if len(self.stop) > 4 or any(not s for s in self.stop):
            raise InvalidInput("stop takes up to 4 non-empty strings")

    def request_fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
        }
        if self.seed is not None:
            out["seed"] = self.seed
        if self.stop:
            out["stop"] = list(self.stop)
        return out


@dataclass(frozen=True)
class ServedModel:
    id: str
    parent: str | None = None  # the base's name for an adapter; None for a base model
    root: str | None = None  # where the server loaded it from
    owned_by: str | None = None  # "vllm" from vLLM, "brightrun" from the local server

    @property
    def is_adapter(self) -> bool:
        return self.parent is not None


@dataclass(frozen=True)
class AdapterAvailability:
    name: str
    mode: LoadMode
    detail: str  # for an admin: which mode, and why (may name the adapter's folder)

    @property
    def summary(self) -> str:
        """Which mode, in words that name no folder (what a member reads)."""
        return {
            LoadMode.SERVED: "already served",
            LoadMode.RUNTIME: "loaded on the inference server",
            LoadMode.RESOLVER: "loaded by the inference server on the first request",
        }[self.mode]


@dataclass(frozen=True)
class ChatResult:
    model: str
    text: str
    finish_reason: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0


# --------------------------------------------------------------------------- the client
