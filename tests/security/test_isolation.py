"""Isolation between users: Bob cannot list, read, download, cancel, retry, chat with or
delete Alice's datasets, jobs or adapters, through core, the command line or the pages,
and an id of Alice's answers exactly like an id nobody has ("not found", never
"forbidden"). Nothing of Alice's changes on the way."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from cli import app as cli
from core import adapters, datasets, db, export, jobs, queries
from core.clients import inference
from core.clients.storage import make_blob_store
from core.db import repo
from core.errors import Forbidden, NotFound
from tests.conftest import ROOT
from tests.security.conftest import ANON_KEY, PASSWORDS, ModelListFake, World, page_text

FIGURES: dict[str, int] = {}  # read by test_figures


def _attempts(w: World, models_url: str) -> list[tuple[str, str, Callable[[str], Any]]]:
    """(what, Alice's id, a call Bob makes with an id) for everything Bob could try."""
    s, b = w.settings, w.bob
    store = make_blob_store(s)
    hub_calls: list[Any] = []  # a Hub client would be built here: never, for Alice's versions

    def in_db(fn: Callable[..., Any]) -> Callable[[str], Any]:
        def call(i: str) -> Any:
            with db.session_scope(s) as session:
                return fn(session, i)

        return call

    def chat_choice(name: str) -> Any:
        with inference.InferenceClient(
            s.model_copy(update={"inference_url": models_url})
        ) as client:
            return inference.find_choice(inference.actor_choices(b, s, client), name)

    return [
        ("read dataset", w.ds_alice, in_db(lambda x, i: datasets.get_dataset(b, x, i))),
        (
            "preview dataset rows",
            w.ds_alice,
            in_db(lambda x, i: datasets.preview_rows(b, x, store, i)),
        ),
        (
            "rename dataset",
            w.ds_alice,
            in_db(lambda x, i: datasets.rename_dataset(b, x, i, "mine now")),
        ),
        ("delete dataset", w.ds_alice, in_db(lambda x, i: datasets.delete_dataset(b, x, store, i))),
        (
            "eval split for chat",
            w.ds_alice,
            in_db(lambda x, i: inference.eval_split_cases(b, x, store, i)),
        ),
        (
            "train on dataset",
            w.ds_alice,
            lambda i: jobs.submit(b, s, dataset_id=i, model="Qwen/Qwen2.5-0.5B-Instruct"),
        ),
        ("read job", w.job_done, lambda i: jobs.get(b, s, i)),
        ("job detail page data", w.job_done, in_db(lambda x, i: queries.job_detail(b, x, i))),
        ("job events", w.job_done, lambda i: jobs.events(b, s, i)),
        ("job metrics", w.job_done, in_db(lambda x, i: queries.metric_series(b, x, i))),
        ("cancel job", w.job_running, lambda i: jobs.cancel(b, s, i)),
        ("retry job", w.job_failed, lambda i: jobs.retry(b, s, i)),
        ("relaunch job", w.job_failed, lambda i: jobs.relaunch(b, s, i)),
        ("read adapter by name", w.adapter, in_db(lambda x, i: repo.get_adapter(b, x, i))),
        ("read adapter by id", w.adapter_id, in_db(lambda x, i: repo.get_adapter(b, x, i))),
        ("list adapter versions", w.adapter, in_db(lambda x, i: repo.list_versions(b, x, i))),
        ("read adapter version", w.version, in_db(lambda x, i: repo.get_version(b, x, i))),
        (
            "download adapter zip (by version)",
            w.version,
            in_db(lambda x, i: export.export_zip(b, x, store, i)),
        ),
        (
            "download adapter zip (by name)",
            w.adapter,
            in_db(lambda x, i: export.export_zip(b, x, store, i)),
        ),
        (
            "push adapter to the Hub",
            w.version,
            lambda i: export.push_to_hub(
                b,
                s.model_copy(update={"hf_token": SecretStr("hf_fake")}),
                i,
                "bob/stolen",
                api_factory=hub_calls.append,
            ),
        ),
        ("merge adapter", w.version, lambda i: export.merge(b, s, i)),
        ("export adapter as GGUF", w.version, lambda i: export.export_gguf(b, s, i)),
        ("GGUF export job's status", w.job_done, lambda i: export.gguf_job_status(b, s, i)),
        ("delete adapter", w.adapter, in_db(lambda x, i: adapters.delete_adapter(b, x, store, i))),
        ("delete adapter version", w.version, in_db(lambda x, i: repo.delete_version(b, x, i))),
        ("chat with adapter (name)", w.adapter, chat_choice),
        ("chat with adapter (served folder)", w.served, chat_choice),
    ]


def _guess_like(real: str) -> str:
    """An id of the same shape that nobody has."""
    prefix, _, rest = real.rpartition("-")
    return f"{prefix}-{'z' * len(rest)}" if prefix else "z" * len(real)


def test_bob_gets_not_found_for_everything_of_alices_exactly_as_for_a_guessed_id(
    world: World, models: ModelListFake, unchanged: Callable[[], None]
) -> None:
    tried = 0
    for what, real, call in _attempts(world, models.url):
        guess = _guess_like(real)
        with pytest.raises(NotFound) as got_real:
            call(real)
        with pytest.raises(NotFound) as got_guess:
            call(guess)
        assert str(got_real.value).replace(real, "<id>") == str(got_guess.value).replace(
            guess, "<id>"
        ), what
        tried += 2
    assert not any(
        world.adapter in r or world.served in r for r in models.requests
    )  # never asked the server
    unchanged()
    FIGURES["isolation: core calls by user B on A's things and on guessed ids (all not found)"] = (
        tried
    )


def test_lists_and_spend_show_bob_only_his_own(world: World, models: ModelListFake) -> None:
    s, b, a = world.settings, world.bob, world.alice
    with db.session_scope(s) as x:
        assert [d.id for d in datasets.list_datasets(b, x)] == [world.ds_bob]
        assert {d.id for d in datasets.list_datasets(a, x)} == {
            world.ds_alice
        }  # the check can fail
        assert repo.list_jobs(b, x) == [] and len(repo.list_jobs(a, x)) == 3
        assert repo.list_adapters(b, x) == [] and queries.adapter_rows(b, x) == []
        assert repo.month_spend(b, x) == 0.0 and repo.month_spend(a, x) > 0
        assert inference.eval_split_datasets(b, x) == {}
        for admin_call in (
            repo.admin_list_users,
            repo.admin_spend_by_user,
            repo.admin_list_unfinished_jobs,
        ):
            with pytest.raises(Forbidden):
                admin_call(b, x)
    with inference.InferenceClient(s.model_copy(update={"inference_url": models.url})) as client:
        labels = [c.label for c in inference.actor_choices(b, s, client)]
        assert labels == ["tiny-base (base)"]
        assert any(world.adapter in c.label for c in inference.actor_choices(a, s, client))


# --------------------------------------------------------------------------- command line


def _cli_env(w: World, profile: Path, models_url: str) -> dict[str, str]:
    return {
        "AUTH": "supabase",
        "SUPABASE_URL": w.settings.supabase_url,
        "SUPABASE_ANON_KEY": ANON_KEY,
        "BRIGHTRUN_DATA_DIR": str(w.settings.data_dir),
        "BRIGHTRUN_PROFILE": str(profile),
        "INFERENCE_URL": models_url,
        "MAX_CONCURRENT_JOBS": "5",
    }


def test_command_line_acts_as_the_signed_in_user_and_finds_none_of_alices(
    world: World,
    models: ModelListFake,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    unchanged: Callable[[], None],
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    env = _cli_env(world, tmp_path / "bob" / "session.json", models.url)

    def run(*args: str) -> Any:
        return runner.invoke(cli, list(args), env=env)

    out = run("jobs", "list")
    assert out.exit_code == 2 and "brightrun login" in out.output  # nobody signed in yet

    out = run("login", "--email", "bob@example.com", "--password", "wrong-password")
    assert out.exit_code == 2 and "Wrong email or password." in out.output
    out = run("login", "--email", "bob@example.com", "--password", PASSWORDS["bob@example.com"])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "bob" / "session.json").stat().st_mode & 0o777 == 0o600
    assert "bob@example.com (member" in run("whoami").output

    commands = [
        ("jobs", "show", world.job_done),
        ("jobs", "events", world.job_done),
        ("jobs", "cancel", world.job_running),
        ("jobs", "retry", world.job_failed),
        ("dataset", "show", world.ds_alice),
        ("dataset", "preview", world.ds_alice),
        ("dataset", "rename", world.ds_alice, "mine"),
        ("dataset", "delete", world.ds_alice),
        ("train", "--dataset", world.ds_alice, "--model", "Qwen/Qwen2.5-0.5B-Instruct"),
        ("chat", "--adapter", world.adapter, "hello"),
        ("chat", "--adapter", world.served, "hello"),
        ("plan", "--model", "Qwen/Qwen2.5-0.5B-Instruct", "--dataset", world.ds_alice),
    ]
    for args in commands:
        real = next(a for a in args if a in world.alice_marks())
        guess = _guess_like(real)
        out = run(*args)
        out_guess = run(*(guess if a == real else a for a in args))
        assert (
            out.exit_code != 0 and "not found" in out.output.lower() or "no adapter" in out.output
        ), (args, out.output)
        assert (out.exit_code, out.output.replace(real, "<id>")) == (
            out_guess.exit_code,
            out_guess.output.replace(guess, "<id>"),
        ), args
        for mark in ("alpha secret set", "alpha question", world.alice.email):
            assert mark not in out.output, (args, out.output)
    listing = (
        run("jobs", "list").output + run("dataset", "list").output + run("chat", "--list").output
    )
    assert world.ds_bob in listing and not any(m in listing for m in world.alice_marks())
    assert run("admin", "users").exit_code == 2  # a member is no admin

    assert run("logout").exit_code == 0
    assert not (tmp_path / "bob" / "session.json").exists()
    assert run("jobs", "list").exit_code == 2
    unchanged()
    FIGURES["isolation: commands by user B on A's things and on guessed ids (all not found)"] = (
        2 * len(commands)
    )


# --------------------------------------------------------------------------- pages


@pytest.fixture(params=["page scripts alone", "through app.py"])
def bob_pages(
    request: pytest.FixtureRequest,
    world: World,
    models: ModelListFake,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[AppTest]:
    """An AppTest signed in as Bob through the sign-in page; runs either the page scripts
    alone (AppTest's way, and a server's first run) or app.py every time (`through_app_py`)."""
    from components import session as ui_session

    if request.param == "through app.py":
        request.getfixturevalue("through_app_py")
    ui_session._per_session.clear()  # every AppTest shares one session id
    monkeypatch.chdir(tmp_path)
    for k, v in _cli_env(world, tmp_path / "unused.json", models.url).items():
        monkeypatch.setenv(k, v)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception, at.exception
    at.text_input(key="auth.email").input("bob@example.com")
    at.text_input(key="auth.password").input(PASSWORDS["bob@example.com"])
    at.button(key="auth.sign_in").click().run()
    assert not at.exception, at.exception
    yield at
    ui_session._per_session.clear()


PAGES = ("overview", "datasets", "train", "jobs", "adapters", "playground", "costs", "settings")


def test_pages_signed_in_as_bob_show_nothing_of_alices(
    bob_pages: AppTest, world: World, unchanged: Callable[[], None]
) -> None:
    at = bob_pages
    seen = []
    for page in PAGES:
        at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception, (page, at.exception)
        text = page_text(at)
        seen.append(text)
        leaked = [m for m in world.alice_marks() if m in text]
        assert not leaked, (page, leaked)
    assert "bob set" in "\n".join(seen)  # Bob's own dataset is there: the check can fail
    settings_page = seen[PAGES.index("settings")]
    assert "Your monthly budget" in settings_page  # a member sees prices and budgets...
    assert (
        "All settings" not in settings_page and "supabase_url" not in settings_page
    )  # ...not the deployment

    # Opening Alice's job by its id in the URL, and choosing her dataset by id.
    at.query_params["job"] = world.job_done
    at.switch_page("app_pages/jobs.py").run()
    assert any("not found" in e.value for e in at.error), [e.value for e in at.error]
    assert not [m for m in world.alice_marks() if m != world.job_done and m in page_text(at)]
    at.query_params.clear()
    at.session_state["jobs.selected"] = None
    at.session_state["datasets.selected"] = world.ds_alice
    at.switch_page("app_pages/datasets.py").run()
    assert at.session_state["datasets.selected"] == world.ds_bob
    assert "alpha question" not in page_text(at)
    unchanged()
    key = "isolation: page renders as user B, both ways pages run (none showed A's things)"
    FIGURES[key] = FIGURES.get(key, 0) + len(PAGES) + 2


def test_signed_out_pages_show_only_the_sign_in(
    world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from components import session as ui_session

    ui_session._per_session.clear()
    monkeypatch.chdir(tmp_path)
    for k, v in _cli_env(world, tmp_path / "unused.json", "http://127.0.0.1:9/v1").items():
        monkeypatch.setenv(k, v)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    # No page script is routed: every page's URL shows the sign-in (app.py; the browser test
    # tests/ui/test_browser_sign_in.py opens each one).
    with pytest.raises(ValueError, match=r"Could not find a navigation page"):
        at.switch_page("app_pages/jobs.py")
    assert [t.value for t in at.title] == ["Sign in to BrightRun"]
    assert not any(m in page_text(at) for m in world.alice_marks())
    assert ANON_KEY not in page_text(at)  # the sign-in client's key stays on the server


def test_storage_keys_and_settings_stay_per_user(world: World) -> None:
    """Every stored object of Alice's lives under her own id's folder, Bob's under his."""
    store = make_blob_store(world.settings)
    for bucket in ("datasets", "adapters"):
        for blob in store.list(bucket):
            owner = blob.key.split("/", 1)[0]
            assert owner in (world.alice.user_id, world.bob.user_id), blob.key
