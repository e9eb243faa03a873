"""A loopback stand-in for the Hugging Face Hub's HTTP API, for the calls `HfApi.create_repo`
and `HfApi.upload_folder` make (huggingface_hub 2.x):

- `POST /api/repos/create` {"name", "organization", "visibility", "type"} -> {"url"}; 409 when
  the repo exists (the client's `exist_ok=True` accepts that).
- `POST /api/validate-yaml` {"content", "repoType"} -> {"errors", "warnings"}: the model
  card's metadata, checked as YAML (400 with errors when it is not).
- `POST /api/models/{org}/{name}/preupload/{revision}` {"files": [{"path", "sample", "size"}]}
  -> {"files": [{"path", "uploadMode": "regular", "shouldIgnore": false}]}: every file goes
  inline in the commit (no LFS), as the Hub decides for small files.
- `POST /api/models/{org}/{name}/commit/{revision}` NDJSON: a `header` line (summary,
  description) then one `file` line per file (base64 content) -> {"commitUrl", "commitOid"}.

Every request is recorded (method, path, Authorization header, JSON or NDJSON body), and
`files` holds each repo's committed files as bytes. `refuse_with` makes every call answer
that HTTP status.
"""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _card_errors(content: str) -> list[str]:
    """What the Hub would object to in a model card's YAML metadata (the checks used)."""
    import yaml

    if not content.startswith("---\n") or "\n---\n" not in content[4:]:
        return ["no YAML metadata block"]
    try:
        meta = yaml.safe_load(content[4:].split("\n---\n", 1)[0])
    except yaml.YAMLError as e:
        return [f"metadata is not valid YAML: {e}"]
    errors = [] if isinstance(meta, dict) else ["metadata is not a mapping"]
    if isinstance(meta, dict):
        if not isinstance(meta.get("base_model", ""), str):
            errors.append('"base_model" must be a string')
        if not isinstance(meta.get("tags", []), list):
            errors.append('"tags" must be a list')
    return errors


@dataclass
class Request:
    method: str
    path: str
    authorization: str
    body: Any


@dataclass
class HubFake:
    requests: list[Request] = field(default_factory=list)
    repos: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refuse_with: int | None = None

    def start(self) -> HubFake:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _reply(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                ctype = self.headers.get("content-type", "")
                body: Any = (
                    [json.loads(line) for line in raw.splitlines() if line.strip()]
                    if "ndjson" in ctype
                    else (json.loads(raw) if raw else None)
                )
                fake.requests.append(
                    Request("POST", self.path, self.headers.get("authorization", ""), body)
                )
                if fake.refuse_with:
                    self._reply(fake.refuse_with, {"error": "refused"})
                    return
                parts = self.path.split("?")[0].strip("/").split("/")
                if parts[:3] == ["api", "repos", "create"]:
                    repo_id = (
                        f"{body.get('organization')}/{body['name']}"
                        if body.get("organization")
                        else body["name"]
                    )
                    if repo_id in fake.repos:
                        self._reply(
                            409,
                            {
                                "error": "You already created this model repo",
                                "url": f"{fake.url}/{repo_id}",
                            },
                        )
                        return
                    fake.repos[repo_id] = body
                    self._reply(200, {"url": f"{fake.url}/{repo_id}", "name": repo_id})
                elif parts == ["api", "validate-yaml"]:
                    errors = _card_errors(body["content"])
                    self._reply(
                        400 if errors else 200,
                        {"errors": [{"message": m} for m in errors], "warnings": []},
                    )
                elif parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "preupload":
                    self._reply(
                        200,
                        {
                            "files": [
                                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                for f in body["files"]
                            ]
                        },
                    )
                elif parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "commit":
                    repo_id = f"{parts[2]}/{parts[3]}"
                    store = fake.files.setdefault(repo_id, {})
                    for line in body:
                        if line["key"] == "file":
                            store[line["value"]["path"]] = base64.b64decode(
                                line["value"]["content"]
                            )
                    self._reply(
                        200,
                        {"commitUrl": f"{fake.url}/{repo_id}/commit/abc123", "commitOid": "abc123"},
                    )
                else:
                    self._reply(404, {"error": f"no route {self.path}"})  # pragma: no cover

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
