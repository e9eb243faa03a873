"""`brightrun deploy` against a loopback stand-in for RunPod's REST API v2
(tests/deploy/fake_runpod.py), strict to RunPod's published contract where it is present.

What a user would notice: a dry run shows every request and changes nothing; a real run
creates the volume, templates and endpoints with the settings asked for, checks
/health and writes the URLs into .env without touching other lines; a second run
changes nothing and says so; the account key and the Hugging Face token never appear
anywhere they should not.
"""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from core.deploy import (
    DeployConfig,
    DeployError,
    RunPodApi,
    apply_plan,
    gpu_pools,
    make_plan,
    update_env_file,
)
from tests.deploy.contract import load_contract
from tests.deploy.fake_runpod import FakeRunPod

KEY = "rpa_FAKEKEY5b1d9e0cDoNotLeak"
HF_TOKEN = "hf_FakeToken7c2eDoNotLeak0123456789ab"
IMAGE = "docker.io/acme/brightrun-trainer:0.1.0"
VLLM = ["--with-vllm", "--vllm-model", "Qwen/Qwen2.5-7B-Instruct"]
TRAINER_ENV = {
    "MODEL_CACHE_DIR": "/runpod-volume/models",
    "CHECKPOINT_DIR": "/runpod-volume/checkpoints",
    "ADAPTER_DIR": "/runpod-volume/adapters",
    "HF_HOME": "/runpod-volume/huggingface",
    "HF_TOKEN": "{{ RUNPOD_SECRET_hf_token }}",
}
ENV_BEFORE = """\
# my BrightRun settings
DATABASE_URL=postgresql+psycopg://postgres.ref:pw@db.example.com:5432/postgres
SUPABASE_URL=https://ref.supabase.co
SUPABASE_KEY=sb_secret_keep_me
GPU_CLUSTER_API_URL=http://127.0.0.1:8300/v2/local

export STORAGE=supabase
"""


@pytest.fixture
def fake():
    """The stand-in; with the contract at hand it refuses what the contract refuses, and
    every answer it gave must have matched the contract too."""
    f = FakeRunPod(api_key=KEY, contract=load_contract()).start()
    yield f
    f.stop()
    assert f.violations == []


@pytest.fixture
def deploy(data_dir: Path, monkeypatch: pytest.MonkeyPatch, fake: FakeRunPod):
    """Run `brightrun deploy --image IMAGE ARGS...` in a fresh folder; returns the result."""
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    monkeypatch.setenv("RUNPOD_REST_URL", fake.rest_url)
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, ["deploy", "--image", IMAGE, *args])

    return run


def _one(items: dict, **match) -> dict:
    found = [v for v in items.values() if all(v.get(k) == x for k, x in match.items())]
    assert len(found) == 1, (match, list(items.values()))
    return found[0]


def test_dry_run_prints_every_call_with_the_key_masked_and_changes_nothing(deploy, fake):
    result = deploy("--dry-run", *VLLM)
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"POST {fake.rest_url}/network-volumes" in out
    assert out.count(f"POST {fake.rest_url}/templates") == 2  # trainer and vLLM
    assert out.count(f"POST {fake.rest_url}/serverless") == 2
    # the execution timeout goes in each create body
    assert out.count('"timeout": 86400000') == 2
    assert "GET <requestUrls.health of endpoint brightrun-trainer>" in out
    assert "GET <requestUrls.health of endpoint brightrun-vllm>" in out
    assert "GPU_CLUSTER_API_URL=<requestUrls.run of endpoint brightrun-trainer, less /run>" in out
    assert "INFERENCE_URL=<requestUrls.run of endpoint brightrun-vllm, less /run>/openai/v1" in out
    assert '"HF_TOKEN": "{{ RUNPOD_SECRET_hf_token }}"' in out
    assert out.count("Authorization: Bearer ****") >= 7
    assert KEY not in out and HF_TOKEN not in out
    # it read the account, and wrote nothing
    assert fake.requests, "a dry run with a key reads the account"
    assert fake.writes() == []
    assert not (fake.volumes or fake.templates or fake.endpoints)
    assert not Path(".env").exists()


def test_dry_run_without_a_key_plans_from_nothing_and_calls_nobody(deploy, fake, monkeypatch):
    monkeypatch.delenv("RUNPOD_API_KEY")
    result = deploy("--dry-run")
    assert result.exit_code == 0, result.output
    assert "RUNPOD_API_KEY is not set" in result.output
    assert "+ create endpoint brightrun-trainer" in result.output
    assert fake.requests == []


def test_apply_without_a_key_names_the_setting(deploy, fake, monkeypatch):
    monkeypatch.delenv("RUNPOD_API_KEY")
    result = deploy()
    assert result.exit_code == 1
    assert "RUNPOD_API_KEY is not set" in result.output
    assert fake.requests == []


def test_apply_creates_everything_checks_health_and_writes_env(deploy, fake):
    env = Path(".env")
    env.write_text(ENV_BEFORE)
    env.chmod(0o640)
    result = deploy(
        *VLLM,
        "--gpu",
        "H100_80GB_SXM",
        "--gpu",
        "H100_80GB_PCIE",
        "--gpu",
        "A100_80GB",
        "--max-workers",
        "3",
        "--idle-timeout",
        "7",
        "--volume-size",
        "150",
        "--data-center",
        "US-KS-2",
    )
    assert result.exit_code == 0, result.output

    vol = _one(fake.volumes, name="brightrun")
    assert (vol["size"], vol["dataCenter"]) == (150, "US-KS-2")

    trainer_t = _one(fake.templates, name="brightrun-trainer")
    assert trainer_t["image"] == IMAGE
    assert trainer_t["serverless"] is True and trainer_t["disk"] == 100
    assert trainer_t["env"] == TRAINER_ENV
    vllm_t = _one(fake.templates, name="brightrun-vllm")
    assert vllm_t["env"]["MODEL_NAME"] == "Qwen/Qwen2.5-7B-Instruct"
    assert vllm_t["env"]["VLLM_PLUGINS"] == "lora_filesystem_resolver"
    assert vllm_t["env"]["VLLM_LORA_RESOLVER_CACHE_DIR"] == TRAINER_ENV["ADAPTER_DIR"]
    assert vllm_t["env"]["ENABLE_LORA"] == "true" and vllm_t["env"]["MAX_LORA_RANK"] == "64"
    # Qwen writes hermes-style <tool_call> blocks: served as OpenAI tool_calls.
    assert vllm_t["env"]["ENABLE_AUTO_TOOL_CHOICE"] == "true"
    assert vllm_t["env"]["TOOL_CALL_PARSER"] == "hermes"

    trainer = _one(fake.endpoints, name="brightrun-trainer")
    assert (trainer["image"], trainer["env"], trainer["disk"]) == (IMAGE, TRAINER_ENV, 100)
    assert trainer["type"] == "QUEUE"
    assert trainer["networkVolumes"] == [vol["id"]]
    assert trainer["dataCenterIds"] == ["US-KS-2"]  # workers run where the volume is
    assert trainer["gpu"]["pools"] == ["ADA_80_PRO", "AMPERE_80"]  # H100s share a pool; in order
    assert trainer["workers"] == {"min": 0, "max": 3, "idleTimeout": 7}
    assert trainer["timeout"] == 86_400_000
    assert trainer["flashboot"] == "FLASHBOOT"
    vllm = _one(fake.endpoints, name="brightrun-vllm")
    assert vllm["image"] == vllm_t["image"] and vllm["networkVolumes"] == [vol["id"]]

    health = {r.path for r in fake.requests if r.path.endswith("/health")}
    assert health == {f"/v2/{trainer['id']}/health", f"/v2/{vllm['id']}/health"}

    lines = env.read_text().splitlines()
    before = ENV_BEFORE.splitlines()
    assert lines[4] == f"GPU_CLUSTER_API_URL={fake.url}/v2/{trainer['id']}"  # in place
    assert lines[:4] == before[:4] and lines[5:7] == before[5:7]  # the rest as it was
    assert lines[-4:] == [
        f"INFERENCE_URL={fake.url}/v2/{vllm['id']}/openai/v1",
        # what the pools may run a job on: a budget's time limit is set at the dearest
        'ENDPOINT_GPU_TYPES=["A100_80GB","H100_80GB_PCIE","H100_80GB_SXM"]',
        "INFERENCE_LORA_LOADING=resolver",  # workers come and go: adapters from the volume
        "INFERENCE_ADAPTERS_DIR=/runpod-volume/adapters",
    ]
    assert stat.S_IMODE(env.stat().st_mode) == 0o640
    assert KEY not in env.read_text() and HF_TOKEN not in env.read_text()
    assert "GPU_CLUSTER_API_KEY" in result.output  # told what is left to set


def test_second_apply_changes_nothing_and_says_so(deploy, fake):
    first = deploy(*VLLM)
    assert first.exit_code == 0, first.output
    ids = (set(fake.volumes), set(fake.templates), set(fake.endpoints))
    writes = len(fake.writes())
    env = Path(".env").read_text()

    second = deploy(*VLLM)
    assert second.exit_code == 0, second.output
    assert len(fake.writes()) == writes, [r.body for r in fake.writes()[writes:]]
    assert (set(fake.volumes), set(fake.templates), set(fake.endpoints)) == ids
    assert "Nothing to change" in second.output
    assert "already points at these endpoints" in second.output
    assert "created" not in second.output and "updated" not in second.output
    assert Path(".env").read_text() == env


def test_changed_options_update_in_place_and_keep_the_rest(deploy, fake):
    assert deploy().exit_code == 0
    endpoint_id, template_id = next(iter(fake.endpoints)), next(iter(fake.templates))
    writes = len(fake.writes())

    result = deploy("--max-workers", "5", "--image", "docker.io/acme/brightrun-trainer:0.2.0")
    assert result.exit_code == 0, result.output
    assert "~ update template brightrun-trainer" in result.output
    assert "~ update endpoint brightrun-trainer" in result.output
    assert "workers.max: 2 -> 5" in result.output
    assert set(fake.endpoints) == {endpoint_id} and set(fake.templates) == {template_id}
    ep, tpl = fake.endpoints[endpoint_id], fake.templates[template_id]
    assert ep["workers"]["max"] == 5
    assert tpl["image"] == "docker.io/acme/brightrun-trainer:0.2.0"
    assert tpl["env"] == TRAINER_ENV
    # the endpoint runs its own copy of the container: the new image goes to it as well
    assert ep["image"] == "docker.io/acme/brightrun-trainer:0.2.0" and ep["env"] == TRAINER_ENV
    # a PATCH names only what changed: everything else is as it was
    assert ep["timeout"] == 86_400_000 and ep["flashboot"] == "FLASHBOOT"
    assert ep["networkVolumes"] == [next(iter(fake.volumes))]
    assert ep["gpu"]["pools"] == ["ADA_80_PRO", "AMPERE_80"]
    new = fake.writes()[writes:]
    assert [(r.method, r.path) for r in new] == [
        ("PATCH", f"/v2/templates/{template_id}"),
        ("PATCH", f"/v2/serverless/{endpoint_id}"),
    ]
    assert new[1].json() == {
        "workers": {"min": 0, "max": 5, "idleTimeout": 5},
        "image": ("docker.io/acme/brightrun-trainer:0.2.0"),
    }


def test_key_travels_only_in_the_authorization_header_and_hf_token_never(deploy, fake):
    result = deploy(*VLLM)
    assert result.exit_code == 0, result.output
    assert KEY not in result.output and HF_TOKEN not in result.output
    assert fake.requests
    for r in fake.requests:
        assert KEY not in r.body and KEY not in r.path and KEY not in r.query, r
        assert {k for k, v in r.headers.items() if KEY in v} == {"Authorization"}, r
        assert r.headers["Authorization"] == f"Bearer {KEY}"
        assert HF_TOKEN not in json.dumps(r.headers) + r.body + r.path + r.query
    for tpl in fake.templates.values():
        assert tpl["env"]["HF_TOKEN"] == "{{ RUNPOD_SECRET_hf_token }}"


def test_hf_secret_option_refuses_a_token_and_can_be_left_out(deploy, fake):
    result = deploy("--hf-secret", HF_TOKEN, "--dry-run")
    assert result.exit_code == 2
    assert "looks like a Hugging Face token" in result.output
    assert HF_TOKEN not in result.output
    assert deploy("--hf-secret", "").exit_code == 0
    assert "HF_TOKEN" not in _one(fake.templates, name="brightrun-trainer")["env"]


def test_a_volume_in_another_data_centre_is_refused_before_any_change(deploy, fake):
    fake.add_volume("brightrun", 200, "US-TX-3")
    result = deploy()
    assert result.exit_code == 1
    assert "US-TX-3" in result.output and "cannot move" in result.output
    assert "--data-center US-TX-3" in result.output
    assert fake.writes() == []


def test_a_volume_grows_but_never_shrinks(deploy, fake):
    vid = fake.add_volume("brightrun", 100, "EU-RO-1")
    result = deploy("--volume-size", "200")
    assert result.exit_code == 0, result.output
    assert "size: 100 -> 200" in result.output
    assert fake.volumes[vid]["size"] == 200 and len(fake.volumes) == 1

    result = deploy("--volume-size", "50")
    assert result.exit_code == 0, result.output
    assert "cannot shrink" in result.output
    assert fake.volumes[vid]["size"] == 200


def test_a_pod_template_of_the_same_name_is_refused(deploy, fake):
    fake.add_template("brightrun-trainer", "runpod/pytorch:2.4", serverless=False)
    result = deploy()
    assert result.exit_code == 1
    assert "Pod template" in result.output and "--prefix" in result.output


def test_bad_options_name_the_setting(deploy, fake):
    result = deploy("--gpu", "RTX_9999")
    assert result.exit_code == 2
    assert "unknown GPU type RTX_9999" in result.output and "A100_80GB" in result.output
    result = deploy("--with-vllm")
    assert result.exit_code == 2 and "--vllm-model" in result.output
    result = deploy("--data-center", "mars")
    assert result.exit_code == 2 and "data centre 'mars'" in result.output
    assert fake.requests == []


def test_a_wrong_key_is_reported_without_echoing_it(deploy, fake, monkeypatch):
    monkeypatch.setenv("RUNPOD_API_KEY", "rpa_WRONGKEY123456789")
    result = deploy()
    assert result.exit_code == 1
    assert "refused RUNPOD_API_KEY" in result.output
    assert "rpa_WRONGKEY123456789" not in result.output


def test_an_endpoint_that_never_answers_health_leaves_env_alone(fake, tmp_path):
    fake.health_status = 503
    env = tmp_path / ".env"
    env.write_text(ENV_BEFORE)
    config = DeployConfig(image=IMAGE)
    with RunPodApi(KEY, fake.rest_url, sleep=lambda s: None) as api:
        plan = make_plan(config, api.observe())
        with pytest.raises(DeployError, match=r"/health did not answer healthy after 6 tries"):
            apply_plan(plan, api, env, echo=lambda s: None)
    assert env.read_text() == ENV_BEFORE


def test_gpu_pools_follow_preference_and_appear_once():
    assert gpu_pools(("H100_80GB_PCIE", "H100_80GB_SXM", "A100_80GB")) == (
        "ADA_80_PRO",
        "AMPERE_80",
    )
    assert gpu_pools(("A100_80GB", "H100_80GB_PCIE")) == ("AMPERE_80", "ADA_80_PRO")
    assert gpu_pools(("H200_141GB", "A40_48GB", "A6000_48GB")) == ("HOPPER_141", "AMPERE_48")


def test_env_file_update_keeps_lines_and_replaces_every_copy(tmp_path):
    env = tmp_path / ".env"
    env.write_text(
        "A=1\nexport INFERENCE_URL='http://old'\n# note\nINFERENCE_URL=http://older\nB=2"
    )
    changed = update_env_file(env, {"INFERENCE_URL": "https://new/openai/v1", "C": "3"})
    assert changed == {"INFERENCE_URL": ("http://old", "https://new/openai/v1"), "C": (None, "3")}
    lines = env.read_text().splitlines()
    assert lines[:4] == ["A=1", "INFERENCE_URL=https://new/openai/v1", "# note", "B=2"]
    assert lines[-1] == "C=3"
    assert update_env_file(env, {"C": "3"}) == {}
    new = tmp_path / "fresh.env"
    update_env_file(new, {"GPU_CLUSTER_API_URL": "https://api.runpod.ai/v2/abc"})
    assert stat.S_IMODE(new.stat().st_mode) == 0o600


def test_broken_settings_are_reported_without_echoing_secrets(deploy, fake):
    Path(".env").write_text("STORAGE=supabase\n")  # without SUPABASE_URL / SUPABASE_KEY
    result = deploy("--dry-run")
    assert result.exit_code == 2
    assert "STORAGE=supabase needs SUPABASE_URL" in result.output
    assert KEY not in result.output and HF_TOKEN not in result.output


def test_a_private_image_gets_the_registry_auth_and_stays_settled(deploy, fake):
    assert deploy("--registry-auth", "clzdaifot0001l908").exit_code == 0
    tpl = _one(fake.templates, name="brightrun-trainer")
    assert tpl["registry"] == "clzdaifot0001l908"
    assert _one(fake.endpoints, name="brightrun-trainer")["registry"] == "clzdaifot0001l908"
    writes = len(fake.writes())
    assert "Nothing to change" in deploy("--registry-auth", "clzdaifot0001l908").output
    assert len(fake.writes()) == writes
    result = deploy("--registry-auth", "user:password")
    assert result.exit_code == 2 and "not a user name or password" in result.output
    assert "password" not in result.output.replace("not a user name or password", "")


def test_workers_only_land_on_hosts_whose_driver_runs_the_image(deploy, fake):
    assert deploy("--dry-run").output.count('"minCudaVersion": "12.8"') == 1
    assert deploy().exit_code == 0
    gpu = _one(fake.endpoints, name="brightrun-trainer")["gpu"]
    assert (gpu["minCudaVersion"], gpu["allowedCudaVersions"]) == ("12.8", [])
    writes = len(fake.writes())
    assert "Nothing to change" in deploy().output
    assert len(fake.writes()) == writes
    # an endpoint left with an exact set of versions gets the floor instead (one PATCH)
    gpu.update(allowedCudaVersions=["12.8", "12.9", "13.0"], minCudaVersion=None)
    assert deploy().exit_code == 0
    assert fake.writes()[writes].json() == {
        "gpu": {"minCudaVersion": "12.8", "allowedCudaVersions": []}
    }
    result = deploy("--min-cuda", "12.4")
    assert result.exit_code == 0, result.output
    assert _one(fake.endpoints, name="brightrun-trainer")["gpu"]["minCudaVersion"] == "12.4"
    assert deploy("--min-cuda", "").exit_code == 0
    assert _one(fake.endpoints, name="brightrun-trainer")["gpu"]["minCudaVersion"] is None


def test_the_template_and_the_image_agree_on_hf_home():
    from core.deploy import HF_HOME_ON_VOLUME
    from tests.conftest import ROOT

    dockerfile = (ROOT / "Dockerfile").read_text()
    m = re.search(r"HF_HOME=(\S+)", dockerfile)
    assert m, "the Dockerfile sets HF_HOME on the volume"
    assert m.group(1) == HF_HOME_ON_VOLUME == TRAINER_ENV["HF_HOME"]


def test_a_volume_keeps_its_storage_tier(deploy, fake):
    result = deploy("--volume-type", "HIGH_PERFORMANCE")
    assert result.exit_code == 0, result.output
    assert _one(fake.volumes, name="brightrun")["type"] == "HIGH_PERFORMANCE"
    writes = len(fake.writes())
    assert "Nothing to change" in deploy().output  # no tier asked: the volume's is fine
    result = deploy("--volume-type", "STANDARD")
    assert result.exit_code == 1
    assert "is HIGH_PERFORMANCE, not STANDARD" in result.output
    assert "--volume-type HIGH_PERFORMANCE" in result.output
    assert len(fake.writes()) == writes


def test_an_endpoint_of_the_same_name_that_is_not_a_queue_is_refused(deploy, fake):
    assert deploy().exit_code == 0
    writes = len(fake.writes())
    next(iter(fake.endpoints.values()))["type"] = "LOAD_BALANCER"
    result = deploy("--max-workers", "4")
    assert result.exit_code == 1
    assert "not a queue-based GPU endpoint" in result.output and "--prefix" in result.output
    assert len(fake.writes()) == writes
