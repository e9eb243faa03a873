"""Both file stores behave the same through the BlobStore protocol; signed URLs work over
real HTTP on loopback and refuse anything they were not signed for."""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from core.clients import storage
from core.clients.storage import BlobStore, LocalBlobStore, SupabaseBlobStore, make_blob_store
from core.errors import InvalidInput, NotFound
from core.settings import Settings
from local.files import files_router
from tests.state.db_fixtures import settings_for
from tests.state.supabase_fake import TUS_CHUNK, FakeSupabaseStorage

OWNER = "user-alice"


class _Server:
    """uvicorn on a loopback socket in a thread."""

    def __init__(self, app: FastAPI) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture
def local_store(tmp_path: Path) -> Iterator[LocalBlobStore]:
    """A local store whose signed URLs point at a live files router."""
    settings = settings_for(tmp_path / "data")
    store = LocalBlobStore.from_settings(settings)
    app = FastAPI()
    app.include_router(files_router(store, max_upload_bytes=8 * 1024 * 1024))
    with _Server(app) as srv:
        store.public_base_url = srv.url
        yield store


@pytest.fixture
def fake_supabase(tmp_path: Path) -> Iterator[FakeSupabaseStorage]:
    with FakeSupabaseStorage(tmp_path / "supabase") as fake:
        yield fake


@pytest.fixture
def supabase_store(fake_supabase: FakeSupabaseStorage) -> SupabaseBlobStore:
    return SupabaseBlobStore(fake_supabase.url, fake_supabase.state.service_key)


@pytest.fixture(params=["local", "supabase"])
def store(request: pytest.FixtureRequest) -> BlobStore:
    return request.getfixturevalue(f"{request.param}_store")


def test_round_trip_list_and_delete(store: BlobStore, tmp_path: Path):
    src = tmp_path / "rows.jsonl"
    src.write_bytes(b'{"a": 1}\n' * 1000)
    key = storage.dataset_original_key(OWNER, "ds-1")
    assert store.put_file("datasets", key, src, "application/x-ndjson") == src.stat().st_size
    store.put_bytes(
        "datasets", storage.dataset_normalized_key(OWNER, "ds-1"), b"{}\n", "application/x-ndjson"
    )
    store.put_bytes(
        "adapters", storage.job_key(OWNER, "job-1", "events.jsonl"), b"x", "application/x-ndjson"
    )
    assert store.exists("datasets", key)
    assert not store.exists("datasets", storage.dataset_original_key(OWNER, "ds-2"))
    with store.open("datasets", key) as f:
        assert f.read() == src.read_bytes()
    assert store.get_bytes("datasets", key) == src.read_bytes()
    listed = store.list("datasets", f"{OWNER}/")
    assert [b.key for b in listed] == [f"{OWNER}/ds-1/normalized.jsonl", f"{OWNER}/ds-1/original"]
    assert listed[1].size == src.stat().st_size
    assert listed[1].content_type == "application/x-ndjson"
    assert store.list("datasets", "user-bob/") == []
    # Replacing keeps one object with the new content.
    store.put_bytes("datasets", key, b"new", "application/x-ndjson")
    assert store.get_bytes("datasets", key) == b"new"
    dest = tmp_path / "copy"
    assert store.download_to("datasets", key, dest) == 3
    assert store.delete_prefix("datasets", f"{OWNER}/ds-1/") == 2
    assert store.list("datasets") == []
    assert [b.key for b in store.list("adapters")] == [f"{OWNER}/jobs/job-1/events.jsonl"]
    with pytest.raises(NotFound):
        store.get_bytes("datasets", key)
    store.delete("datasets", [key])  # already gone: fine


@pytest.mark.parametrize(
    "bad",
    [
        "../etc/passwd",
        "/abs/path",
        "a/../../b",
        "my data.csv",
        "a//b",
        "",
        ".hidden",
        "x/\x00y",
        "ü/name",
    ],
)
def test_keys_that_could_escape_or_come_from_users_are_refused(
    store: BlobStore, bad: str, tmp_path: Path
):
    with pytest.raises(InvalidInput):
        store.put_bytes("datasets", bad, b"x", "text/plain")
    with pytest.raises(InvalidInput):
        store.signed_upload_url("datasets", bad)
    assert not any(p.name == "passwd" for p in tmp_path.rglob("*"))


def test_key_builders_take_ids_not_names():
    assert storage.dataset_original_key("u1", "ds-abc") == "u1/ds-abc/original"
    assert (
        storage.adapter_key("u1", "av-1", "adapter_model.safetensors")
        == "u1/versions/av-1/adapter_model.safetensors"
    )
    assert (
        storage.checkpoint_key("u1", "job-1", 400, "adapter_config.json")
        == "u1/jobs/job-1/checkpoints/400/adapter_config.json"
    )
    for bad in ("../u2", "u 1", "u/1", ""):
        with pytest.raises(InvalidInput):
            storage.dataset_original_key(bad, "ds-1")
    with pytest.raises(InvalidInput):
        storage.job_key("u1", "job-1", "../../other/events.jsonl")
    with pytest.raises(InvalidInput):
        storage.check_bucket("secrets")


def test_signed_urls_download_and_upload_over_http(store: BlobStore):
    key = storage.dataset_normalized_key(OWNER, "ds-1")
    store.put_bytes("datasets", key, b'{"messages": []}\n', "application/x-ndjson")
    r = httpx.get(store.signed_download_url("datasets", key, 60))
    assert r.status_code == 200 and r.content == b'{"messages": []}\n'
    target = storage.adapter_key(OWNER, "av-1", "adapter_model.safetensors")
    up = store.signed_upload_url("adapters", target, 60)
    r = httpx.put(
        up, content=b"weights" * 1000, headers={"Content-Type": "application/octet-stream"}
    )
    assert r.status_code == 200, r.text
    assert store.get_bytes("adapters", target) == b"weights" * 1000
    # The same upload URL may be used again (a retried upload replaces the object).
    assert httpx.put(up, content=b"v2").status_code == 200
    assert store.get_bytes("adapters", target) == b"v2"


def test_local_signed_urls_refuse_what_they_were_not_signed_for(
    local_store: LocalBlobStore, monkeypatch
):
    key = storage.adapter_key(OWNER, "av-1", "adapter_model.safetensors")
    other = storage.adapter_key("user-bob", "av-9", "adapter_model.safetensors")
    local_store.put_bytes("adapters", other, b"bob's", "application/octet-stream")
    up = local_store.signed_upload_url("adapters", key, 60)
    # Its own key only: the signature does not carry over to Bob's object.
    forged = up.replace("/user-alice/versions/av-1/", "/user-bob/versions/av-9/")
    assert httpx.put(forged, content=b"overwrite").status_code == 403
    assert local_store.get_bytes("adapters", other) == b"bob's"
    # An upload URL does not download, a download URL does not upload.
    assert httpx.get(up).status_code == 403
    local_store.put_bytes("adapters", key, b"mine", "application/octet-stream")
    down = local_store.signed_download_url("adapters", key, 60)
    assert httpx.put(down, content=b"x").status_code == 403
    assert httpx.get(down.replace("sig=", "sig=0")).status_code == 403
    assert httpx.get(down.split("?")[0]).status_code == 403
    # Expired links stop working.
    real_time = time.time
    monkeypatch.setattr(storage.local.time, "time", lambda: real_time() - 3600)
    stale = local_store.signed_download_url("adapters", key, 60)
    monkeypatch.undo()
    r = httpx.get(stale)
    assert r.status_code == 403 and "expired" in r.json()["detail"]
    assert local_store.get_bytes("adapters", key) == b"mine"


def test_local_upload_over_the_limit_leaves_nothing(local_store: LocalBlobStore):
    key = storage.job_key(OWNER, "job-1", "result.json")
    up = local_store.signed_upload_url("adapters", key, 60)

    def body() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while streaming
        for _ in range(9):
            yield b"x" * (1024 * 1024)

    assert httpx.put(up, content=body()).status_code == 413
    assert not local_store.exists("adapters", key)
    assert not any(p.name.endswith(".part") for p in local_store.root.rglob("*"))


def test_signing_key_is_generated_once_and_private(tmp_path: Path):
    settings = settings_for(tmp_path / "data")
    k1 = storage.load_signing_key(settings)
    path = settings.data_dir / "url_signing.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert storage.load_signing_key(settings) == k1
    # URLs signed by one process verify in another (same data folder).
    a = LocalBlobStore.from_settings(settings)
    b = LocalBlobStore.from_settings(settings)
    url = a.signed_download_url("datasets", "u/ds-1/original", 60)
    exp = int(url.split("exp=")[1].split("&")[0])
    sig = url.split("sig=")[1]
    b.verify("GET", "datasets", "u/ds-1/original", exp, sig)
    with pytest.raises(storage.SignatureError):
        b.verify("GET", "datasets", "u/ds-1/original", exp, sig, now=exp + 1)


def test_large_files_go_through_resumable_upload_in_6mb_chunks(
    supabase_store: SupabaseBlobStore, fake_supabase: FakeSupabaseStorage, tmp_path: Path
):
    size = 2 * TUS_CHUNK + 12345
    src = tmp_path / "big.jsonl"
    with open(src, "wb") as f:
        for i in range(size // 16 + 1):
            f.write(f"{i:015d}\n".encode())
        f.truncate(size)
    fake_supabase.state.fail_patches = 1  # the first chunk is lost halfway: resume from HEAD
    key = storage.dataset_original_key(OWNER, "ds-big")
    assert supabase_store.put_file("datasets", key, src, "application/x-ndjson") == size
    assert (fake_supabase.state.root / "datasets" / key).read_bytes() == src.read_bytes()
    patches = [r for r in fake_supabase.state.requests if r[0] == "PATCH"]
    assert patches and max(r[3] for r in patches) <= TUS_CHUNK
    assert any(r[0] == "HEAD" for r in fake_supabase.state.requests)
    assert not any(
        r[0] == "POST" and "/object/datasets" in r[1] for r in fake_supabase.state.requests
    )
    info = supabase_store.list("datasets", f"{OWNER}/")
    assert info == [storage.BlobInfo(key, size, "application/x-ndjson")]
    with supabase_store.open("datasets", key) as f:
        first = f.read(16)
    assert first == b"000000000000000\n"


def test_supabase_uploads_carry_the_content_type_not_text_plain(
    supabase_store: SupabaseBlobStore, fake_supabase: FakeSupabaseStorage
):
    key = storage.adapter_key(OWNER, "av-1", "adapter_config.json")
    supabase_store.put_bytes("adapters", key, b"{}", "application/json")
    assert fake_supabase.state.meta[("adapters", key)]["mimetype"] == "application/json"


def test_a_signed_upload_overwrites_only_when_signed_with_upsert(
    supabase_store: SupabaseBlobStore, fake_supabase: FakeSupabaseStorage
):
    """Storage decides at signing time whether a signed upload may replace an object (the
    `x-upsert` sent when the URL was made), not from the uploader's headers. BrightRun signs
    its worker URLs with upsert, so a retried upload replaces the object; a URL signed
    without it uploads once and then refuses, whatever header the uploader sends."""
    key = storage.adapter_key(OWNER, "av-1", "events.jsonl")
    headers = {
        "authorization": f"Bearer {fake_supabase.state.service_key}",
        "apikey": fake_supabase.state.service_key,
    }
    signed = httpx.post(
        f"{fake_supabase.url}/storage/v1/object/upload/sign/adapters/{key}", headers=headers
    )
    once = f"{fake_supabase.url}/storage/v1{signed.json()['url']}"
    assert httpx.put(once, content=b"first").status_code == 200
    again = httpx.put(once, content=b"second", headers={"x-upsert": "true"})
    assert again.status_code == 409 and again.json()["error"] == "Duplicate"
    assert supabase_store.get_bytes("adapters", key) == b"first"  # nothing stored was lost
    up = supabase_store.signed_upload_url("adapters", key, 60)
    assert httpx.put(up, content=b"retried").status_code == 200
    assert supabase_store.get_bytes("adapters", key) == b"retried"


def test_supabase_store_refuses_with_a_wrong_key(fake_supabase: FakeSupabaseStorage):
    bad = SupabaseBlobStore(fake_supabase.url, "not-the-key")
    with pytest.raises(storage.StorageError):
        bad.put_bytes("datasets", "u/ds-1/original", b"x", "text/plain")
    assert "not-the-key" not in repr(bad)


def test_make_blob_store_follows_settings(tmp_path: Path, fake_supabase: FakeSupabaseStorage):
    assert isinstance(make_blob_store(settings_for(tmp_path / "d")), LocalBlobStore)
    s = Settings(
        _env_file=None,
        data_dir=tmp_path / "d",
        storage="supabase",
        supabase_url=fake_supabase.url,
        supabase_key=fake_supabase.state.service_key,
    )
    st = make_blob_store(s)
    assert isinstance(st, SupabaseBlobStore)
    st.put_bytes("datasets", "u/ds-1/original", b"ok", "text/csv")
    assert st.get_bytes("datasets", "u/ds-1/original") == b"ok"


@pytest.mark.live
@pytest.mark.skipif(
    not os.environ.get("SUPABASE_URL"), reason="SUPABASE_URL not set: live Supabase test skipped"
)
def test_live_supabase_round_trip(tmp_path: Path):
    from core.settings import load_settings

    settings = load_settings(storage="supabase")
    st = SupabaseBlobStore.from_settings(settings)
    key = storage.job_key("brightrun-live-test", "job-" + os.urandom(4).hex(), "events.jsonl")
    try:
        st.put_bytes("adapters", key, b'{"seq": 0}\n', "application/x-ndjson")
        assert httpx.get(st.signed_download_url("adapters", key, 60)).content == b'{"seq": 0}\n'
        up = st.signed_upload_url("adapters", key, 60)
        assert (
            httpx.put(
                up, content=b"v2", headers={"Content-Type": "application/x-ndjson"}
            ).status_code
            == 200
        )
        assert st.get_bytes("adapters", key) == b"v2"
    finally:
        st.delete("adapters", [key])


def _s3_store(fake: FakeSupabaseStorage) -> SupabaseBlobStore:
    st = fake.state
    access = storage.S3Access(
        f"{fake.url}/storage/v1/s3", st.region, st.s3_access_key_id, st.s3_secret
    )
    return SupabaseBlobStore(fake.url, st.service_key, s3=access)


def test_supabase_with_s3_keys_presigns_urls_for_the_lifetime_asked(
    fake_supabase: FakeSupabaseStorage, supabase_store: SupabaseBlobStore, tmp_path: Path
):
    from urllib.parse import parse_qs, urlsplit

    from trainer.output import put_file

    assert supabase_store.max_upload_url_s == storage.SUPABASE_UPLOAD_URL_MAX_S
    store = _s3_store(fake_supabase)
    assert store.max_upload_url_s == storage.S3_PRESIGN_MAX_S == 7 * 24 * 3600
    key = storage.job_key(OWNER, "job-1", "result.json")
    five_days = 5 * 24 * 3600
    up = store.signed_upload_url("adapters", key, five_days)
    q = parse_qs(urlsplit(up).query)
    assert q["X-Amz-Expires"] == [str(five_days)]
    assert q["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and q["X-Amz-SignedHeaders"] == ["host"]
    assert q["X-Amz-Credential"][0].startswith(fake_supabase.state.s3_access_key_id + "/")
    assert fake_supabase.state.s3_secret not in up and fake_supabase.state.service_key not in up
    # The worker's plain PUT stores the object; the store then reads it over REST.
    src = tmp_path / "result.json"
    src.write_text('{"ok": true}')
    put_file(up, src)
    assert store.get_bytes("adapters", key) == b'{"ok": true}'
    assert fake_supabase.state.meta[("adapters", key)]["mimetype"] == "application/json"
    assert fake_supabase.state.s3_requests[-1]["X-Amz-Expires"] == str(five_days)
    down = store.signed_download_url("adapters", key, 60)
    assert parse_qs(urlsplit(down).query)["X-Amz-Expires"] == ["60"]
    assert httpx.get(down).content == b'{"ok": true}'
    # A URL signs one method, one object and one lifetime.
    other = storage.job_key("user-bob", "job-9", "result.json")
    assert (
        httpx.put(
            up.replace(f"/{OWNER}/jobs/job-1/", "/user-bob/jobs/job-9/"), content=b"x"
        ).status_code
        == 403
    )
    assert not fake_supabase.state.meta.get(("adapters", other))
    longer = up.replace(f"X-Amz-Expires={five_days}", f"X-Amz-Expires={five_days + 3600}")
    assert httpx.put(longer, content=b"x").status_code == 403
    assert httpx.get(up).status_code == 403
    assert httpx.put(down, content=b"x").status_code == 403
    assert store.get_bytes("adapters", key) == b'{"ok": true}'
    # Nothing longer than SigV4 allows; the 2-hour store refuses rather than cutting.
    with pytest.raises(InvalidInput):
        store.signed_upload_url("adapters", key, storage.S3_PRESIGN_MAX_S + 1)
    with pytest.raises(InvalidInput, match="SUPABASE_S3_ACCESS_KEY_ID"):
        supabase_store.signed_upload_url("adapters", key, five_days)


def test_s3_settings_build_the_presigning_store(tmp_path: Path, fake_supabase: FakeSupabaseStorage):
    from pydantic import ValidationError

    st = fake_supabase.state
    base = {
        "_env_file": None,
        "data_dir": tmp_path / "d",
        "storage": "supabase",
        "supabase_url": fake_supabase.url,
        "supabase_key": st.service_key,
    }
    plain = Settings(**base)
    assert storage.upload_url_limit_s(plain) == make_blob_store(plain).max_upload_url_s == 7200
    s3 = Settings(
        **base,
        supabase_s3_access_key_id=st.s3_access_key_id,
        supabase_s3_secret_access_key=st.s3_secret,
        supabase_s3_region=st.region,
    )
    assert s3.supabase_s3_url == f"{fake_supabase.url}/storage/v1/s3"
    assert storage.upload_url_limit_s(s3) == make_blob_store(s3).max_upload_url_s == 604800
    assert (
        st.s3_secret not in repr(make_blob_store(s3))
        and s3.public_view()["supabase_s3_secret_access_key"] == "set"
    )
    up = make_blob_store(s3).signed_upload_url(
        "adapters", "u/jobs/job-1/events.jsonl", 3 * 24 * 3600
    )
    assert httpx.put(up, content=b"{}\n").status_code == 200
    assert storage.upload_url_limit_s(settings_for(tmp_path / "l")) is None
    with pytest.raises(ValidationError, match="SUPABASE_S3_SECRET_ACCESS_KEY"):
        Settings(**base, supabase_s3_access_key_id="id-only", supabase_s3_region="r")
