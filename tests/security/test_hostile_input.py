"""Hostile and wrong input: each gets a specific error naming what is wrong, and nothing
stored changes (every table's rows and every file under the data folder are compared
before and after each attempt). Quotas (concurrent jobs, monthly budget) are enforced at
submit. Dataset content with HTML/markdown/script is shown as text, never rendered.

Every case lands in `RESULTS`; `python -m tests.security.figures` runs these tests and
writes the table into docs/security.md."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from core import admin, datasets, db, jobs, validation
from core.clients import auth
from core.clients.storage import LocalBlobStore, make_blob_store
from core.db import repo
from core.errors import BrightRunError, Conflict, InvalidInput, NotFound, QuotaExceeded
from core.settings import Settings
from core.users import LOCAL_ACTOR
from tests.conftest import ROOT
from tests.security.conftest import World, chat_rows, snapshot

RESULTS: list[dict[str, Any]] = []  # one row per input tried (read by tests/security/figures.py)
MODEL = "Qwen/Qwen2.5-0.5B-Instruct"  # a catalog model, context 32768


@dataclass(frozen=True)
class Case:
    category: str
    label: str
    call: Callable[[], Any]
    error: type[Exception]
    says: str  # a word the message must contain (the field, setting or thing)


def check(case: Case, settings: Settings) -> None:
    before = snapshot(settings)
    got: BaseException | None = None
    try:
        case.call()
    except BrightRunError as e:
        got = e
    after = snapshot(settings)
    lost = after != before
    RESULTS.append(
        {
            "category": case.category,
            "input": case.label,
            "expected": case.error.__name__,
            "got": type(got).__name__ if got else "accepted",
            "message": str(got or "")[:160],
            "rejected_correctly": isinstance(got, case.error)
            and case.says.lower() in str(got).lower(),
            "stored_changed": lost,
        }
    )
    assert isinstance(got, case.error), (case.label, got)
    assert case.says.lower() in str(got).lower(), (case.label, str(got))
    assert not lost, f"{case.label}: stored data changed"


@pytest.fixture(scope="module")
def endpoint(world: World, runpod: tuple[Any, str]) -> Settings:
    fake, url = runpod
    return world.settings.model_copy(
        update={"gpu_cluster_api_url": url, "gpu_cluster_api_key": "fake-key"}
    )


# --------------------------------------------------------------------------- files


def _upload_cases(world: World, tmp: Path) -> list[Case]:
    s, alice = world.settings, world.alice
    store = make_blob_store(s)
    src = tmp / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in chat_rows(3, "upload")))
    big = tmp / "big.jsonl"
    big.write_text("".join(json.dumps(r) + "\n" for r in chat_rows(3000, "big")))

    def add(
        filename: str, path: Path = src, name: str | None = None, **kw: Any
    ) -> Callable[[], Any]:
        def call() -> Any:
            with db.session_scope(s) as x:
                return datasets.add_dataset(
                    alice, x, store, path, name, original_filename=filename, **kw
                )

        return call

    f = "file name"
    return [
        Case(
            f,
            "../../etc/passwd.jsonl",
            add("../../etc/passwd.jsonl"),
            validation.BadFileName,
            "path",
        ),
        Case(
            f,
            "..\\..\\windows\\win.ini",
            add("..\\..\\windows\\win.ini"),
            validation.BadFileName,
            "path",
        ),
        Case(
            f, "/absolute/data.jsonl", add("/absolute/data.jsonl"), validation.BadFileName, "path"
        ),
        Case(f, "..", add(".."), validation.BadFileName, "path"),
        Case(f, "NUL byte in the name", add("data\x00.jsonl"), validation.BadFileName, "control"),
        Case(f, "newline in the name", add("data\n.jsonl"), validation.BadFileName, "control"),
        Case(
            f,
            "escape sequence in the name",
            add("\x1b[31mred.jsonl"),
            validation.BadFileName,
            "control",
        ),
        Case(
            f,
            "right-to-left override (lnpj.exe)",
            add("data\u202eexe.jsonl"),
            validation.BadFileName,
            "direction",
        ),
        Case(f, "300-character name", add("a" * 300 + ".jsonl"), validation.BadFileName, "255"),
        Case(f, "empty name", add("   "), validation.BadFileName, "no file name"),
        Case(
            "dataset name",
            "control characters",
            add("ok.jsonl", name="bad\x07name"),
            InvalidInput,
            "control",
        ),
        Case(
            "dataset name",
            "201 characters",
            add("ok.jsonl", name="n" * 201),
            InvalidInput,
            "at most 200",
        ),
        Case(
            "dataset name",
            "a name the user already has",
            add("ok.jsonl", name="alpha secret set"),
            Conflict,
            "already have",
        ),
        Case(
            "upload size",
            f"{big.stat().st_size // 1000} kB over a 100 kB limit",
            add("big.jsonl", path=big, max_bytes=100_000),
            InvalidInput,
            "upload limit",
        ),
    ]


def test_hostile_file_names_and_oversized_uploads_are_refused_and_store_nothing(
    world: World, tmp_path: Path
) -> None:
    for case in _upload_cases(world, tmp_path):
        check(case, world.settings)


def test_a_unicode_file_name_is_kept_for_display_and_never_used_as_a_path(
    world: World, tmp_path: Path
) -> None:
    s = world.settings
    src = tmp_path / "x.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in chat_rows(3, "unicode")))
    name = "donne\u0301es d’été 日本語 ✓.jsonl"  # decomposed é: stored NFC
    with db.session_scope(s) as x:
        ds, _ = datasets.add_dataset(world.bob, x, make_blob_store(s), src, original_filename=name)
        assert ds.original_filename == "données d’été 日本語 ✓.jsonl"
        assert ds.original_key == f"{world.bob.user_id}/{ds.id}/original"
        datasets.delete_dataset(world.bob, x, make_blob_store(s), ds.id)
    RESULTS.append(
        {
            "category": "file name",
            "input": "unicode name (accepted)",
            "expected": "accepted",
            "got": "accepted",
            "message": "",
            "rejected_correctly": True,
            "stored_changed": False,
        }
    )


def test_storage_keys_and_ids_from_hostile_input_never_leave_their_folder(world: World) -> None:
    store = LocalBlobStore.from_settings(world.settings)
    s = world.settings
    keys = [
        "../outside",
        "a/../../b",
        "/etc/passwd",
        "a//b",
        ".hidden/x",
        "a/\x00/b",
        "ok/" + "x" * 800,
    ]
    for key in keys:
        check(
            Case(
                "storage key",
                repr(key)[:40],
                lambda k=key: store.put_bytes("datasets", k, b"x", "text/plain"),
                InvalidInput,
                "storage key",
            ),
            s,
        )
    for ident in ("../../etc/passwd", "ds-%2e%2e", "' OR '1'='1", "ds-\x00"):

        def get(i: str = ident) -> Any:
            with db.session_scope(s) as x:
                return datasets.get_dataset(world.alice, x, i)

        check(Case("id", repr(ident), get, NotFound, "not found"), s)


# --------------------------------------------------------------------------- job settings


def _submit(settings: Settings, world: World, **kw: Any) -> Callable[[], Any]:
    kw.setdefault("model", MODEL)
    kw.setdefault("training", {"max_steps": 5})
    return lambda: jobs.submit(world.alice, settings, dataset_id=world.ds_alice, **kw)


def _setting_cases(endpoint: Settings, world: World) -> list[Case]:
    def t(**training: Any) -> dict[str, Any]:
        return {"max_steps": 5, **training}

    c = "job setting"
    return [
        Case(c, "LoRA rank 0", _submit(endpoint, world, lora={"r": 0}), InvalidInput, "rank"),
        Case(c, "LoRA rank 5000", _submit(endpoint, world, lora={"r": 5000}), InvalidInput, "rank"),
        Case(
            c, "LoRA alpha -1", _submit(endpoint, world, lora={"alpha": -1}), InvalidInput, "alpha"
        ),
        Case(
            c,
            "LoRA dropout 1.0",
            _submit(endpoint, world, lora={"dropout": 1.0}),
            InvalidInput,
            "dropout",
        ),
        Case(
            c,
            "learning rate -0.001",
            _submit(endpoint, world, training=t(learning_rate=-0.001)),
            InvalidInput,
            "learning rate",
        ),
        Case(
            c,
            "learning rate 5",
            _submit(endpoint, world, training=t(learning_rate=5)),
            InvalidInput,
            "learning rate",
        ),
        Case(
            c, "epochs 0", _submit(endpoint, world, training={"epochs": 0}), InvalidInput, "epochs"
        ),
        Case(
            c,
            "micro-batch 0",
            _submit(endpoint, world, training=t(micro_batch_size=0)),
            InvalidInput,
            "micro_batch_size",
        ),
        Case(
            c,
            "max length 65536 > context 32768",
            _submit(endpoint, world, training=t(max_length=65536)),
            InvalidInput,
            "context",
        ),
        Case(
            c,
            "an unknown setting",
            _submit(endpoint, world, training=t(rm_rf=True)),
            InvalidInput,
            "rm_rf",
        ),
        Case(
            c,
            "quantization 'fp2'",
            _submit(endpoint, world, quantization="fp2"),
            InvalidInput,
            "quantization",
        ),
        Case(
            "budget",
            "$0.01 (under a minute of GPU)",
            _submit(endpoint, world, budget_usd=0.01),
            InvalidInput,
            "one minute",
        ),
        Case("budget", "$0", _submit(endpoint, world, budget_usd=0.0), InvalidInput, "budget"),
        Case("budget", "-$5", _submit(endpoint, world, budget_usd=-5.0), InvalidInput, "budget"),
        Case(
            "budget", "NaN", _submit(endpoint, world, budget_usd=math.nan), InvalidInput, "budget"
        ),
        Case(
            "budget",
            "infinity",
            _submit(endpoint, world, budget_usd=math.inf),
            InvalidInput,
            "budget",
        ),
        Case(
            "adapter name",
            "../evil",
            _submit(endpoint, world, adapter_name="../evil"),
            InvalidInput,
            "adapter name",
        ),
        Case(
            "adapter name",
            "with spaces and <b>",
            _submit(endpoint, world, adapter_name="my <b>bot</b>"),
            InvalidInput,
            "adapter name",
        ),
        Case(
            "adapter name",
            "200 characters",
            _submit(endpoint, world, adapter_name="a" * 200),
            InvalidInput,
            "adapter name",
        ),
    ]


def test_settings_out_of_range_are_refused_before_anything_is_stored(
    endpoint: Settings, world: World, runpod: tuple[Any, str]
) -> None:
    sent = len(runpod[0].jobs)
    for case in _setting_cases(endpoint, world):
        check(case, endpoint)
    assert len(runpod[0].jobs) == sent  # nothing reached the endpoint


def _model_cases(endpoint: Settings, world: World, tmp: Path) -> list[Case]:
    models = Path(endpoint.data_dir) / "models"
    (models / "empty").mkdir(parents=True, exist_ok=True)
    outside = tmp / "elsewhere"
    outside.mkdir(exist_ok=True)
    (outside / "config.json").write_text("{}")
    link = models / "sneaky"
    if not link.exists():
        link.symlink_to(outside, target_is_directory=True)
    m = "base model"
    return [
        Case(
            m,
            "https://evil.example/model.safetensors",
            _submit(endpoint, world, model="https://evil.example/model.safetensors"),
            validation.ModelRefused,
            "not a URL",
        ),
        Case(
            m,
            "hf://Qwen/Qwen2.5-0.5B",
            _submit(endpoint, world, model="hf://Qwen/Qwen2.5-0.5B"),
            validation.ModelRefused,
            "URL",
        ),
        Case(
            m,
            "file:///etc",
            _submit(endpoint, world, model="file:///etc"),
            validation.ModelRefused,
            "URL",
        ),
        Case(
            m,
            "/etc (outside the model folders)",
            _submit(endpoint, world, model="/etc"),
            validation.ModelRefused,
            "outside",
        ),
        Case(
            m,
            "a folder with a config.json outside",
            _submit(endpoint, world, model=str(outside)),
            validation.ModelRefused,
            "outside",
        ),
        Case(
            m,
            "../../etc/passwd",
            _submit(endpoint, world, model="../../etc/passwd"),
            validation.ModelRefused,
            "..",
        ),
        Case(
            m,
            "<data>/models/../../secret",
            _submit(endpoint, world, model=f"{models}/../../secret"),
            validation.ModelRefused,
            "..",
        ),
        Case(
            m,
            "a symlink in the models folder to outside",
            _submit(endpoint, world, model=str(link)),
            validation.ModelRefused,
            "outside",
        ),
        Case(
            m,
            "a models subfolder without config.json",
            _submit(endpoint, world, model=str(models / "empty")),
            validation.ModelRefused,
            "config.json",
        ),
        Case(
            m,
            "unknown hub id nobody/no-such-model",
            _submit(endpoint, world, model="nobody/no-such-model"),
            validation.ModelRefused,
            "unknown base model",
        ),
        Case(
            m,
            "'org/name/extra' (neither)",
            _submit(endpoint, world, model="org/name/extra"),
            validation.ModelRefused,
            "outside",
        ),
        Case(
            m,
            "control characters",
            _submit(endpoint, world, model="Qwen/Qwen\n2.5"),
            validation.ModelRefused,
            "control",
        ),
        Case(
            m,
            "400 characters",
            _submit(endpoint, world, model="q/" + "x" * 398),
            validation.ModelRefused,
            "at most 300",
        ),
        Case(
            m, "empty", _submit(endpoint, world, model="  "), validation.ModelRefused, "base model"
        ),
    ]


def test_base_models_that_are_urls_outside_paths_or_unknown_are_refused(
    endpoint: Settings, world: World, tmp_path: Path
) -> None:
    for case in _model_cases(endpoint, world, tmp_path):
        check(case, endpoint)
    # Accepted: a catalog id, and a model folder inside MODEL_DIRS (the worker's volume).
    assert validation.check_base_model(endpoint, MODEL).context_length == 32768
    volume = endpoint.model_copy(update={"model_dirs": [Path("/runpod-volume/models")]})
    assert validation.check_base_model(volume, "/runpod-volume/models/my-model") is None
    with pytest.raises(validation.ModelRefused, match="outside"):
        validation.check_base_model(volume, "/runpod-volume/other/my-model")


# --------------------------------------------------------------------------- quotas


def test_quotas_are_enforced_at_submit(
    endpoint: Settings, world: World, runpod: tuple[Any, str]
) -> None:
    fake, _ = runpod
    s = endpoint
    with db.session_scope(s) as x:
        admin.set_limits(
            LOCAL_ACTOR, x, world.bob.user_id, max_concurrent_jobs=1, monthly_budget_usd=3.0
        )

    def bob_submits(budget: float) -> Callable[[], Any]:
        return lambda: jobs.submit(
            world.bob,
            s,
            dataset_id=world.ds_bob,
            model=MODEL,
            training={"max_steps": 5},
            budget_usd=budget,
        )

    first = bob_submits(2.0)()
    assert first.status == "IN_QUEUE" and fake.jobs[first.runpod_job_id]
    check(
        Case(
            "quota",
            "a 2nd job while the limit is 1 at once",
            bob_submits(0.5),
            QuotaExceeded,
            "at once",
        ),
        s,
    )
    with db.session_scope(s) as x:
        admin.set_limits(LOCAL_ACTOR, x, world.bob.user_id, max_concurrent_jobs=2)
    check(
        Case(
            "quota",
            "$2 more when $2 of a $3 month is reserved",
            bob_submits(2.0),
            QuotaExceeded,
            "monthly budget",
        ),
        s,
    )
    second = bob_submits(1.0)()  # what fits is still accepted
    assert second.status == "IN_QUEUE"
    with db.session_scope(s) as x:
        admin.set_limits(LOCAL_ACTOR, x, world.bob.user_id, max_concurrent_jobs=0)
    jobs.cancel(world.bob, s, first.id)
    check(
        Case(
            "quota",
            "any job when an admin set 0 jobs at once",
            bob_submits(0.5),
            QuotaExceeded,
            "at once",
        ),
        s,
    )
    jobs.cancel(world.bob, s, second.id)
    with db.session_scope(s) as x:  # Alice's own limits were never touched by Bob's
        assert repo.user_limits(world.alice, x, s).max_concurrent_jobs == s.max_concurrent_jobs


# --------------------------------------------------------------------------- rendering

HOSTILE_TEXT = [
    "<script>alert('x')</script>",
    "<img src=x onerror=alert(1)>",
    "[click me](javascript:alert(1))",
    "**bold** _it_ # Heading",
    "<iframe src=https://evil.example></iframe>",
    ":red[coloured] $x^2$",
]


@pytest.fixture
def local_app(data_dir: Path) -> Iterator[Settings]:
    settings = Settings(_env_file=None, data_dir=data_dir)  # type: ignore[call-arg]
    db.upgrade(settings)
    yield settings
    db.dispose_engines()


def _markdown_like(at: AppTest) -> list[Any]:
    kinds = (
        "markdown",
        "caption",
        "error",
        "warning",
        "info",
        "success",
        "title",
        "header",
        "subheader",
        "exception",
    )
    return [e for k in kinds for e in getattr(at, k)]


def test_dataset_content_with_html_markdown_and_script_is_shown_as_text(
    local_app: Settings, tmp_path: Path
) -> None:
    rows = [
        {"messages": [{"role": "user", "content": t}, {"role": "assistant", "content": t}]}
        for t in HOSTILE_TEXT
    ]
    src = tmp_path / "hostile.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with db.session_scope(local_app) as x:
        ds, _ = datasets.add_dataset(
            LOCAL_ACTOR,
            x,
            make_blob_store(local_app),
            src,
            "<b>x</b> **name** <script>",
            original_filename="ok.jsonl",
        )
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("app_pages/datasets.py").run()
    assert not at.exception, at.exception
    shown_as_text = 0
    for i in range(1, len(HOSTILE_TEXT) + 1):
        at.number_input(key="datasets.preview_row").set_value(min(i, 5)).run()
        texts = [t.value for t in at.text] + [c.value for c in at.code]
        shown_as_text += sum(any(h in t for t in texts) for h in HOSTILE_TEXT)
        for el in _markdown_like(at):
            assert not getattr(el.proto, "allow_html", False), "markdown allowed to render HTML"
            for h in HOSTILE_TEXT + ["<b>x</b>", "<script>"]:
                assert h not in str(el.value), (h, el.value)  # only ever escaped in markdown
    assert shown_as_text >= 5  # the rows were on the page, as text
    assert not at.get("html")  # no st.html anywhere
    RESULTS.append(
        {
            "category": "rendering",
            "input": f"{len(HOSTILE_TEXT)} HTML/markdown/script rows and name",
            "expected": "shown as text",
            "got": "shown as text",
            "message": "",
            "rejected_correctly": True,
            "stored_changed": False,
        }
    )


# --------------------------------------------------------------------------- sign-in input


def test_sign_in_input_is_checked_before_it_is_sent(world: World, gotrue: tuple[Any, str]) -> None:
    fake, _ = gotrue
    client = auth.make_client(world.settings)
    sent = len(fake.requests)
    for label, email, password, says in [
        ("email with a newline", "a@example.com\nBcc: x@evil.example", "pw-123456", "email"),
        ("email without @", "not-an-email", "pw-123456", "email"),
        ("300-character email", "a" * 290 + "@example.com", "pw-123456", "email"),
        ("empty password", "a@example.com", "", "password"),
        ("100-byte password", "a@example.com", "p" * 100, "password"),
    ]:
        check(
            Case(
                "sign-in",
                label,
                lambda e=email, p=password: auth.sign_in(client, e, p),
                InvalidInput,
                says,
            ),
            world.settings,
        )
    assert len(fake.requests) == sent
