"""Stored files are private; only short-lived signed URLs leave the server, each for one
object and one method. A job's payload carries URLs for the owner's own objects only,
with the lifetimes docs/security.md states; an adapter upload URL writes only its object."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from core import jobs, planner
from core.clients.storage import (
    DOWNLOAD_URL_TTL_S,
    SUPABASE_UPLOAD_URL_MAX_S,
    UPLOAD_URL_TTL_S,
    LocalBlobStore,
    SignatureError,
    SupabaseBlobStore,
    adapter_key,
)
from core.errors import InvalidInput
from core.jobs import QUEUE_ALLOWANCE_S, version_id_for
from local.files import files_router
from tests.jobs.runpod_fake import RunPodFake
from tests.security.conftest import World

FIGURES: dict[str, int] = {}


def _key(url: str) -> tuple[str, str, int]:
    """(bucket, key, exp) of a local signed URL."""
    parts = urlsplit(url)
    _, files, bucket, key = parts.path.split("/", 3)
    assert files == "files"
    return bucket, unquote(key), int(parse_qs(parts.query)["exp"][0])


@pytest.fixture(scope="module")
def sent(world: World, runpod: tuple[RunPodFake, str]) -> dict[str, Any]:
    fake, url = runpod
    settings = world.settings.model_copy(
        update={"gpu_cluster_api_url": url, "gpu_cluster_api_key": "fake-key"}
    )
    before = time.time()
    job = jobs.submit(
        world.alice,
        settings,
        dataset_id=world.ds_alice,
        model="Qwen/Qwen2.5-0.5B-Instruct",
        training={"max_steps": 5},
        budget_usd=2.0,
    )
    payload = fake.jobs[job.runpod_job_id].input
    jobs.cancel(world.alice, settings, job.id)
    return {"job": job, "payload": payload, "sent_at": before, "settings": settings}


def test_a_job_payload_carries_urls_for_the_owners_own_objects_only(
    world: World, sent: dict[str, Any]
) -> None:
    job, payload = sent["job"], sent["payload"]
    owner = world.alice.user_id
    bucket, key, _ = _key(payload["data"]["train_url"])
    assert (bucket, key) == ("datasets", f"{owner}/{world.ds_alice}/normalized.jsonl")
    if payload["data"].get("eval_url"):
        assert _key(payload["data"]["eval_url"])[1] == f"{owner}/{world.ds_alice}/eval.jsonl"
    vid = version_id_for(job.id)
    allowed = {f"{owner}/versions/{vid}/", f"{owner}/jobs/{job.id}/"}
    uploads = payload["output"]["upload_urls"]
    assert {
        "adapter_model.safetensors",
        "adapter_config.json",
        "events.jsonl",
        "result.json",
    } <= set(uploads)
    for name, url in uploads.items():
        bucket, key, _ = _key(url)
        assert bucket == "adapters" and any(key == p + name for p in allowed), (name, key)
    # The adapter's folder on the shared volume is per job, never just the adapter's name
    # (two users' "support-bot" would overwrite each other there).
    assert payload["output"]["adapter_name"] == f"{job.adapter_name}-{job.id.removeprefix('job-')}"


def test_signed_url_lifetimes(sent: dict[str, Any]) -> None:
    payload, t0 = sent["payload"], sent["sent_at"]
    _, _, exp = _key(payload["data"]["train_url"])
    assert DOWNLOAD_URL_TTL_S - 5 <= exp - t0 <= DOWNLOAD_URL_TTL_S + 60
    rate = planner.rate_per_second(sent["settings"].gpu_type, sent["settings"].price_tier)
    budget_s = 2.0 / rate
    want = min(jobs.MAX_TTL_S, max(UPLOAD_URL_TTL_S, QUEUE_ALLOWANCE_S + budget_s + 3600))
    for url in payload["output"]["upload_urls"].values():
        assert want - 5 <= _key(url)[2] - t0 <= want + 60
    FIGURES["signed URLs: dataset download lifetime (s)"] = DOWNLOAD_URL_TTL_S
    FIGURES["signed URLs: upload lifetime for a $2 job (s)"] = int(want)


def test_an_upload_url_writes_only_its_own_object(world: World, sent: dict[str, Any]) -> None:
    store = LocalBlobStore.from_settings(world.settings)
    app = FastAPI()
    app.include_router(files_router(store))
    http = TestClient(app)
    owner = world.alice.user_id
    url = sent["payload"]["output"]["upload_urls"]["adapter_model.safetensors"]
    parts = urlsplit(url)
    query = parts.query
    bucket, key, exp = _key(url)
    other_version = adapter_key(
        owner, world.version, "adapter_model.safetensors"
    )  # an existing version
    bobs = (
        f"{world.bob.user_id}/versions/{version_id_for(sent['job'].id)}/adapter_model.safetensors"
    )
    before = {b.key: b.size for b in store.list("adapters")}

    tampered = [
        ("another version's file", "PUT", f"/files/adapters/{other_version}?{query}"),
        ("another user's folder", "PUT", f"/files/adapters/{bobs}?{query}"),
        ("another file name", "PUT", f"/files/adapters/{key.rsplit('/', 1)[0]}/evil.py?{query}"),
        ("path traversal", "PUT", f"/files/adapters/{key}/../../../{owner}/x?{query}"),
        ("encoded traversal", "PUT", f"/files/adapters/{key.replace('/', '%2F')}%2F..%2Fx?{query}"),
        ("the other bucket", "PUT", f"/files/datasets/{key}?{query}"),
        ("read with an upload URL", "GET", f"{parts.path}?{query}"),
        ("later expiry", "PUT", f"{parts.path}?exp={exp + 3600}&sig={parse_qs(query)['sig'][0]}"),
        ("no signature", "PUT", f"{parts.path}?exp={exp}"),
        ("no query", "GET", f"/files/datasets/{owner}/{world.ds_alice}/normalized.jsonl"),
    ]
    for what, method, path in tampered:
        r = http.request(method, path, content=b"not yours")
        assert r.status_code in (403, 404), (what, r.status_code)
    assert {b.key: b.size for b in store.list("adapters")} == before  # nothing was written
    assert not list(Path(world.settings.data_dir).rglob("x")) and not list(
        Path(world.settings.data_dir).rglob("evil.py")
    )

    r = http.put(f"{parts.path}?{query}", content=b"adapter bytes")
    assert r.status_code == 200 and store.get_bytes(bucket, key) == b"adapter bytes"
    with pytest.raises(SignatureError, match="expired"):  # and once expired, not even that
        store.verify("PUT", bucket, key, exp, parse_qs(query)["sig"][0], now=exp + 1)
    FIGURES["signed URLs: tampered or misused URLs refused"] = len(tampered) + 1


def test_supabase_signed_urls_are_per_object_and_short_lived(tmp_path: Path) -> None:
    from tests.state.supabase_fake import FakeSupabaseStorage

    with FakeSupabaseStorage(tmp_path / "supabase") as fake:
        store = SupabaseBlobStore(fake.url, fake.state.service_key)
        store.put_bytes("datasets", "u1/ds-1/normalized.jsonl", b"{}\n", "application/x-ndjson")
        t0 = time.time()
        down = store.signed_download_url("datasets", "u1/ds-1/normalized.jsonl")
        up = store.signed_upload_url(
            "adapters", "u1/versions/av-1/adapter_model.safetensors", SUPABASE_UPLOAD_URL_MAX_S
        )
        # Supabase fixes its upload URLs at 2 h: a longer lifetime is refused, never cut.
        with pytest.raises(InvalidInput, match="SUPABASE_S3_ACCESS_KEY_ID"):
            store.signed_upload_url(
                "adapters", "u1/versions/av-1/adapter_model.safetensors", UPLOAD_URL_TTL_S
            )
        assert httpx.get(down).content == b"{}\n"
        token = parse_qs(urlsplit(down).query)["token"][0]
        import base64
        import json

        claims = json.loads(base64.urlsafe_b64decode(token.rsplit(".", 1)[0]))
        assert DOWNLOAD_URL_TTL_S - 5 <= claims["exp"] - t0 <= DOWNLOAD_URL_TTL_S + 5
        # The upload token names its object: the same token on another path is refused.
        other = up.replace("u1/versions/av-1/", "u2/versions/av-9/")
        assert httpx.put(other, content=b"x").status_code >= 400
        assert httpx.put(up, content=b"ok").status_code == 200
        # Without a token or key nothing is served.
        plain = f"{fake.url}/storage/v1/object/datasets/u1/ds-1/normalized.jsonl"
        assert httpx.get(plain).status_code >= 400
        assert "fake-service-key" not in down + up  # the service key never leaves the server
