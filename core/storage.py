"""Where BrightRun keeps files: datasets and adapters, behind one `BlobStore` protocol.

Two buckets, `datasets` and `adapters`. Object keys are built here from ids, never from a
file name a user typed (the name is kept only for display, in the database):

    datasets  <owner>/<dataset_id>/original              the uploaded file, untouched
    datasets  <owner>/<dataset_id>/normalized.jsonl      chat-messages JSONL
    adapters  <owner>/versions/<version_id>/<file>       a registered adapter version
    adapters  <owner>/jobs/<job_id>/<file>               a job's events.jsonl, result.json
    adapters  <owner>/jobs/<job_id>/checkpoints/<step>/<file>

The owner id comes first so that Supabase row-level policies can match the first folder
against `auth.uid()`. Every key segment must match `[A-Za-z0-9][A-Za-z0-9._-]*` and never
be `..`; anything else raises `InvalidInput` before a byte is written.

Implementations:
- `LocalBlobStore`: a folder (`<data_dir>/blobs/<bucket>/<key>`), atomic writes (temporary
  file + rename), no path can leave the folder. Signed URLs point at the local endpoint:
  `{PUBLIC_BASE_URL}/files/<bucket>/<key>?exp=<unix seconds>&sig=<hex>` where `sig` is
  HMAC-SHA256 over the method (GET or PUT), bucket, key and expiry with `URL_SIGNING_KEY`
  (or a key generated once into `<data_dir>/url_signing.key`, mode 0600). A download URL
  cannot upload and an upload URL writes only its own key; both stop working at `exp`.
  `local/files.py` serves them.
- `SupabaseBlobStore`: Supabase Storage through the `supabase` client, content types set
  explicitly; files over 6 MB go through the resumable (TUS) endpoint in 6 MB chunks read
  from disk one at a time; downloads stream. Signed URLs: with S3 access keys
  (`SUPABASE_S3_ACCESS_KEY_ID`/`SECRET_ACCESS_KEY`/`REGION`) both kinds are SigV4 presigned
  URLs on Storage's S3 endpoint (path style, `<endpoint>/<bucket>/<key>?X-Amz-...`) that
  last exactly `expires_s`, up to 7 days; the secret key only signs, it is never in a URL
  (the access key id is, inside `X-Amz-Credential`, as SigV4 requires). Without them,
  download URLs come from Storage's REST API and last `expires_s`, and upload URLs last the
  two hours Supabase fixes whatever `expires_s` says.

Every store says how long its upload URLs can live: `max_upload_url_s` (None: no limit of
its own; Supabase: 7200 without S3 keys, 604800 with). Asking for a longer lifetime raises
`InvalidInput` naming the settings that lift the limit; it is never cut silently.
`core.jobs` checks a job against it before storing or sending anything.

Missing objects raise `NotFound`; other storage failures raise `StorageError`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import io
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol, runtime_checkable
from urllib.parse import quote, urlencode

from core.errors import InvalidInput, NotFound, StorageError
from core.settings import Settings

BUCKETS = ("datasets", "adapters")
CHUNK = 1024 * 1024
TUS_CHUNK = 6 * 1024 * 1024  # Supabase requires 6 MB chunks for resumable uploads
TUS_THRESHOLD = 6 * 1024 * 1024  # larger files go through the resumable endpoint

# Lifetimes of the signed URLs BrightRun hands out (seconds).
DOWNLOAD_URL_TTL_S = 6 * 3600  # a job may queue for a while before it fetches its dataset
UPLOAD_URL_TTL_S = 24 * 3600  # a job uploads its adapter when it ends
SUPABASE_UPLOAD_URL_MAX_S = 2 * 3600  # Supabase's signed upload URLs: fixed, not settable
S3_PRESIGN_MAX_S = 7 * 24 * 3600  # SigV4 presigned URLs live at most a week

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


# --------------------------------------------------------------------------- keys


def _segment(value: str, what: str) -> str:
    if not isinstance(value, str) or not _SEGMENT.match(value) or ".." in value:
        raise InvalidInput(f"{what} {value!r} cannot be part of a storage key")
    return value


def check_bucket(bucket: str) -> str:
    if bucket not in BUCKETS:
        raise InvalidInput(f"unknown bucket {bucket!r}; one of {', '.join(BUCKETS)}")
    return bucket


def check_key(key: str) -> str:
    """Validate a whole key: segments of letters, digits, '.', '_' and '-', no '..'."""
    if not isinstance(key, str) or not key or len(key) > 700:
        raise InvalidInput(f"storage key {key!r} is empty or too long")
    for part in key.split("/"):
        _segment(part, "storage key segment")
    return key


def dataset_original_key(owner_id: str, dataset_id: str) -> str:
    return f"{_segment(owner_id, 'owner id')}/{_segment(dataset_id, 'dataset id')}/original"


def dataset_normalized_key(owner_id: str, dataset_id: str) -> str:
    return f"{_segment(owner_id, 'owner id')}/{_segment(dataset_id, 'dataset id')}/normalized.jsonl"


def adapter_prefix(owner_id: str, version_id: str) -> str:
    return f"{_segment(owner_id, 'owner id')}/versions/{_segment(version_id, 'version id')}/"


def adapter_key(owner_id: str, version_id: str, filename: str) -> str:
    return adapter_prefix(owner_id, version_id) + _segment(filename, "adapter file name")


def job_prefix(owner_id: str, job_id: str) -> str:
    return f"{_segment(owner_id, 'owner id')}/jobs/{_segment(job_id, 'job id')}/"


def job_key(owner_id: str, job_id: str, filename: str) -> str:
    return job_prefix(owner_id, job_id) + _segment(filename, "job file name")


def checkpoint_key(owner_id: str, job_id: str, step: int, filename: str) -> str:
    if not isinstance(step, int) or step < 0:
        raise InvalidInput(f"checkpoint step {step!r} must be a non-negative integer")
    return f"{job_prefix(owner_id, job_id)}checkpoints/{step}/{_segment(filename, 'checkpoint file name')}"


# --------------------------------------------------------------------------- protocol


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    content_type: str = ""


@runtime_checkable
class BlobStore(Protocol):
    """What every file store offers. Keys come from the key builders above."""

    # The longest lifetime `signed_upload_url` can give, in seconds; None: no limit.
    max_upload_url_s: int | None

    def put_file(self, bucket: str, key: str, path: Path, content_type: str) -> int:
        """Store a local file under `key` (replacing any object there); returns its size."""
        ...

    def put_stream(self, bucket: str, key: str, stream: IO[bytes], content_type: str) -> int:
        """Store everything read from `stream` (read in chunks); returns the size."""
        ...

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str) -> int: ...

    def open(self, bucket: str, key: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        """A context manager yielding a readable binary stream of the object."""
        ...

    def get_bytes(self, bucket: str, key: str, max_bytes: int = 64 * 1024 * 1024) -> bytes:
        """The whole object (small ones: raises StorageError beyond `max_bytes`)."""
        ...

    def download_to(self, bucket: str, key: str, dest: Path) -> int: ...

    def exists(self, bucket: str, key: str) -> bool: ...

    def list(self, bucket: str, prefix: str = "") -> list[BlobInfo]:
        """Every object whose key starts with the folder `prefix` (recursively), by key."""
        ...

    def delete(self, bucket: str, keys: list[str]) -> None:
        """Remove the objects; missing ones are ignored."""
        ...

    def delete_prefix(self, bucket: str, prefix: str) -> int: ...

    def signed_download_url(
        self, bucket: str, key: str, expires_s: int = DOWNLOAD_URL_TTL_S
    ) -> str: ...

    def signed_upload_url(self, bucket: str, key: str, expires_s: int = UPLOAD_URL_TTL_S) -> str:
        """A URL that accepts one `PUT` of the raw file body (Content-Type header kept).
        Raises `InvalidInput` when `expires_s` is beyond `max_upload_url_s`."""
        ...


def upload_url_limit_s(settings: Settings) -> int | None:
    """`max_upload_url_s` of the store `make_blob_store(settings)` builds, without building
    it (the Train page checks a plan against it)."""
    if settings.storage != "supabase":
        return None
    if settings.supabase_s3_access_key_id.get_secret_value():
        return S3_PRESIGN_MAX_S
    return SUPABASE_UPLOAD_URL_MAX_S


def _check_prefix(prefix: str) -> str:
    if prefix == "":
        return prefix
    if not prefix.endswith("/"):
        raise InvalidInput(f"prefix {prefix!r} must be a folder ending in '/'")
    check_key(prefix[:-1])
    return prefix


def _read_bounded(f: IO[bytes], max_bytes: int, what: str) -> bytes:
    data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise StorageError(f"{what} is larger than {max_bytes} bytes; stream it instead")
    return data


# --------------------------------------------------------------------------- local


def load_signing_key(settings: Settings) -> bytes:
    """`URL_SIGNING_KEY`, or a random key created once in `<data_dir>/url_signing.key` (0600)."""
    configured = settings.url_signing_key.get_secret_value()
    if configured:
        return configured.encode()
    path = settings.data_dir / "url_signing.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another process may be writing it right now
            key = path.read_bytes().strip()
            if key:
                return key
            time.sleep(0.02)
        raise StorageError(
            f"the URL signing key file {path} is empty; delete it to make a new one"
        ) from None
    key = secrets.token_hex(32).encode()
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


class _AtomicWriter:
    def __init__(self, out: IO[bytes], max_bytes: int | None) -> None:
        self._out = out
        self._max = max_bytes
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self._max is not None and self.size > self._max:
            raise InvalidInput(f"the file is larger than the limit of {self._max} bytes")
        self._out.write(chunk)


class SignatureError(StorageError):
    """A signed URL whose signature is wrong, or that has expired."""


class _ReadsThroughOpen:
    """`get_bytes` and `download_to` for a store whose `open` streams an object."""

    def open(self, bucket: str, key: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        raise NotImplementedError

    def get_bytes(self, bucket: str, key: str, max_bytes: int = 64 * 1024 * 1024) -> bytes:
        with self.open(bucket, key) as f:
            return _read_bounded(f, max_bytes, f"{bucket}/{key}")

    def download_to(self, bucket: str, key: str, dest: Path) -> int:
        with self.open(bucket, key) as f, open(dest, "wb") as out:
            shutil.copyfileobj(f, out, CHUNK)
            return out.tell()


class LocalBlobStore(_ReadsThroughOpen):
    """Files in a folder; signed URLs served by `local/files.py`."""

    max_upload_url_s: int | None = None  # its own HMAC links: any lifetime

    def __init__(self, root: Path, public_base_url: str, signing_key: bytes) -> None:
        self.root = Path(root).resolve()
        self.public_base_url = public_base_url.rstrip("/")
        self._key = signing_key
        for bucket in BUCKETS:
            (self.root / bucket).mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalBlobStore:
        return cls(
            settings.data_dir / "blobs", settings.public_base_url, load_signing_key(settings)
        )

    # paths
    def path_for(self, bucket: str, key: str) -> Path:
        p = (self.root / check_bucket(bucket) / check_key(key)).resolve()
        if not p.is_relative_to(self.root / bucket):
            raise InvalidInput(f"storage key {key!r} leaves the bucket")
        return p

    @staticmethod
    def _meta_path(p: Path) -> Path:
        return p.with_name("." + p.name + ".content-type")

    def content_type(self, bucket: str, key: str) -> str:
        meta = self._meta_path(self.path_for(bucket, key))
        try:
            return meta.read_text().strip() or "application/octet-stream"
        except FileNotFoundError:
            return "application/octet-stream"

    # writes
    @contextlib.contextmanager
    def writer(
        self, bucket: str, key: str, content_type: str, max_bytes: int | None = None
    ) -> Iterator[_AtomicWriter]:
        """Write an object piece by piece; it appears (atomically) only if the block ends
        without an error, replacing any previous object under `key`."""
        dest = self.path_for(bucket, key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + dest.name + ".", suffix=".part", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                w = _AtomicWriter(out, max_bytes)
                yield w
                out.flush()
                os.fsync(out.fileno())
            meta = self._meta_path(dest)
            meta_tmp = meta.with_name(meta.name + f".{secrets.token_hex(4)}.part")
            meta_tmp.write_text(content_type or "application/octet-stream")
            os.replace(meta_tmp, meta)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_stream(
        self,
        bucket: str,
        key: str,
        stream: IO[bytes],
        content_type: str,
        max_bytes: int | None = None,
    ) -> int:
        with self.writer(bucket, key, content_type, max_bytes) as w:
            while chunk := stream.read(CHUNK):
                w.write(chunk)
        return w.size

    def put_file(self, bucket: str, key: str, path: Path, content_type: str) -> int:
        with open(path, "rb") as f:
            return self.put_stream(bucket, key, f, content_type)

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str) -> int:
        return self.put_stream(bucket, key, io.BytesIO(data), content_type)

    # reads
    @contextlib.contextmanager
    def open(self, bucket: str, key: str) -> Iterator[IO[bytes]]:
        p = self.path_for(bucket, key)
        try:
            f = open(p, "rb")  # noqa: SIM115 - closed below
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"no stored file {bucket}/{key}") from None
        with f:
            yield f

    def exists(self, bucket: str, key: str) -> bool:
        return self.path_for(bucket, key).is_file()

    def list(self, bucket: str, prefix: str = "") -> list[BlobInfo]:
        base = self.root / check_bucket(bucket)
        start = base / _check_prefix(prefix) if prefix else base
        if not start.is_dir():
            return []
        out: list[BlobInfo] = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith("."):
                    continue
                p = Path(dirpath) / name
                key = p.relative_to(base).as_posix()
                out.append(BlobInfo(key, p.stat().st_size, self.content_type(bucket, key)))
        return sorted(out, key=lambda b: b.key)

    def delete(self, bucket: str, keys: list[str]) -> None:
        for key in keys:
            p = self.path_for(bucket, key)
            p.unlink(missing_ok=True)
            self._meta_path(p).unlink(missing_ok=True)

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        blobs = self.list(bucket, _check_prefix(prefix))
        self.delete(bucket, [b.key for b in blobs])
        return len(blobs)

    # signed URLs
    def _sign(self, method: str, bucket: str, key: str, exp: int) -> str:
        msg = f"{method}\n{bucket}\n{key}\n{exp}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()

    def _url(self, method: str, bucket: str, key: str, expires_s: int) -> str:
        check_bucket(bucket)
        check_key(key)
        if expires_s <= 0:
            raise InvalidInput("a signed URL needs a positive lifetime")
        exp = int(time.time()) + int(expires_s)
        query = urlencode({"exp": exp, "sig": self._sign(method, bucket, key, exp)})
        return f"{self.public_base_url}/files/{bucket}/{quote(key)}?{query}"

    def signed_download_url(
        self, bucket: str, key: str, expires_s: int = DOWNLOAD_URL_TTL_S
    ) -> str:
        return self._url("GET", bucket, key, expires_s)

    def signed_upload_url(self, bucket: str, key: str, expires_s: int = UPLOAD_URL_TTL_S) -> str:
        return self._url("PUT", bucket, key, expires_s)

    def verify(
        self, method: str, bucket: str, key: str, exp: str | int, sig: str, now: float | None = None
    ) -> None:
        """Raise SignatureError unless `sig` signs (method, bucket, key, exp) and exp is ahead."""
        try:
            exp_i = int(exp)
        except (TypeError, ValueError):
            raise SignatureError("the link is malformed") from None
        expected = self._sign(method, bucket, key, exp_i)
        if not hmac.compare_digest(expected, str(sig)):
            raise SignatureError("the link's signature does not match")
        if (now if now is not None else time.time()) > exp_i:
            raise SignatureError("the link has expired")


# --------------------------------------------------------------------------- supabase


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


@dataclass(frozen=True)
class S3Access:
    """Supabase Storage's S3 protocol: endpoint (`https://<ref>.supabase.co/storage/v1/s3`),
    the project's region and an S3 access key pair from the dashboard."""

    endpoint: str
    region: str
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Access | None:
        key_id = settings.supabase_s3_access_key_id.get_secret_value()
        if not key_id:
            return None
        return cls(
            settings.supabase_s3_url,
            settings.supabase_s3_region,
            key_id,
            settings.supabase_s3_secret_access_key.get_secret_value(),
        )


class SupabaseBlobStore(_ReadsThroughOpen):
    """Supabase Storage through the `supabase` client (service-role key, server side only).

    Small files use the client's upload with an explicit content type and upsert; files
    over 6 MB use `/storage/v1/upload/resumable` (TUS 1.0.0) in 6 MB PATCHes, resuming from
    the server's offset (HEAD) after a failed chunk. Downloads stream from
    `/storage/v1/object/<bucket>/<key>`. With `s3`, signed URLs are presigned on the S3
    endpoint (see the module doc).
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
        self._presigner: Any = None
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

        if (
            isinstance(exc, StorageApiError)
            and str(exc.status) in ("404", "400")
            and str(exc.code).lower()
            in (
                "not_found",
                "notfound",
                "nosuchkey",
                "404",
            )
        ):
            raise NotFound(f"no stored file {bucket}/{key}") from None
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
        headers = {
            **self._auth(),
            "Tus-Resumable": "1.0.0",
            "Upload-Length": str(size),
            "Upload-Metadata": ",".join(f"{k} {b64(v)}" for k, v in meta.items()),
            "x-upsert": "true",
        }
        r = self._retrying(lambda: self._http.post(endpoint, headers=headers))
        if r.status_code != 201 or "location" not in r.headers:
            raise StorageError(
                f"storage refused the resumable upload of {bucket}/{key} (HTTP {r.status_code})"
            )
        location = str(httpx.URL(endpoint).join(r.headers["location"]))
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
                        headers={
                            **self._auth(),
                            "Tus-Resumable": "1.0.0",
                            "Upload-Offset": str(offset),
                            "Content-Type": "application/offset+octet-stream",
                        },
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
                head = self._retrying(
                    lambda: self._http.head(
                        location, headers={**self._auth(), "Tus-Resumable": "1.0.0"}
                    )
                )
                if head.status_code != 200:
                    raise StorageError(
                        f"the resumable upload of {bucket}/{key} was lost (HTTP {head.status_code})"
                    )
                offset = int(head.headers.get("upload-offset", offset))

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
            if r.status_code in (400, 404):
                raise NotFound(f"no stored file {bucket}/{key}")
            if r.status_code != 200:
                raise StorageError(f"storage refused {bucket}/{key} (HTTP {r.status_code})")
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
        folders = [_check_prefix(prefix)]
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
        blobs = self.list(bucket, _check_prefix(prefix))
        self.delete(bucket, [b.key for b in blobs])
        return len(blobs)

    # signed URLs
    def _presign(self, s3: S3Access, method: str, bucket: str, key: str, expires_s: int) -> str:
        """A SigV4 presigned URL on the S3 endpoint (query-string auth, host header only
        signed, payload unsigned): a plain GET or PUT with any Content-Type works."""
        check_bucket(bucket)
        check_key(key)
        if not 0 < int(expires_s) <= S3_PRESIGN_MAX_S:
            raise InvalidInput(
                f"a presigned URL lives between 1 s and {S3_PRESIGN_MAX_S} s (got {expires_s})"
            )
        if self._presigner is None:
            from botocore.config import Config
            from botocore.session import get_session

            self._presigner = get_session().create_client(
                "s3",
                region_name=s3.region,
                endpoint_url=s3.endpoint,
                aws_access_key_id=s3.access_key_id,
                aws_secret_access_key=s3.secret_access_key,
                config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
            )
        operation = "put_object" if method == "PUT" else "get_object"
        return str(
            self._presigner.generate_presigned_url(
                operation, Params={"Bucket": bucket, "Key": key}, ExpiresIn=int(expires_s)
            )
        )

    def signed_download_url(
        self, bucket: str, key: str, expires_s: int = DOWNLOAD_URL_TTL_S
    ) -> str:
        from storage3.exceptions import StorageApiError

        if self._s3 is not None:
            return self._presign(self._s3, "GET", bucket, key, expires_s)
        check_key(key)
        try:
            res = self._bucket(bucket).create_signed_url(key, int(expires_s))
        except StorageApiError as e:
            self._raise(e, bucket, key)
            raise
        url = res.get("signedURL") or res.get("signedUrl")
        if not url:
            raise StorageError(f"storage gave no signed URL for {bucket}/{key}")
        return str(url)

    def signed_upload_url(self, bucket: str, key: str, expires_s: int = UPLOAD_URL_TTL_S) -> str:
        """A PUT of the raw body to the URL stores (or replaces) its one object. With S3 keys
        the URL lasts `expires_s` (up to 7 days); without them Supabase's signed upload URL
        lasts two hours whatever `expires_s` says, and a longer `expires_s` is refused."""
        from storage3.exceptions import StorageApiError
        from storage3.types import CreateSignedUploadUrlOptions

        if self._s3 is not None:
            return self._presign(self._s3, "PUT", bucket, key, expires_s)
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


def make_blob_store(settings: Settings) -> BlobStore:
    """The store `STORAGE` selects: `local` (default) or `supabase`."""
    if settings.storage == "supabase":
        return SupabaseBlobStore.from_settings(settings)
    return LocalBlobStore.from_settings(settings)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def copy_stream(src: BinaryIO, dst: BinaryIO) -> int:
    n = 0
    while chunk := src.read(CHUNK):
        dst.write(chunk)
        n += len(chunk)
    return n
