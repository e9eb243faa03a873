"""No secret leaks: a full local job (tiny CPU training through the local endpoint, the
real trainer in its worker process) and a playground chat (the local inference server),
run with recognisable fake values for every key and token, then a search for those values
in every column of every table, every stored file, every log (the endpoint's and the
inference server's stdout/stderr, and all Python logging in this process), every `/run`
body sent to the endpoint, the command line's output, and everything every page renders.
None may appear.

Slow: about a minute on one CPU core (training a few steps, loading the model twice)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from cli import app as cli
from cli.stack import stop_all, wait_healthy
from core import datasets, db, jobs
from core.clients.runpod import RunPodClient
from core.clients.storage import make_blob_store
from core.db import repo
from core.db.tables import TERMINAL_STATUSES
from core.settings import Settings
from core.users import LOCAL_ACTOR
from tests.conftest import ROOT
from tests.jobs.conftest import wait_until
from tests.jobs.runpod_fake import free_port
from tests.security.conftest import page_text, snapshot
from tests.trainer.conftest import toy_rows

pytestmark = pytest.mark.slow

FIGURES: dict[str, int] = {}
WEBHOOK_PATH = "/hooks/brs-webhook-path-5f6a7b"
SECRETS = {
    "GPU_CLUSTER_API_KEY": "brs-gpu-cluster-key-4b1f0c9e",
    "SUPABASE_KEY": "brs-supabase-service-key-77d2a1",
    "SUPABASE_ANON_KEY": "brs-supabase-anon-key-3e9f50",
    "HF_TOKEN": "hf_brsFakeToken8c2d4e6f0a1b",
    "INFERENCE_API_KEY": "brs-inference-key-1a7c33",
    "RUNPOD_API_KEY": "brs-runpod-account-key-9e0b12",
    "URL_SIGNING_KEY": "brs-url-signing-key-2c4e6a8b",
    "SUPABASE_S3_SECRET_ACCESS_KEY": "brs-s3-secret-access-key-6d8f0b",
    # NOTIFY_WEBHOOK_URL is set per run (its port); its secret part is the path.
}
NEEDLES = [*SECRETS.values(), WEBHOOK_PATH.rsplit("/", 1)[1]]


class Webhook:
    """A loopback chat webhook that records what it receives."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                outer.bodies.append(self.rfile.read(int(self.headers.get("content-length") or 0)))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{WEBHOOK_PATH}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Recording(httpx.BaseTransport):
    """An httpx transport that keeps every request body sent to `/run`."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.run_bodies: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/run"):
            self.run_bodies.append(request.read())
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception as e:  # noqa: BLE001 - a record that cannot be formatted is kept raw
            self.lines.append(f"{record.msg!r} {record.args!r} ({e})")


@dataclass
class Run:
    settings: Settings
    env: dict[str, str]
    logs: list[Path]
    captured: Captured
    recording: Recording
    webhook: Webhook
    processes: list[subprocess.Popen] = field(default_factory=list)
    job_id: str = ""
    pages: dict[str, str] = field(default_factory=dict)
    cli: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    from trainer.shared.tiny import build_tiny_chat_model

    root = tmp_path_factory.mktemp("secrets")
    data = root / "data"
    tiny = build_tiny_chat_model(data / "models" / "tiny-chat", seed=0).resolve()
    webhook = Webhook()
    ep_port, inf_port = free_port(), free_port()
    env = {
        **SECRETS,
        "NOTIFY_WEBHOOK_URL": webhook.url,
        "BRIGHTRUN_DATA_DIR": str(data),
        "SUPABASE_URL": "http://127.0.0.1:9",
        "LOCAL_DEVICE": "cpu",
        "SUPABASE_S3_ACCESS_KEY_ID": "brs-s3-key-id",
        "SUPABASE_S3_REGION": "us-east-1",
        "GPU_CLUSTER_API_URL": f"http://127.0.0.1:{ep_port}/v2/local",
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{ep_port}",
        "INFERENCE_URL": f"http://127.0.0.1:{inf_port}/v1",
        "INFERENCE_ADAPTERS_DIR": str(data / "volume" / "adapters"),
        "EVAL_MAX_ROWS": "2",
        "EVAL_MAX_TOKENS": "4",
        "OMP_NUM_THREADS": "1",
    }
    captured = Captured()
    captured.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root_logger = logging.getLogger()
    old_level = root_logger.level
    root_logger.addHandler(captured)
    root_logger.setLevel(logging.DEBUG)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    (data / "volume" / "adapters").mkdir(parents=True, exist_ok=True)
    ep_log, inf_log = root / "endpoint.log", root / "inference.log"
    with open(ep_log, "wb") as out:
        endpoint = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "local.endpoint",
                "--handler",
                "trainer.handler:handler",
                "--workers",
                "1",
            ],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    with open(inf_log, "wb") as out:
        inference = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "local.inference",
                "--base",
                str(tiny),
                "--adapters-dir",
                str(data / "volume" / "adapters"),
                "--port",
                str(inf_port),
                "--device",
                "cpu",
            ],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    recording = Recording()
    try:
        wait_healthy(f"http://127.0.0.1:{ep_port}/ping", endpoint, timeout_s=120)
        wait_healthy(f"http://127.0.0.1:{inf_port}/health", inference, timeout_s=180)
        settings = Settings(_env_file=None)  # type: ignore[call-arg] - from the environment above
        db.upgrade(settings)
        yield Run(
            settings, env, [ep_log, inf_log], captured, recording, webhook, [inference, endpoint]
        )
    finally:
        stop_all([inference, endpoint])
        webhook.close()
        recording.close()
        root_logger.removeHandler(captured)
        root_logger.setLevel(old_level)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        db.dispose_engines()


def test_a_full_local_job_and_a_playground_chat_leak_no_secret(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = run.settings
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "toy.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in toy_rows(4)))
    with db.session_scope(s) as x:
        tok = datasets.load_tokenizer("brightrun/tiny-chat", s.data_dir / "models")
        ds, _ = datasets.add_dataset(
            LOCAL_ACTOR, x, make_blob_store(s), src, "toy", tokenizer=tok, eval_fraction=0.2
        )
    client = RunPodClient(
        s.gpu_cluster_api_url, s.gpu_cluster_api_key, transport=run.recording, backoff_s=0.05
    )
    job = jobs.submit(
        LOCAL_ACTOR,
        s,
        dataset_id=ds.id,
        model="brightrun/tiny-chat",
        adapter_name="support-bot",
        lora={"r": 8, "alpha": 16, "dropout": 0.0},
        quantization="none",
        budget_usd=1.0,
        training={
            "max_steps": 6,
            "learning_rate": 3e-3,
            "micro_batch_size": 2,
            "grad_accum": 1,
            "max_length": 96,
            "checkpoint_every": 3,
            "compute_dtype": "float32",
            "warmup_ratio": 0.0,
        },
        client=client,
    )
    run.job_id = job.id
    done = wait_until(
        lambda: (
            (j := jobs.sync(LOCAL_ACTOR, s, job.id, client=client)).status in TERMINAL_STATUSES
            and j
        ),
        timeout_s=300,
        every_s=0.5,
        what="the job to end",
    )
    assert done.status == "COMPLETED", (done.failure_kind, done.failure_message)
    wait_until(lambda: run.webhook.bodies, timeout_s=30, what="the end-of-job notification")
    with db.session_scope(s) as x:
        version = repo.list_versions(LOCAL_ACTOR, x, job_id=job.id, include_checkpoints=False)[0]
        vid = version.id
    wait_until(
        lambda: _eval_settled(s, vid), timeout_s=120, every_s=0.5, what="the post-job evaluation"
    )

    # The dashboard, page by page (AUTH=none: the local user), with a playground chat.
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    for page in ("overview", "datasets", "train", "jobs", "adapters", "costs", "settings", "admin"):
        at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception, (page, at.exception)
        run.pages[page] = page_text(at)
    at.query_params["job"] = job.id
    at.switch_page("app_pages/jobs.py").run()
    run.pages["job detail"] = page_text(at)
    at.query_params.clear()
    at.session_state["jobs.selected"] = None
    at.switch_page("app_pages/playground.py").run()
    assert not at.exception, at.exception
    models = at.multiselect(key="playground.models")
    adapter_label = next(o for o in models.options if o.startswith("support-bot v1"))
    models.set_value([models.options[0], adapter_label])
    at.slider(key="playground.temperature").set_value(0.0)
    at.number_input(key="playground.max_tokens").set_value(8)
    at.run()
    at.chat_input(key="playground.prompt").set_value("What is the capital of France?").run()
    assert not at.exception, at.exception
    assert len([m for m in at.chat_message if m.name == "assistant"]) == 2  # both models answered
    run.pages["playground"] = page_text(at)

    # The command line's output.
    runner = CliRunner()
    for args in (
        ["jobs", "show", job.id, "--json"],
        ["jobs", "events", job.id],
        ["jobs", "list"],
        ["dataset", "list"],
        ["chat", "--list"],
        ["whoami"],
        ["admin", "users"],
    ):
        out = runner.invoke(cli, args)
        assert out.exit_code == 0, (args, out.output)
        run.cli.append(out.output)
    _search(run)


def _eval_settled(settings: Settings, version_id: str) -> bool:
    with db.session_scope(settings) as x:
        status = (repo.get_version(LOCAL_ACTOR, x, version_id).eval_scores or {}).get("status")
    return status not in (None, "pending", "running")


def _search(run: Run) -> None:
    stop_all(run.processes)  # stopped, the processes have written their last log lines
    places: dict[str, str] = {}
    snap = snapshot(run.settings)
    for table, rows in snap["rows"].items():
        places[f"table {table}"] = "\n".join(rows)
    data = Path(run.settings.data_dir)
    for p in sorted(data.rglob("*")):
        if p.is_file() and p.stat().st_size < 50_000_000:
            places[f"file {p.relative_to(data)}"] = p.read_bytes().decode("utf-8", errors="replace")
    for log in run.logs:
        places[f"log {log.name}"] = log.read_text(errors="replace")
    places["python logging"] = "\n".join(run.captured.lines)
    for i, body in enumerate(run.recording.run_bodies):
        places[f"/run body {i}"] = body.decode()
    for page, text in run.pages.items():
        places[f"page {page}"] = text
    for i, out in enumerate(run.cli):
        places[f"cli output {i}"] = out
    places["webhook bodies"] = "\n".join(b.decode() for b in run.webhook.bodies)

    assert run.recording.run_bodies and run.captured.lines and all(run.pages.values())
    assert (
        "support-bot" in places["page adapters"] and "train_url" in places["/run body 0"]
    )  # the searches see content
    leaks = [(where, n) for where, text in places.items() for n in NEEDLES if n in text]
    assert not leaks, leaks
    # A signed URL is a credential while it lives: none in any log either.
    assert not [
        w
        for w, text in places.items()
        if w.startswith(("log ", "python logging")) and "sig=" in text
    ]
    FIGURES["secrets: secret values searched for"] = len(NEEDLES)
    FIGURES["secrets: places searched"] = len(places)
    FIGURES["secrets: tables searched"] = len(snap["rows"])
    FIGURES["secrets: stored files searched"] = sum(k.startswith("file ") for k in places)
    FIGURES["secrets: /run bodies searched"] = len(run.recording.run_bodies)
    FIGURES["secrets: pages searched"] = len(run.pages)
    FIGURES["secrets: python log records searched"] = len(run.captured.lines)
    FIGURES["secrets: secret values found"] = len(leaks)
