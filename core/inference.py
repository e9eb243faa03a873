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
folder's name, the resolver's rule) and checkpoints (served as `ckpt-<version id>`, by
runtime loading). Another user's versions never appear. With AUTH=none, adapters the
server lists and folders in the local adapter folder are offered too.

Errors are typed (`InferenceError` and subclasses, all `BrightRunError`), decided from the
HTTP status and the `type` field of vLLM's error envelope, never from message text:
`InferenceUnavailable` (server unreachable or not an OpenAI API), `InferenceAuthError`
(key refused), `ModelNotServed` (unknown model or adapter, resolver found nothing),
`AdapterLoadFailed` (found but refused) with `AdapterBaseMismatch` (trained on another
base) and `RuntimeLoadingDisabled` (no load route), `RequestRejected` (bad sampling
values, context too long). Bad sampling values are refused before any request with
`InvalidInput` naming the field.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import BrightRunError, InvalidInput

if TYPE_CHECKING:
    import openai
    from sqlalchemy.orm import Session

    from core.settings import Settings
    from core.users import Actor

__all__ = [
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
]


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

    @property
    def is_adapter(self) -> bool:
        return self.parent is not None


@dataclass(frozen=True)
class AdapterAvailability:
    name: str
    mode: LoadMode
    detail: str  # for the user: which mode, and why


@dataclass(frozen=True)
class ChatResult:
    model: str
    text: str
    finish_reason: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0


# --------------------------------------------------------------------------- the client


def local_adapters_dir(settings: Settings) -> Path:
    """The adapter folder of this machine's stack: INFERENCE_ADAPTERS_DIR, else
    `<data_dir>/volume/adapters` (where the local endpoint's worker copies adapters)."""
    if settings.inference_adapters_dir:
        return Path(settings.inference_adapters_dir)
    return (settings.data_dir / "volume" / "adapters").resolve()



def _message(e: openai.APIError) -> str:
    body = e.body
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        return body["message"]
    if isinstance(body, Mapping) and isinstance(body.get("detail"), str):
        return body["detail"]
    return str(body) if body else e.message


def _has_envelope(e: openai.APIError) -> bool:
    """True when the error body is an OpenAI/vLLM error object (a route that exists)."""
    return isinstance(e.body, Mapping) and "message" in e.body and e.type is not None


class InferenceClient:
    """One server at `settings.inference_url`. Build one per session; not thread-safe."""

    def __init__(
        self,
        settings: Settings,
        *,
        timeout_s: float = 300.0,
        client: openai.OpenAI | None = None,
    ) -> None:
        import httpx
        import openai

        self.settings = settings
        self.url = settings.inference_url.rstrip("/")
        self._openai = client or openai.OpenAI(
            base_url=self.url,
            api_key=settings.inference_api_key.get_secret_value() or "none",
            timeout=httpx.Timeout(timeout_s, connect=5.0),
            max_retries=0,
        )

    def close(self) -> None:
        self._openai.close()

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- errors --

    def _translate(self, e: openai.APIError, model: str | None = None) -> InferenceError:
        import openai

        if isinstance(e, openai.APITimeoutError):
            return InferenceUnavailable(
                f"the inference server at {self.url} did not answer in time"
            )
        if isinstance(e, openai.APIConnectionError):
            return InferenceUnavailable(
                f"the inference server at {self.url} is not reachable: start it with "
                "`brightrun up`, or set INFERENCE_URL to a running vLLM server"
            )
        if isinstance(e, openai.AuthenticationError | openai.PermissionDeniedError):
            return InferenceAuthError(
                f"the inference server at {self.url} refused the key: check INFERENCE_API_KEY"
            )
        if not isinstance(e, openai.APIStatusError):
            return InferenceError(f"the inference server at {self.url} failed: {_message(e)}")
        if isinstance(e, openai.NotFoundError):
            if not _has_envelope(e):
                return InferenceUnavailable(
                    f"{self.url} answered 404 without an OpenAI error: is INFERENCE_URL the "
                    "server's /v1 address?"
                )
            return ModelNotServed(
                f"the inference server does not serve {model!r} and could not load it "
                f"({_message(e)}). For an adapter: the folder must exist in the server's "
                f"adapter folder ({self.adapters_dir()}) with base_model_name_or_path equal "
                "to the served base, and the server must load adapters at run time or "
                "through its filesystem resolver"
            )
        if e.type == "BaseModelMismatch":
            return AdapterBaseMismatch(_message(e))
        if isinstance(e, openai.BadRequestError | openai.UnprocessableEntityError):
            return RequestRejected(f"the inference server refused the request: {_message(e)}")
        return InferenceError(f"the inference server failed (HTTP {e.status_code}): {_message(e)}")

    # -- models and adapters --

    def models(self) -> list[ServedModel]:
        import openai

        try:
            page = self._openai.models.list()
        except openai.APIError as e:
            raise self._translate(e) from e
        out = []
        for m in page.data:
            extra = m.model_extra or {}
            out.append(ServedModel(m.id, extra.get("parent"), extra.get("root")))
        return out

    def base_model(self) -> str:
        """The served name of the (first) base model."""
        for m in self.models():
            if not m.is_adapter:
                return m.id
        raise InferenceUnavailable(f"the inference server at {self.url} lists no base model")

    def adapters_dir(self) -> str:
        d = self.settings.inference_adapters_dir
        return d.rstrip("/") if d else str(local_adapters_dir(self.settings))

    def adapter_path(self, name: str) -> str:
        """Where the server finds adapter `name` (its own view of the adapter folder)."""
        return f"{self.adapters_dir()}/{name}"

    def _check_base(self, name: str, path: str, base: str) -> None:
        """When the adapter folder is visible from here, refuse a base mismatch up front."""
        cfg_path = Path(path) / "adapter_config.json"
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # not visible here (a remote volume): the server decides
        trained_on = str(cfg.get("base_model_name_or_path") or "") if isinstance(cfg, dict) else ""
        same = trained_on == base or (
            Path(trained_on).is_dir()
            and Path(base).is_dir()
            and Path(trained_on).resolve() == Path(base).resolve()
        )
        if trained_on and not same:
            raise AdapterBaseMismatch(
                f"adapter {name!r} was trained on base model {trained_on!r}, but the inference "
                f"server serves {base!r}: serve that base model (INFERENCE_BASE_MODEL for the "
                "local server, --model for vLLM) to chat with it"
            )

    def ensure_adapter(self, name: str, path: str | None = None) -> AdapterAvailability:
        """Make adapter `name` available and say how; raises the typed errors above."""
        models = self.models()
        if any(m.id == name for m in models):
            return AdapterAvailability(name, LoadMode.SERVED, f"{name!r} is already served")
        path = path or self.adapter_path(name)
        base = next((m.id for m in models if not m.is_adapter), "")
        if base:
            self._check_base(name, path, base)
        mode = self.settings.inference_lora_loading
        reason = "INFERENCE_LORA_LOADING=resolver"
        if mode in ("auto", "runtime"):
            try:
                return self.load_adapter(name, path)
            except RuntimeLoadingDisabled as e:
                if mode == "runtime":
                    raise
                reason = str(e)
        return AdapterAvailability(
            name,
            LoadMode.RESOLVER,
            f"left to the server's filesystem resolver, which loads {path} on the first "
            f"request for {name!r} ({reason})",
        )

    def load_adapter(self, name: str, path: str, replace: bool = False) -> AdapterAvailability:
        """POST /v1/load_lora_adapter; `replace` reloads a name already loaded."""
        import httpx
        import openai

        body: dict[str, Any] = {"lora_name": name, "lora_path": path}
        if replace:
            body["load_inplace"] = True
        try:
            self._openai.post("/load_lora_adapter", body=body, cast_to=httpx.Response)
        except openai.APIStatusError as e:
            if e.status_code in (404, 405) and not _has_envelope(e):
                raise RuntimeLoadingDisabled(
                    f"the server at {self.url} does not load adapters at run time (no "
                    "/v1/load_lora_adapter; vLLM needs VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)"
                ) from e
            if isinstance(e, openai.NotFoundError):
                raise ModelNotServed(
                    f"no adapter {name!r} at {path} on the inference server: {_message(e)}"
                ) from e
            if e.type == "BaseModelMismatch":
                raise AdapterBaseMismatch(_message(e)) from e
            if isinstance(e, openai.BadRequestError):
                raise AdapterLoadFailed(
                    f"the inference server would not load adapter {name!r} from {path}: "
                    f"{_message(e)}"
                ) from e
            raise self._translate(e, name) from e
        except openai.APIError as e:
            raise self._translate(e, name) from e
        return AdapterAvailability(
            name, LoadMode.RUNTIME, f"loaded at run time from {path} (POST /v1/load_lora_adapter)"
        )

    def unload_adapter(self, name: str) -> None:
        import httpx
        import openai

        try:
            self._openai.post(
                "/unload_lora_adapter", body={"lora_name": name}, cast_to=httpx.Response
            )
        except openai.APIStatusError as e:
            if e.status_code in (404, 405) and not _has_envelope(e):
                raise RuntimeLoadingDisabled(
                    f"the server at {self.url} does not unload adapters at run time"
                ) from e
            if isinstance(e, openai.NotFoundError):
                raise ModelNotServed(f"the inference server has no adapter {name!r} loaded") from e
            raise self._translate(e, name) from e
        except openai.APIError as e:
            raise self._translate(e, name) from e

    # -- chat --

    def stream_chat(
        self, model: str, messages: Sequence[Mapping[str, str]], sampling: Sampling | None = None
    ) -> ChatStream:
        """Start a streamed chat completion; iterate the result for text pieces."""
        import openai

        sampling = sampling or Sampling()
        try:
            raw = self._openai.chat.completions.create(
                model=model,
                messages=[{"role": m["role"], "content": m["content"]} for m in messages],
                stream=True,
                stream_options={"include_usage": True},
                **sampling.request_fields(),
            )
        except openai.APIError as e:
            raise self._translate(e, model) from e
        return ChatStream(model, raw, self)

    def chat(
        self, model: str, messages: Sequence[Mapping[str, str]], sampling: Sampling | None = None
    ) -> ChatResult:
        """One non-streamed chat completion."""
        import openai

        sampling = sampling or Sampling()
        try:
            r = self._openai.chat.completions.create(
                model=model,
                messages=[{"role": m["role"], "content": m["content"]} for m in messages],
                **sampling.request_fields(),
            )
        except openai.APIError as e:
            raise self._translate(e, model) from e
        choice = r.choices[0]
        usage = r.usage
        return ChatResult(
            model=model,
            text=choice.message.content or "",
            finish_reason=choice.finish_reason,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )


class ChatStream:
    """Iterate for the answer's text pieces as they arrive; afterwards `text`,
    `finish_reason` and the token counts hold the whole answer. Iterate once."""

    def __init__(self, model: str, raw: Any, client: InferenceClient) -> None:
        self.model = model
        self._raw = raw
        self._client = client
        self.text = ""
        self.finish_reason: str | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def __iter__(self) -> Iterator[str]:
        import openai

        try:
            for chunk in self._raw:
                if chunk.usage is not None:
                    self.prompt_tokens = chunk.usage.prompt_tokens
                    self.completion_tokens = chunk.usage.completion_tokens
                for choice in chunk.choices:
                    piece = choice.delta.content if choice.delta else None
                    if piece:
                        self.text += piece
                        yield piece
                    if choice.finish_reason:
                        self.finish_reason = choice.finish_reason
        except openai.APIError as e:
            raise self._client._translate(e, self.model) from e
        finally:
            self._raw.close()

    def close(self) -> None:
        self._raw.close()

    def result(self) -> ChatResult:
        """Drain what is left and return the whole answer."""
        for _ in self:
            pass
        return ChatResult(
            self.model, self.text, self.finish_reason, self.prompt_tokens, self.completion_tokens
        )


# --------------------------------------------------------------------------- playground


@dataclass(frozen=True)
class ModelChoice:
    """Something the actor can chat with: the served base, or one of their adapters."""

    label: str  # what the user reads: "support-bot v2", "support-bot step 400"
    served_name: str  # the `model` of a request
    path: str | None = None  # the adapter folder as the server sees it; None: the base
    trained_on: str | None = None  # the base model the adapter was trained on

    @property
    def is_adapter(self) -> bool:
        return self.path is not None


def model_choices(
    actor: Actor, session: Session | None, settings: Settings, client: InferenceClient
) -> list[ModelChoice]:
    """The served base first, then the actor's ready adapter versions and checkpoints that
    have a folder on the shared volume (`volume_path`). A version is served under its
    folder's name (the filesystem resolver's rule); a checkpoint, whose folder name is not
    unique, under `ckpt-<version id>`, by runtime loading only. With AUTH=none (one local user) the
    adapters the server already lists, and folders in the local adapter folder, are added.
    `session` None (no database yet) lists no versions. Raises InferenceError."""
    models = client.models()
    base = next((m.id for m in models if not m.is_adapter), None)
    if base is None:
        raise InferenceUnavailable(f"the inference server at {client.url} lists no base model")
    out = [ModelChoice(f"{base} (base)", base)]
    if session is not None:
        from core.db import repo

        for adapter in repo.list_adapters(actor, session):
            for v in repo.list_versions(actor, session, adapter.id):
                if v.status != "ready" or not v.volume_path:
                    continue
                folder = v.volume_path.rstrip("/")
                served = f"ckpt-{v.id}" if v.is_checkpoint else Path(folder).name
                label = f"{adapter.name} v{v.version}" if v.version is not None else adapter.name
                if v.is_checkpoint:
                    label += f" step {v.step}"
                out.append(ModelChoice(label, served, folder, v.base_model))
    if settings.auth == "none":
        known = {c.served_name for c in out}
        extra = {m.id: m.root or client.adapter_path(m.id) for m in models if m.is_adapter}
        folder = local_adapters_dir(settings)
        if folder.is_dir():
            for d in sorted(folder.iterdir()):
                if (d / "adapter_config.json").is_file():
                    extra.setdefault(d.name, str(d))
        out += [ModelChoice(n, n, p) for n, p in sorted(extra.items()) if n not in known]
    return out


def database_ready(settings: Settings) -> bool:
    """Whether the database has been set up (`brightrun db upgrade`, `brightrun up`)."""
    from sqlalchemy.engine import make_url

    from core.db import current_revision

    url = make_url(settings.db_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return False
    return current_revision(settings) is not None


def actor_choices(actor: Actor, settings: Settings, client: InferenceClient) -> list[ModelChoice]:
    """`model_choices` in its own database session; before the database has been set up
    no versions are listed."""
    from core.db import session_scope

    if not database_ready(settings):
        return model_choices(actor, None, settings, client)
    with session_scope(settings) as session:
        return model_choices(actor, session, settings, client)


def find_choice(
    choices: Sequence[ModelChoice], name: str, version: int | None = None
) -> ModelChoice:
    """The choice for an adapter name: its served name, its label ("support-bot v2"), or
    the adapter's name (its newest version, or `version`). Raises NotFound."""
    from core.errors import NotFound

    for c in choices:
        if name in (c.served_name, c.label) and version is None:
            return c
    prefix = f"{name} v"
    numbered = [
        (int(c.label[len(prefix) :]), c)
        for c in choices
        if c.label.startswith(prefix) and c.label[len(prefix) :].isdigit()
    ]
    if version is not None:
        numbered = [(n, c) for n, c in numbered if n == version]
    if numbered:
        return max(numbered, key=lambda nc: nc[0])[1]
    which = f"{name!r} version {version}" if version is not None else repr(name)
    raise NotFound(f"no adapter {which} to chat with: `brightrun chat --list` shows them")


def compare(
    client: InferenceClient,
    models: Sequence[str],
    messages: Sequence[Mapping[str, str]],
    sampling: Sampling | None = None,
) -> dict[str, ChatResult]:
    """The same messages through each model (base and adapter, or two adapters)."""
    return {m: client.chat(m, messages, sampling) for m in models}


@dataclass(frozen=True)
class PromptCase:
    """One prompt of a comparison set: the messages sent, and the expected answer."""

    messages: tuple[Mapping[str, str], ...]
    reference: str | None = None

    @property
    def prompt(self) -> str:
        users = [m["content"] for m in self.messages if m["role"] == "user"]
        return users[-1] if users else ""


def parse_prompt_set(text: str) -> list[PromptCase]:
    """Pasted prompts: one per line, `prompt<TAB>reference` to give a reference, or JSON
    lines `{"prompt": ..., "reference": ...}` (or `{"messages": [...]}`, whose last
    assistant turn is the reference). Blank lines are skipped; a bad line raises
    InvalidInput naming its line number."""
    cases: list[PromptCase] = []
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InvalidInput(f"line {n}: not valid JSON ({e.msg})") from e
            if isinstance(row, dict) and "messages" in row:
                cases.extend(_cases_from_rows([row], first_line=n))
                continue
            if (
                not isinstance(row, dict)
                or not isinstance(row.get("prompt"), str)
                or not row["prompt"].strip()
            ):
                raise InvalidInput(f'line {n}: a JSON line needs a non-empty "prompt" string')
            ref = row.get("reference")
            if ref is not None and not isinstance(ref, str):
                raise InvalidInput(f'line {n}: "reference" must be a string')
            cases.append(PromptCase(({"role": "user", "content": row["prompt"]},), ref))
            continue
        prompt, _, ref = line.partition("\t")
        cases.append(
            PromptCase(({"role": "user", "content": prompt.strip()},), ref.strip() or None)
        )
    if not cases:
        raise InvalidInput("the prompt set is empty: paste at least one prompt")
    return cases


def cases_from_conversations(rows: Iterable[Mapping[str, Any]]) -> list[PromptCase]:
    """Chat-`messages` rows (a dataset's eval split): everything before the last assistant
    turn is sent, the last assistant turn is the reference."""
    return _cases_from_rows(rows, first_line=1)


def _cases_from_rows(rows: Iterable[Mapping[str, Any]], first_line: int) -> list[PromptCase]:
    cases = []
    for n, row in enumerate(rows, start=first_line):
        msgs = row.get("messages")
        if not isinstance(msgs, list) or not all(
            isinstance(m, Mapping) and isinstance(m.get("content"), str) and m.get("role")
            for m in msgs
        ):
            raise InvalidInput(f'row {n}: "messages" must be a list of {{role, content}}')
        last_assistant = max(
            (i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None
        )
        context = msgs if last_assistant is None else msgs[:last_assistant]
        if not any(m["role"] == "user" for m in context):
            raise InvalidInput(f"row {n}: no user message before the answer")
        ref = None if last_assistant is None else msgs[last_assistant]["content"]
        cases.append(
            PromptCase(tuple({"role": m["role"], "content": m["content"]} for m in context), ref)
        )
    return cases


def eval_split_datasets(actor: Actor, session: Session) -> dict[str, str]:
    """The actor's datasets that have an eval split, as {name: dataset id}."""
    from core import datasets

    return {d.name: d.id for d in datasets.list_datasets(actor, session) if datasets.eval_key(d)}


def eval_split_cases(
    actor: Actor, session: Session, store: Any, dataset_id: str, limit: int = 200
) -> list[PromptCase]:
    """The first `limit` chat rows of the actor's dataset's eval split as prompt cases
    (the last assistant turn is the reference). Raises InvalidInput when the dataset has
    no eval split or no chat rows, NotFound for another user's dataset."""
    from core import datasets

    rows = datasets.preview_rows(
        actor, session, store, dataset_id, n=limit, split="eval", max_chars=1_000_000
    )
    if not rows:
        raise InvalidInput(
            "this dataset has no eval split (datasets of 20 rows or more get one when added)"
        )
    chat = [r for r in rows if "messages" in r]
    if not chat:
        raise InvalidInput("this dataset holds plain text rows: there are no prompts to compare")
    return cases_from_conversations(chat)


@dataclass(frozen=True)
class CompareRow:
    prompt: str
    reference: str | None
    answers: dict[str, str] = field(default_factory=dict)  # model → answer


def compare_on_set(
    client: InferenceClient,
    cases: Sequence[PromptCase],
    models: Sequence[str],
    sampling: Sampling | None = None,
    system: str = "",
    on_row: Any = None,
) -> list[CompareRow]:
    """Every case through every model; one row per case. `on_row(i, row)` is called as
    each row completes (for a progress bar)."""
    rows = []
    for i, case in enumerate(cases):
        msgs = list(case.messages)
        if system and not any(m["role"] == "system" for m in msgs):
            msgs = [{"role": "system", "content": system}, *msgs]
        answers = {m: client.chat(m, msgs, sampling).text for m in models}
        row = CompareRow(case.prompt, case.reference, answers)
        rows.append(row)
        if on_row is not None:
            on_row(i, row)
    return rows


# A conversation is kept as plain data (a session's state): a list of turns, each
# {"user": str, "answers": {model: str}}. Each model sees its own earlier answers.


def conversation_messages(
    system: str, turns: Sequence[Mapping[str, Any]], model: str, next_user: str | None = None
) -> list[dict[str, str]]:
    """The messages to send to `model`: system, the earlier turns with that model's own
    answers, then `next_user` if given."""
    msgs = [{"role": "system", "content": system}] if system else []
    for t in turns:
        msgs.append({"role": "user", "content": t["user"]})
        answer = t.get("answers", {}).get(model)
        if answer is not None:
            msgs.append({"role": "assistant", "content": answer})
    if next_user is not None:
        msgs.append({"role": "user", "content": next_user})
    return msgs


def export_conversation_jsonl(
    system: str,
    turns: Sequence[Mapping[str, Any]],
    models: Sequence[str],
    labels: Mapping[str, str] | None = None,
) -> str:
    """One JSON line per model: `{"model", "label", "exported_at", "messages"}`; the
    `messages` are in the chat format BrightRun imports as a dataset."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    lines = []
    for m in models:
        row = {
            "model": m,
            "label": (labels or {}).get(m, m),
            "exported_at": now,
            "messages": conversation_messages(system, turns, m),
        }
        lines.append(json.dumps(row, ensure_ascii=False))
    return "\n".join(lines) + ("\n" if lines else "")
