"""RunPod's REST API v2 contract: the OpenAPI 3.1 document RunPod publishes, and a real
JSON Schema (Draft 2020-12) validator over it (`jsonschema` + `referencing`), formats
included: a `date-time` or `uri` value that is not one is refused like a wrong type. Every
JSON Schema format the document uses must be checkable here (jsonschema checks `date-time`
with rfc3339-validator and `uri` with rfc3986-validator): `Contract(doc)` raises
`MissingFormatChecker` naming the ones it cannot check, rather than pass them unchecked.
OpenAPI's own formats (`double`, `float`, ...) only describe numbers and are not checked.
Where the document contradicts itself (a schema whose own examples fail its format) the
value is checked as a string, for the schemas in `TEMPLATED_URIS` only: `Contract(doc)`
raises `ContractError` when the contradictions are any others.

The document is looked for in `$BRIGHTRUN_CONTRACTS_DIR` if set, else in
`<repository>/../shared/contracts` (where CI has it). A clone on its own lacks it:
`load_contract()` is then None and the contract tests skip with `SKIP_REASON`.

`Contract.request_errors(method, path, body)` and `.response_errors(...)` return the
validator's messages (`<JSON path>: <message>`, empty when valid) for the operation the
document defines at `method` + `path` (a path as sent, e.g. `/v2/serverless/abc`).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

ROOT = Path(__file__).resolve().parents[2]
CONTRACT_NAME = "runpod-rest-v2.openapi.json"
_URI = "urn:runpod:rest-v2"
_METHODS = ("get", "post", "put", "patch", "delete")
# The formats JSON Schema Draft 2020-12 defines (Validation, section 7.3).
JSON_SCHEMA_FORMATS = frozenset(
    "date-time date time duration email idn-email hostname idn-hostname ipv4 ipv6 uri "
    "uri-reference iri iri-reference uuid uri-template json-pointer relative-json-pointer "
    "regex".split()
)
FORMAT_CHECKER: FormatChecker = Draft202012Validator.FORMAT_CHECKER


# RunPod's document says `format: uri` for these, but their examples (as RunPod answers)
# are URI templates, `https://api.runpod.ai/v2/<id>/status/{job_id}`, which RFC 3986 refuses.
TEMPLATED_URIS = frozenset(
    f"components/schemas/QueueBasedRequestUrls/properties/{name}"
    for name in ("status", "stream", "cancel", "retry")
)


class ContractError(RuntimeError):
    """The document cannot be checked as this module checks it."""


class MissingFormatChecker(ContractError):
    """The document uses a JSON Schema format that jsonschema cannot check here."""


def contract_path() -> Path:
    given = os.environ.get("BRIGHTRUN_CONTRACTS_DIR")
    base = Path(given) if given else ROOT.parent / "shared" / "contracts"
    return base / CONTRACT_NAME


SKIP_REASON = (
    f"RunPod's REST v2 contract {contract_path()} is absent (a clone on its own; CI has "
    "../shared/contracts): the tests that hold deploy to it cannot run"
)


@functools.cache
def load_contract() -> Contract | None:
    path = contract_path()
    if not path.is_file():
        return None
    return Contract(json.loads(path.read_text(encoding="utf-8")))


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def formatted(node: Any, where: tuple[str, ...] = ()) -> Iterator[tuple[str, dict[str, Any]]]:
    """(JSON pointer, schema) of every schema in `node` with a `format`."""
    if isinstance(node, dict):
        if isinstance(node.get("format"), str):
            yield _pointer(*where), node
        for key, value in node.items():
            yield from formatted(value, (*where, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from formatted(value, (*where, str(i)))


def _checkable(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` as it is checked: every JSON Schema format it uses checked, but for the
    schemas in TEMPLATED_URIS."""
    schemas = list(formatted(doc))
    used = {schema["format"] for _, schema in schemas} & JSON_SCHEMA_FORMATS
    if unchecked := used - set(FORMAT_CHECKER.checkers):
        raise MissingFormatChecker(
            f"the contract uses the formats {sorted(unchecked)}, which jsonschema cannot "
            "check without their optional packages (date-time: rfc3339-validator, uri: "
            "rfc3986-validator; requirements-dev.txt)"
        )
    contradictions = {
        where
        for where, schema in schemas
        if schema["format"] in used
        and any(
            isinstance(example, str) and not FORMAT_CHECKER.conforms(example, schema["format"])
            for example in schema.get("examples") or []
        )
    }
    if contradictions != TEMPLATED_URIS:
        raise ContractError(
            f"the schemas whose own examples fail their format are {sorted(contradictions)}, "
            f"not TEMPLATED_URIS {sorted(TEMPLATED_URIS)}: see which is right, and update it"
        )
    checked = copy.deepcopy(doc)
    for where in TEMPLATED_URIS:
        node = checked
        for part in where.split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        del node["format"]
    return checked


def _query_value(value: str, schema: dict[str, Any]) -> Any:
    """A query value as its schema types it: integers, and arrays in OpenAPI's default
    `form` style without `explode` (comma-separated)."""
    if schema.get("type") == "array":
        return value.split(",")
    if schema.get("type") == "integer" and value.isdigit():
        return int(value)
    return value


class Contract:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        resource = Resource.from_contents(_checkable(doc), default_specification=DRAFT202012)
        self._registry = Registry().with_resource(_URI, resource)
        self._ops: list[tuple[str, str, re.Pattern[str]]] = []
        for template, item in doc["paths"].items():
            regex = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$")
            for method in _METHODS:
                if method in item:
                    self._ops.append((method.upper(), template, regex))
        # a literal segment wins over a parameter (/registries/delegations vs /registries/{id})
        self._ops.sort(key=lambda op: op[1].count("{"))

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]] | None:
        """(path template, operation object) the document defines for this request."""
        for m, template, regex in self._ops:
            if m == method.upper() and regex.match(path):
                return template, self.doc["paths"][template][method.lower()]
        return None

    @functools.cache  # noqa: B019 - one validator per location, for the contract's lifetime
    def _validator(self, pointer: str) -> Draft202012Validator:
        return Draft202012Validator(
            {"$ref": f"{_URI}#/{pointer}"}, registry=self._registry, format_checker=FORMAT_CHECKER
        )

    def errors_at(self, pointer: str, instance: Any) -> list[str]:
        found = self._validator(pointer).iter_errors(instance)
        return sorted({f"{e.json_path}: {e.message}" for e in found})

    def schema_errors(self, name: str, instance: Any) -> list[str]:
        """Errors of `instance` against `#/components/schemas/<name>`."""
        return self.errors_at(_pointer("components", "schemas", name), instance)

    def request_errors(self, method: str, path: str, body: Any) -> list[str]:
        found = self.operation(method, path)
        if found is None:
            return [f"the document defines no operation {method} {path}"]
        template, op = found
        spec = op.get("requestBody")
        if spec is None:
            return [] if body is None else [f"{method} {template} takes no request body"]
        if body is None:
            return ["$: a request body is required"] if spec.get("required") else []
        where = _pointer("paths", template, method.lower(), "requestBody", "content")
        return self.errors_at(f"{where}/application~1json/schema", body)

    def query_errors(self, method: str, path: str, query: dict[str, str]) -> list[str]:
        """Errors of a request's query parameters (one value each) against the operation's
        documented parameters: an unknown name, or a value its schema refuses."""
        found = self.operation(method, path)
        if found is None:
            return [f"the document defines no operation {method} {path}"]
        template, op = found
        where: dict[str, tuple[str, dict[str, Any]]] = {}
        for i, param in enumerate(op.get("parameters") or []):
            pointer = _pointer("paths", template, method.lower(), "parameters", str(i))
            if "$ref" in param:
                pointer = param["$ref"].removeprefix("#/")
                param = self.doc["components"]["parameters"][pointer.rsplit("/", 1)[1]]
            if param.get("in") == "query":
                where[param["name"]] = (f"{pointer}/schema", param.get("schema") or {})
        errors = [f"query: unknown parameter {name!r}" for name in query if name not in where]
        for name, value in query.items():
            if name in where:
                pointer, schema = where[name]
                typed = _query_value(value, schema)
                errors += [f"query {name}: {e}" for e in self.errors_at(pointer, typed)]
        return errors

    def response_errors(
        self, method: str, path: str, status: int, content_type: str, body: Any, headers: dict
    ) -> list[str]:
        found = self.operation(method, path)
        if found is None:
            return [f"the document defines no operation {method} {path}"]
        template, op = found
        key = str(status) if str(status) in op["responses"] else "default"
        if key not in op["responses"]:
            return [f"{method} {template} documents no {status} answer"]
        where = _pointer("paths", template, method.lower(), "responses", key)
        response = op["responses"][key]
        if "$ref" in response:  # a shared response: #/components/responses/<name>
            where = response["$ref"].removeprefix("#/")
            response = self.doc["components"]["responses"][where.rsplit("/", 1)[1]]
        errors = self._header_errors(response, headers)
        content = response.get("content")
        if not content:
            return errors + ([] if body is None else [f"a {status} answer has no body"])
        if content_type not in content:
            return errors + [f"content type {content_type} is not one of {sorted(content)}"]
        media = f"{where}/content/{_pointer(content_type)}/schema"
        return errors + self.errors_at(media, body)

    def _header_errors(self, response: dict[str, Any], headers: dict) -> list[str]:
        errors = []
        for name, spec in (response.get("headers") or {}).items():
            value = headers.get(name)
            if value is None:
                continue
            schema_type = (spec.get("schema") or {}).get("type")
            if schema_type == "integer" and not str(value).isdigit():
                errors.append(f"header {name}: {value!r} is not an integer")
        return errors
