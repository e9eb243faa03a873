"""A loopback stand-in for the RunPod APIs that `brightrun deploy` uses, on one port:

- GraphQL (`POST /graphql`, what the runpod SDK speaks): `myself { endpoints {...} }`,
  `saveTemplate(input: {...})`, `saveEndpoint(input: {...})`. Inline input literals are
  parsed as GraphQL (strings, numbers, booleans, enums, lists, objects); a selection may
  only name fields the type has. `saveEndpoint` with an `id` replaces the whole
  configuration, as RunPod's does: a field left out falls back to its default.
  Template names are unique in an account.
- REST v1 (`/v1`): `GET/POST /networkvolumes`, `PATCH /networkvolumes/{id}` (size may
  only grow), `GET /templates` (templates bound to an endpoint only with
  `includeEndpointBoundTemplates=true`), `PATCH /templates/{id}`.
- Serverless (`/v2`): `GET /{endpoint id}/health`.

Shapes follow RunPod's documentation for these calls. Every request is recorded
(method, path, query, headers, body) so tests can check what left the client. Every
call needs `Authorization: Bearer <key>` (GraphQL also takes `?api_key=`, as documented).
"""

from __future__ import annotations

import json
import re
import secrets
import string
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

GPU_POOLS = {
    "AMPERE_16", "AMPERE_24", "ADA_24", "AMPERE_48", "ADA_48_PRO", "AMPERE_80", "ADA_80_PRO",
    "HOPPER_141", "ADA_32_PRO", "BLACKWELL_96", "BLACKWELL_180",
}  # fmt: skip

ENDPOINT_FIELDS = {
    "aiKey", "gpuIds", "id", "idleTimeout", "name", "networkVolumeId", "locations",
    "scalerType", "scalerValue", "templateId", "type", "userId", "version", "workersMax",
    "workersMin", "workersStandby", "gpuCount", "env", "createdAt", "networkVolume",
    "allowedCudaVersions", "flashBootType", "executionTimeoutMs",
}  # fmt: skip
ENDPOINT_INPUT = {
    "id", "name", "templateId", "gpuIds", "gpuCount", "networkVolumeId", "locations",
    "idleTimeout", "scalerType", "scalerValue", "workersMin", "workersMax", "flashBootType",
    "executionTimeoutMs", "allowedCudaVersions", "type",
}  # fmt: skip
ENDPOINT_DEFAULTS: dict[str, Any] = {
    "gpuCount": 1,
    "networkVolumeId": "",
    "locations": "",
    "idleTimeout": 5,
    "scalerType": "QUEUE_DELAY",
    "scalerValue": 4,
    "workersMin": 0,
    "workersMax": 3,
    "flashBootType": "OFF",
    "executionTimeoutMs": 600_000,
    "allowedCudaVersions": "",
    "type": "QB",
}
TEMPLATE_FIELDS = {
    "id", "name", "imageName", "dockerArgs", "containerDiskInGb", "volumeInGb",
    "volumeMountPath", "ports", "env", "isServerless", "readme", "isPublic", "startSsh",
    "containerRegistryAuthId",
}  # fmt: skip
TEMPLATE_INPUT = TEMPLATE_FIELDS
TEMPLATE_REST_PATCH = {
    "name", "imageName", "containerDiskInGb", "env", "dockerEntrypoint", "dockerStartCmd",
    "isPublic", "ports", "readme", "volumeInGb", "volumeMountPath", "containerRegistryAuthId",
}  # fmt: skip


class GraphQLError(Exception):
    pass


@dataclass(frozen=True)
class Enum:
    value: str


# ------------------------------------------------------------------ a small GraphQL parser

_TOKEN = re.compile(
    r'\s+|,|#[^\n]*|(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+(?:\.\d+)?)'
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>[{}()\[\]:!$=])"
)


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise GraphQLError(f"Syntax Error: unexpected character {text[pos]!r}")
        pos = m.end()
        if m.group("str") is not None:
            out.append(("str", json.loads(m.group("str"))))
        elif m.group("num") is not None:
            n = m.group("num")
            out.append(("num", float(n) if "." in n else int(n)))
        elif m.group("name") is not None:
            out.append(("name", m.group("name")))
        elif m.group("punct") is not None:
            out.append(("punct", m.group("punct")))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, Any] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, kind: str, value: Any = None) -> Any:
        tok = self.peek()
        if tok is None or tok[0] != kind or (value is not None and tok[1] != value):
            raise GraphQLError(f"Syntax Error: expected {value or kind}, found {tok}")
        self.i += 1
        return tok[1]

    def document(self) -> tuple[str, list]:
        op = "query"
        tok = self.peek()
        if tok and tok[0] == "name" and tok[1] in ("query", "mutation"):
            op = self.take("name")
            if self.peek() and self.peek()[0] == "name":
                self.take("name")
            if self.peek() == ("punct", "("):
                raise GraphQLError("this stand-in takes inline literals only, as the SDK sends")
        sel = self.selection_set()
        if self.peek() is not None:
            raise GraphQLError(f"Syntax Error: unexpected {self.peek()}")
        return op, sel

    def selection_set(self) -> list:
        self.take("punct", "{")
        fields = []
        while self.peek() != ("punct", "}"):
            name = self.take("name")
            args = self.arguments() if self.peek() == ("punct", "(") else {}
            sub = self.selection_set() if self.peek() == ("punct", "{") else None
            fields.append((name, args, sub))
        self.take("punct", "}")
        return fields

    def arguments(self) -> dict:
        self.take("punct", "(")
        args = {}
        while self.peek() != ("punct", ")"):
            key = self.take("name")
            self.take("punct", ":")
            args[key] = self.value()
        self.take("punct", ")")
        return args

    def value(self) -> Any:
        kind, val = self.peek() or ("eof", None)
        if kind in ("str", "num"):
            self.i += 1
            return val
        if kind == "name":
            self.i += 1
            return {"true": True, "false": False, "null": None}.get(val, Enum(val))
        if (kind, val) == ("punct", "["):
            self.i += 1
            items = []
            while self.peek() != ("punct", "]"):
                items.append(self.value())
            self.i += 1
            return items
        if (kind, val) == ("punct", "{"):
            self.i += 1
            obj = {}
            while self.peek() != ("punct", "}"):
                key = self.take("name")
                self.take("punct", ":")
                obj[key] = self.value()
            self.i += 1
            return obj
        raise GraphQLError(f"Syntax Error: unexpected {kind} {val!r}")


def _project(obj: Any, selection: list | None, type_name: str, known: dict[str, set[str]]) -> Any:
    if selection is None:
        return obj
    if isinstance(obj, list):
        return [_project(o, selection, type_name, known) for o in obj]
    out = {}
    for name, _args, sub in selection:
        if name not in known[type_name]:
            raise GraphQLError(f'Cannot query field "{name}" on type "{type_name}".')
        value = obj.get(name)
        out[name] = _project(value, sub, _FIELD_TYPES.get(name, ""), known) if sub else value
    return out


_FIELD_TYPES = {
    "env": "EnvironmentVariable",
    "networkVolume": "NetworkVolume",
    "networkVolumes": "NetworkVolume",
    "endpoints": "Endpoint",
}
_KNOWN = {
    "Endpoint": ENDPOINT_FIELDS,
    "PodTemplate": TEMPLATE_FIELDS,
    "EnvironmentVariable": {"key", "value"},
    "NetworkVolume": {"id", "name", "size", "dataCenterId"},
    "User": {"id", "pubKey", "endpoints", "networkVolumes"},
}


def _new_id(n: int) -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(n))


# ------------------------------------------------------------------ the fake


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: str


@dataclass
class FakeRunPod:
    api_key: str
    volumes: dict[str, dict] = field(default_factory=dict)
    templates: dict[str, dict] = field(default_factory=dict)
    endpoints: dict[str, dict] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    health_status: int = 200
    data_centers: tuple[str, ...] = ("EU-RO-1", "US-KS-2", "EU-SE-1", "US-TX-3")

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

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
                    status, payload = fake.route(rec)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _handle

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

    # -- what tests look at

    def writes(self) -> list[Recorded]:
        """Requests that change something: REST POST/PATCH/DELETE and GraphQL mutations."""
        out = []
        for r in self.requests:
            if r.path == "/graphql":
                if json.loads(r.body or "{}").get("query", "").lstrip().startswith("mutation"):
                    out.append(r)
            elif r.method != "GET":
                out.append(r)
        return out

    def graphql_queries(self) -> list[str]:
        return [json.loads(r.body)["query"] for r in self.requests if r.path == "/graphql"]

    # -- seeding

    def add_volume(self, name: str, size: int, data_center: str) -> str:
        vid = _new_id(10)
        self.volumes[vid] = {"id": vid, "name": name, "size": size, "dataCenterId": data_center}
        return vid

    def add_template(
        self,
        name: str,
        image: str,
        *,
        serverless: bool = True,
        env: dict | None = None,
        disk: int = 10,
    ) -> str:
        tid = _new_id(10)
        self.templates[tid] = self._template(
            tid,
            {
                "name": name,
                "imageName": image,
                "isServerless": serverless,
                "containerDiskInGb": disk,
                "env": env or {},
            },
        )
        return tid

    # -- routing

    def _authorised(self, rec: Recorded) -> bool:
        if rec.headers.get("Authorization") == f"Bearer {self.api_key}":
            return True
        return rec.path == "/graphql" and parse_qs(rec.query).get("api_key") == [self.api_key]

    def route(self, rec: Recorded) -> tuple[int, Any]:
        if not self._authorised(rec):
            return 401, {"error": "Unauthorized"}
        try:
            if rec.path == "/graphql" and rec.method == "POST":
                return 200, self.graphql(json.loads(rec.body))
            body = json.loads(rec.body) if rec.body else None
            m = re.fullmatch(r"/v2/([a-z0-9]+)/health", rec.path)
            if m and rec.method == "GET":
                if m.group(1) not in self.endpoints:
                    return 404, {"error": "endpoint not found"}
                if self.health_status != 200:
                    return self.health_status, {"error": "unavailable"}
                return 200, {
                    "jobs": {
                        "completed": 0,
                        "failed": 0,
                        "inProgress": 0,
                        "inQueue": 0,
                        "retried": 0,
                    },
                    "workers": {
                        "idle": 0,
                        "initializing": 0,
                        "ready": 0,
                        "running": 0,
                        "throttled": 0,
                        "unhealthy": 0,
                    },
                }
            return self.rest(rec.method, rec.path, parse_qs(rec.query), body)
        except _HttpError as e:
            return e.status, {"error": e.message, "status": e.status}

    # -- REST v1

    def rest(self, method: str, path: str, query: dict, body: Any) -> tuple[int, Any]:
        if path == "/v1/networkvolumes" and method == "GET":
            return 200, list(self.volumes.values())
        if path == "/v1/networkvolumes" and method == "POST":
            name, size, dc = body.get("name"), body.get("size"), body.get("dataCenterId")
            if not name or not isinstance(size, int) or not 1 <= size <= 4000:
                raise _HttpError(400, "name and size (1-4000 GB) are required")
            if dc not in self.data_centers:
                raise _HttpError(400, f"unknown dataCenterId {dc!r}")
            return 200, self.volumes[self.add_volume(name, size, dc)]
        m = re.fullmatch(r"/v1/networkvolumes/([a-z0-9]+)", path)
        if m and method == "PATCH":
            vol = self.volumes.get(m.group(1)) or _raise(404, "network volume not found")
            if "size" in body:
                if body["size"] <= vol["size"]:
                    raise _HttpError(400, "size must be greater than the current size")
                vol["size"] = body["size"]
            if "name" in body:
                vol["name"] = body["name"]
            return 200, vol
        if path == "/v1/templates" and method == "GET":
            bound = {e["templateId"] for e in self.endpoints.values()}
            include_bound = query.get("includeEndpointBoundTemplates") == ["true"]
            return 200, [
                self._rest_template(t)
                for t in self.templates.values()
                if include_bound or t["id"] not in bound
            ]
        m = re.fullmatch(r"/v1/templates/([a-z0-9]+)", path)
        if m and method == "PATCH":
            tpl = self.templates.get(m.group(1)) or _raise(404, "template not found")
            unknown = set(body) - TEMPLATE_REST_PATCH
            if unknown:
                raise _HttpError(400, f"unknown fields {sorted(unknown)}")
            if "env" in body and not isinstance(body["env"], dict):
                raise _HttpError(400, "env must be an object")
            tpl.update(body)
            return 200, self._rest_template(tpl)
        raise _HttpError(404, f"no route {method} {path}")

    def _rest_template(self, t: dict) -> dict:
        return {
            **t,
            "dockerStartCmd": [],
            "dockerEntrypoint": [],
            "category": "NVIDIA",
            "isRunpod": False,
            "earned": 0,
        }

    # -- GraphQL

    def graphql(self, payload: dict) -> dict:
        try:
            if payload.get("variables"):
                raise GraphQLError("this stand-in only takes inline literals, as the SDK sends")
            op, selection = _Parser(payload["query"]).document()
            data = {}
            for name, args, sub in selection:
                if op == "query" and name == "myself":
                    me = {
                        "id": "user_fake",
                        "pubKey": "",
                        "endpoints": list(self.endpoints.values()),
                        "networkVolumes": list(self.volumes.values()),
                    }
                    data[name] = _project(me, sub, "User", _KNOWN)
                elif op == "mutation" and name == "saveTemplate":
                    data[name] = _project(
                        self._gql_template(self.save_template(args["input"])),
                        sub,
                        "PodTemplate",
                        _KNOWN,
                    )
                elif op == "mutation" and name == "saveEndpoint":
                    data[name] = _project(
                        self.save_endpoint(args["input"]), sub, "Endpoint", _KNOWN
                    )
                else:
                    raise GraphQLError(f'Cannot query field "{name}" on type "{op.title()}".')
            return {"data": data}
        except (GraphQLError, KeyError) as e:
            return {"errors": [{"message": str(e)}], "data": None}

    def _template(self, tid: str, given: dict) -> dict:
        base = {
            "id": tid,
            "name": "",
            "imageName": "",
            "dockerArgs": "",
            "containerDiskInGb": 10,
            "volumeInGb": 0,
            "volumeMountPath": "/workspace",
            "ports": "",
            "env": {},
            "isServerless": False,
            "readme": "",
            "isPublic": False,
            "startSsh": True,
            "containerRegistryAuthId": "",
        }
        base.update(given)
        return base

    def _gql_template(self, t: dict) -> dict:
        return {**t, "env": [{"key": k, "value": v} for k, v in t["env"].items()]}

    def save_template(self, inp: dict) -> dict:
        unknown = set(inp) - TEMPLATE_INPUT
        if unknown:
            raise GraphQLError(
                f'Field "{sorted(unknown)[0]}" is not defined by type "SaveTemplateInput".'
            )
        if any(isinstance(v, Enum) for v in inp.values()):
            raise GraphQLError("an enum value where a scalar is expected")
        env = inp.get("env", [])
        if not isinstance(env, list) or not all(
            isinstance(e, dict) and set(e) == {"key", "value"} for e in env
        ):
            raise GraphQLError("env must be a list of {key, value}")
        given = {**inp, "env": {e["key"]: e["value"] for e in env}}
        if inp.get("id"):
            tpl = self.templates.get(inp["id"]) or _graphql_raise("Template not found")
            tpl.update(given)
            return tpl
        if not inp.get("name") or not inp.get("imageName"):
            raise GraphQLError("name and imageName are required")
        if any(t["name"] == inp["name"] for t in self.templates.values()):
            raise GraphQLError("Template name must be unique")
        if inp.get("isServerless") and inp.get("volumeInGb", 0) != 0:
            raise GraphQLError("Serverless templates must have volumeInGb 0")
        tid = _new_id(10)
        self.templates[tid] = self._template(tid, given)
        return self.templates[tid]

    def save_endpoint(self, inp: dict) -> dict:
        unknown = set(inp) - ENDPOINT_INPUT
        if unknown:
            raise GraphQLError(
                f'Field "{sorted(unknown)[0]}" is not defined by type "EndpointInput".'
            )
        flash = inp.get("flashBootType", Enum("OFF"))
        if not isinstance(flash, Enum) or flash.value not in ("OFF", "FLASHBOOT"):
            raise GraphQLError('Enum "FlashBootType" cannot represent non-enum value')
        for k, v in inp.items():
            if k != "flashBootType" and isinstance(v, Enum):
                raise GraphQLError(f"{k}: a string is expected, not the enum {v.value}")
        cfg = {**ENDPOINT_DEFAULTS, **inp, "flashBootType": flash.value}
        for k in ("name", "templateId", "gpuIds"):
            if not cfg.get(k):
                raise GraphQLError(f"{k} is required")
        tpl = self.templates.get(cfg["templateId"]) or _graphql_raise("Template not found")
        if not tpl["isServerless"]:
            raise GraphQLError("the template is not a Serverless template")
        pools = cfg["gpuIds"].split(",")
        if any(p not in GPU_POOLS for p in pools):
            raise GraphQLError(f"unknown gpuIds {cfg['gpuIds']!r}")
        if cfg["networkVolumeId"] and cfg["networkVolumeId"] not in self.volumes:
            raise GraphQLError("Network volume not found")
        if cfg["workersMin"] > cfg["workersMax"]:
            raise GraphQLError("workersMin must not exceed workersMax")
        if cfg.get("id"):
            if cfg["id"] not in self.endpoints:
                raise GraphQLError("Endpoint not found")
            eid = cfg["id"]
        else:
            eid = _new_id(14)
        vol = self.volumes.get(cfg["networkVolumeId"])
        cfg.update(
            id=eid, userId="user_fake", version=0, workersStandby=0, aiKey=None, env=[],
            createdAt="2026-11-27T00:00:00Z",
            networkVolume={"id": vol["id"], "dataCenterId": vol["dataCenterId"]} if vol else None,
        )  # fmt: skip
        self.endpoints[eid] = cfg
        return cfg


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _raise(status: int, message: str) -> Any:
    raise _HttpError(status, message)


def _graphql_raise(message: str) -> Any:
    raise GraphQLError(message)
