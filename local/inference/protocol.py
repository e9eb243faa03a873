"""vLLM's OpenAI API as the local inference server speaks it: the error envelope and the
request bodies (unknown fields are ignored, as vLLM does). Status, `type` and `param` of
each error are vLLM 0.32.0's, checked by tests/inference/test_contract.py against it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ServerError(Exception):
    """An error answered to the caller in vLLM's envelope."""

    def __init__(self, status: int, err_type: str, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.err_type, self.message, self.param = status, err_type, message, param

    def envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.err_type,
                "param": self.param,
                "code": self.status,
            }
        }


def not_found(message: str, param: str | None = None) -> ServerError:
    return ServerError(404, "NotFoundError", message, param)


def bad_request(
    message: str, param: str | None = None, err_type: str = "BadRequestError"
) -> ServerError:
    return ServerError(400, err_type, message, param)


# --- request bodies ---------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")  # vLLM ignores fields it does not know


class ChatMessage(_Body):
    role: str
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(_Body):
    include_usage: bool = False


class ChatRequest(_Body):
    """A body that does not parse is a 400 `Bad Request` naming `body.<field>`; sampling
    values out of range are a 400 `BadRequestError` naming the field (`check_sampling`)."""

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=1)

    def check_sampling(self) -> None:
        """vLLM's range checks, with its messages."""

        def refuse(field: str, rule: str, value: object) -> ServerError:
            return bad_request(
                f"{field} must be {rule}, got {value}. (parameter={field}, value={value})", field
            )

        if self.temperature is not None and not 0.0 <= self.temperature <= 2.0:
            raise refuse("temperature", "in [0, 2]", float(self.temperature))
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise refuse("top_p", "in (0, 1]", float(self.top_p))
        wanted = self.max_completion_tokens or self.max_tokens
        if wanted is not None and wanted < 1:
            raise refuse("max_tokens", "at least 1", wanted)


class LoadRequest(_Body):
    lora_name: str
    lora_path: str
    load_inplace: bool = False


class UnloadRequest(_Body):
    lora_name: str = ""


class CompletionRequest(_Body):
    """`/v1/completions` as used for scoring: the prompt echoed with each token's
    log-probability (vLLM: `echo` with `logprobs`); the local server generates nothing."""

    model: str
    prompt: str = Field(min_length=1)
    max_tokens: int | None = Field(16, ge=0)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=5)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
