"""BrightRun's Supabase Storage client and the Storage stand-in, held to Storage's published
OpenAPI document (`../shared/contracts/supabase-storage.openapi.json`, see
`tests/supabase_contract.py`): BrightRun's flows run through the real `supabase` client
(storage3) and BrightRun's own calls (resumable TUS upload, signed download, streamed
download) against the stand-in, with the project's new-format keys (`sb_secret_...`,
`sb_publishable_...`), and every request and answer the stand-in recorded is validated.

Where the document is silent, the test says so and checks the stand-in against Supabase's
documentation instead:
- The document describes no success answer of a download (`GET /object/...`, `GET
  /object/sign/...`: bytes), of `GET /object/info/...`, nor any TUS answer (its resumable
  routes say only "Default Response", and HEAD, which TUS uses to resume, is not listed).
  TUS is held to the TUS 1.0.0 protocol and Supabase's resumable-upload guide: every request
  says `Tus-Resumable: 1.0.0`; the creation sends `Upload-Length` and `Upload-Metadata`
  (`bucketName`, `objectName`, `contentType`, `cacheControl`) and gets 201 with a
  `Location`; each PATCH sends `Upload-Offset` and `application/offset+octet-stream` in 6 MB
  chunks (the last may be shorter) and gets 204 with the new `Upload-Offset`; HEAD answers
  the offset with `Cache-Control: no-store`.
- The S3 protocol routes (`/s3/...`) are listed but say nothing of SigV4; they are held to
  AWS's presigned-URL rules in `test_storage.py`.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.clients import storage
from core.clients.storage import SupabaseBlobStore
from core.errors import InvalidInput, NotFound, StorageError
from core.settings import Settings
from tests.state.supabase_fake import TUS_CHUNK, FakeSupabaseStorage
from tests.supabase_contract import STORAGE_DOC, Exchange, load_storage, skip_reason

CONTRACT = load_storage()
pytestmark = pytest.mark.skipif(CONTRACT is None, reason=skip_reason(STORAGE_DOC))

SECRET = "sb_secret_" + "s" * 32
PUBLISHABLE = "sb_publishable_" + "p" * 32
OWNER = "user-alice"

# (method, path template, status) of the answers the document describes nothing of.
SILENT = {
    ("GET", "/object/{bucketName}/{wildcard}", 200),  # the object's bytes
    ("GET", "/object/sign/{bucketName}/{wildcard}", 200),  # the object's bytes
    ("GET", "/object/info/{bucketName}/{wildcard}", 200),
    ("POST", "/upload/resumable/", 201),  # TUS: checked by hand below
    ("PATCH", "/upload/resumable/{wildcard}", 204),
    ("PATCH", "/upload/resumable/{wildcard}", 500),  # a chunk lost (the stand-in's fault)
}


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeSupabaseStorage]:
    with FakeSupabaseStorage(
        tmp_path / "supabase", service_key=SECRET, publishable_key=PUBLISHABLE
    ) as f:
        yield f


@pytest.fixture
def store(fake: FakeSupabaseStorage, tmp_path: Path) -> SupabaseBlobStore:
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        storage="supabase",
        supabase_url=fake.url,
        supabase_key=SECRET,
    )
    built = storage.make_blob_store(settings)
    assert isinstance(built, SupabaseBlobStore)
    return built


def _silent_and_errors(exchanges: list[Exchange]) -> tuple[set, list[str]]:
    assert CONTRACT is not None
    silent, errors = set(), []
    for ex in exchanges:
        if ex.method == "HEAD":  # TUS's offset query: not in the document (see below)
            continue
        for e in CONTRACT.errors(ex):
            if e.startswith("SILENT: "):
                template = CONTRACT.operation(ex.method, ex.path)[0]
                silent.add((ex.method, template, ex.status))
            else:
                errors.append(f"{ex}: {e}")
    return silent, errors


def _check_tus(exchanges: list[Exchange]) -> int:
    """TUS 1.0.0 and Supabase's resumable-upload guide (see the module doc); the number of
    TUS exchanges checked."""
    tus = [ex for ex in exchanges if ex.path.startswith("/storage/v1/upload/resumable")]
    for ex in tus:
        assert ex.headers.get("tus-resumable") == "1.0.0", ex
        assert ex.headers.get("authorization") == f"Bearer {SECRET}", ex
        if ex.method == "POST":
            meta = dict(item.split(" ") for item in ex.headers["upload-metadata"].split(","))
            assert set(meta) == {"bucketName", "objectName", "contentType", "cacheControl"}
            assert all(base64.b64decode(v) for v in meta.values())
            assert int(ex.headers["upload-length"]) > TUS_CHUNK
            assert ex.status == 201 and ex.response_headers["location"], ex
        elif ex.method == "PATCH":
            assert ex.headers["content-type"] == "application/offset+octet-stream"
            assert int(ex.headers["upload-offset"]) >= 0
            assert len(ex.body) <= TUS_CHUNK
            if ex.status == 204:
                after = int(ex.headers["upload-offset"]) + len(ex.body)
                assert int(ex.response_headers["upload-offset"]) == after
                assert ex.response_headers["tus-resumable"] == "1.0.0"
        else:
            assert ex.method == "HEAD" and ex.status == 200, ex
            assert ex.response_headers["cache-control"] == "no-store"
            assert int(ex.response_headers["upload-offset"]) >= 0
    return len(tus)


def test_every_exchange_of_brightruns_storage_flows_holds_to_the_published_document(
    store: SupabaseBlobStore, fake: FakeSupabaseStorage, tmp_path: Path
) -> None:
    small = storage.dataset_normalized_key(OWNER, "ds-1")
    big = storage.dataset_original_key(OWNER, "ds-1")
    src = tmp_path / "big.jsonl"
    src.write_bytes(os.urandom(TUS_CHUNK + 4096))
    # Upload (storage3, multipart) and resumable upload (BrightRun's TUS, one lost chunk).
    store.put_bytes("datasets", small, b'{"messages": []}\n', "application/x-ndjson")
    fake.state.fail_patches = 1
    assert store.put_file("datasets", big, src, "application/x-ndjson") == src.stat().st_size
    # Exists, list, download, signed download and upload, delete, a missing object.
    assert store.exists("datasets", small) and not store.exists("datasets", f"{OWNER}/x/original")
    assert [b.key for b in store.list("datasets", f"{OWNER}/")] == [small, big]
    assert store.get_bytes("datasets", big) == src.read_bytes()
    assert httpx.get(store.signed_download_url("datasets", small, 60)).status_code == 200
    target = storage.adapter_key(OWNER, "av-1", "adapter_config.json")
    up = store.signed_upload_url("adapters", target, 60)
    assert httpx.put(up, content=b"{}", headers={"Content-Type": "application/json"}).is_success
    store.delete("datasets", [small, big])
    with pytest.raises(NotFound):
        store.get_bytes("datasets", small)

    exchanges = fake.state.exchanges
    silent, errors = _silent_and_errors(exchanges)
    assert errors == []
    assert silent == SILENT
    assert _check_tus(exchanges) >= 4  # create, a lost chunk, HEAD, the rest


def test_storage_refuses_a_publishable_key_for_a_service_side_write(
    fake: FakeSupabaseStorage, tmp_path: Path
) -> None:
    """The publishable key acts as `anon`: row-level security refuses its writes, on the
    REST upload and on the resumable one, and BrightRun names the key to fix. Settings
    refuse it in SUPABASE_SECRET_KEY before that."""
    from pydantic import ValidationError

    wrong = SupabaseBlobStore(fake.url, PUBLISHABLE)
    key = storage.dataset_normalized_key(OWNER, "ds-1")
    with pytest.raises(StorageError, match=r"SUPABASE_SECRET_KEY must be the project's secret"):
        wrong.put_bytes("datasets", key, b"{}\n", "application/x-ndjson")
    src = tmp_path / "big"
    src.write_bytes(b"x" * (TUS_CHUNK + 1))
    with pytest.raises(StorageError, match="row-level security policy"):
        wrong.put_file("datasets", key, src, "application/x-ndjson")
    assert fake.state.meta == {}
    refusals = [ex for ex in fake.state.exchanges if ex.status == 403]
    assert len(refusals) == 2
    assert all(CONTRACT.errors(ex) == [] for ex in refusals if "/object/" in ex.path)
    with pytest.raises(ValidationError, match="publishable key"):
        Settings(
            _env_file=None,
            data_dir=tmp_path / "data",
            storage="supabase",
            supabase_url=fake.url,
            supabase_key=PUBLISHABLE,
        )


def test_signed_urls_stop_at_their_expiry_and_serve_only_their_object(
    store: SupabaseBlobStore, fake: FakeSupabaseStorage
) -> None:
    key = storage.dataset_normalized_key(OWNER, "ds-1")
    other = storage.dataset_normalized_key("user-bob", "ds-9")
    store.put_bytes("datasets", key, b"mine\n", "application/x-ndjson")
    store.put_bytes("datasets", other, b"bob's\n", "application/x-ndjson")
    down = store.signed_download_url("datasets", key, 3)
    moved = httpx.get(down.replace(f"/{OWNER}/ds-1/", "/user-bob/ds-9/"))
    assert moved.status_code == 400 and moved.json()["error"] == "InvalidSignature"
    up = store.signed_upload_url("datasets", key, 60)
    as_download = httpx.get(up.replace("/object/upload/sign/", "/object/sign/"))
    assert as_download.status_code == 400  # an upload token does not download
    time.sleep(4.1)
    stale = httpx.get(down)
    assert stale.status_code == 400 and stale.json()["message"] == "jwt expired"
    assert store.get_bytes("datasets", other) == b"bob's\n"
    refused = [ex for ex in fake.state.exchanges if ex.status == 400]
    assert len(refused) == 3 and all(CONTRACT.errors(ex) == [] for ex in refused)


def test_an_upload_over_the_buckets_size_limit_is_refused_with_413(
    store: SupabaseBlobStore, fake: FakeSupabaseStorage, tmp_path: Path
) -> None:
    fake.state.file_size_limit = 1024
    key = storage.dataset_normalized_key(OWNER, "ds-1")
    with pytest.raises(StorageError, match="file size limit"):
        store.put_bytes("datasets", key, b"x" * 2048, "application/x-ndjson")
    src = tmp_path / "big"
    src.write_bytes(b"x" * (TUS_CHUNK + 1))
    with pytest.raises(StorageError, match="file size limit"):
        store.put_file("datasets", key, src, "application/x-ndjson")
    up = store.signed_upload_url("datasets", key, 60)
    r = httpx.put(up, content=b"x" * 2048)
    assert r.status_code == 413 and r.json() == {
        "statusCode": "413",
        "error": "Payload too large",
        "message": "The object exceeded the maximum allowed size",
    }
    assert fake.state.meta == {}
    too_big = [ex for ex in fake.state.exchanges if ex.status == 413]
    assert len(too_big) == 3
    assert all(CONTRACT.errors(ex) == [] for ex in too_big if "/object/" in ex.path)


def test_a_tus_patch_at_the_wrong_offset_is_refused_with_409_and_writes_nothing(
    fake: FakeSupabaseStorage,
) -> None:
    auth = {"Authorization": f"Bearer {SECRET}", "apikey": SECRET, "Tus-Resumable": "1.0.0"}
    meta = ",".join(
        f"{k} {base64.b64encode(v.encode()).decode()}"
        for k, v in {"bucketName": "datasets", "objectName": "u/ds-1/original"}.items()
    )
    base = f"{fake.url}/storage/v1/upload/resumable"
    created = httpx.post(base, headers={**auth, "Upload-Length": "10", "Upload-Metadata": meta})
    assert created.status_code == 201
    location = httpx.URL(base).join(created.headers["location"])
    chunk = {**auth, "Content-Type": "application/offset+octet-stream"}
    wrong = httpx.patch(location, content=b"12345", headers={**chunk, "Upload-Offset": "5"})
    assert wrong.status_code == 409
    assert httpx.head(location, headers=auth).headers["upload-offset"] == "0"
    no_tus = {k: v for k, v in chunk.items() if k != "Tus-Resumable"}
    assert (
        httpx.patch(location, content=b"1", headers={**no_tus, "Upload-Offset": "0"}).status_code
        == 412
    )
    done = httpx.patch(location, content=b"0123456789", headers={**chunk, "Upload-Offset": "0"})
    assert done.status_code == 204 and done.headers["upload-offset"] == "10"
    assert fake.state.file("datasets", "u/ds-1/original").read_bytes() == b"0123456789"


def test_an_object_path_with_dot_dot_is_refused_by_brightrun_and_by_storage(
    store: SupabaseBlobStore, fake: FakeSupabaseStorage
) -> None:
    with pytest.raises(InvalidInput, match="'..' cannot be part of a storage key"):
        store.put_bytes("datasets", "u/../other/original", b"x", "text/plain")
    assert fake.state.exchanges == []  # refused before anything was sent
    r = httpx.post(
        f"{fake.url}/storage/v1/object/datasets/u/%2E%2E/other/original",
        content=b"x",
        headers={"Authorization": f"Bearer {SECRET}", "apikey": SECRET},
    )
    assert r.status_code == 400 and r.json()["error"] == "InvalidKey"
    assert fake.state.meta == {}
    (ex,) = fake.state.exchanges
    assert CONTRACT.errors(ex) == []
