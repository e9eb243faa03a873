"""Chat with base models and adapters through a vLLM-compatible OpenAI API.

The server is `settings.inference_url` (vLLM, RunPod worker-vllm's `.../openai/v1`, or
the local server `python -m local.inference`), reached with the official `openai`
package and `settings.inference_api_key`. Nothing here imports streamlit; the playground
page, `brightrun chat` and the evaluation all call these functions.

Models are addressed by their served name: the base by its name, an adapter by its
adapter name (`/v1/models` lists adapters with `parent` = the base). An adapter the server
does not list yet is made available by `InferenceClient.ensure_adapter`, in the mode
`settings.inference_lora_loading` asks for:

- `runtime`: `POST /v1/load_lora_adapter {"lora_name", "lora_path"}` (vLLM started with
  `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`). The adapter lives only in the server process
  that loaded it.
- `resolver`: nothing is posted; the server's filesystem resolver loads
  `<its adapter folder>/<name>` on the first request for that name (vLLM with
  `VLLM_PLUGINS=lora_filesystem_resolver`; the local server does this by default). The
  default on RunPod, where workers come and go.
- `auto` (default): runtime loading, falling back to the resolver when the server has no
  runtime-loading route (`RuntimeLoadingDisabled` is kept as the reason).

`AdapterAvailability.mode` says which one was used and `detail` why. The adapter path is
the folder as the *server* sees it: `settings.inference_adapters_dir/<name>` (empty
setting: `<data_dir>/volume/adapters/<name>`, where local jobs copy finished adapters).

What a user may chat with is `model_choices(actor, ...)`: the served base, then the actor's
own ready adapter versions that have a folder on the shared volume (served under that
folder's name, the resolver's rule) and checkpoints (served as `ckpt-<version id>`: loaded at
run time, or in resolver mode copied into the resolver folder under that name). Another user's versions never appear. With AUTH=none, adapters the
server lists and folders in the local adapter folder are offered too.

Errors are typed (`InferenceError` and subclasses, all `BrightRunError`), decided from the
HTTP status and the `type` field of vLLM's error envelope, never from message text:
`InferenceUnavailable` (server unreachable or not an OpenAI API), `InferenceAuthError`
(key refused), `ModelNotServed` (unknown model or adapter, resolver found nothing),
`AdapterLoadFailed` (found but refused) with `AdapterBaseMismatch` (trained on another
base) and `RuntimeLoadingDisabled` (no load route), `RequestRejected` (bad sampling
values, context too long). Bad sampling values are refused before any request with
`InvalidInput` naming the field.

More than one base model: one endpoint per base (INFERENCE_URLS, base name -> URL, beside
the default INFERENCE_URL); `InferenceRouter` sends each request to the endpoint of its
model's base, `model_choice_set` lists the adapters whose base is served and says why
the others are not, and `client_for_base` gives the evaluation its endpoint.

Modules: `types` (errors, sampling, results), `client` (`InferenceClient`), `routing`
(endpoints per base, `InferenceRouter`), `choices` (what an actor may chat with),
`prompts` (comparisons and prompt sets), `tools` (chat with tools and
reasoning: `agent_chat`), `streams` (several models answering at once; the demo model).
"""

from __future__ import annotations

from core.clients.inference.choices import (
    ChoiceSet,
    ModelChoice,
    Unserved,
    actor_choice_set,
    actor_choices,
    database_ready,
    find_choice,
    model_choice_set,
    model_choices,
    shown_model,
)
from core.clients.inference.client import ChatStream, InferenceClient, local_adapters_dir, same_base
from core.clients.inference.prompts import (
    CompareRow,
    PromptCase,
    cases_from_conversations,
    compare,
    compare_on_set,
    conversation_messages,
    eval_split_cases,
    eval_split_datasets,
    export_conversation_jsonl,
    export_set_jsonl,
    parse_prompt_set,
)
from core.clients.inference.routing import InferenceRouter, client_for_base, endpoint_for
from core.clients.inference.tools import (
    AgentReply,
    ToolCall,
    agent_chat,
    dataset_tools,
    holds_tool_call,
    parse_tools_json,
    tool_datasets,
    tool_result,
)
from core.clients.inference.types import (
    AdapterAvailability,
    AdapterBaseMismatch,
    AdapterLoadFailed,
    ChatResult,
    InferenceAuthError,
    InferenceError,
    InferenceUnavailable,
    LoadMode,
    ModelNotServed,
    RequestRejected,
    RuntimeLoadingDisabled,
    Sampling,
    ServedModel,
)

__all__ = [
    "AgentReply",
    "ToolCall",
    "agent_chat",
    "dataset_tools",
    "tool_datasets",
    "holds_tool_call",
    "parse_tools_json",
    "tool_result",
    "InferenceError",
    "InferenceUnavailable",
    "InferenceAuthError",
    "ModelNotServed",
    "AdapterLoadFailed",
    "AdapterBaseMismatch",
    "RuntimeLoadingDisabled",
    "RequestRejected",
    "LoadMode",
    "Sampling",
    "ServedModel",
    "AdapterAvailability",
    "ChatResult",
    "ChatStream",
    "InferenceClient",
    "local_adapters_dir",
    "ModelChoice",
    "model_choices",
    "shown_model",
    "actor_choices",
    "database_ready",
    "find_choice",
    "compare",
    "PromptCase",
    "parse_prompt_set",
    "cases_from_conversations",
    "eval_split_datasets",
    "eval_split_cases",
    "CompareRow",
    "compare_on_set",
    "conversation_messages",
    "export_conversation_jsonl",
    "export_set_jsonl",
    "ChoiceSet",
    "Unserved",
    "model_choice_set",
    "actor_choice_set",
    "same_base",
    "InferenceRouter",
    "client_for_base",
    "endpoint_for",
]
