"""A loopback stand-in for RunPod's REST API v2 as `brightrun deploy` uses it, on one port
under `/v2`: network volumes (`/network-volumes`), templates (`/templates`) and
Serverless endpoints (`/serverless`): list, create, get, PATCH, DELETE; plus each
endpoint's job API `/v2/<id>/health`, at the URL its `requestUrls.health` names; and
the endpoint's daily bill, `GET /v2/billing/serverless` (from `bills`), and the GPU
catalog, `GET /v2/catalog/gpus` (from `gpus`).

Strict, given the published OpenAPI document (`contract`): a request whose method and
path the document does not define is a 404 problem, and a body the document's schema
refuses is a 422 problem whose `errors` are the validator's own messages (RunPod's
"the body does not match the contract"); malformed JSON is a 400. Every answer it gives
is validated against the document too, and any mismatch is kept in `violations` (a test
fixture fails on it). Rules the schema cannot say are checked as RunPod documents them:
a volume only grows and never moves; template names are unique; an endpoint is either
`gpu` or `cpu`, on known pools and existing volumes, made from a Serverless template
whose container (image, disk, env, registry) it copies once; a PATCH changes only what
it names (`gpu.pools` without `excludedTypes` clears them).

Query parameters are checked against the operation's documented ones too.
Every request is recorded (method, path, query, headers, body). Every call needs
`Authorization: Bearer <key>`. `throttle(n, retry_after)` answers the next n requests
with 429 and `Retry-After`; `fail_next(...)` answers one request with a given problem.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import string
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.deploy.contract import Contract

GPU_POOLS = {
    "AMPERE_16",
    "AMPERE_24",
    "ADA_24",
    "AMPERE_48",
    "ADA_48_PRO",
    "AMPERE_80",
    "ADA_80_PRO",
    "HOPPER_141",
    "ADA_32_PRO",
    "BLACKWELL_96",
    "BLACKWELL_180",
}
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
BILL_PARTS = ("gpuAmount", "cpuAmount", "diskAmount", "feeAmount")
CONTAINER = ("image", "args", "disk", "ports", "env", "registry")
HEALTH = {
    "jobs": {"completed": 0, "failed": 0, "inProgress": 0, "inQueue": 0, "retried": 0},
    "workers": {
        "idle": 0,
        "initializing": 0,
        "ready": 0,
        "running": 0,
        "throttled": 0,
        "unhealthy": 0,
    },
}


class Problem(Exception):
    """An RFC 9457 answer."""

    def __init__(self, status: int, detail: str, errors: list[str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.body: dict[str, Any] = {"title": TITLES[status], "status": status, "detail": detail}
        if errors is not None:
            self.body["errors"] = errors


def _new_id(n: int) -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(n))


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: str

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        return "application/json" if self.status < 400 else "application/problem+json"


@dataclass
class FakeRunPod:
    api_key: str
    contract: Contract | None = None
    volumes: dict[str, dict] = field(default_factory=dict)
    templates: dict[str, dict] = field(default_factory=dict)
    endpoints: dict[str, dict] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    health_status: int = 200
    data_centers: tuple[str, ...] = ("EU-RO-1", "US-KS-2", "EU-SE-1", "US-TX-3")
    _throttled: int = 0
    _retry_after: int = 1
    _failures: list[tuple[str, str, Problem]] = field(default_factory=list)
    # RunPod's serverless bill: (endpoint id, "YYYY-MM-DD") -> that day's amounts in USD
    # (`gpuAmount`, `cpuAmount`, `diskAmount`, `feeAmount`), served by /v2/billing/serverless.
    bills: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    gpus: list[dict[str, Any]] = field(default_factory=list)  # /v2/catalog/gpus entries

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._routes = [
            ("GET", r"/v2/network-volumes", self._list_volumes),
            ("POST", r"/v2/network-volumes", self._create_volume),
            ("PATCH", r"/v2/network-volumes/(\w+)", self._update_volume),
            ("GET", r"/v2/templates", self._list_templates),
            ("POST", r"/v2/templates", self._create_template),
            ("PATCH", r"/v2/templates/(\w+)", self._update_template),
            ("GET", r"/v2/serverless", self._list_endpoints),
            ("POST", r"/v2/serverless", self._create_endpoint),
            ("PATCH", r"/v2/serverless/(\w+)", self._update_endpoint),
        ]
        for kind in ("network-volumes", "templates", "serverless"):
            self._routes += [
                (
                    "GET",
                    rf"/v2/{kind}/(\w+)",
                    lambda rid, _b, k=kind: Answer(200, self._get(k, rid)),
                ),
                ("DELETE", rf"/v2/{kind}/(\w+)", lambda rid, _b, k=kind: self._delete(k, rid)),
            ]

    # -- lifecycle

    def start(self) -> FakeRunPod:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                parts = urlsplit(self.path)
                rec = Recorded(self.command, parts.path, parts.query, dict(self.headers), body)
                with fake._lock:
                    fake.requests.append(rec)
                    answer = fake.handle(rec)
                data = json.dumps(answer.body).encode() if answer.body is not None else b""
                self.send_response(answer.status)
                for k, v in answer.headers.items():
                    self.send_header(k, v)
                if data:
                    self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def rest_url(self) -> str:
        """What RUNPOD_REST_URL is set to for this stand-in."""
        return f"{self.url}/v2"

    # -- what tests look at and set up

    def writes(self) -> list[Recorded]:
        """Requests that change something: POST, PATCH, DELETE."""
        return [r for r in self.requests if r.method not in ("GET", "HEAD")]

    def throttle(self, times: int, retry_after: int) -> None:
        self._throttled, self._retry_after = times, retry_after

    def fail_next(self, method: str, path: str, status: int, detail: str, errors=None) -> None:
        """Answer the next `method` on a path matching the regex `path` with this problem."""
        self._failures.append((method, path, Problem(status, detail, errors)))

    def add_volume(self, name: str, size: int, data_center: str, type: str = "STANDARD") -> str:
        vid = _new_id(10)
        self.volumes[vid] = {
            "id": vid,
            "name": name,
            "size": size,
            "dataCenter": data_center,
            "type": type,
        }
        return vid

    def add_template(
        self, name: str, image: str, *, serverless: bool = True, env: dict | None = None
    ) -> str:
        body = {"name": name, "image": image, "serverless": serverless, "env": env or {}}
        return self._create_template(body).body["id"]

    # -- dispatch

    def handle(self, rec: Recorded) -> Answer:
        try:
            answer = self._dispatch(rec)
        except Problem as p:
            answer = Answer(p.status, p.body)
        if answer.status == 429:
            answer.headers["Retry-After"] = str(self._retry_after)
        if self.contract and self.contract.operation(rec.method, rec.path):
            self._check_answer(rec, answer)
        return answer

    def _dispatch(self, rec: Recorded) -> Answer:
        if rec.headers.get("Authorization") != f"Bearer {self.api_key}":
            raise Problem(401, "invalid or missing bearer token")
        if self._throttled:
            self._throttled -= 1
            raise Problem(429, "rate limit exceeded for the minute window")
        m = re.fullmatch(r"/v2/(\w+)/health", rec.path)
        if m and rec.method == "GET" and m.group(1) not in ("serverless", "templates"):
            return self._health(m.group(1))
        try:
            body = rec.json()
        except ValueError as e:
            raise Problem(400, f"request body is not JSON: {e}") from None
        query = dict(parse_qsl(rec.query))
        if self.contract:
            if self.contract.operation(rec.method, rec.path) is None:
                raise Problem(404, f"no route {rec.method} {rec.path}")
            errors = self.contract.request_errors(rec.method, rec.path, body)
            errors += self.contract.query_errors(rec.method, rec.path, query) if query else []
            if errors:
                raise Problem(422, "Request validation failed.", errors)
        for i, (method, path, problem) in enumerate(self._failures):
            if method == rec.method and re.fullmatch(path, rec.path):
                del self._failures[i]
                raise problem
        if rec.method == "GET" and rec.path == "/v2/billing/serverless":
            return self._billing(query)
        if rec.method == "GET" and rec.path == "/v2/catalog/gpus":
            return self._gpus(query)
        for method, path, fn in self._routes:
            m = re.fullmatch(path, rec.path)
            if m and method == rec.method:
                return fn(*m.groups(), body)
        raise Problem(404, f"no route {rec.method} {rec.path}")

    def _check_answer(self, rec: Recorded, answer: Answer) -> None:
        errors = self.contract.response_errors(
            rec.method, rec.path, answer.status, answer.content_type, answer.body, answer.headers
        )
        self.violations += [f"{rec.method} {rec.path} -> {answer.status}: {e}" for e in errors]

    def _billing(self, query: dict[str, str]) -> Answer:
        """Daily buckets of `bills` for `serverlessId` in [startTime, endTime)."""
        if query.get("bucketSize", "day") != "day":
            raise Problem(400, "this stand-in bills by day only")
        start = dt.datetime.fromisoformat(query["startTime"].replace("Z", "+00:00"))
        end = dt.datetime.fromisoformat(query["endTime"].replace("Z", "+00:00"))
        records = []
        for (endpoint_id, day), amounts in sorted(self.bills.items()):
            begins = dt.datetime.fromisoformat(f"{day}T00:00:00+00:00")
            if endpoint_id != query.get("serverlessId") or not start <= begins < end:
                continue
            parts = {k: float(amounts.get(k, 0.0)) for k in BILL_PARTS}
            records.append(
                {
                    "startTime": f"{day}T00:00:00Z",
                    "endTime": (begins + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "serverlessId": endpoint_id,
                    "totalAmount": round(sum(parts.values()), 6),
                    **parts,
                }
            )
        totals = {k: sum(r[k] for r in records) for k in ("totalAmount", *BILL_PARTS)}
        metadata = {
            "query": {
                "startTime": query["startTime"],
                "endTime": query["endTime"],
                "bucketSize": "day",
                "serverlessId": query.get("serverlessId"),
            },
            "recordCount": len(records),
            "uniqueServerlessCount": len({r["serverlessId"] for r in records}),
            "totals": totals,
        }
        return Answer(200, {"records": records, "metadata": metadata})

    def _gpus(self, query: dict[str, str]) -> Answer:
        """`gpus`, with availability only when asked for (it needs a product, as RunPod says)."""
        wants = query.get("include") == "AVAILABILITY"
        if wants != ("product" in query):
            raise Problem(400, "include=AVAILABILITY and product go together")
        keep = ("availability", "dataCenters") if wants else ()
        drop = {"availability", "dataCenters", "cudaVersions"} - set(keep)
        return Answer(
            200, {"gpus": [{k: v for k, v in g.items() if k not in drop} for g in self.gpus]}
        )

    def _health(self, endpoint_id: str) -> Answer:
        if endpoint_id not in self.endpoints:
            raise Problem(404, "endpoint not found")
        if self.health_status != 200:
            raise Problem(self.health_status, "unavailable")
        return Answer(200, HEALTH)

    def _store(self, kind: str) -> dict[str, dict]:
        return {"network-volumes": self.volumes, "templates": self.templates}.get(
            kind, self.endpoints
        )

    def _get(self, kind: str, rid: str) -> dict:
        found = self._store(kind).get(rid)
        if found is None:
            raise Problem(404, f"{kind.rstrip('s')} {rid} not found")
        return found

    def _delete(self, kind: str, rid: str) -> Answer:
        self._get(kind, rid)
        del self._store(kind)[rid]
        return Answer(204)

    # -- network volumes

    def _list_volumes(self, _body: Any) -> Answer:
        return Answer(200, {"networkVolumes": list(self.volumes.values())})

    def _create_volume(self, body: dict) -> Answer:
        if body["dataCenter"] not in self.data_centers:
            raise Problem(400, f"unknown data center {body['dataCenter']!r}")
        vid = self.add_volume(body["name"], body["size"], body["dataCenter"])
        self.volumes[vid]["type"] = body.get("type", "STANDARD")
        return Answer(201, self.volumes[vid])

    def _update_volume(self, vid: str, body: dict) -> Answer:
        vol = self._get("network-volumes", vid)
        if body.get("size", vol["size"]) < vol["size"]:
            raise Problem(400, "size decrease attempted: network volume storage cannot be reduced")
        vol.update(body)
        return Answer(200, vol)

    # -- templates

    def _list_templates(self, _body: Any) -> Answer:
        return Answer(200, {"templates": list(self.templates.values())})

    def _create_template(self, body: dict) -> Answer:
        if any(t["name"] == body["name"] for t in self.templates.values()):
            raise Problem(400, f"template name {body['name']!r} is already taken")
        tid = _new_id(10)
        self.templates[tid] = {
            "id": tid,
            "name": body["name"],
            "image": body["image"],
            "args": "",
            "disk": 10,
            "mounts": {},
            "ports": [],
            "env": {},
            "registry": None,
            "serverless": False,
            "public": False,
            "category": "NVIDIA",
            "startSsh": True,
            "startJupyter": True,
            "allowedCudaVersions": [],
        }
        self.templates[tid].update(body)
        return Answer(201, self.templates[tid])

    def _update_template(self, tid: str, body: dict) -> Answer:
        tpl = self._get("templates", tid)
        tpl.update(body)
        return Answer(200, tpl)

    # -- endpoints

    def _list_endpoints(self, _body: Any) -> Answer:
        return Answer(200, {"endpoints": list(self.endpoints.values())})

    def _request_urls(self, eid: str) -> dict[str, str]:
        base = f"{self.url}/v2/{eid}"
        return {
            "run": f"{base}/run",
            "runSync": f"{base}/runsync",
            "status": f"{base}/status/{{job_id}}",
            "stream": f"{base}/stream/{{job_id}}",
            "cancel": f"{base}/cancel/{{job_id}}",
            "retry": f"{base}/retry/{{job_id}}",
            "purgeQueue": f"{base}/purge-queue",
            "health": f"{base}/health",
        }

    def _template_container(self, template_id: str) -> dict[str, Any]:
        tpl = self.templates.get(template_id)
        if tpl is None:
            raise Problem(404, f"template {template_id} not found")
        if not tpl["serverless"]:
            raise Problem(422, f"template {template_id} is not a serverless template")
        return {k: tpl[k] for k in CONTAINER}

    def _create_endpoint(self, body: dict) -> Answer:
        if ("gpu" in body) == ("cpu" in body):
            raise Problem(400, "specify exactly one of gpu or cpu")
        container: dict[str, Any] = {
            "args": "",
            "disk": 10,
            "ports": [],
            "env": {},
            "registry": None,
        }
        gpu = {"count": 1, "allowedCudaVersions": [], "minCudaVersion": None, **body["gpu"]}
        if "templateId" in body:
            container = self._template_container(body["templateId"])
            tpl_cuda = self.templates[body["templateId"]]["allowedCudaVersions"]
            if "allowedCudaVersions" not in body["gpu"] and "minCudaVersion" not in body["gpu"]:
                gpu["allowedCudaVersions"] = list(tpl_cuda)
        env = {**container["env"], **body.get("env", {})}
        container.update({k: body[k] for k in CONTAINER if k in body}, env=env)
        eid = _new_id(14)
        endpoint = {
            "id": eid,
            "name": body["name"],
            "type": body["type"],
            "requestUrls": self._request_urls(eid),
            "gpu": gpu,
            "workers": {"min": 0, "max": 3, "idleTimeout": 10, **body.get("workers", {})},
            "scaling": body["scaling"],
            "dataCenterIds": body.get("dataCenterIds", []),
            "networkVolumes": body.get("networkVolumes", []),
            "timeout": body.get("timeout", 300_000),
            "flashboot": body.get("flashboot", "OFF"),
            "createdAt": "2026-12-01T00:00:00Z",
            **container,
        }
        self._check_endpoint(endpoint)
        self.endpoints[eid] = endpoint
        return Answer(201, endpoint)

    def _update_endpoint(self, eid: str, body: dict) -> Answer:
        ep = json.loads(json.dumps(self._get("serverless", eid)))  # a copy: all or nothing
        if "cpu" in body:
            raise Problem(400, "cpu on a GPU endpoint: the compute family cannot change")
        if "templateId" in body:
            container = self._template_container(body["templateId"])
            ep.update(container, env={**container["env"], **body.get("env", {})})
        gpu = body.get("gpu", {})
        if "pools" in gpu:
            ep["gpu"].pop("excludedTypes", None)
        ep["gpu"].update(gpu)
        if gpu.get("minCudaVersion") == "":
            ep["gpu"]["minCudaVersion"] = None
        ep["workers"].update(body.get("workers", {}))
        skip = ("gpu", "workers", "templateId")
        ep.update({k: v for k, v in body.items() if k not in skip})
        self._check_endpoint(ep)
        self.endpoints[eid] = ep
        return Answer(200, ep)

    def _check_endpoint(self, ep: dict) -> None:
        gpu = ep["gpu"]
        unknown = [p for p in gpu["pools"] if p not in GPU_POOLS]
        if unknown:
            raise Problem(400, f"unknown GPU pool(s) {', '.join(unknown)}")
        if gpu["allowedCudaVersions"] and gpu["minCudaVersion"]:
            raise Problem(400, "gpu.allowedCudaVersions and gpu.minCudaVersion are exclusive")
        missing = [v for v in ep["networkVolumes"] if v not in self.volumes]
        if missing:
            raise Problem(400, f"network volume(s) {', '.join(missing)} not found")
        if ep["workers"]["min"] > ep["workers"]["max"]:
            raise Problem(400, "workers.min must not exceed workers.max")
        if "image" not in ep:
            raise Problem(400, "image is required unless templateId is set")
