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
disk. `requests` records (method, path, content type, body length) for assertions,
`exchanges` every request and answer in full (`tests.supabase_contract.Exchange`, which the
contract tests validate against Storage's published document), and `fail_patches` makes the
next N TUS PATCHes fail with a 500 (to test resuming).

Keys, as the platform's API gateway maps them (Supabase's API keys guide): the `apikey`
header names the key and the role it acts as; the SDK sends the same key as the bearer.
`service_key` (the secret key, `sb_secret_...`, or the legacy service_role JWT) acts as
`service_role` and bypasses row-level security. `publishable_key` (`sb_publishable_...`, or
the legacy anon JWT) acts as `anon`: BrightRun's buckets have no policy for it, so a write
is refused by row-level security (403 "new row violates row-level security policy"), an
object is not found, a listing is empty and a delete removes nothing. Any other key: 403.

What else it refuses, as Storage does:
- a signed URL past its expiry (400 InvalidJWT "jwt expired"), or used for another object
  or method (400 InvalidSignature);
- a body over the bucket's `file_size_limit` (413 "Payload too large"), on every upload
  path (REST, signed URL, TUS create, S3);
- an object name with a `.` or `..` segment or an empty one (400 InvalidKey);
- TUS: a request without `Tus-Resumable: 1.0.0` (412), a PATCH whose `Upload-Offset` is
  not the server's (409, nothing written), a content type other than
  `application/offset+octet-stream` (415), a chunk other than the last that is not 6 MB.
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

from tests.supabase_contract import Exchange

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
    publishable_key: str = "fake-publishable-key"
    buckets: tuple[str, ...] = ("datasets", "adapters")
    file_size_limit: int | None = None  # bytes; the buckets' limit (None: the project's)
    requests: list[tuple[str, str, str, int]] = field(default_factory=list)
    exchanges: list[Exchange] = field(default_factory=list)
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
        return isinstance(self.token_claims(token, kind, bucket, name), dict)

    def token_claims(
        self, token: str, kind: str, bucket: str, name: str
    ) -> dict[str, Any] | tuple[str, str]:
        """The token's claims when it is valid for this use of this object, else Storage's
        (error, message) for it."""
        try:
            payload, sig = token.rsplit(".", 1)
        except ValueError:
            return "InvalidJWT", "jwt malformed"
        if not hmac.compare_digest(
            hmac.new(self.secret, payload.encode(), hashlib.sha256).hexdigest(), sig
        ):
            return "InvalidJWT", "invalid signature"
        data = json.loads(base64.urlsafe_b64decode(payload))
        if data["exp"] < time.time():
            return "InvalidJWT", "jwt expired"
        if data["k"] != kind or data["url"] != f"{bucket}/{name}":
            return "InvalidSignature", "The url do not match the signature"
        return data


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
    def _begin(self) -> bytes:
        """Read the request body and start recording this exchange."""
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n) if n else b""
        self._exchange = Exchange(
            self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
        )
        with self.fake.lock:
            self.fake.exchanges.append(self._exchange)
        self.fake.requests.append(
            (self.command, urlsplit(self.path).path, self.headers.get("content-type") or "", n)
        )
        return body

    def _send(
        self,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        ctype: str = "application/json",
    ) -> None:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        sent = dict(headers or {})
        if data or raw is not None:
            sent["Content-Type"] = ctype
        ex = self._exchange
        ex.status, ex.response_body = status, data if self.command != "HEAD" else b""
        ex.response_headers = {k.lower(): v for k, v in sent.items()}
        self.send_response(status)
        for k, v in sent.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, error: str, message: str) -> None:
        self._send(status, {"statusCode": str(status), "error": error, "message": message})

    def _role(self, use: str) -> bool:
        """True when the request's key may do `use` (read, write, list, delete); else the
        answer Storage gives is sent (see the module doc) and False returned."""
        key = self.headers.get("apikey") or ""
        bearer = self.headers.get("authorization") or ""
        if key and bearer == f"Bearer {key}" and key == self.fake.service_key:
            return True
        if not (key and bearer == f"Bearer {key}" and key == self.fake.publishable_key):
            self._error(403, "Unauthorized", "invalid signature")
        elif use == "write":
            self._error(403, "Unauthorized", "new row violates row-level security policy")
        elif use == "read":
            self._error(404, "not_found", "Object not found")
        else:  # list, delete: row-level security hides every object
            self._send(200, [])
        return False

    def _route(self) -> tuple[list[str], dict[str, list[str]]]:
        u = urlsplit(self.path)
        path = unquote(u.path)
        if not path.startswith(PREFIX + "/"):
            return [], {}
        return path[len(PREFIX) + 1 :].split("/"), parse_qs(u.query)

    def _bucket_ok(self, bucket: str) -> bool:
        if bucket not in self.fake.buckets:
            self._error(404, "Bucket not found", "Bucket not found")
            return False
        return True

    def _name_ok(self, name: str) -> bool:
        if any(part in ("", ".", "..") for part in name.split("/")):
            self._error(400, "InvalidKey", f"Invalid key: {name}")
            return False
        return True

    def _size_ok(self, size: int) -> bool:
        limit = self.fake.file_size_limit
        if limit is not None and size > limit:
            self._error(413, "Payload too large", "The object exceeded the maximum allowed size")
            return False
        return True

    def _object(self, parts: list[str], at: int) -> tuple[str, str] | None:
        """(bucket, name) from `parts[at:]`, or None when an error was sent."""
        bucket, name = parts[at], "/".join(parts[at + 1 :])
        if not self._bucket_ok(bucket) or not self._name_ok(name):
            return None
        return bucket, name

    def _save_upload(self, bucket: str, name: str, body: bytes, upsert: bool) -> None:
        ctype = self.headers.get("content-type") or "application/octet-stream"
        if ctype.startswith("multipart/form-data"):
            body, ctype = _parse_multipart(ctype, body)
        if not self._size_ok(len(body)):
            return
        if not upsert and (bucket, name) in self.fake.meta:
            self._error(409, "Duplicate", "The resource already exists")
            return
        self.fake.store(bucket, name, body, ctype)
        self._send(200, {"Key": f"{bucket}/{name}", "Id": self.fake.meta[(bucket, name)]["id"]})

    def _tus_ok(self) -> bool:
        if self.headers.get("tus-resumable") != "1.0.0":
            self._send(412, headers={"Tus-Resumable": "1.0.0", "Tus-Version": "1.0.0"})
            return False
        return True

    # verbs
    def do_POST(self) -> None:  # noqa: N802
        body = self._begin()
        parts, _q = self._route()
        if parts[:2] == ["upload", "resumable"] and len(parts) == 2:
            self._tus_create()
        elif parts[:2] == ["object", "sign"] and len(parts) >= 4:
            self._sign_download(parts, body)
        elif parts[:3] == ["object", "upload", "sign"] and len(parts) >= 5:
            if (obj := self._object(parts, 3)) and self._role("write"):
                upsert = (self.headers.get("x-upsert") or "false") == "true"
                token = self.fake.token("upload", *obj, 7200, upsert=upsert)
                url = f"/object/upload/sign/{obj[0]}/{obj[1]}?token={token}"
                self._send(200, {"url": url, "token": token})
        elif parts[:2] == ["object", "list"] and len(parts) == 3:
            if self._bucket_ok(parts[2]) and self._role("list"):
                self._list(parts[2], json.loads(body or b"{}"))
        elif parts[:1] == ["object"] and len(parts) >= 3:
            if (obj := self._object(parts, 1)) and self._role("write"):
                upsert = (self.headers.get("x-upsert") or "false") == "true"
                self._save_upload(*obj, body, upsert)
        else:
            self._error(404, "not_found", "route not found")

    def _tus_create(self) -> None:
        if not self._tus_ok() or not self._role("write"):
            return
        meta = {}
        for item in (self.headers.get("upload-metadata") or "").split(","):
            if item.strip():
                k, _, v = item.strip().partition(" ")
                meta[k] = base64.b64decode(v).decode()
        if "bucketName" not in meta or "objectName" not in meta:
            self._error(400, "InvalidRequest", "Upload-Metadata needs bucketName and objectName")
            return
        if not self._bucket_ok(meta["bucketName"]) or not self._name_ok(meta["objectName"]):
            return
        if not self._size_ok(int(self.headers["upload-length"])):
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

    def _sign_download(self, parts: list[str], body: bytes) -> None:
        if (obj := self._object(parts, 2)) is None or not self._role("read"):
            return
        if obj not in self.fake.meta:
            self._error(404, "not_found", "Object not found")
            return
        expires = json.loads(body or b"{}").get("expiresIn")
        if not isinstance(expires, int) or expires < 1:  # the document's schema
            self._error(400, "InvalidRequest", "body/expiresIn must be an integer >= 1")
            return
        token = self.fake.token("download", *obj, expires)
        self._send(200, {"signedURL": f"/object/sign/{obj[0]}/{obj[1]}?token={token}"})

    def _list(self, bucket_id: str, req: dict[str, Any]) -> None:
        prefix = (req.get("prefix") or "").strip("/")
        limit, offset = int(req.get("limit", 100)), int(req.get("offset", 0))
        entries: dict[str, dict[str, Any]] = {}
        for (bucket, name), m in sorted(self.fake.meta.items()):
            if bucket != bucket_id:
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
                    "updated_at": m["updated_at"],
                    "metadata": {"size": m["size"], "mimetype": m["mimetype"]},
                }
        items = [entries[k] for k in sorted(entries)]
        self._send(200, items[offset : offset + limit])

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
        return self._object(parts, 1) is not None

    def do_PUT(self) -> None:  # noqa: N802
        body = self._begin()
        parts, q = self._route()
        if parts[:1] == ["s3"] and len(parts) >= 3:
            if self._s3_ok(parts) and self._size_ok(len(body)):
                bucket, name = parts[1], "/".join(parts[2:])
                ctype = self.headers.get("content-type") or "application/octet-stream"
                self.fake.store(bucket, name, body, ctype)
                self._send(200, headers={"ETag": '"' + hashlib.md5(body).hexdigest() + '"'})  # noqa: S324
        elif parts[:3] == ["object", "upload", "sign"] and len(parts) >= 5:
            if (obj := self._object(parts, 3)) is None:
                return
            claims = self.fake.token_claims((q.get("token") or [""])[0], "upload", *obj)
            if isinstance(claims, tuple):
                self._error(400, *claims)
                return
            self._save_upload(*obj, body, bool(claims.get("upsert")))  # as signed, not as sent
        elif parts[:1] == ["object"] and len(parts) >= 3:
            if (obj := self._object(parts, 1)) is None or not self._role("write"):
                return
            if obj not in self.fake.meta:
                self._error(404, "not_found", "Object not found")
                return
            self._save_upload(*obj, body, True)
        else:
            self._error(404, "not_found", "route not found")

    def do_GET(self) -> None:  # noqa: N802
        self._begin()
        parts, q = self._route()
        if parts[:1] == ["s3"] and len(parts) >= 3:
            if not self._s3_ok(parts):
                return
            obj = parts[1], "/".join(parts[2:])
        elif parts[:2] == ["object", "sign"] and len(parts) >= 4:
            if (obj := self._object(parts, 2)) is None:
                return
            claims = self.fake.token_claims((q.get("token") or [""])[0], "download", *obj)
            if isinstance(claims, tuple):
                self._error(400, *claims)
                return
        elif parts[:2] == ["object", "info"] and len(parts) >= 4:
            if (obj := self._object(parts, 2)) and self._role("read"):
                self._info(*obj)
            return
        elif parts[:1] == ["object"] and len(parts) >= 3:
            if (obj := self._object(parts, 1)) is None or not self._role("read"):
                return
        else:
            self._error(404, "not_found", "route not found")
            return
        m = self.fake.meta.get(obj)
        if m is None:
            self._error(404, "not_found", "Object not found")
            return
        self._send(200, raw=self.fake.file(*obj).read_bytes(), ctype=m["mimetype"])

    def _info(self, bucket: str, name: str) -> None:
        m = self.fake.meta.get((bucket, name))
        if m is None:
            self._error(404, "not_found", "Object not found")
            return
        self._send(
            200,
            {
                "id": m["id"],
                "name": name,
                "bucket_id": bucket,
                "size": m["size"],
                "content_type": m["mimetype"],
                "updated_at": m["updated_at"],
            },
        )

    def do_DELETE(self) -> None:  # noqa: N802
        body = self._begin()
        parts, _q = self._route()
        if parts[:1] == ["object"] and len(parts) == 2:
            if not self._bucket_ok(parts[1]) or not self._role("delete"):
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

    def _tus_upload(self) -> _Upload | None:
        """The upload a TUS PATCH or HEAD names, or None when an answer was sent."""
        parts, _q = self._route()
        if parts[:2] != ["upload", "resumable"] or len(parts) != 3:
            self._error(404, "not_found", "route not found")
            return None
        if not self._tus_ok() or not self._role("write"):
            return None
        up = self.fake.uploads.get(parts[2])
        if up is None:
            self._send(404, headers={"Tus-Resumable": "1.0.0"})
        return up

    def do_PATCH(self) -> None:  # noqa: N802
        body = self._begin()
        if (up := self._tus_upload()) is None:
            return
        tus = {"Tus-Resumable": "1.0.0"}
        if self.headers.get("content-type") != "application/offset+octet-stream":
            self._send(415, headers=tus)
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
            self._send(409, headers=tus, raw=b"Upload-Offset conflict\n", ctype="text/plain")
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
        self._send(204, headers={"Upload-Offset": str(up.offset), **tus})

    def do_HEAD(self) -> None:  # noqa: N802
        self._begin()
        if (up := self._tus_upload()) is None:
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

    def __init__(
        self,
        root: Path,
        service_key: str = "fake-service-key",
        publishable_key: str = "fake-publishable-key",
    ) -> None:
        self.state = FakeStorage(
            root=root, service_key=service_key, publishable_key=publishable_key
        )
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
