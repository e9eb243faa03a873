"""`brightrun deploy` held to RunPod's published REST API v2 contract (OpenAPI 3.1, in
../shared/contracts; skipped with the reason where a clone lacks it), and RunPod's
answers that a user meets: problems shown as RunPod sent them, 429 waited out.

What a user would notice: a deploy that sends RunPod anything its contract refuses fails
for every user; an error whose detail is cut off cannot be acted on; a rate limit that
ends a deploy halfway leaves it to be run again by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from cli import app
from core.deploy import RunPodApi, RunPodProblem
from tests.deploy.contract import SKIP_REASON, load_contract
from tests.deploy.fake_runpod import FakeRunPod

KEY = "rpa_FAKEKEY5b1d9e0cDoNotLeak"
IMAGE = "docker.io/acme/brightrun-trainer:0.1.0"
VLLM = ["--with-vllm", "--vllm-model", "Qwen/Qwen2.5-7B-Instruct"]
CONTRACT = load_contract()
needs_contract = pytest.mark.skipif(CONTRACT is None, reason=SKIP_REASON)


@pytest.fixture
def fake():
    f = FakeRunPod(api_key=KEY, contract=CONTRACT).start()
    yield f
    f.stop()
    assert f.violations == []  # every answer the stand-in gave matched the contract


@pytest.fixture
def deploy(data_dir: Path, monkeypatch: pytest.MonkeyPatch, fake: FakeRunPod):
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    monkeypatch.setenv("RUNPOD_REST_URL", fake.rest_url)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["deploy", *args])


@needs_contract
def test_every_request_of_a_full_deploy_matches_the_v2_contract(deploy, fake):
    first = deploy("--image", IMAGE, *VLLM)
    assert first.exit_code == 0, first.output
    update = deploy(
        "--image",
        "docker.io/acme/brightrun-trainer:0.2.0",
        *VLLM,
        "--volume-size",
        "300",
        "--max-workers",
        "4",
        "--gpu",
        "A100_80GB",
        "--min-cuda",
        "12.4",
    )
    assert update.exit_code == 0, update.output
    assert "~ update endpoint brightrun-trainer" in update.output
    writes = len(fake.writes())
    again = deploy(
        "--image",
        "docker.io/acme/brightrun-trainer:0.2.0",
        *VLLM,
        "--volume-size",
        "300",
        "--max-workers",
        "4",
        "--gpu",
        "A100_80GB",
        "--min-cuda",
        "12.4",
    )
    assert again.exit_code == 0, again.output
    assert "Nothing to change" in again.output and len(fake.writes()) == writes

    health = {urlpath(e["requestUrls"]["health"]) for e in fake.endpoints.values()}
    operations = set()
    for r in fake.requests:
        assert r.path.startswith("/v2/") and r.headers["Authorization"] == f"Bearer {KEY}"
        if r.path in health:  # the endpoint's job API, at the URL its requestUrls name
            assert r.method == "GET" and not r.body
            continue
        assert CONTRACT.request_errors(r.method, r.path, r.json()) == [], (r.method, r.path)
        operations.add(CONTRACT.operation(r.method, r.path)[1]["operationId"])
    assert operations == {
        "listNetworkVolumes",
        "createNetworkVolume",
        "updateNetworkVolume",
        "listTemplates",
        "createTemplate",
        "updateTemplate",
        "listEndpoints",
        "createEndpoint",
        "getEndpoint",
        "updateEndpoint",
    }
    env = Path(".env").read_text()
    trainer = next(e for e in fake.endpoints.values() if e["name"] == "brightrun-trainer")
    run_url = trainer["requestUrls"]["run"]
    assert f"GPU_CLUSTER_API_URL={run_url.removesuffix('/run')}\n" in env


def urlpath(url: str) -> str:
    return httpx.URL(url).path


@needs_contract
def test_a_v1_style_body_is_refused_with_the_schemas_own_message(fake):
    v1 = [
        ("POST", "/v2/network-volumes", {"name": "b", "size": 50, "dataCenterId": "EU-RO-1"}),
        (
            "POST",
            "/v2/serverless",
            {
                "name": "b-trainer",
                "templateId": "t1",
                "gpuIds": "AMPERE_80",
                "workersMax": 2,
                "networkVolumeId": "v1",
                "flashBootType": "FLASHBOOT",
                "executionTimeoutMs": 60000,
            },
        ),
        ("PATCH", "/v2/templates/t1", {"imageName": IMAGE, "containerDiskInGb": 100}),
    ]
    with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}) as http:
        for method, path, body in v1:
            resp = http.request(method, f"{fake.url}{path}", json=body)
            assert resp.status_code == 422, resp.text
            assert resp.headers["Content-Type"] == "application/problem+json"
            problem = resp.json()
            assert problem["title"] == "Unprocessable Entity" and problem["status"] == 422
            assert problem["errors"] == CONTRACT.request_errors(method, path, body) != []
    assert fake.writes() and not (fake.volumes or fake.templates or fake.endpoints)
    messages = [json.loads(json.dumps(m)) for m in CONTRACT.request_errors(*v1[0])]
    assert "$: Additional properties are not allowed ('dataCenterId' was unexpected)" in messages
    assert any(
        "Unevaluated properties are not allowed ('containerDiskInGb', 'imageName' were" in m
        for m in CONTRACT.request_errors(*v1[2])
    )


@needs_contract
def test_the_client_shows_the_schemas_message_when_runpod_refuses_a_body(fake):
    with RunPodApi(KEY, fake.rest_url, sleep=lambda s: None) as api:
        with pytest.raises(RunPodProblem) as caught:
            api.request("POST", "/network-volumes", {"name": "b", "size": 5, "dataCenter": "X"})
    text = str(caught.value)
    assert "422 Unprocessable Entity: Request validation failed." in text
    assert "  - $.size: 5 is less than the minimum of 10" in text
    assert caught.value.problem["errors"] == ["$.size: 5 is less than the minimum of 10"]


def test_a_problem_from_runpod_reaches_the_user_intact(deploy, fake):
    detail = "no capacity for ADA_80_PRO, AMPERE_80 in EU-RO-1; try another data center"
    errors = ["gpu.pools: no listed pool has capacity", f"key {KEY} may not create endpoints"]
    fake.fail_next("POST", "/v2/serverless", 400, detail, errors)
    result = deploy("--image", IMAGE)
    assert result.exit_code == 1
    out = result.output
    assert f"POST {fake.rest_url}/serverless: RunPod answered 400 Bad Request: {detail}" in out
    assert "  - gpu.pools: no listed pool has capacity" in out
    assert "  - key **** may not create endpoints" in out  # intact, the key aside
    assert KEY not in out
    assert not Path(".env").exists()
    # what was made stays, and a second run goes on from there
    assert len(fake.volumes) == 1 and len(fake.templates) == 1 and not fake.endpoints
    second = deploy("--image", IMAGE)
    assert second.exit_code == 0, second.output
    assert "= unchanged volume brightrun" in second.output
    assert "+ create endpoint brightrun-trainer" in second.output


def test_a_refused_key_is_shown_with_runpods_reason(deploy, fake, monkeypatch):
    monkeypatch.setenv("RUNPOD_API_KEY", "rpa_WRONGKEY123456789")
    result = deploy("--image", IMAGE)
    assert result.exit_code == 1
    assert "RunPod refused RUNPOD_API_KEY" in result.output
    assert "401 Unauthorized: invalid or missing bearer token" in result.output
    assert "rpa_WRONGKEY123456789" not in result.output


def test_a_rate_limit_is_waited_out_for_as_long_as_retry_after_says(fake):
    slept: list[float] = []
    fake.throttle(2, retry_after=7)
    with RunPodApi(KEY, fake.rest_url, sleep=slept.append) as api:
        assert api.observe().volumes == []
        assert slept == [7, 7]
        fake.throttle(1, retry_after=3)
        api.request("POST", "/network-volumes", {"name": "b", "size": 50, "dataCenter": "EU-RO-1"})
    assert slept == [7, 7, 3]
    assert len(fake.volumes) == 1  # the refused write was sent again, and landed once
    assert [r.method for r in fake.requests].count("POST") == 2


def test_a_rate_limit_longer_than_deploy_waits_is_reported_with_the_wait(fake):
    slept: list[float] = []
    fake.throttle(1, retry_after=1800)
    with RunPodApi(KEY, fake.rest_url, sleep=slept.append) as api:
        with pytest.raises(RunPodProblem) as caught:
            api.observe()
    assert slept == []
    assert "429 Too Many Requests: rate limit exceeded for the minute window" in str(caught.value)
    assert "wait 1800 s (Retry-After)" in str(caught.value)


def test_a_deploy_through_a_rate_limit_finishes(deploy, fake):
    fake.throttle(1, retry_after=1)
    result = deploy("--image", IMAGE)
    assert result.exit_code == 0, result.output
    assert [r.path for r in fake.requests[:2]] == ["/v2/network-volumes"] * 2


@needs_contract
def test_what_deploy_made_can_be_read_and_deleted_through_the_same_client(deploy, fake):
    assert deploy("--image", IMAGE).exit_code == 0
    (eid,), (tid,), (vid,) = fake.endpoints, fake.templates, fake.volumes
    with RunPodApi(KEY, fake.rest_url, sleep=lambda s: None) as api:
        assert api.get_endpoint(eid)["requestUrls"]["run"].endswith(f"/v2/{eid}/run")
        for path in (f"/serverless/{eid}", f"/templates/{tid}", f"/network-volumes/{vid}"):
            assert api.request("DELETE", path) is None  # 204, no body
        observed = api.observe()
    assert (observed.volumes, observed.templates, observed.endpoints) == ([], [], [])


@needs_contract
def test_a_malformed_date_time_or_uri_is_refused(deploy, fake):
    """The document's formats are checked, not only its types: an endpoint answer whose
    `createdAt` is no RFC 3339 date-time, or whose request URL is no URI, is refused like a
    missing field; so is a bill asked for from a date without its time."""
    assert deploy("--image", IMAGE).exit_code == 0
    ((eid, endpoint),) = fake.endpoints.items()

    def errors(body: dict) -> list[str]:
        path = f"/v2/serverless/{eid}"
        return CONTRACT.response_errors("GET", path, 200, "application/json", body, {})

    assert errors(endpoint) == []
    bad_time = {**endpoint, "createdAt": "2026-12-01 00:00"}
    assert errors(bad_time) == ["$.createdAt: '2026-12-01 00:00' is not a 'date-time'"]
    urls = endpoint["requestUrls"]  # one of two shapes: the message names neither field
    bad_urls = {**urls, "run": "not a url"}
    assert errors({**endpoint, "requestUrls": bad_urls}) != []
    assert CONTRACT.schema_errors("QueueBasedRequestUrls", urls) == []
    assert CONTRACT.schema_errors("QueueBasedRequestUrls", bad_urls) == [
        "$.run: 'not a url' is not a 'uri'"
    ]
    query = {"serverlessId": eid, "startTime": "2026-12-01", "endTime": "2026-12-02T00:00:00Z"}
    with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}) as http:
        resp = http.get(f"{fake.url}/v2/billing/serverless", params=query)
    assert resp.status_code == 422, resp.text
    assert resp.json()["errors"] == ["query startTime: $: '2026-12-01' is not a 'date-time'"]
