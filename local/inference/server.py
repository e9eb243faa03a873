"""The local inference server's HTTP app (`create_app`) and its command line (`main`)."""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import queue
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from local.inference.engine import Delta, Engine, Prepared
from local.inference.protocol import (
    ChatRequest,
    CompletionRequest,
    LoadRequest,
    ServerError,
    UnloadRequest,
    bad_request,
)
from local.inference.tool_calls import assistant_message

log = logging.getLogger("brightrun.inference")


def create_app(engine: Engine, api_key: str = "", runtime_loading: bool = True) -> FastAPI:
    """The HTTP app. Without `runtime_loading` the load/unload routes do not exist (404),
    as in vLLM without VLLM_ALLOW_RUNTIME_LORA_UPDATING."""
    app = FastAPI(title="BrightRun local inference", docs_url=None, redoc_url=None)
    app.state.engine = engine
    _add_errors(app, api_key)
    _add_model_routes(app, engine, runtime_loading)
    _add_chat_route(app, engine)
    _add_completion_route(app, engine)
    return app


def _add_completion_route(app: FastAPI, engine: Engine) -> None:
    @app.post("/v1/completions")
    async def completions(req: CompletionRequest):
        if not (req.echo and req.logprobs is not None and (req.max_tokens or 0) <= 1):
            raise bad_request(
                "this server answers /v1/completions for scoring only: echo true, logprobs set, "
                "max_tokens 0 or 1",
                "echo",
            )
        scored = await asyncio.to_thread(engine.score, req.model, req.prompt)
        n = len(scored["tokens"])
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": req.model,
            "choices": [
                {"index": 0, "text": req.prompt, "logprobs": scored, "finish_reason": "length"}
            ],
            "usage": {"prompt_tokens": n, "completion_tokens": 0, "total_tokens": n},
        }


def _add_errors(app: FastAPI, api_key: str) -> None:
    """The bearer-key check on `/v1/*` and vLLM's error envelope for every error."""

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if api_key and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return JSONResponse({"error": "Unauthorized"}, status_code=401)  # as vLLM
        return await call_next(request)

    @app.exception_handler(ServerError)
    async def _server_error(request: Request, exc: ServerError):
        return JSONResponse(exc.envelope(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {}
        param = ".".join(str(x) for x in first.get("loc", ())) or None
        lines = []
        for e in errors:
            loc = ".".join(map(str, e.get("loc", ())))
            lines.append(
                f"  {{'type': {e.get('type')!r}, 'loc': {loc!r}, 'msg': {e.get('msg')!r}}}"
            )
        msg = f"{len(errors)} validation error{'s' if len(errors) != 1 else ''}:\n" + "\n".join(
            lines
        )
        err = ServerError(
            400, "Bad Request", msg, param
        )  # vLLM's type for a body that does not parse
        return JSONResponse(err.envelope(), status_code=400)


def _add_model_routes(app: FastAPI, engine: Engine, runtime_loading: bool) -> None:
    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": engine.models()}

    # vLLM answers a load or unload with a plain body and no content type.
    async def load(req: LoadRequest) -> Response:
        await asyncio.to_thread(engine.load_adapter, req.lora_name, req.lora_path, req.load_inplace)
        return Response(f"Success: LoRA adapter '{req.lora_name}' added successfully.")

    async def unload(req: UnloadRequest) -> Response:
        await asyncio.to_thread(engine.unload_adapter, req.lora_name)
        return Response(f"Success: LoRA adapter '{req.lora_name}' removed successfully.")

    if runtime_loading:
        app.post("/v1/load_lora_adapter")(load)
        app.post("/v1/unload_lora_adapter")(unload)


def _add_chat_route(app: FastAPI, engine: Engine) -> None:
    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest):
        req.check_sampling()
        prepared = await asyncio.to_thread(engine.prepare, req)
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if req.stream:
            usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(
                _sse(engine, prepared, cid, created, usage), media_type="text/event-stream"
            )
        text, last = await asyncio.to_thread(_collect, engine, prepared)
        message, calls = assistant_message(text, req)
        return {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": req.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if calls else last.finish_reason,
                }
            ],
            "usage": _usage(last),
        }


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
        pending: str | None = None  # held back one piece: vLLM sends the last with the finish
        while True:
            item = await asyncio.to_thread(q.get)
            if item is _DONE:
                break
            if isinstance(item, ServerError):
                yield f"data: {json.dumps(item.envelope())}\n\n"
                continue
            if item.finish_reason is None:
                if pending is not None:
                    yield chunk({"content": pending})
                pending = item.text
            else:
                yield chunk({"content": pending or ""}, item.finish_reason)
                if include_usage:
                    yield chunk({}, usage=_usage(item))
        yield "data: [DONE]\n\n"
    finally:
        cancel.set()


def _parser(default_port: int) -> argparse.ArgumentParser:
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
    ap.add_argument(
        "--max-lora-rank",
        type=int,
        default=16,
        help="largest adapter rank served (vLLM's default 16)",
    )
    ap.add_argument(
        "--max-model-len", type=int, default=None, help="context length (default: the model's)"
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=default_port)
    ap.add_argument("--device", default=None, help="auto | cpu | cuda (default: LOCAL_DEVICE)")
    ap.add_argument(
        "--build-tiny",
        action="store_true",
        help="build BrightRun's tiny demo model into --base first when that folder is missing",
    )
    return ap


def main(argv: list[str] | None = None) -> None:
    from core.clients.inference import local_adapters_dir
    from core.settings import LOCAL_INFERENCE_PORT, load_settings

    ap = _parser(LOCAL_INFERENCE_PORT)
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
        max_lora_rank=a.max_lora_rank,
        max_model_len=a.max_model_len,
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
