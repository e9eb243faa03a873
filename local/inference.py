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

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from local.stack import Service, python_module

log = logging.getLogger("brightrun.inference")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


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


def _not_found(message: str, param: str | None = None) -> ServerError:
    return ServerError(404, "NotFoundError", message, param)


def _bad(message: str, param: str | None = None, err_type: str = "BadRequestError") -> ServerError:
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
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=1)


class LoadRequest(_Body):
    lora_name: str = ""
    lora_path: str = ""
    load_inplace: bool = False


class UnloadRequest(_Body):
    lora_name: str = ""


# --- the engine -------------------------------------------------------------------------


@dataclass
class Prepared:
    """A validated chat request, ready to generate."""

    model: str
    adapter: str | None  # internal peft adapter name, None for the base
    input_ids: list[int]
    max_tokens: int
    temperature: float  # 0: greedy
    top_p: float
    seed: int | None
    stop: list[str]


@dataclass
class Delta:
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class _Adapter:
    name: str
    internal: str
    path: str


@dataclass
class Engine:
    """The model, its adapters and generation; no HTTP here."""

    base: str
    served_name: str
    adapters_dir: Path | None = None
    device: str = "auto"
    resolver: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(self.base)
        self.model = AutoModelForCausalLM.from_pretrained(self.base, dtype=dtype)
        self.model.to(self.device).eval()
        self.max_model_len = int(getattr(self.model.config, "max_position_embeddings", 0) or 4096)
        self.gen_config = getattr(self.model, "generation_config", None)
        eos = {self.tokenizer.eos_token_id}
        if self.gen_config is not None and self.gen_config.eos_token_id is not None:
            ids = self.gen_config.eos_token_id
            eos |= set(ids if isinstance(ids, list) else [ids])
        self.eos_ids = {i for i in eos if i is not None}
        self.adapters: dict[str, _Adapter] = {}
        self._counter = 0
        self.created = int(time.time())

    # -- models and adapters --

    def models(self) -> list[dict[str, Any]]:
        perm = [{"id": f"modelperm-{uuid.uuid4().hex}", "object": "model_permission"}]
        cards = [
            {
                "id": self.served_name,
                "object": "model",
                "created": self.created,
                "owned_by": "brightrun",
                "root": self.base,
                "parent": None,
                "max_model_len": self.max_model_len,
                "permission": perm,
            }
        ]
        cards += [
            {
                "id": a.name,
                "object": "model",
                "created": self.created,
                "owned_by": "brightrun",
                "root": a.path,
                "parent": self.served_name,
                "permission": perm,
            }
            for a in self.adapters.values()
        ]
        return cards

    def _same_base(self, name: str) -> bool:
        if name == self.served_name or name == self.base:
            return True
        a, b = Path(name), Path(self.base)
        return a.is_dir() and b.is_dir() and a.resolve() == b.resolve()

    def _read_adapter_config(self, name: str, path: str) -> dict[str, Any]:
        cfg_path = Path(path) / "adapter_config.json"
        if not cfg_path.is_file():
            raise _not_found(
                f"No adapter found for '{name}': {path} has no adapter_config.json", "lora_path"
            )
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _bad(f"adapter '{name}': {cfg_path} is not readable JSON ({e})") from e
        if not isinstance(cfg, dict) or cfg.get("peft_type") != "LORA":
            raise _bad(f"adapter '{name}': {cfg_path} is not a LoRA adapter (peft_type LORA)")
        trained_on = str(cfg.get("base_model_name_or_path") or "")
        if not self._same_base(trained_on):
            raise _bad(
                f"adapter '{name}' was trained on base model '{trained_on}', but this server "
                f"serves '{self.served_name}'; serve that base (or retrain on this one)",
                "lora_path",
                err_type="BaseModelMismatch",
            )
        return cfg

    def load_adapter(self, name: str, path: str, inplace: bool = False) -> None:
        """Load a PEFT LoRA folder under `name`; raises ServerError."""
        if not name or not path:
            raise _bad(
                "Both 'lora_name' and 'lora_path' must be provided.", err_type="InvalidUserInput"
            )
        if not _NAME.match(name) or ".." in name:
            raise _bad(
                f"adapter name {name!r} must be 1-128 letters, digits, '.', '_' or '-'",
                "lora_name",
                err_type="InvalidUserInput",
            )
        if name == self.served_name:
            raise _bad(
                f"'{name}' is the base model's name", "lora_name", err_type="InvalidUserInput"
            )
        self._read_adapter_config(name, path)
        with self.lock:
            if name in self.adapters and not inplace:
                raise _bad(
                    f"The lora adapter '{name}' has already been loaded. If you want to load "
                    "the adapter in place, set 'load_inplace' to True.",
                    "lora_name",
                    err_type="InvalidUserInput",
                )
            old = self.adapters.get(name)
            self._counter += 1
            internal = f"a{self._counter}"
            self._peft_load(name, internal, path)
            self.adapters[name] = _Adapter(name, internal, path)
            if old is not None:
                self._peft_delete(old.internal)
        log.info("loaded adapter %s from %s", name, path)

    def unload_adapter(self, name: str) -> None:
        if not name:
            raise _bad(
                "'lora_name' needs to be provided to unload a LoRA adapter.",
                err_type="InvalidUserInput",
            )
        with self.lock:
            adapter = self.adapters.pop(name, None)
            if adapter is None:
                raise _not_found(f"The lora adapter '{name}' cannot be found.", "lora_name")
            self._peft_delete(adapter.internal)
        log.info("unloaded adapter %s", name)

    def _peft_load(self, name: str, internal: str, path: str) -> None:
        from peft import PeftModel

        from trainer.expert_lora import NEEDS_MERGE, ExpertLoraNeedsMerge
        from trainer.model import load_adapter  # as the trainer attached it (fused experts)

        try:
            self.model = load_adapter(self.model, path, adapter_name=internal)
        except ExpertLoraNeedsMerge as e:  # refused before the model was touched
            raise _bad(
                f"adapter '{name}': {NEEDS_MERGE}", "lora_path", err_type="ExpertLoraNeedsMerge"
            ) from e
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
            # A failed load can leave LoRA layers injected (with their random initial
            # weights) in the base: take them out, so the base and the other adapters
            # answer exactly as before.
            if isinstance(self.model, PeftModel):
                if internal in self.model.peft_config:
                    self._peft_delete(internal)
                _drop_adapter_layers(self.model, internal)
            else:
                _strip_lora_layers(self.model)
            raise _bad(f"adapter '{name}' at {path} could not be loaded: {e}", "lora_path") from e
        self.model.eval()

    def _peft_delete(self, internal: str) -> None:
        from peft import PeftModel

        if not isinstance(self.model, PeftModel):
            return
        if set(self.model.peft_config) <= {internal}:
            self.model = self.model.unload()  # the last adapter: back to the plain base
            _strip_lora_layers(self.model)
        else:
            self.model.delete_adapter(internal)
        self.model.eval()

    def resolve(self, name: str) -> str | None:
        """The internal adapter for a requested model name, loading it from the adapter
        folder on first use; None for the base. Raises ServerError when not servable."""
        if name == self.served_name or name == self.base:
            return None
        adapter = self.adapters.get(name)
        if adapter is not None:
            return adapter.internal
        folder = self._resolver_folder(name)
        if folder is None:
            raise _not_found(f"The model `{name}` does not exist.", "model")
        try:
            self.load_adapter(name, str(folder))
        except ServerError as e:
            if e.err_type == "InvalidUserInput" and name in self.adapters:
                pass  # another request loaded it meanwhile
            else:
                raise ServerError(
                    e.status,
                    e.err_type,
                    f"LoRA adapter '{name}' was found but could not be loaded: {e.message}",
                    "model",
                ) from e
        return self.adapters[name].internal

    def _resolver_folder(self, name: str) -> Path | None:
        if not self.resolver or self.adapters_dir is None:
            return None
        if not _NAME.match(name) or ".." in name:
            return None
        folder = self.adapters_dir / name
        return folder if (folder / "adapter_config.json").is_file() else None

    # -- chat --

    def prepare(self, req: ChatRequest) -> Prepared:
        adapter = self.resolve(req.model)
        if not getattr(self.tokenizer, "chat_template", None):
            raise _bad(f"the base model '{self.served_name}' has no chat template", "messages")
        messages = [{"role": m.role, "content": _text_content(m.content)} for m in req.messages]
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        room = self.max_model_len - len(ids)
        wanted = req.max_completion_tokens or req.max_tokens
        if room <= 0 or (wanted is not None and wanted > room):
            raise _bad(
                f"This model's maximum context length is {self.max_model_len} tokens. However, "
                f"you requested {len(ids) + (wanted or 0)} tokens ({len(ids)} in the messages, "
                f"{wanted or 0} in the completion). Please reduce the length of the messages "
                "or completion.",
                "max_tokens",
            )
        temperature = req.temperature
        top_p = req.top_p
        if temperature is None:
            gc = self.gen_config
            sampling = bool(gc is not None and gc.do_sample)
            temperature = float(gc.temperature or 1.0) if sampling else 0.0
        if top_p is None:
            gc = self.gen_config
            top_p = float(gc.top_p) if gc is not None and gc.do_sample and gc.top_p else 1.0
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        return Prepared(
            model=req.model,
            adapter=adapter,
            input_ids=list(ids),
            max_tokens=wanted or room,
            temperature=temperature,
            top_p=top_p,
            seed=req.seed,
            stop=[s for s in stop if s],
        )

    def generate(self, p: Prepared, cancel: threading.Event) -> Iterator[Delta]:
        """Sample token by token under the lock; the last Delta has the finish reason."""
        import torch

        with self.lock:
            if p.adapter is not None and p.adapter not in {
                a.internal for a in self.adapters.values()
            }:
                raise _not_found(f"The model `{p.model}` was unloaded.", "model")
            gen = torch.Generator(device=self.device)
            if p.seed is not None:
                gen.manual_seed(p.seed)
            else:
                gen.seed()
            ctx = self._adapter_context(p.adapter)
            emitted, final = "", None
            out_ids: list[int] = []
            # Hold back enough characters that a stop string split across tokens is never
            # half-sent.
            hold = max((len(s) for s in p.stop), default=1) - 1
            with torch.inference_mode(), ctx:
                cur = torch.tensor([p.input_ids], device=self.device)
                past = None
                for _ in range(p.max_tokens):
                    if cancel.is_set():
                        finish = "abort"
                        break
                    out = self.model(input_ids=cur, cache=past, use_cache=True)
                    past = out.cache
                    token = _sample(out.logits[0, -1].float(), p.temperature, p.top_p, gen)
                    if token in self.eos_ids:
                        finish = "stop"
                        break
                    out_ids.append(token)
                    cur = torch.tensor([[token]], device=self.device)
                    text = self.tokenizer.decode(out_ids, skip_special_tokens=True)
                    cut = _first_stop(text, p.stop)
                    if cut is not None:
                        final, finish = text[:cut], "stop"
                        break
                    if text.endswith("\ufffd"):
                        continue  # an incomplete multi-byte character: wait for the rest
                    safe = len(text) - hold
                    if safe > len(emitted):
                        yield Delta(text[len(emitted) : safe])
                        emitted = text[:safe]
                else:
                    finish = "length"
            if final is None:
                final = self.tokenizer.decode(out_ids, skip_special_tokens=True)
            if len(final) > len(emitted):
                yield Delta(final[len(emitted) :])
            yield Delta(
                finish_reason=finish,
                prompt_tokens=len(p.input_ids),
                completion_tokens=len(out_ids),
            )

    def _adapter_context(self, internal: str | None):
        from contextlib import nullcontext

        from peft import PeftModel

        if not isinstance(self.model, PeftModel):
            return nullcontext()
        if internal is None:
            return self.model.disable_adapter()
        self.model.set_adapter(internal)
        return nullcontext()


def _strip_lora_layers(model: Any) -> None:
    """Put every LoRA-wrapped module of a plain (non-PEFT) model back to its base layer and
    drop the adapter config peft left on it (else the next adapter would inherit it)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
    for attr in ("peft_config", "_hf_peft_config_loaded"):
        if attr in vars(model):
            delattr(model, attr)


def _drop_adapter_layers(model: Any, internal: str) -> None:
    """Remove one adapter's weights from every LoRA layer that still holds them."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer) and internal in getattr(module, "lora_A", {}):
            module.delete_adapter(internal)


def _text_content(content: str | list[dict[str, Any]] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if part.get("type") != "text":
            raise _bad("only text content parts are supported", "messages")
        parts.append(str(part.get("text", "")))
    return "\n".join(parts)


def _first_stop(text: str, stops: list[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _sample(logits, temperature: float, top_p: float, gen) -> int:
    import torch

    if temperature <= 0.0:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, idx = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < top_p  # always keeps the first
        sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
        choice = torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=gen)
        return int(idx[choice].item())
    return int(torch.multinomial(probs, 1, generator=gen).item())


# --- HTTP -------------------------------------------------------------------------------


def create_app(engine: Engine, api_key: str = "", runtime_loading: bool = True) -> FastAPI:
    """The HTTP app. Without `runtime_loading` the load/unload routes do not exist (404),
    as in vLLM without VLLM_ALLOW_RUNTIME_LORA_UPDATING."""
    app = FastAPI(title="BrightRun local inference", docs_url=None, redoc_url=None)
    app.state.engine = engine

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if api_key and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                err = ServerError(401, "AuthenticationError", "Unauthorized")
                return JSONResponse(err.envelope(), status_code=401)
        return await call_next(request)

    @app.exception_handler(ServerError)
    async def _server_error(request: Request, exc: ServerError):
        return JSONResponse(exc.envelope(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        msg = f"{'.'.join(loc) or 'body'}: {first.get('msg', 'invalid request')}"
        return JSONResponse(_bad(msg, loc[0] if loc else None).envelope(), status_code=400)

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": engine.models()}

    async def load(req: LoadRequest) -> PlainTextResponse:
        await asyncio.to_thread(engine.load_adapter, req.lora_name, req.lora_path, req.load_inplace)
        return PlainTextResponse(f"Success: LoRA adapter '{req.lora_name}' added successfully.")

    async def unload(req: UnloadRequest) -> PlainTextResponse:
        await asyncio.to_thread(engine.unload_adapter, req.lora_name)
        return PlainTextResponse(f"Success: LoRA adapter '{req.lora_name}' removed successfully.")

    if runtime_loading:
        app.post("/v1/load_lora_adapter")(load)
        app.post("/v1/unload_lora_adapter")(unload)

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest):
        prepared = await asyncio.to_thread(engine.prepare, req)
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if req.stream:
            usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(
                _sse(engine, prepared, cid, created, usage), media_type="text/event-stream"
            )
        text, last = await asyncio.to_thread(_collect, engine, prepared)
        return {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": req.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": last.finish_reason,
                }
            ],
            "usage": _usage(last),
        }

    return app


def _usage(d: Delta) -> dict[str, int]:
    return {
        "prompt_tokens": d.prompt_tokens,
        "completion_tokens": d.completion_tokens,
        "total_tokens": d.prompt_tokens + d.completion_tokens,
    }


def _collect(engine: Engine, p: Prepared) -> tuple[str, Delta]:
    parts, last = [], Delta()
    for d in engine.generate(p, threading.Event()):
        parts.append(d.text)
        last = d
    return "".join(parts), last


_DONE = object()


async def _sse(engine: Engine, p: Prepared, cid: str, created: int, include_usage: bool):
    """Run generation in its own thread (it holds the engine lock throughout) and relay
    its deltas as SSE chunks; a client that goes away stops generation at the next token."""
    q: queue.Queue = queue.Queue()
    cancel = threading.Event()

    def worker() -> None:
        try:
            for d in engine.generate(p, cancel):
                q.put(d)
        except ServerError as e:
            q.put(e)
        finally:
            q.put(_DONE)

    def chunk(delta: dict[str, Any], finish: str | None = None, usage=None) -> str:
        body = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": p.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if usage is not None:
            body = {**body, "choices": [], "usage": usage}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    threading.Thread(target=worker, name=f"generate-{cid}", daemon=True).start()
    try:
        yield chunk({"role": "assistant", "content": ""})
        while True:
            item = await asyncio.to_thread(q.get)
            if item is _DONE:
                break
            if isinstance(item, ServerError):
                yield f"data: {json.dumps(item.envelope())}\n\n"
                continue
            if item.finish_reason is None:
                yield chunk({"content": item.text})
            else:
                yield chunk({}, item.finish_reason)
                if include_usage:
                    yield chunk({}, usage=_usage(item))
        yield "data: [DONE]\n\n"
    finally:
        cancel.set()


def stack_service(settings) -> Service | None:  # noqa: ANN001 - core.settings.Settings
    """The `brightrun up` entry for this server, when INFERENCE_URL points at it: it serves
    INFERENCE_BASE_MODEL, or the tiny demo model built into <data_dir>/models/tiny-chat."""
    from urllib.parse import urlsplit

    from core.settings import LOCAL_INFERENCE_PORT

    url = urlsplit(settings.inference_url)
    if url.hostname not in ("127.0.0.1", "localhost"):
        return None
    port = url.port or LOCAL_INFERENCE_PORT  # any loopback port (tests start stacks side by side)
    base = settings.inference_base_model
    argv = python_module("local.inference", "--port", str(port), "--base")
    if base:
        argv.append(base)
    else:
        argv += [str((settings.data_dir / "models" / "tiny-chat").resolve()), "--build-tiny"]
    return Service("inference", argv, health_url=f"http://127.0.0.1:{port}/health")


def main(argv: list[str] | None = None) -> None:
    from core.inference import local_adapters_dir
    from core.settings import LOCAL_INFERENCE_PORT, load_settings

    ap = argparse.ArgumentParser(
        prog="python -m local.inference",
        description="BrightRun's local inference server (vLLM's OpenAI API subset, PEFT adapters).",
    )
    ap.add_argument("--base", required=True, help="base model folder or hub id")
    ap.add_argument(
        "--served-model-name",
        default=None,
        help="the name the base is served under (default: --base as given)",
    )
    ap.add_argument(
        "--adapters-dir",
        default=None,
        help="folder of adapters for the filesystem resolver "
        "(default: INFERENCE_ADAPTERS_DIR, else <data_dir>/volume/adapters)",
    )
    ap.add_argument(
        "--no-resolver", action="store_true", help="do not load unknown names from --adapters-dir"
    )
    ap.add_argument(
        "--no-runtime-loading",
        action="store_true",
        help="no /v1/load_lora_adapter or /v1/unload_lora_adapter (as vLLM without "
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING)",
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=LOCAL_INFERENCE_PORT)
    ap.add_argument("--device", default=None, help="auto | cpu | cuda (default: LOCAL_DEVICE)")
    ap.add_argument(
        "--build-tiny",
        action="store_true",
        help="build BrightRun's tiny demo model into --base first when that folder is missing",
    )
    a = ap.parse_args(argv)

    import uvicorn

    settings = load_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if a.build_tiny and not (Path(a.base) / "config.json").is_file():
        from trainer.shared.tiny import build_tiny_chat_model

        build_tiny_chat_model(a.base)
    adapters_dir = Path(a.adapters_dir or local_adapters_dir(settings))
    engine = Engine(
        base=a.base,
        served_name=a.served_model_name or a.base,
        adapters_dir=adapters_dir,
        device=a.device or settings.local_device,
        resolver=not a.no_resolver,
    )
    log.info(
        "serving %s (%s) on %s:%d; resolver %s",
        engine.served_name,
        engine.device,
        a.host,
        a.port,
        f"over {adapters_dir}" if engine.resolver else "off",
    )
    app = create_app(
        engine,
        api_key=settings.inference_api_key.get_secret_value(),
        runtime_loading=not a.no_runtime_loading,
    )
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning")


if __name__ == "__main__":
    main()

