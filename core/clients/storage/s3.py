"""SigV4 presigned URLs on Supabase Storage's S3 endpoint (path style,
`<endpoint>/<bucket>/<key>?X-Amz-...`): they last exactly `expires_s`, up to
`S3_PRESIGN_MAX_S`; the secret key only signs, it is never in a URL (the access key id is,
inside `X-Amz-Credential`, as SigV4 requires)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.clients.storage.base import S3_PRESIGN_MAX_S, check_bucket, check_key
from core.errors import InvalidInput
from core.settings import Settings


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


class Presigner:
    """Presigned GET and PUT URLs for one `S3Access`; the botocore client is built on the
    first URL asked for."""

    def __init__(self, s3: S3Access) -> None:
        self._s3 = s3
        self._client: Any = None

    def __repr__(self) -> str:  # never show the keys
        return f"Presigner({self._s3.endpoint!r})"

    def url(self, method: str, bucket: str, key: str, expires_s: int) -> str:
        """A SigV4 presigned URL on the S3 endpoint (query-string auth, host header only
        signed, payload unsigned): a plain GET or PUT with any Content-Type works."""
        check_bucket(bucket)
        check_key(key)
        if not 0 < int(expires_s) <= S3_PRESIGN_MAX_S:
            raise InvalidInput(
                f"a presigned URL lives between 1 s and {S3_PRESIGN_MAX_S} s (got {expires_s})"
            )
        if self._client is None:
            from botocore.config import Config
            from botocore.session import get_session

            s3 = self._s3
            self._client = get_session().create_client(
                "s3",
                region_name=s3.region,
                endpoint_url=s3.endpoint,
                aws_access_key_id=s3.access_key_id,
                aws_secret_access_key=s3.secret_access_key,
                config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
            )
        operation = "put_object" if method == "PUT" else "get_object"
        return str(
            self._client.generate_presigned_url(
                operation, Params={"Bucket": bucket, "Key": key}, ExpiresIn=int(expires_s)
            )
        )
