"""Where BrightRun keeps files: datasets and adapters, behind one `BlobStore` protocol.

`base` holds the rules every store follows (keys, buckets, URL lifetimes, errors; its
docstring is the contract), `local` the folder store, `supabase` Supabase Storage, `s3`
the presigned URLs on Storage's S3 endpoint. `make_blob_store(settings)` builds the store
`STORAGE` selects.
"""

from core.clients.storage.base import (
    BUCKETS,
    CHUNK,
    DOWNLOAD_URL_TTL_S,
    S3_PRESIGN_MAX_S,
    SUPABASE_UPLOAD_URL_MAX_S,
    TUS_CHUNK,
    TUS_THRESHOLD,
    UPLOAD_URL_TTL_S,
    BlobInfo,
    BlobStore,
    adapter_key,
    adapter_prefix,
    check_bucket,
    check_key,
    checkpoint_key,
    copy_stream,
    dataset_normalized_key,
    dataset_original_key,
    job_key,
    job_prefix,
    sha256_file,
    upload_url_limit_s,
)
from core.clients.storage.local import LocalBlobStore, SignatureError, load_signing_key
from core.clients.storage.s3 import S3Access
from core.clients.storage.supabase import SupabaseBlobStore
from core.errors import StorageError
from core.settings import Settings


def make_blob_store(settings: Settings) -> BlobStore:
    """The store `STORAGE` selects: `local` (default) or `supabase`."""
    if settings.storage == "supabase":
        return SupabaseBlobStore.from_settings(settings)
    return LocalBlobStore.from_settings(settings)


__all__ = [
    "BUCKETS",
    "CHUNK",
    "DOWNLOAD_URL_TTL_S",
    "S3_PRESIGN_MAX_S",
    "SUPABASE_UPLOAD_URL_MAX_S",
    "TUS_CHUNK",
    "TUS_THRESHOLD",
    "UPLOAD_URL_TTL_S",
    "BlobInfo",
    "BlobStore",
    "LocalBlobStore",
    "S3Access",
    "SignatureError",
    "StorageError",
    "SupabaseBlobStore",
    "adapter_key",
    "adapter_prefix",
    "check_bucket",
    "check_key",
    "checkpoint_key",
    "copy_stream",
    "dataset_normalized_key",
    "dataset_original_key",
    "job_key",
    "job_prefix",
    "load_signing_key",
    "make_blob_store",
    "sha256_file",
    "upload_url_limit_s",
]
