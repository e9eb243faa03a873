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

import contextlib
import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, Protocol, runtime_checkable

from core.errors import InvalidInput, StorageError
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


def check_prefix(prefix: str) -> str:
    if prefix == "":
        return prefix
    if not prefix.endswith("/"):
        raise InvalidInput(f"prefix {prefix!r} must be a folder ending in '/'")
    check_key(prefix[:-1])
    return prefix


def read_bounded(f: IO[bytes], max_bytes: int, what: str) -> bytes:
    data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise StorageError(f"{what} is larger than {max_bytes} bytes; stream it instead")
    return data


class ReadsThroughOpen:
    """`get_bytes` and `download_to` for a store whose `open` streams an object."""

    def open(self, bucket: str, key: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        raise NotImplementedError

    def get_bytes(self, bucket: str, key: str, max_bytes: int = 64 * 1024 * 1024) -> bytes:
        with self.open(bucket, key) as f:
            return read_bounded(f, max_bytes, f"{bucket}/{key}")

    def download_to(self, bucket: str, key: str, dest: Path) -> int:
        with self.open(bucket, key) as f, open(dest, "wb") as out:
            shutil.copyfileobj(f, out, CHUNK)
            return out.tell()


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
