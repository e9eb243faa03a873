"""The local inference server: the subset of vLLM's OpenAI API that BrightRun uses.

    python -m local.inference --base <model folder or hub id> [--adapters-dir DIR]
        [--served-model-name NAME] [--host 127.0.0.1] [--port 8301] [--device auto]
        [--no-resolver] [--no-runtime-loading] [--build-tiny] [--max-lora-rank 16]
        [--max-model-len N]

One base model, many PEFT LoRA adapters switched per request without reloading the base
(peft multi-adapter: `load_adapter`/`set_adapter`, `disable_adapter` for the base).
Generation is serialised by one lock; tokens stream as they are sampled.

Routes (shapes follow vLLM's OpenAI server):
- `GET /health` → 200.
- `GET /v1/models` → the base (`id` = served name, `root` = path) and every loaded
  adapter (`parent` = the served base name).
- `POST /v1/chat/completions` → a `chat.completion`, or with `"stream": true` server-sent
  events `data: {chat.completion.chunk}` ending `data: [DONE]`. Honours `temperature`
  (0 = greedy; absent: the model's generation config), `top_p`, `max_tokens` /
  `max_completion_tokens`, `seed` (a per-request `torch.Generator`), `stop` and
  `stream_options.include_usage`. The chat template is the tokenizer's.
- `POST /v1/load_lora_adapter {"lora_name", "lora_path", "load_inplace"?}` → 200 text.
- `POST /v1/unload_lora_adapter {"lora_name"}` → 200 text.

Filesystem resolver (on unless `--no-resolver`, like vLLM's `lora_filesystem_resolver`):
a chat request for a model name that is not served but is a folder `<adapters-dir>/<name>`
holding a LoRA `adapter_config.json` loads that adapter on first use.

Like vLLM's resolver, a folder whose `base_model_name_or_path` is not exactly the served
name is not found (404); runtime loading does not check the base (BrightRun's client does,
before it posts). An adapter above `--max-lora-rank` (default 16, as vLLM) is refused with
vLLM's 500.

Errors use vLLM's envelope `{"error": {"message", "type", "param", "code"}}` with the HTTP
status in `code`, with vLLM 0.32.0's status, type and param (tests/inference/test_contract.py
holds both servers to them): 404 `NotFoundError` (unknown model, no adapter at the path,
unload of a name not loaded), 400 `BadRequestError` (sampling values, context length, an
adapter the resolver found but could not load), 400 `Bad Request` (a body that does not
parse, param `body.<field>`), 400 `InvalidUserInput` (name already loaded, or the base's
name), 500 `InternalServerError` (rank above `--max-lora-rank`). Beyond vLLM: 400
`BadRequestError` for an adapter whose modules or shapes do not fit the base (vLLM loads it
and answers with it), 400 `ExpertLoraNeedsMerge` (an adapter with LoRA on the routed
experts of a MoE model: neither vLLM's multi-LoRA nor this server applies it per request;
it is served by merging it). When the settings carry an inference API key, `/v1/*` requires it as a bearer
token (401 `{"error": "Unauthorized"}` otherwise, as vLLM).
"""

from local.inference.engine import Delta, Engine, Prepared
from local.inference.protocol import (
    ChatMessage,
    ChatRequest,
    LoadRequest,
    ServerError,
    UnloadRequest,
)
from local.inference.server import create_app, main

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "Delta",
    "Engine",
    "LoadRequest",
    "Prepared",
    "ServerError",
    "UnloadRequest",
    "create_app",
    "main",
]
