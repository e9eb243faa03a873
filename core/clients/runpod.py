"""Client for a RunPod Serverless queue endpoint (and the local endpoint that speaks its API).

Operations, as documented at docs.runpod.io/serverless/endpoints/send-requests (read
2026-11-26), relative to the endpoint's base URL `https://api.runpod.ai/v2/<endpoint-id>`:

    POST /run          {"input": ..., "policy": {"executionTimeout": ms, "ttl": ms}}
                       -> {"id", "status": "IN_QUEUE"}
    GET  /status/{id}  -> {"id", "status", "delayTime", "executionTime", "output" | "error"}
    GET  /stream/{id}  -> {"status", "stream": [{"output": chunk}, ...]}  (chunks since the last call)
    POST /cancel/{id}  -> {"id", "status": "CANCELLED"}
    POST /retry/{id}   -> {"id", "status": "IN_QUEUE"}  (FAILED or TIMED_OUT jobs only)
    GET  /health       -> {"jobs": {completed, failed, inProgress, inQueue, retried},
                           "workers": {idle, running, ...}}

Authentication is `Authorization: Bearer <GPU_CLUSTER_API_KEY>`. The key is held as a
`SecretStr`, sent only in that header, and appears in no repr, log line or error message.

Platform facts the callers design around: a job without `policy.executionTimeout` gets
the endpoint's (10 minutes by default), so `run` requires one; `/run` bodies are limited
to 10 MB (`PayloadTooLarge` is raised before sending); `/run` results are kept 30 minutes
after the job ends, after which `/status` answers 404 (`JobNotFound`).

Retries: every call has connect/read timeouts. Idempotent calls (`status`, `stream`,
`cancel`, `retry`, `health`) are retried with exponential backoff on network errors, 429
and 5xx (honouring `Retry-After`). `run` is retried only when the job cannot have been
created: a connection that was never established, or a 429 (RunPod refuses the job when
its queue is full). Any other failure after the body was sent raises `SubmitUncertain`,
because retrying could start the same training twice.

A `/stream` read is destructive (each chunk is returned once), so callers must persist what
`stream` returns; the final `output` of a generator handler with `return_aggregate_stream`
holds every chunk and is the backfill source.

Raises (all subclasses of `RunPodError`): `EndpointAuthError` (401/403), `JobNotFound` (404 on a
job path), `BadRequest` (other 4xx), `PayloadTooLarge`, `EndpointUnavailable` (retries
exhausted), `SubmitUncertain` (a `/run` whose outcome is unknown).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from pydantic import SecretStr

from core.errors import BrightRunError

log = logging.getLogger(__name__)

Status = Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"]
STATUSES: tuple[str, ...] = (
    "IN_QUEUE",
    "IN_PROGRESS",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMED_OUT",
)
TERMINAL: frozenset[str] = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
# RunPod's job-states page also lists RUNNING for a job a worker is processing; the
# American spelling and a bare TIMEOUT are read as the statuses they name.
_ALIASES = {"RUNNING": "IN_PROGRESS", "CANCELED": "CANCELLED", "TIMEOUT": "TIMED_OUT"}

MAX_RUN_PAYLOAD_BYTES = 10 * 1024 * 1024
MIN_EXECUTION_TIMEOUT_MS = 5001  # "must be > 5000 ms"
MIN_TTL_MS = 10_000
MAX_TTL_MS = 7 * 24 * 3600 * 1000
RESULT_RETENTION_S = 30 * 60  # /run results are kept 30 minutes after the job ends


class RunPodError(BrightRunError):
    """Base of every error this client raises."""


class EndpointAuthError(RunPodError):
    """The endpoint refused the API key (401/403)."""


class JobNotFound(RunPodError):
    """The endpoint does not know the job: wrong id, or its result expired (30 minutes)."""


class BadRequest(RunPodError):
    """The endpoint rejected the request (4xx other than 401/403/404/429)."""

    def __init__(self, message: str, status_code: int):
        super().__init__(message)
        self.status_code = status_code


class PayloadTooLarge(BadRequest):
    """A `/run` body over RunPod's 10 MB limit; send data by URL instead."""


class EndpointUnavailable(RunPodError):
    """Network errors, 429 or 5xx persisted through every retry."""


class SubmitUncertain(EndpointUnavailable):
    """A `/run` request was sent but no answer came back: the job may or may not exist."""


@dataclass(frozen=True)
class JobState:
    """One `/status` (or `/run`, `/cancel`, `/retry`) answer."""

    id: str
    status: str
    delay_ms: int | None = None
    execution_ms: int | None = None
    output: Any = None
    error: Any = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def job_error(self) -> JobError | None:
        """`error` read in any of runpod-python's forms (`JobError`)."""
        return JobError.parse(self.error)


@dataclass(frozen=True)
class JobError:
    """A failed job's `error`, in the forms runpod-python produces: a JSON string with
    `error_type`, `error_message` and `error_traceback` (an exception in a plain handler,
    or what a BrightRun worker reports), a plain string (an exception in a generator
    handler: `handler: <message> \ntraceback: ...`, or a yielded `{"error": "..."}`),
    or an object of the JSON form."""

    message: str
    type: str | None = None
    traceback: str | None = None

    @classmethod
    def parse(cls, value: Any) -> JobError | None:
        if value is None or value == "":
            return None
        data = value
        if isinstance(value, str):
            try:
                data = json.loads(value)
            except ValueError:
                return cls._plain(value)
        if not isinstance(data, dict) or not ("error_message" in data or "error_type" in data):
            return cls._plain(value if isinstance(value, str) else json.dumps(value))
        return cls(
            message=str(data.get("error_message") or data.get("error_type")),
            type=str(data["error_type"]) if data.get("error_type") else None,
            traceback=data.get("error_traceback") or None,
        )

    @classmethod
    def _plain(cls, text: str) -> JobError:
        head, sep, tail = text.partition(" \ntraceback: ")
        if sep and head.startswith("handler: "):
            return cls(message=head[len("handler: ") :], traceback=tail)
        return cls(message=text)


@dataclass(frozen=True)
class StreamBatch:
    """One `/stream` answer: the job's status and the chunks produced since the last read."""

    status: str
    outputs: list[Any]

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class Health:
    jobs: dict[str, int]
    workers: dict[str, int]


def _normalise_status(value: Any) -> str:
    s = str(value or "").strip().upper()
    return _ALIASES.get(s, s)


def _job_state(body: dict[str, Any], job_id: str | None = None) -> JobState:
    return JobState(
        id=str(body.get("id") or job_id or ""),
        status=_normalise_status(body.get("status")),
        delay_ms=body.get("delayTime"),
        execution_ms=body.get("executionTime"),
        output=body.get("output"),
        error=body.get("error"),
        raw=body,
    )


class RunPodClient:
    """A RunPod Serverless endpoint. Thread-safe (one shared `httpx.Client`)."""

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr | str,
        *,
        timeout: httpx.Timeout | float | None = None,
        max_attempts: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 20.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        self.base_url = base_url.rstrip("/")
        self._max_attempts = max(1, max_attempts)
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={
                "Authorization": f"Bearer {key.get_secret_value()}",
                "Accept": "application/json",
            },
            timeout=timeout or httpx.Timeout(30.0, connect=10.0),
            transport=transport,
        )

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> RunPodClient:
        return cls(settings.gpu_cluster_api_url, settings.gpu_cluster_api_key, **kwargs)

    def __repr__(self) -> str:
        return f"RunPodClient({self.base_url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RunPodClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- operations ---------------------------------------------------------------

    def run(
        self,
        input: dict[str, Any],
        *,
        execution_timeout_ms: int,
        ttl_ms: int | None = None,
        webhook: str | None = None,
    ) -> JobState:
        """Submit a job; returns its id and status (IN_QUEUE). See module doc for retries."""
        if execution_timeout_ms < MIN_EXECUTION_TIMEOUT_MS:
            raise ValueError(f"executionTimeout must be over 5000 ms (got {execution_timeout_ms})")
        policy: dict[str, Any] = {"executionTimeout": int(execution_timeout_ms)}
        if ttl_ms is not None:
            if not MIN_TTL_MS <= ttl_ms <= MAX_TTL_MS:
                raise ValueError(f"ttl must be between 10 s and 1 week in ms (got {ttl_ms})")
            policy["ttl"] = int(ttl_ms)
        body: dict[str, Any] = {"input": input, "policy": policy}
        if webhook:
            body["webhook"] = webhook
        content = json.dumps(body, separators=(",", ":")).encode()
        if len(content) > MAX_RUN_PAYLOAD_BYTES:
            raise PayloadTooLarge(
                f"/run body is {len(content) / 1e6:.1f} MB; RunPod accepts at most 10 MB "
                "(send datasets by URL)",
                413,
            )
        data = self._request("POST", "/run", content=content, submit=True)
        state = _job_state(data)
        if not state.id:
            raise RunPodError("/run answered without a job id")
        return state

    def status(self, job_id: str) -> JobState:
        return _job_state(self._request("GET", f"/status/{job_id}", job_path=True), job_id)

    def stream(self, job_id: str) -> StreamBatch:
        data = self._request("GET", f"/stream/{job_id}", job_path=True)
        chunks = data.get("stream") or []
        return StreamBatch(
            status=_normalise_status(data.get("status")),
            outputs=[c.get("output") if isinstance(c, dict) else c for c in chunks],
        )

    def cancel(self, job_id: str) -> JobState:
        return _job_state(self._request("POST", f"/cancel/{job_id}", job_path=True), job_id)

    def retry(self, job_id: str) -> JobState:
        return _job_state(self._request("POST", f"/retry/{job_id}", job_path=True), job_id)

    def health(self) -> Health:
        data = self._request("GET", "/health")
        return Health(jobs=dict(data.get("jobs") or {}), workers=dict(data.get("workers") or {}))

    # --- transport ----------------------------------------------------------------

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None:
            retry_after = response.headers.get("Retry-After", "")
            if retry_after.replace(".", "", 1).isdigit():
                return min(float(retry_after), self._max_backoff_s)
        return min(self._backoff_s * (2**attempt), self._max_backoff_s)

    def _request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        job_path: bool = False,
        submit: bool = False,
    ) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"} if content is not None else None
        last: str = ""
        for attempt in range(self._max_attempts):
            response: httpx.Response | None = None
            try:
                response = self._http.request(method, path, content=content, headers=headers)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                # The connection was never established: nothing reached the endpoint.
                last = f"cannot connect to {self.base_url}: {type(e).__name__}"
            except httpx.TransportError as e:
                if submit:
                    raise SubmitUncertain(
                        f"/run was sent to {self.base_url} but no answer came back "
                        f"({type(e).__name__}); the job may exist"
                    ) from e
                last = f"{method} {path}: {type(e).__name__}"
            else:
                code = response.status_code
                if code < 400:
                    return _json(response, path)
                if code in (401, 403):
                    raise EndpointAuthError(
                        f"{self.base_url} refused the API key (HTTP {code}); "
                        "check GPU_CLUSTER_API_KEY"
                    )
                if code == 404 and job_path:
                    raise JobNotFound(f"{path}: job not found (unknown id or result expired)")
                if code == 429 or code >= 500:
                    if submit and code != 429:
                        raise SubmitUncertain(
                            f"/run answered HTTP {code}; the job may or may not have been "
                            "created, so it is not sent again"
                        )
                    last = f"{method} {path}: HTTP {code}"
                else:
                    raise BadRequest(f"{method} {path}: HTTP {code}: {response.text[:300]}", code)
            if attempt + 1 < self._max_attempts:
                delay = self._delay(attempt, response)
                log.info("%s; retrying in %.1fs (attempt %d)", last, delay, attempt + 2)
                self._sleep(delay)
        raise EndpointUnavailable(f"{last} (after {self._max_attempts} attempts)")


def _json(response: httpx.Response, path: str) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError as e:
        raise RunPodError(f"{path}: answer is not JSON") from e
    if not isinstance(data, dict):
        raise RunPodError(f"{path}: answer is not a JSON object")
    return data
