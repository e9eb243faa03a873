"""A loopback HTTP server that follows Supabase Storage's REST contract for the calls
BrightRun makes (paths under /storage/v1, as the `supabase` client and storage-api use them):

    POST   /object/<bucket>/<path>                upload (multipart form or raw body; x-upsert)
    PUT    /object/<bucket>/<path>                update
    GET    /object/<bucket>/<path>                authenticated download
    GET    /object/info/<bucket>/<path>           object info (404 when missing)
    POST   /object/sign/<bucket>/<path>           {"expiresIn"} -> {"signedURL": "/object/sign/...?token="}
    GET    /object/sign/<bucket>/<path>?token=    signed download
    POST   /object/upload/sign/<bucket>/<path>    -> {"url": "/object/upload/sign/...?token=", "token"}
    PUT    /object/upload/sign/<bucket>/<path>?token=   signed upload (multipart or raw body)
    POST   /object/list/<bucket>                  {"prefix", "limit", "offset"} -> one folder level
    DELETE /object/<bucket>                       {"prefixes": [...]} -> removed objects
    POST   /upload/resumable                      TUS 1.0.0 create (Upload-Length, Upload-Metadata)
    PATCH  /upload/resumable/<id>                 TUS chunk (Upload-Offset, offset+octet-stream)
    HEAD   /upload/resumable/<id>                 TUS offset
    PUT    /s3/<bucket>/<path>?X-Amz-...           S3 protocol: SigV4 presigned upload (raw body)
    GET    /s3/<bucket>/<path>?X-Amz-...           S3 protocol: SigV4 presigned download

The S3 path checks a presigned request the way S3 does, independently of botocore: every
X-Amz-* query parameter present, the credential scope naming `s3_access_key_id`, `region`
and `s3`, the signature recomputed with `s3_secret` over the canonical request
(UNSIGNED-PAYLOAD), and X-Amz-Date + X-Amz-Expires (at most 7 days) not passed; else 403.
`s3_requests` records each one's query parameters.

Errors use storage-api's JSON body `{"statusCode", "error", "message"}`. Objects are kept on
disk. `requests` records (method, path, content type, body length) for assertions, and
`fail_patches` makes the next N TUS PATCHes fail with a 500 (to test resuming).
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, quote, unquote, urlsplit

PREFIX = "/storage/v1"
TUS_CHUNK = 6 * 1024 * 1024


@dataclass
class _Upload:
    bucket: str
    name: str
    length: int
    content_type: str
    upsert: bool
    offset: int = 0
    path: Path | None = None


@dataclass
class FakeStorage:
    root: Path
    service_key: str = "fake-service-key"
    buckets: tuple[str, ...] = ("datasets", "adapters")
    requests: list[tuple[str, str, str, int]] = field(default_factory=list)
    fail_patches: int = 0
    meta: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    uploads: dict[str, _Upload] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    secret: bytes = b"fake-jwt-secret"
    s3_access_key_id: str = "fake-s3-key-id"
    s3_secret: str = "fake-s3-secret-access-key"
    region: str = "local-1"
    s3_requests: list[dict[str, str]] = field(default_factory=list)

    def check_presigned(self, method: str, raw_path: str, query: str, host: str) -> str | None:
        """None when the SigV4 query-string signature holds, else why not."""
        params = dict(parse_qsl(query, keep_blank_values=True))
        need = (
            "X-Amz-Algorithm",
            "X-Amz-Credential",
            "X-Amz-Date",
            "X-Amz-Expires",
            "X-Amz-SignedHeaders",
            "X-Amz-Signature",
        )
        if missing := [k for k in need if k not in params]:
            return f"missing {missing}"
        if params["X-Amz-Algorithm"] != "AWS4-HMAC-SHA256":
            return "algorithm"
        key_id, day, region, service, term = params["X-Amz-Credential"].split("/")
        if (key_id, region, service, term) != (
            self.s3_access_key_id,
            self.region,
            "s3",
            "aws4_request",
        ):
            return "credential scope"
        signed = params["X-Amz-SignedHeaders"].split(";")
        headers = {"host": host}
        if set(signed) - set(headers):
            return "signed headers"

        def enc(v: str) -> str:
            return quote(v, safe="-_.~")

        canonical_query = "&".join(
            f"{enc(k)}={enc(v)}" for k, v in sorted(params.items()) if k != "X-Amz-Signature"
        )
        canonical = "\n".join(
            [
                method,
                raw_path,
                canonical_query,
                "".join(f"{h}:{headers[h].strip()}\n" for h in signed),
                params["X-Amz-SignedHeaders"],
                "UNSIGNED-PAYLOAD",
            ]
        )
        scope = f"{day}/{region}/s3/aws4_request"
        to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256",
                params["X-Amz-Date"],
                scope,
                hashlib.sha256(canonical.encode()).hexdigest(),
            ]
        )
        k = ("AWS4" + self.s3_secret).encode()
        for part in (day, region, "s3", "aws4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        want = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, params["X-Amz-Signature"]):
            return "signature"
        expires = int(params["X-Amz-Expires"])
        signed_at = calendar.timegm(time.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))
        if not 1 <= expires <= 7 * 24 * 3600 or time.time() > signed_at + expires:
            return "expired"
        self.s3_requests.append(params)
        return None

    def file(self, bucket: str, name: str) -> Path:
        return self.root / bucket / name

    def store(self, bucket: str, name: str, data: bytes, content_type: str) -> None:
        p = self.file(bucket, name)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        self.meta[(bucket, name)] = {
            "id": str(uuid.uuid4()),
            "size": len(data),
            "mimetype": content_type,
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def token(
        self, kind: str, bucket: str, name: str, expires_in: int, upsert: bool = False
    ) -> str:
        """A signed token; an upload token carries the `upsert` it was signed with, and the
        upload it allows may overwrite an object only when that was true (as Storage does)."""
        claims = {
            "k": kind,
            "url": f"{bucket}/{name}",
            "exp": int(time.time()) + expires_in,
            "upsert": upsert,
        }
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode()
        sig = hmac.new(self.secret, payload.encode(), hashlib.sha256).hexdigest()
        return f"{payload}.{sig}"

    def check_token(self, token: str, kind: str, bucket: str, name: str) -> bool:
        return self.token_claims(token, kind, bucket, name) is not None

    def token_claims(self, token: str, kind: str, bucket: str, name: str) -> dict[str, Any] | None:
        """The token's claims when it is valid for this use of this object, else None."""
        try:
            payload, sig = token.rsplit(".", 1)
        except ValueError:
            return None
        if not hmac.compare_digest(
            hmac.new(self.secret, payload.encode(), hashlib.sha256).hexdigest(), sig
        ):
            return None
        data = json.loads(base64.urlsafe_b64decode(payload))
        ok = data["k"] == kind and data["url"] == f"{bucket}/{name}" and data["exp"] >= time.time()
        return data if ok else None


def _parse_multipart(content_type: str, body: bytes) -> tuple[bytes, str]:
    msg = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    for part in msg.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            return part.get_payload(decode=True) or b"", part.get_content_type()
    raise ValueError("no file field")


class _Handler(BaseHTTPRequestHandler):
    fake: FakeStorage
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    # helpers
    def _body(self) -> bytes:
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(
        self,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        ctype: str = "application/json",
    ) -> None:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if data or raw is not None:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, error: str, message: str) -> None:
        self._send(status, {"statusCode": str(status), "error": error, "message": message})

    def _authed(self) -> bool:
        key = self.fake.service_key
        if (
            self.headers.get("authorization") == f"Bearer {key}"
            and (self.headers.get("apikey") or "") == key
        ):
            return True
        self._error(403, "Unauthorized", "invalid signature")
        return False

    def _route(self) -> tuple[list[str], dict[str, list[str]]]:
        u = urlsplit(self.path)
        path = unquote(u.path)
        if not path.startswith(PREFIX + "/"):
            return [], {}
        return path[len(PREFIX) + 1 :].split("/"), parse_qs(u.query)

    def _record(self, n: int) -> None:
        self.fake.requests.append(
            (self.command, urlsplit(self.path).path, self.headers.get("content-type") or "", n)
        )

    def _bucket_ok(self, bucket: str) -> bool:
        if bucket not in self.fake.buckets:
            self._error(404, "Bucket not found", "Bucket not found")
            return False
        return True

    def _save_upload(self, bucket: str, name: str, body: bytes, upsert: bool) -> None:
        ctype = self.headers.get("content-type") or "application/octet-stream"
        if ctype.startswith("multipart/form-data"):
            body, ctype = _parse_multipart(ctype, body)
        if not upsert and (bucket, name) in self.fake.meta:
            self._error(409, "Duplicate", "The resource already exists")
            return
        self.fake.store(bucket, name, body, ctype)
        self._send(200, {"Key": f"{bucket}/{name}", "Id": self.fake.meta[(bucket, name)]["id"]})

    # verbs
    def do_POST(self) -> None:  # noqa: N802
        parts, _q = self._route()
        body = self._body()
        self._record(len(body))
        if parts[:2] == ["upload", "resumable"] and len(parts) == 2:
            if not self._authed():
                return
            meta = {}
            for item in (self.headers.get("upload-metadata") or "").split(","):
                if item.strip():
                    k, _, v = item.strip().partition(" ")
                    meta[k] = base64.b64decode(v).decode()
            if "bucketName" not in meta or "objectName" not in meta:
                self._error(
                    400, "InvalidRequest", "Upload-Metadata needs bucketName and objectName"
                )
                return
            if not self._bucket_ok(meta["bucketName"]):
                return
            upload_id = uuid.uuid4().hex
            up = _Upload(
                meta["bucketName"],
                meta["objectName"],
                int(self.headers["upload-length"]),
                meta.get("contentType", "application/octet-stream"),
                (self.headers.get("x-upsert") or "false") == "true",
                path=self.fake.root / ".tus" / upload_id,
            )
            up.path.parent.mkdir(parents=True, exist_ok=True)
            up.path.write_bytes(b"")
            self.fake.uploads[upload_id] = up
            self._send(
                201,
                headers={
                    "Location": f"{PREFIX}/upload/resumable/{upload_id}",
                    "Tus-Resumable": "1.0.0",
                },
            )
            return
        if parts[:1] == ["object"] and len(parts) >= 3 and parts[1] == "sign":
            if not self._authed() or not self._bucket_ok(parts[2]):
                return
            bucket, name = parts[2], "/".join(parts[3:])
            if (bucket, name) not in self.fake.meta:
                self._error(404, "not_found", "Object not found")
                return
            expires = int(json.loads(body or b"{}").get("expiresIn", 60))
            token = self.fake.token("download", bucket, name, expires)
            self._send(200, {"signedURL": f"/object/sign/{bucket}/{name}?token={token}"})
            return
        if parts[:3] == ["object", "upload", "sign"] and len(parts) >= 5:
            if not self._authed() or not self._bucket_ok(parts[3]):
                return
            bucket, name = parts[3], "/".join(parts[4:])
            upsert = (self.headers.get("x-upsert") or "false") == "true"
            token = self.fake.token("upload", bucket, name, 7200, upsert=upsert)
            self._send(
                200, {"url": f"/object/upload/sign/{bucket}/{name}?token={token}", "token": token}
            )
            return
        if parts[:2] == ["object", "list"] and len(parts) == 3:
            if not self._authed() or not self._bucket_ok(parts[2]):
                return
            req = json.loads(body or b"{}")
            prefix = (req.get("prefix") or "").strip("/")
            limit, offset = int(req.get("limit", 100)), int(req.get("offset", 0))
            entries: dict[str, dict[str, Any]] = {}
            for (bucket, name), m in sorted(self.fake.meta.items()):
                if bucket != parts[2]:
                    continue
                if prefix and not name.startswith(prefix + "/"):
                    continue
                rest = name[len(prefix) + 1 :] if prefix else name
                head, sep, _tail = rest.partition("/")
                if sep:
                    entries.setdefault(head, {"name": head, "id": None, "metadata": None})
                else:
                    entries[head] = {
                        "name": head,
                        "id": m["id"],
                        "metadata": {"size": m["size"], "mimetype": m["mimetype"]},
                    }
            items = [entries[k] for k in sorted(entries)]
            self._send(200, items[offset : offset + limit])
            return
        if parts[:1] == ["object"] and len(parts) >= 3:
            if not self._authed() or not self._bucket_ok(parts[1]):
                return
            self._save_upload(
                parts[1],
                "/".join(parts[2:]),
                body,
                (self.headers.get("x-upsert") or "false") == "true",
            )
            return
        self._error(404, "not_found", "route not found")

    def _s3_ok(self, parts: list[str]) -> bool:
        u = urlsplit(self.path)
        why = self.fake.check_presigned(
            self.command, u.path, u.query, self.headers.get("host") or ""
        )
        if why is not None:
            self._send(
                403,
                raw=f"<Error><Code>AccessDenied</Code><Message>{why}</Message></Error>".encode(),
                ctype="application/xml",
            )
            return False
        return self._bucket_ok(parts[1])

    def do_PUT(self) -> None:  # noqa: N802
        parts, q = self._route()
        body = self._body()
        self._record(len(body))
        if parts[:1] == ["s3"] and len(parts) >= 3:
            if self._s3_ok(parts):
                bucket, name = parts[1], "/".join(parts[2:])
                self.fake.store(
                    bucket,
                    name,
                    body,
                    self.headers.get("content-type") or "application/octet-stream",
                )
                self._send(200, headers={"ETag": '"' + hashlib.md5(body).hexdigest() + '"'})  # noqa: S324
            return
        if parts[:3] == ["object", "upload", "sign"] and len(parts) >= 5:
            bucket, name = parts[3], "/".join(parts[4:])
            claims = self.fake.token_claims((q.get("token") or [""])[0], "upload", bucket, name)
            if claims is None:
                self._error(400, "InvalidSignature", "invalid signature")
                return
            self._save_upload(
                bucket, name, body, bool(claims.get("upsert"))
            )  # as signed, not as sent
            return
        if parts[:1] == ["object"] and len(parts) >= 3:
            if not self._authed() or not self._bucket_ok(parts[1]):
                return
            if (parts[1], "/".join(parts[2:])) not in self.fake.meta:
                self._error(404, "not_found", "Object not found")
                return
            self._save_upload(parts[1], "/".join(parts[2:]), body, True)
            return
        self._error(404, "not_found", "route not found")

    def do_GET(self) -> None:  # noqa: N802
        parts, q = self._route()
        self._record(0)
        if parts[:1] == ["s3"] and len(parts) >= 3:
            if not self._s3_ok(parts):
                return
            bucket, name = parts[1], "/".join(parts[2:])
        elif parts[:2] == ["object", "sign"] and len(parts) >= 4:
            bucket, name = parts[2], "/".join(parts[3:])
            if not self.fake.check_token((q.get("token") or [""])[0], "download", bucket, name):
                self._error(400, "InvalidSignature", "invalid signature")
                return
        elif parts[:2] == ["object", "info"] and len(parts) >= 4:
            if not self._authed():
                return
            m = self.fake.meta.get((parts[2], "/".join(parts[3:])))
            if m is None:
                self._error(404, "not_found", "Object not found")
                return
            self._send(
                200,
                {
                    "id": m["id"],
                    "name": "/".join(parts[3:]),
                    "size": m["size"],
                    "content_type": m["mimetype"],
                },
            )
            return
        elif parts[:1] == ["object"] and len(parts) >= 3:
            if not self._authed():
                return
            bucket, name = parts[1], "/".join(parts[2:])
        else:
            self._error(404, "not_found", "route not found")
            return
        m = self.fake.meta.get((bucket, name))
        if m is None:
            self._error(404, "not_found", "Object not found")
            return
        self._send(200, raw=self.fake.file(bucket, name).read_bytes(), ctype=m["mimetype"])

    def do_DELETE(self) -> None:  # noqa: N802
        parts, _q = self._route()
        body = self._body()
        self._record(len(body))
        if parts[:1] == ["object"] and len(parts) == 2:
            if not self._authed() or not self._bucket_ok(parts[1]):
                return
            removed = []
            for name in json.loads(body or b"{}").get("prefixes", []):
                m = self.fake.meta.pop((parts[1], name), None)
                if m is not None:
                    self.fake.file(parts[1], name).unlink(missing_ok=True)
                    removed.append({"name": name, "bucket_id": parts[1], "id": m["id"]})
            self._send(200, removed)
            return
        self._error(404, "not_found", "route not found")

    def do_PATCH(self) -> None:  # noqa: N802
        parts, _q = self._route()
        body = self._body()
        self._record(len(body))
        if not (parts[:2] == ["upload", "resumable"] and len(parts) == 3) or not self._authed():
            if parts[:2] != ["upload", "resumable"]:
                self._error(404, "not_found", "route not found")
            return
        up = self.fake.uploads.get(parts[2])
        if up is None:
            self._send(404)
            return
        if self.headers.get("content-type") != "application/offset+octet-stream":
            self._send(415)
            return
        with self.fake.lock:
            if self.fake.fail_patches > 0:
                self.fake.fail_patches -= 1
                # Half of the chunk arrived before the failure: the offset moves on.
                half = body[: len(body) // 2]
                with open(up.path, "ab") as f:
                    f.write(half)
                up.offset += len(half)
                self._send(500, {"statusCode": "500", "error": "internal", "message": "chunk lost"})
                return
        if int(self.headers.get("upload-offset", -1)) != up.offset:
            self._send(409)
            return
        if (
            up.offset + len(body) < up.length
            and len(body) != TUS_CHUNK
            and up.offset % TUS_CHUNK == 0
        ):
            self._error(400, "InvalidChunkSize", "chunks other than the last must be 6 MB")
            return
        with open(up.path, "ab") as f:
            f.write(body)
        up.offset += len(body)
        if up.offset >= up.length:
            if not up.upsert and (up.bucket, up.name) in self.fake.meta:
                self._error(409, "Duplicate", "The resource already exists")
                return
            self.fake.store(up.bucket, up.name, up.path.read_bytes(), up.content_type)
            up.path.unlink()
        self._send(204, headers={"Upload-Offset": str(up.offset), "Tus-Resumable": "1.0.0"})

    def do_HEAD(self) -> None:  # noqa: N802
        parts, _q = self._route()
        self._record(0)
        if not (parts[:2] == ["upload", "resumable"] and len(parts) == 3) or not self._authed():
            return
        up = self.fake.uploads.get(parts[2])
        if up is None:
            self._send(404)
            return
        self._send(
            200,
            headers={
                "Upload-Offset": str(up.offset),
                "Upload-Length": str(up.length),
                "Tus-Resumable": "1.0.0",
                "Cache-Control": "no-store",
            },
        )


class FakeSupabaseStorage:
    """Start with `with FakeSupabaseStorage(tmp_path) as fake:`; `fake.url` is SUPABASE_URL."""

    def __init__(self, root: Path, service_key: str = "fake-service-key") -> None:
        self.state = FakeStorage(root=root, service_key=service_key)
        handler = type("Handler", (_Handler,), {"fake": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> FakeSupabaseStorage:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
