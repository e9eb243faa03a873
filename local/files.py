"""The local store's signed URLs, served over HTTP (mounted by the local GPU endpoint).

    GET /files/<bucket>/<key>?exp=..&sig=..   the object, streamed
    PUT /files/<bucket>/<key>?exp=..&sig=..   replace the object with the raw request body

A URL works only with the method it was signed for, only for its own key, and only until
`exp` (see `core.clients.storage.LocalBlobStore`). A wrong or expired signature gets 403, a key
with nothing stored 404, a body over `max_upload_bytes` 413. An upload is written to a
temporary file as it arrives and appears only when complete.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse

from core.clients.storage import LocalBlobStore, SignatureError, check_bucket, check_key
from core.errors import InvalidInput


def files_router(store: LocalBlobStore, max_upload_bytes: int | None = None) -> APIRouter:
    router = APIRouter()

    def _checked(method: str, bucket: str, key: str, exp: str, sig: str) -> None:
        try:
            check_bucket(bucket)
            check_key(key)
        except InvalidInput:
            raise HTTPException(404, "no such file") from None
        try:
            store.verify(method, bucket, key, exp, sig)
        except SignatureError as e:
            raise HTTPException(403, str(e)) from None

    @router.get("/files/{bucket}/{key:path}")
    def download(bucket: str, key: str, exp: str = "", sig: str = "") -> FileResponse:
        _checked("GET", bucket, key, exp, sig)
        path = store.path_for(bucket, key)
        if not path.is_file():
            raise HTTPException(404, "no such file")
        return FileResponse(path, media_type=store.content_type(bucket, key))

    @router.put("/files/{bucket}/{key:path}")
    async def upload(
        bucket: str, key: str, request: Request, exp: str = "", sig: str = ""
    ) -> JSONResponse:
        _checked("PUT", bucket, key, exp, sig)
        declared = request.headers.get("content-length")
        if (
            max_upload_bytes is not None
            and declared
            and declared.isdigit()
            and int(declared) > max_upload_bytes
        ):
            raise HTTPException(
                413, f"the file is larger than the limit of {max_upload_bytes} bytes"
            )
        content_type = request.headers.get("content-type") or "application/octet-stream"
        try:
            with store.writer(bucket, key, content_type, max_upload_bytes) as w:
                async for chunk in request.stream():
                    w.write(chunk)
        except InvalidInput as e:
            raise HTTPException(413, str(e)) from None
        return JSONResponse({"bucket": bucket, "key": key, "size": w.size})

    return router
