"""Fixtures for the security tests: a loopback Supabase Auth (GoTrue) fake, a loopback
OpenAI-style model list, two users with data of their own ("the world"), and a snapshot
of everything stored (every table's rows and every file under the data folder) to show
that a refused request changed nothing."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, select

from core import db, planner
from core.clients import auth
from core.clients.storage import adapter_key, adapter_prefix, make_blob_store
from core.datasets import add_dataset
from core.db import repo
from core.jobs import version_id_for
from core.settings import Settings
from core.users import Actor
from tests.security.gotrue_fake import GoTrueFake, ServedGoTrue

ANON_KEY = "fake-anon-key"
PASSWORDS = {"alice@example.com": "alice-pass-1234", "bob@example.com": "bob-pass-5678"}


@pytest.fixture(scope="session")
def gotrue() -> Iterator[tuple[GoTrueFake, str]]:
    fake = GoTrueFake(anon_key=ANON_KEY)
    with ServedGoTrue(fake) as served:
        yield fake, served.url


class ModelListFake:
    """`GET /v1/models` of an OpenAI-style server serving one base model; records every
    request line so a test can show nothing asked for another user's adapter."""

    def __init__(self, base: str = "tiny-base") -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.requests.append(f"GET {self.path}")
                if self.path.rstrip("/") != "/v1/models":
                    self._send(
                        404,
                        {"error": {"message": "not found", "type": "NotFoundError", "code": 404}},
                    )
                    return
                self._send(
                    200,
                    {
                        "object": "list",
                        "data": [
                            {
                                "id": base,
                                "object": "model",
                                "created": 0,
                                "owned_by": "test",
                                "root": base,
                                "parent": None,
                            }
                        ],
                    },
                )

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length") or 0)
                outer.requests.append(
                    f"POST {self.path} {self.rfile.read(length).decode(errors='replace')}"
                )
                self._send(
                    404, {"error": {"message": "not served", "type": "NotFoundError", "code": 404}}
                )

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def runpod() -> Iterator[tuple[Any, str]]:
    """The scripted RunPod fake on loopback; its jobs stay queued (only payloads matter)."""
    from tests.jobs.runpod_fake import RunPodFake, ServedFake

    fake = RunPodFake(api_key="fake-key", queue_s=600.0)
    with ServedFake(fake) as served:
        yield fake, served.url


@pytest.fixture(scope="module")
def models() -> Iterator[ModelListFake]:
    fake = ModelListFake()
    yield fake
    fake.close()


# --------------------------------------------------------------------------- stored state


def snapshot(settings: Settings) -> dict[str, Any]:
    """Every row of every table, and every file under the data folder (path -> sha256),
    except the SQLite files themselves (their bytes change on reads)."""
    engine = db.get_engine(settings)
    meta = MetaData()
    meta.reflect(bind=engine)
    rows: dict[str, list[str]] = {}
    with engine.connect() as conn:
        for name, table in sorted(meta.tables.items()):
            rows[name] = sorted(
                json.dumps(dict(r._mapping), default=str, sort_keys=True)
                for r in conn.execute(select(table))
            )
    files = {}
    root = Path(settings.data_dir)
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.startswith("brightrun.db"):
            files[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return {"rows": rows, "files": files}


# --------------------------------------------------------------------------- two users


def chat_rows(n: int, tag: str) -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"{tag} question {i}"},
                {"role": "assistant", "content": f"{tag} answer {i}"},
            ]
        }
        for i in range(n)
    ]


@dataclass
class World:
    settings: Settings
    alice: Actor
    bob: Actor
    ds_alice: str
    ds_bob: str
    job_done: str  # COMPLETED, with adapter version `version` of adapter `adapter`
    job_failed: str  # FAILED (a retry target)
    job_running: str  # IN_PROGRESS (a cancel target)
    adapter: str
    adapter_id: str
    version: str
    served: str  # the adapter's folder name on the volume

    def alice_marks(self) -> list[str]:
        """Strings that identify Alice's things; none may reach Bob."""
        return [
            self.ds_alice,
            "alpha secret set",
            "alpha question",
            self.job_done,
            self.job_failed,
            self.job_running,
            self.adapter,
            self.adapter_id,
            self.version,
            self.served,
        ]


def settings_for(data_dir: Path, gotrue_url: str, **extra: Any) -> Settings:
    return Settings(
        _env_file=None,
        data_dir=data_dir,
        auth="supabase",
        supabase_url=gotrue_url,  # type: ignore[call-arg]
        supabase_anon_key=ANON_KEY,
        max_concurrent_jobs=5,
        **extra,
    )


def sign_up_both(fake: GoTrueFake, settings: Settings) -> tuple[Actor, Actor]:
    actors = []
    for email, password in PASSWORDS.items():
        if email not in fake.accounts:
            fake.add_user(email, password)
        identity = auth.sign_in(auth.make_client(settings), email, password)
        with db.session_scope(settings) as s:
            actors.append(auth.actor_for(s, identity))
    return actors[0], actors[1]


def build_world(data_dir: Path, gotrue: tuple[GoTrueFake, str], **extra: Any) -> World:
    fake, url = gotrue
    settings = settings_for(data_dir, url, **extra)
    db.upgrade(settings)
    alice, bob = sign_up_both(fake, settings)
    store = make_blob_store(settings)
    ids = {}
    for actor, name, n in ((alice, "alpha secret set", 24), (bob, "bob set", 4)):
        src = data_dir.parent / f"{actor.user_id}.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in chat_rows(n, name.split()[0])))
        with db.session_scope(settings) as s:
            ds, _ = add_dataset(actor, s, store, src, name, eval_fraction=0.2)
            ids[actor.user_id] = ds.id
    rate = planner.rate_per_second("H100_80GB_PCIE", "flex")
    jobs = {}
    with db.session_scope(settings) as s:
        for status in ("COMPLETED", "FAILED", "IN_PROGRESS"):
            job = repo.create_job(
                alice,
                s,
                base_model="tiny-base",
                spec={"output": {"adapter_name": "alpha-bot"}},
                dataset_id=ids[alice.user_id],
                adapter_name="alpha-bot",
                gpu_type="H100_80GB_PCIE",
                rate_per_s=rate,
                budget_usd=5.0,
            )
            repo.update_job(
                alice,
                s,
                job.id,
                status=status,
                runpod_job_id=f"rp-{job.id}",
                cost_usd=0.25,
                failure_kind="internal" if status == "FAILED" else None,
            )
            jobs[status] = job.id
        repo.append_event(alice, s, jobs["COMPLETED"], 0, "metrics", {"step": 1, "loss": 2.5})
        repo.record_cost(alice, s, job_id=jobs["COMPLETED"], seconds=0.25 / rate, usd=0.25)
    vid = version_id_for(jobs["COMPLETED"])
    served = f"alpha-bot-{jobs['COMPLETED'].removeprefix('job-')}"
    volume = data_dir / "volume" / "adapters" / served
    volume.mkdir(parents=True)
    for name, body in (
        ("adapter_config.json", b'{"base_model_name_or_path": "tiny-base"}'),
        ("adapter_model.safetensors", b"\x00" * 64),
    ):
        store.put_bytes(
            "adapters", adapter_key(alice.user_id, vid, name), body, "application/octet-stream"
        )
        (volume / name).write_bytes(body)
    with db.session_scope(settings) as s:
        v = repo.create_adapter_version(
            alice,
            s,
            adapter_name="alpha-bot",
            base_model="tiny-base",
            job_id=jobs["COMPLETED"],
            dataset_id=ids[alice.user_id],
            storage_prefix=adapter_prefix(alice.user_id, vid),
            volume_path=str(volume),
            version_id=vid,
            size_bytes=100,
        )
        adapter_id = v.adapter_id
    return World(
        settings,
        alice,
        bob,
        ids[alice.user_id],
        ids[bob.user_id],
        jobs["COMPLETED"],
        jobs["FAILED"],
        jobs["IN_PROGRESS"],
        "alpha-bot",
        adapter_id,
        vid,
        served,
    )


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, gotrue: tuple[GoTrueFake, str]
) -> Iterator[World]:
    w = build_world(tmp_path_factory.mktemp("world") / "data", gotrue)
    yield w
    db.dispose_engines()


@pytest.fixture
def unchanged(world: World) -> Iterator[Callable[[], None]]:
    """Call the yielded function at the end of a test: it asserts nothing stored changed."""
    before = snapshot(world.settings)

    def check() -> None:
        after = snapshot(world.settings)
        assert after["files"] == before["files"], "stored files changed"
        for table, rows in before["rows"].items():
            assert after["rows"][table] == rows, f"rows of {table} changed"

    yield check


@pytest.fixture
def through_app_py(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make AppTest run app.py on every run, as a Streamlit server does once app.py has
    called `st.navigation`. (Kept for the tests that run both ways: AppTest used to forget
    that between runs and run the page script alone while a `pages/` folder sat beside
    app.py; the pages now live in `app_pages/`, so both ways run app.py.)"""
    import runpy

    from streamlit.runtime.scriptrunner import script_runner

    monkeypatch.setattr(
        script_runner, "_mpa_v1", lambda path: runpy.run_path(str(path), run_name="__main__")
    )


# --------------------------------------------------------------------------- pages


def page_text(at: Any) -> str:
    """Everything an AppTest page shows: text elements, widget labels, options and values,
    and table cells."""
    parts: list[str] = []
    for node in _walk(at._tree):
        proto = getattr(node, "proto", None)
        for attr in ("body", "label", "value", "placeholder", "help", "text"):
            v = getattr(node, attr, None)
            if isinstance(v, str | int | float):
                parts.append(str(v))
        for attr in ("options",):
            parts += [str(o) for o in (getattr(node, attr, None) or [])]
        if node.type == "arrow_data_frame":
            parts.append(node.value.to_csv())
        if proto is not None and hasattr(proto, "SerializeToString"):
            parts.append(proto.SerializeToString().decode("utf-8", errors="replace"))
    return "\n".join(parts)


def _walk(node: Any) -> Any:
    yield node
    children = getattr(node, "children", None) or {}
    for child in children.values():
        yield from _walk(child)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With BRIGHTRUN_SECURITY_FIGURES=<file>, write what the security tests tried and found
    (each test module's RESULTS rows and FIGURES counts) for `tests.security.figures`."""
    out = os.environ.get("BRIGHTRUN_SECURITY_FIGURES")
    if not out:
        return
    data: dict[str, Any] = {"results": [], "figures": {}, "exitstatus": int(exitstatus)}
    for name, module in sorted(sys.modules.items()):
        if name.startswith("tests.security.test_"):
            data["results"] += getattr(module, "RESULTS", [])
            data["figures"].update(getattr(module, "FIGURES", {}))
    Path(out).write_text(json.dumps(data, indent=1, ensure_ascii=False))
