"""The local endpoint's HTTP app (`build_app`: RunPod's routes under `/v2/<endpoint-id>`)
and its command line (`main`)."""

from __future__ import annotations

import argparse
import hmac
import logging
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from local.endpoint.jobs import DEFAULT_HANDLER, LocalEndpoint

log = logging.getLogger("brightrun.local.endpoint")


def build_app(endpoint: LocalEndpoint, api_key: str, endpoint_id: str = "local", extra_routers=()):
    expected = api_key.encode()

    def check_auth(request: Request) -> None:
        given = request.headers.get("authorization", "")
        token = given[7:] if given[:7].lower() == "bearer " else given
        if not hmac.compare_digest(token.encode(), expected):
            raise HTTPException(status_code=401, detail="unauthorized")

    @asynccontextmanager
    async def lifespan(app):  # noqa: ARG001
        endpoint.start()
        yield
        endpoint.shutdown()

    app = FastAPI(
        title="BrightRun local endpoint", lifespan=lifespan, docs_url=None, redoc_url=None
    )

    @app.get("/ping")
    def ping() -> dict[str, str]:
        """Liveness for `brightrun up` (no job data, so no key needed)."""
        return {"status": "ok"}

    app.include_router(_job_routes(endpoint, endpoint_id, check_auth))
    for router in extra_routers:
        app.include_router(router)
    return app


def _found(body: dict[str, Any] | None) -> dict[str, Any]:
    if body is None:
        raise HTTPException(status_code=404, detail="job not found")
    return body


def _checked_run(body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The input and policy of a `/run` body, or a 400 naming what is wrong."""
    if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
        raise HTTPException(status_code=400, detail="body needs an 'input' object")
    policy = body.get("policy") or {}
    if not isinstance(policy, dict):
        raise HTTPException(status_code=400, detail="'policy' must be an object")
    timeout = policy.get("executionTimeout")
    if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 5000):
        raise HTTPException(status_code=400, detail="policy.executionTimeout must be > 5000 ms")
    ttl = policy.get("ttl")
    if ttl is not None and (not isinstance(ttl, int | float) or ttl < 10_000):
        raise HTTPException(status_code=400, detail="policy.ttl must be >= 10000 ms")
    return body["input"], policy


def _job_routes(endpoint: LocalEndpoint, endpoint_id: str, check_auth) -> APIRouter:
    """RunPod's job routes under `/v2/<endpoint-id>`, each behind the key check."""
    api = APIRouter(prefix=f"/v2/{endpoint_id}", dependencies=[Depends(check_auth)])

    @api.post("/run")
    async def run(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise HTTPException(status_code=400, detail="body is not JSON") from None
        return endpoint.submit(*_checked_run(body))

    @api.get("/status/{job_id}")
    def status(job_id: str) -> dict[str, Any]:
        return _found(endpoint.status(job_id))

    @api.get("/stream/{job_id}")
    def stream(job_id: str) -> dict[str, Any]:
        return _found(endpoint.stream(job_id))

    @api.post("/cancel/{job_id}")
    def cancel(job_id: str) -> dict[str, Any]:
        return _found(endpoint.cancel(job_id))

    @api.post("/retry/{job_id}")
    def retry(job_id: str):
        body = endpoint.retry(job_id)
        if isinstance(body, str):
            return JSONResponse(status_code=400, content={"error": body})
        return _found(body)

    @api.get("/health")
    def health() -> dict[str, Any]:
        return endpoint.health()

    return api


def _files_routers(settings) -> list:
    """The local store's signed-URL routes (with Supabase storage, URLs point at Supabase)."""
    if settings.storage != "local":
        return []
    from core.clients.storage import LocalBlobStore
    from local.files import files_router

    # No size cap here: these URLs are signed for one key each, and what the worker uploads
    # (an adapter of a large model at a high rank) can pass the dashboard's upload limit.
    return [files_router(LocalBlobStore.from_settings(settings))]


def worker_env(settings) -> dict[str, str]:
    """Where the local worker keeps what RunPod keeps on the network volume."""
    volume = Path(settings.data_dir).resolve() / "volume"
    return {
        "MODEL_CACHE_DIR": str(volume / "models"),
        "CHECKPOINT_DIR": str(volume / "checkpoints"),
        "ADAPTER_DIR": str(volume / "adapters"),
        "CACHED_MODELS_DIR": str(volume / "huggingface-cache" / "hub"),
    }


def main(argv: list[str] | None = None) -> None:
    from core.settings import load_settings

    settings = load_settings()
    url = urlsplit(settings.gpu_cluster_api_url)
    parts = [p for p in url.path.split("/") if p]
    default_id = parts[1] if len(parts) >= 2 and parts[0] == "v2" else "local"
    p = argparse.ArgumentParser(
        prog="python -m local.endpoint",
        description="A RunPod Serverless queue endpoint on loopback, running the trainer's handler locally.",
    )
    p.add_argument("--host", default=url.hostname or "127.0.0.1")
    p.add_argument("--port", type=int, default=url.port or 8300)
    p.add_argument("--endpoint-id", default=default_id)
    p.add_argument(
        "--handler", default=DEFAULT_HANDLER, help="module:function (default %(default)s)"
    )
    p.add_argument("--workers", type=int, default=settings.local_workers)
    p.add_argument(
        "--retention-s",
        type=float,
        default=settings.local_result_retention_s,
        help="seconds a finished job's result is kept (RunPod: 1800)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )

    import uvicorn

    endpoint = LocalEndpoint(args.handler, args.workers, args.retention_s, worker_env(settings))
    app = build_app(
        endpoint,
        settings.gpu_cluster_api_key.get_secret_value(),
        args.endpoint_id,
        extra_routers=_files_routers(settings),
    )
    log.info(
        "local endpoint on http://%s:%d/v2/%s (%d worker(s), handler %s)",
        args.host,
        args.port,
        args.endpoint_id,
        args.workers,
        args.handler,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
