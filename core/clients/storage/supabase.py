"""`SupabaseBlobStore`: Supabase Storage through the `supabase` client (see
`core.clients.storage.base` for keys, URL lifetimes and errors)."""

from __future__ import annotations

import base64
import contextlib
import io
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from core.clients.storage.base import (
    CHUNK,
    DOWNLOAD_URL_TTL_S,
    S3_PRESIGN_MAX_S,
    SUPABASE_UPLOAD_URL_MAX_S,
    TUS_CHUNK,
    TUS_THRESHOLD,
    UPLOAD_URL_TTL_S,
    BlobInfo,
    ReadsThroughOpen,
    check_bucket,
    check_key,
    check_prefix,
)
from core.clients.storage.s3 import Presigner, S3Access
from core.errors import InvalidInput, NotFound, StorageError
from core.settings import Settings


class _ResponseStream(io.RawIOBase):
    """A readable binary stream over an httpx streaming response (constant memory)."""

    def __init__(self, response: Any) -> None:
        self._iter = response.iter_bytes(CHUNK)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            try:
                self._buf = next(self._iter)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def _refusal(status: str, error: str, message: str, bucket: str, key: str) -> Exception:
    """The BrightRun error for Storage's refusal (`{"statusCode", "error", "message"}`)."""
    where = f"{bucket}/{key}"
    if status == "404" or (status == "400" and error.lower() in ("not_found", "nosuchkey")):
        return NotFound(f"no stored file {where}")
    if status in ("401", "403"):
        return StorageError(
            f"Supabase Storage refused BrightRun's key for {where} ({message or error}): "
            "SUPABASE_SECRET_KEY must be the project's secret key (sb_secret_..., or the "
            "legacy service_role key; Project Settings > API Keys), not the publishable one"
        )
    if status == "413":
        return StorageError(
            f"{where} is larger than the bucket's file size limit: raise the project's upload "
            "file size limit (Project Settings > Storage) above it (docs/supabase.md)"
        )
    return StorageError(f"storage refused {where} (HTTP {status}, {error or 'no error'})")


def _refusal_of(response: Any, bucket: str, key: str) -> Exception:
    """`_refusal` for a raw HTTP response (its JSON error body when it has one)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    return _refusal(
        str(response.status_code),
        str(body.get("error") or ""),
        str(body.get("message") or ""),
        bucket,
        key,
    )


class SupabaseBlobStore(ReadsThroughOpen):
    """Supabase Storage through the `supabase` client (service-role key, server side only).

    Small files use the client's upload with an explicit content type and upsert; files
    over 6 MB use `/storage/v1/upload/resumable` (TUS 1.0.0) in 6 MB PATCHes, resuming from
    the server's offset (HEAD) after a failed chunk. Downloads stream from
    `/storage/v1/object/<bucket>/<key>`. With `s3`, signed URLs are presigned on the S3
    endpoint (see the module doc).

    The TUS client is written here rather than taken from `tuspy`: BrightRun needs only
    creation, PATCH and HEAD (about 60 lines), each on the one httpx client that already
    carries the timeouts and keys, with each refusal turned into a BrightRun error naming the
    object. tuspy speaks HTTP through `requests` (and aiohttp), with its own retry policy
    and exception types to translate, for no protocol feature BrightRun uses; it would be a
    new dependency in the lock for less control. The contract tests
    (`tests/state/test_supabase_contract.py`) hold these requests to TUS 1.0.0 and Supabase's
    resumable-upload guide.
    """

    def __init__(
        self,
        url: str,
        service_key: str,
        client: Any = None,
        http: Any = None,
        timeout_s: float = 60.0,
        s3: S3Access | None = None,
    ) -> None:
        import httpx

        self.url = url.rstrip("/")
        self._service_key = service_key
        self._s3 = s3
        self._presigner = Presigner(s3) if s3 is not None else None
        self.max_upload_url_s: int | None = (
            S3_PRESIGN_MAX_S if s3 is not None else SUPABASE_UPLOAD_URL_MAX_S
        )
        if client is None:
            from supabase import create_client

            client = create_client(self.url, service_key)
        self._client = client
        self._http = http or httpx.Client(timeout=httpx.Timeout(timeout_s, connect=10.0))

    @classmethod
    def from_settings(cls, settings: Settings) -> SupabaseBlobStore:
        return cls(
            settings.supabase_url,
            settings.supabase_key.get_secret_value(),
            s3=S3Access.from_settings(settings),
        )

    def __repr__(self) -> str:  # never show the keys
        return f"SupabaseBlobStore({self.url!r}, s3={self._s3 is not None})"

    def _bucket(self, bucket: str) -> Any:
        return self._client.storage.from_(check_bucket(bucket))

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._service_key}", "apikey": self._service_key}

    @staticmethod
    def _raise(exc: Exception, bucket: str, key: str) -> None:
        from storage3.exceptions import StorageApiError

        if isinstance(exc, StorageApiError):
            raise _refusal(str(exc.status), str(exc.code), exc.message, bucket, key) from None
        raise StorageError(f"storage refused {bucket}/{key}: {type(exc).__name__}") from exc

    # writes
    def put_file(self, bucket: str, key: str, path: Path, content_type: str) -> int:
        check_bucket(bucket)
        check_key(key)
        size = Path(path).stat().st_size
        if size > TUS_THRESHOLD:
            self._tus_upload(bucket, key, Path(path), size, content_type)
            return size
        from storage3.exceptions import StorageApiError

        try:
            with open(path, "rb") as f:
                self._bucket(bucket).upload(
                    key,
                    f,
                    {"content-type": content_type, "x-upsert": "true", "cache-control": "no-cache"},
                )
        except StorageApiError as e:
            self._raise(e, bucket, key)
        return size

    def put_stream(self, bucket: str, key: str, stream: IO[bytes], content_type: str) -> int:
        # Spool to disk: the resumable upload needs the length up front and a seekable body.
        with tempfile.NamedTemporaryFile(prefix="brightrun-upload-", delete=True) as tmp:
            shutil.copyfileobj(stream, tmp, CHUNK)
            tmp.flush()
            return self.put_file(bucket, key, Path(tmp.name), content_type)

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str) -> int:
        return self.put_stream(bucket, key, io.BytesIO(data), content_type)

    def _tus_upload(self, bucket: str, key: str, path: Path, size: int, content_type: str) -> None:
        """Create the upload, then PATCH 6 MB chunks from the server's offset; after a failed
        chunk, wait, ask the server where it stands (HEAD) and go on from there."""
        import httpx

        location = self._tus_create(bucket, key, size, content_type)
        offset = 0
        failures = 0
        with open(path, "rb") as f:
            while offset < size:
                f.seek(offset)
                chunk = f.read(TUS_CHUNK)
                try:
                    r = self._http.patch(
                        location,
                        content=chunk,
                        headers=self._tus_headers(
                            {
                                "Upload-Offset": str(offset),
                                "Content-Type": "application/offset+octet-stream",
                            }
                        ),
                    )
                    ok = r.status_code == 204
                except httpx.TransportError:
                    ok = False
                if ok:
                    offset = int(r.headers.get("upload-offset", offset + len(chunk)))
                    failures = 0
                    continue
                failures += 1
                if failures > 5:
                    raise StorageError(
                        f"the resumable upload of {bucket}/{key} kept failing at byte {offset}"
                    )
                time.sleep(min(8.0, 0.5 * 2**failures))
                offset = self._tus_offset(location, bucket, key, offset)

    def _tus_headers(self, extra: dict[str, str]) -> dict[str, str]:
        return {**self._auth(), "Tus-Resumable": "1.0.0", **extra}

    def _tus_create(self, bucket: str, key: str, size: int, content_type: str) -> str:
        """POST the resumable upload of `size` bytes; its location (an absolute URL)."""
        import httpx

        def b64(v: str) -> str:
            return base64.b64encode(v.encode()).decode()

        endpoint = f"{self.url}/storage/v1/upload/resumable"
        meta = {
            "bucketName": bucket,
            "objectName": key,
            "contentType": content_type,
            "cacheControl": "3600",
        }
        headers = self._tus_headers(
            {
                "Upload-Length": str(size),
                "Upload-Metadata": ",".join(f"{k} {b64(v)}" for k, v in meta.items()),
                "x-upsert": "true",
            }
        )
        r = self._retrying(lambda: self._http.post(endpoint, headers=headers))
        if r.status_code != 201 or "location" not in r.headers:
            raise _refusal_of(r, bucket, key)
        return str(httpx.URL(endpoint).join(r.headers["location"]))

    def _tus_offset(self, location: str, bucket: str, key: str, offset: int) -> int:
        """Where the server stands in the upload (HEAD); `offset` when it does not say."""
        head = self._retrying(lambda: self._http.head(location, headers=self._tus_headers({})))
        if head.status_code != 200:
            raise StorageError(
                f"the resumable upload of {bucket}/{key} was lost (HTTP {head.status_code})"
            )
        return int(head.headers.get("upload-offset", offset))

    def _retrying(self, call: Any, attempts: int = 4) -> Any:
        import httpx

        last: Exception | None = None
        for i in range(attempts):
            try:
                r = call()
                if r.status_code not in (409, 429, 500, 502, 503, 504):
                    return r
                last = StorageError(f"storage answered HTTP {r.status_code}")
            except httpx.TransportError as e:
                last = e
            time.sleep(min(8.0, 0.5 * 2**i))
        raise StorageError(f"storage did not answer: {type(last).__name__}") from last

    # reads
    @contextlib.contextmanager
    def open(self, bucket: str, key: str) -> Iterator[IO[bytes]]:
        check_bucket(bucket)
        check_key(key)
        url = f"{self.url}/storage/v1/object/{bucket}/{quote(key)}"
        with self._http.stream("GET", url, headers=self._auth()) as r:
            if r.status_code != 200:
                r.read()
                raise _refusal_of(r, bucket, key)
            yield io.BufferedReader(_ResponseStream(r), CHUNK)

    def exists(self, bucket: str, key: str) -> bool:
        from storage3.exceptions import StorageApiError

        check_key(key)
        try:
            return bool(self._bucket(bucket).exists(key))
        except StorageApiError as e:
            self._raise(e, bucket, key)
            raise

    def list(self, bucket: str, prefix: str = "") -> list[BlobInfo]:
        from storage3.exceptions import StorageApiError

        out: list[BlobInfo] = []
        folders = [check_prefix(prefix)]
        api = self._bucket(bucket)
        while folders:
            folder = folders.pop()
            offset = 0
            while True:
                try:
                    page = api.list(folder.rstrip("/"), {"limit": 1000, "offset": offset})
                except StorageApiError as e:
                    self._raise(e, bucket, folder)
                    raise
                for item in page:
                    name = item.get("name", "")
                    if not name or name == ".emptyFolderPlaceholder":
                        continue
                    if item.get("id") is None:  # a folder
                        folders.append(f"{folder}{name}/")
                        continue
                    meta = item.get("metadata") or {}
                    out.append(
                        BlobInfo(
                            f"{folder}{name}",
                            int(meta.get("size") or 0),
                            meta.get("mimetype") or "",
                        )
                    )
                if len(page) < 1000:
                    break
                offset += len(page)
        return sorted(out, key=lambda b: b.key)

    def delete(self, bucket: str, keys: list[str]) -> None:
        from storage3.exceptions import StorageApiError

        for key in keys:
            check_key(key)
        for i in range(0, len(keys), 1000):
            try:
                self._bucket(bucket).remove(keys[i : i + 1000])
            except StorageApiError as e:
                self._raise(e, bucket, keys[i])

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        blobs = self.list(bucket, check_prefix(prefix))
        self.delete(bucket, [b.key for b in blobs])
        return len(blobs)

    # signed URLs
    def signed_download_url(
        self, bucket: str, key: str, expires_s: int = DOWNLOAD_URL_TTL_S
    ) -> str:
        """Signed here rather than through storage3's `create_signed_url`, which sends
        `expiresIn` as a string: Storage's published schema says an integer."""
        if self._presigner is not None:
            return self._presigner.url("GET", bucket, key, expires_s)
        check_bucket(bucket)
        check_key(key)
        r = self._retrying(
            lambda: self._http.post(
                f"{self.url}/storage/v1/object/sign/{bucket}/{quote(key)}",
                json={"expiresIn": int(expires_s)},
                headers=self._auth(),
            )
        )
        if r.status_code != 200:
            raise _refusal_of(r, bucket, key)
        url = r.json().get("signedURL")
        if not url:
            raise StorageError(f"storage gave no signed URL for {bucket}/{key}")
        return f"{self.url}/storage/v1/{str(url).lstrip('/')}"

    def signed_upload_url(self, bucket: str, key: str, expires_s: int = UPLOAD_URL_TTL_S) -> str:
        """A PUT of the raw body to the URL stores (or replaces) its one object. With S3 keys
        the URL lasts `expires_s` (up to 7 days); without them Supabase's signed upload URL
        lasts two hours whatever `expires_s` says, and a longer `expires_s` is refused."""
        from storage3.exceptions import StorageApiError
        from storage3.types import CreateSignedUploadUrlOptions

        if self._presigner is not None:
            return self._presigner.url("PUT", bucket, key, expires_s)
        check_key(key)
        if int(expires_s) > SUPABASE_UPLOAD_URL_MAX_S:
            raise InvalidInput(
                f"Supabase signed upload URLs last {SUPABASE_UPLOAD_URL_MAX_S // 3600} h, not the "
                f"{int(expires_s)} s asked: set SUPABASE_S3_ACCESS_KEY_ID, "
                "SUPABASE_S3_SECRET_ACCESS_KEY and SUPABASE_S3_REGION for presigned URLs of up "
                "to 7 days (docs/supabase.md)"
            )
        try:
            res = self._bucket(bucket).create_signed_upload_url(
                key, CreateSignedUploadUrlOptions(upsert="true")
            )
        except StorageApiError as e:
            self._raise(e, bucket, key)
            raise
        return str(res["signed_url"])
