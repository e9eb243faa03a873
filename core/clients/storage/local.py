"""`LocalBlobStore`: a folder (`<data_dir>/blobs/<bucket>/<key>`) with atomic writes and
HMAC-signed URLs served by `local/files.py` (see `core.clients.storage.base` for the rules
of keys and URLs)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO
from urllib.parse import quote, urlencode

from core.clients.storage.base import (
    BUCKETS,
    CHUNK,
    DOWNLOAD_URL_TTL_S,
    UPLOAD_URL_TTL_S,
    BlobInfo,
    ReadsThroughOpen,
    check_bucket,
    check_key,
    check_prefix,
)
from core.errors import InvalidInput, NotFound, StorageError
from core.settings import Settings


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


class LocalBlobStore(ReadsThroughOpen):
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
        start = base / check_prefix(prefix) if prefix else base
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
        blobs = self.list(bucket, check_prefix(prefix))
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
