"""RunPod's REST API v2 for `brightrun deploy`: network volumes, templates, Serverless
endpoints, and each endpoint's `/health`; and the endpoint's bill (`serverless_billing`,
`GET /billing/serverless`) for the Costs page, and the GPU catalog (`serverless_gpus`). Plain httpx; no GraphQL, no REST v1, no SDK.

Accepts a base URL (the setting `RUNPOD_REST_URL`, `https://api.runpod.io/v2`, or a
stand-in) and the account key (`RUNPOD_API_KEY`), which travels only in the
`Authorization` header: a dry run shows `Bearer ****`, and RunPod's text is masked before
it is raised.

Answers: lists come wrapped (`{"endpoints": [...]}`, `{"templates": [...]}`,
`{"networkVolumes": [...]}`); a refusal is an RFC 9457 problem (`title`, `status`,
`detail`, `errors`), raised as `RunPodProblem` with all four in its message. A 429 is
retried after its `Retry-After` seconds (a wait over `max_retry_after_s` is raised
instead, with the wait named); transport errors and 5xx are retried for reads only, since
a write may have landed.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx

from core.deploy.errors import DeployError, RunPodProblem
from core.deploy.plan import ApiCall, Observed, Ref

MASK = "****"
RATE_LIMIT_TRIES = 5  # 429s in a row before giving up
DEFAULT_RETRY_AFTER_S = 5.0  # a 429 without a usable Retry-After


class RunPodApi:
    """One account key, one base URL. `sleep` is injectable so tests do not wait."""

    def __init__(
        self,
        api_key: str,
        base_url: str,
        *,
        timeout_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        max_retry_after_s: float = 120.0,
    ) -> None:
        if not api_key:
            raise DeployError(
                "RUNPOD_API_KEY is not set: create an API key in the RunPod console "
                "(Settings > API Keys) and put it in .env or the environment"
            )
        self._key = api_key
        self.base_url = base_url.rstrip("/")
        self._sleep = sleep
        self._max_wait = max_retry_after_s
        self._http = httpx.Client(timeout=timeout_s, headers={"Authorization": f"Bearer {api_key}"})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RunPodApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def mask(self, text: str) -> str:
        return text.replace(self._key, MASK) if self._key else text

    # -- transport

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """`method` on `<base><path>`; the JSON answer, None for 204."""
        url = f"{self.base_url}{path}"
        for _ in range(RATE_LIMIT_TRIES):
            resp = self._send(method, url, body)
            if resp.status_code != 429:
                break
            self._sleep(self._retry_after(method, url, resp))
        return self._answer(method, url, resp)

    def _send(self, method: str, url: str, body: Any) -> httpx.Response:
        tries = 3 if method == "GET" else 1  # never repeat a write that may have landed
        for attempt in range(1, tries + 1):
            try:
                resp = self._http.request(method, url, json=body)
            except httpx.TransportError as e:
                if attempt == tries:
                    raise DeployError(self.mask(f"{method} {url} failed: {e}")) from None
            else:
                if resp.status_code < 500 or attempt == tries:
                    return resp
            self._sleep(2.0 * attempt)
        raise AssertionError("unreachable")

    def _retry_after(self, method: str, url: str, resp: httpx.Response) -> float:
        raw = resp.headers.get("Retry-After", "")
        wait = float(raw) if raw.strip().isdigit() else DEFAULT_RETRY_AFTER_S
        if wait > self._max_wait:
            problem = _problem(resp)
            raise RunPodProblem(
                self.mask(
                    problem_text(method, url, problem)
                    + f"\nRunPod asks to wait {wait:.0f} s (Retry-After); run deploy again then"
                ),
                problem,
                429,
            )
        return wait

    def _answer(self, method: str, url: str, resp: httpx.Response) -> Any:
        if resp.status_code < 400:
            try:
                return resp.json() if resp.content else None
            except ValueError:
                raise DeployError(
                    self.mask(f"{method} {url}: RunPod answered {resp.status_code} with no JSON")
                ) from None
        problem = _problem(resp)
        text = problem_text(method, url, problem)
        if resp.status_code == 401:
            text = f"RunPod refused RUNPOD_API_KEY: check the key.\n{text}"
        raise RunPodProblem(self.mask(text), problem, resp.status_code)

    # -- reads

    def _list(self, path: str, key: str) -> list[dict[str, Any]]:
        body = self.request("GET", path)
        items = body.get(key) if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise DeployError(
                self.mask(f"GET {self.base_url}{path}: expected {{{key!r}: [...]}}, got {body!r}")
            )
        return items

    def observe(self) -> Observed:
        return Observed(
            self._list("/network-volumes", "networkVolumes"),
            self._list("/templates", "templates"),
            self._list("/serverless", "endpoints"),
        )

    def serverless_billing(
        self, endpoint_id: str, start: dt.datetime, end: dt.datetime, bucket: str = "day"
    ) -> list[dict[str, Any]]:
        """`GET /billing/serverless` for one endpoint: RunPod's bill per `bucket` over
        [start, end) (RFC 3339, UTC), the records of `ListServerlessBillingResponse`
        (`startTime`, `endTime`, `serverlessId`, `totalAmount`, `gpuAmount`, `cpuAmount`,
        `diskAmount`, `feeAmount`, in USD)."""
        query = urlencode(
            {
                "serverlessId": endpoint_id,
                "startTime": _rfc3339(start),
                "endTime": _rfc3339(end),
                "bucketSize": bucket,
            }
        )
        body = self.request("GET", f"/billing/serverless?{query}")
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list):
            raise DeployError(
                f"GET {self.base_url}/billing/serverless: expected {{'records': [...]}}, "
                f"got {self.mask(repr(body))[:300]}"
            )
        return records

    def serverless_gpus(self) -> list[dict[str, Any]]:
        """`GET /catalog/gpus?include=AVAILABILITY&product=SERVERLESS`: every GPU type with
        its Serverless list price (`price.serverless`, $/h per GPU) and availability
        (`availability`: NONE, LOW, MEDIUM or HIGH) for Serverless workers."""
        return self._list("/catalog/gpus?include=AVAILABILITY&product=SERVERLESS", "gpus")

    def get_endpoint(self, endpoint_id: str) -> dict[str, Any]:
        return self.request("GET", f"/serverless/{endpoint_id}")

    def health(self, url: str, *, attempts: int = 6, delay_s: float = 5.0) -> dict:
        """An endpoint's `/health` (its `requestUrls.health`): job and worker counts. A new
        endpoint can take a few seconds to answer, so 404 and 5xx are retried."""
        last = ""
        for attempt in range(1, attempts + 1):
            try:
                resp = self._http.get(url)
            except httpx.TransportError as e:
                last = str(e)
            else:
                if resp.status_code == 401:
                    raise DeployError(f"{url}: RunPod refused RUNPOD_API_KEY (401)")
                body = resp.json() if resp.status_code == 200 else None
                if isinstance(body, dict) and "workers" in body and "jobs" in body:
                    return body
                last = f"status {resp.status_code}" if body is None else "unexpected answer"
            if attempt < attempts:
                self._sleep(delay_s)
        raise DeployError(
            self.mask(f"{url} did not answer healthy after {attempts} tries ({last})")
        )

    # -- writes

    def execute(self, call: ApiCall, ids: dict[Ref, str]) -> Any:
        """Make `call` with its `Ref`s resolved; returns RunPod's answer."""
        return self.request(call.method, call.path, resolve(call.body, ids))


def _rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _problem(resp: httpx.Response) -> dict[str, Any]:
    """The RFC 9457 body of a refusal; one is made up from the status if RunPod sent none."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "detail" in body and "status" in body:
        return body
    return {"title": resp.reason_phrase, "status": resp.status_code, "detail": resp.text[:500]}


def problem_text(method: str, url: str, problem: dict[str, Any]) -> str:
    """A problem as the user reads it: status, title, detail, then each of `errors`."""
    head = (
        f"{method} {url}: RunPod answered {problem.get('status')} {problem.get('title')}: "
        f"{problem.get('detail')}"
    )
    return "\n".join([head, *(f"  - {e}" for e in problem.get("errors") or [])])


def _map_refs(value: Any, fn: Callable[[Ref], Any]) -> Any:
    """`value` with every `Ref` in it (in dicts and lists too) replaced by `fn(ref)`."""
    if isinstance(value, Ref):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_refs(v, fn) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_map_refs(v, fn) for v in value]
    return value


def resolve(value: Any, ids: dict[Ref, str]) -> Any:
    """`value` with each `Ref` replaced by the id its create call returned."""

    def known(ref: Ref) -> str:
        if ref not in ids:
            raise DeployError(f"{ref} is not known: the call that creates it did not run")
        return ids[ref]

    return _map_refs(value, known)


def placeholders(value: Any) -> Any:
    """`value` with each `Ref` shown as its placeholder text, for a dry run."""
    return _map_refs(value, str)


def describe_call(call: ApiCall, base_url: str) -> str:
    """The request `call` makes, as text: the key masked, ids not known yet as placeholders."""
    lines = [f"{call.method} {base_url.rstrip('/')}{call.path}", f"Authorization: Bearer {MASK}"]
    if call.body is not None:
        lines.append(json.dumps(placeholders(call.body), indent=2))
    return "\n".join(lines)
