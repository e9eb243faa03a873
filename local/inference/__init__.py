"""The local inference server: the subset of vLLM's OpenAI API that BrightRun uses.

    python -m local.inference --base <model folder or hub id> [--adapters-dir DIR]
        [--served-model-name NAME] [--host 127.0.0.1] [--port 8301] [--device auto]
        [--no-resolver] [--no-runtime-loading] [--build-tiny]

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

An adapter whose `base_model_name_or_path` differs from the served base name is refused
(the same rule as vLLM's resolver; here two paths naming the same folder also match).

Errors use vLLM's envelope `{"error": {"message", "type", "param", "code"}}` with the HTTP
status in `code`: 404 `NotFoundError` (unknown model, no adapter at the path), 400
`BadRequestError` (bad request or unloadable adapter), 400 `InvalidUserInput` (name already
loaded), 400 `BaseModelMismatch` (adapter trained on another base: a BrightRun
extension), 400 `ExpertLoraNeedsMerge` (an adapter with LoRA on the routed experts of a MoE
model: neither vLLM's multi-LoRA nor this server applies it per request; it is served by
merging it; the base and the other adapters are untouched). When the settings carry an inference API key, `/v1/*` requires it as a bearer
token (401 otherwise).
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
