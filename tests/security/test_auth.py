"""Supabase Auth through the real `supabase` client against a loopback GoTrue: sign up,
sign in, wrong credentials, refresh, sign out; roles; the sign-in page and the gate; one
client per browser session; admin limits through core, the page and the command line."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from cli import app as cli
from core import admin, db
from core.clients import auth
from core.db import repo
from core.errors import Conflict, Forbidden, InvalidInput
from core.settings import Settings
from core.users import LOCAL_ACTOR
from tests.conftest import ROOT
from tests.security.conftest import ANON_KEY, settings_for
from tests.security.gotrue_fake import GoTrueFake

FIGURES: dict[str, int] = {}


def email() -> str:
    return f"u-{uuid.uuid4().hex[:8]}@example.com"


@pytest.fixture
def env(tmp_path: Path, gotrue: tuple[GoTrueFake, str]) -> Iterator[tuple[GoTrueFake, Settings]]:
    fake, url = gotrue
    fake.expires_in, fake.confirm_emails, fake.signup_open = 3600, False, True
    settings = settings_for(tmp_path / "data", url)
    db.upgrade(settings)
    yield fake, settings
    fake.expires_in, fake.confirm_emails, fake.signup_open = 3600, False, True
    db.dispose_engines()


def test_sign_up_sign_in_and_the_user_id_owns_the_data(env) -> None:
    fake, settings = env
    who = email()
    up = auth.sign_up(auth.make_client(settings), who, "long-enough-pw")
    assert up.signed_in and up.identity.email == who
    client = auth.make_client(settings)
    identity = auth.sign_in(client, who.upper(), "long-enough-pw")
    assert identity.user_id == up.identity.user_id == fake.accounts[who].id
    with db.session_scope(settings) as s:
        actor = auth.actor_for(s, identity)
    assert (actor.user_id, actor.email, actor.role) == (identity.user_id, who, "member")
    assert all(key == ANON_KEY for _, _, key, _ in fake.requests)  # only ever the anon key


@pytest.mark.parametrize(
    ("who", "password"),
    [("known", "not-the-password"), ("unknown", "whatever-pass")],
)
def test_wrong_credentials_get_one_clear_message_that_does_not_tell_accounts_apart(
    env, who, password
) -> None:
    fake, settings = env
    known = email()
    fake.add_user(known, "right-password")
    with pytest.raises(auth.WrongCredentials) as e:
        auth.sign_in(auth.make_client(settings), known if who == "known" else email(), password)
    assert str(e.value) == "Wrong email or password."


def test_sign_up_refusals_are_specific(env) -> None:
    fake, settings = env
    taken = email()
    fake.add_user(taken, "right-password")
    with pytest.raises(auth.AccountExists):
        auth.sign_up(auth.make_client(settings), taken, "another-password")
    with pytest.raises(auth.WeakPassword, match="password: too weak"):
        auth.sign_up(auth.make_client(settings), email(), "abc")
    with pytest.raises(InvalidInput, match="email: that is not an email address"):
        auth.sign_in(auth.make_client(settings), "not an email", "whatever-pass")
    with pytest.raises(InvalidInput, match="password: at most 72 bytes"):
        auth.sign_in(auth.make_client(settings), email(), "x" * 73)
    fake.signup_open = False
    with pytest.raises(auth.SignUpClosed):
        auth.sign_up(auth.make_client(settings), email(), "long-enough-pw")


def test_unconfirmed_email_must_be_confirmed_first(env) -> None:
    fake, settings = env
    fake.confirm_emails = True
    who = email()
    assert not auth.sign_up(auth.make_client(settings), who, "long-enough-pw").signed_in
    with pytest.raises(auth.EmailNotConfirmed):
        auth.sign_in(auth.make_client(settings), who, "long-enough-pw")
    fake.confirm(who)
    assert auth.sign_in(auth.make_client(settings), who, "long-enough-pw").email == who


def test_an_expiring_session_is_refreshed_and_a_used_refresh_token_is_refused(env) -> None:
    fake, settings = env
    fake.expires_in = 5  # inside the client's 10-second margin: every check refreshes
    who = email()
    fake.add_user(who, "right-password")
    client = auth.make_client(settings)
    auth.sign_in(client, who, "right-password")
    first = auth.session_tokens(client)
    refreshes = fake.count("/token")
    assert auth.current_identity(client).email == who
    second = auth.session_tokens(client)
    assert fake.count("/token") > refreshes
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    # Someone holding the old refresh token (an old copy of a profile) cannot use it again.
    with pytest.raises(auth.SessionEnded):
        auth.cli_client(_profile_with(settings, first["refresh_token"]))


def _profile_with(settings: Settings, refresh_token: str) -> Settings:
    """Settings whose command-line profile holds only this refresh token."""
    import json

    path = Path(settings.data_dir) / f"profile-{uuid.uuid4().hex[:6]}.json"
    path.write_text(
        json.dumps(
            {
                "refresh_token": refresh_token,
                "access_token": "",
                "expires_at": 0,
                "supabase_url": settings.supabase_url,
            }
        )
    )
    return settings.model_copy(update={"cli_profile": path})


def test_sign_out_revokes_the_session_on_the_server(env) -> None:
    fake, settings = env
    who = email()
    fake.add_user(who, "right-password")
    client = auth.make_client(settings)
    auth.sign_in(client, who, "right-password")
    tokens = auth.session_tokens(client)
    auth.sign_out(client)
    assert auth.current_identity(client) is None
    assert fake.count("/logout") >= 1
    with pytest.raises(auth.SessionEnded):
        auth.cli_client(_profile_with(settings, tokens["refresh_token"]))
    auth.sign_out(client)  # signing out twice is fine


def test_roles_come_from_the_database_and_admin_functions_need_an_admin(env) -> None:
    fake, settings = env
    who = email()
    fake.add_user(who, "right-password")
    identity = auth.sign_in(auth.make_client(settings), who, "right-password")
    with db.session_scope(settings) as s:
        member = auth.actor_for(s, identity)
        with pytest.raises(Forbidden):
            admin.user_rows(member, s, settings)
        with pytest.raises(Forbidden):
            admin.set_limits(member, s, member.user_id, monthly_budget_usd=1e6)
        repo.admin_set_role(LOCAL_ACTOR, s, member.user_id, "admin")
    with db.session_scope(settings) as s:
        assert auth.actor_for(s, identity).role == "admin"  # read again on every sign-in check
        assert any(
            r.email == who for r in admin.user_rows(auth.actor_for(s, identity), s, settings)
        )


def test_auth_none_is_the_local_user(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    assert auth.cli_actor(settings) is LOCAL_ACTOR
    with pytest.raises(auth.AuthUnavailable):
        auth.make_client(settings)  # no Supabase configured: nothing to sign in to


# --------------------------------------------------------------------------- admin limits

BAD_LIMITS: list[tuple[str, dict[str, Any]]] = [
    ("negative budget", {"monthly_budget_usd": -1.0}),
    ("budget NaN", {"monthly_budget_usd": math.nan}),
    ("budget infinite", {"monthly_budget_usd": math.inf}),
    ("budget too large", {"monthly_budget_usd": 1e9}),
    ("budget as text", {"monthly_budget_usd": "100"}),
    ("negative job limit", {"max_concurrent_jobs": -1}),
    ("fractional job limit", {"max_concurrent_jobs": 1.5}),
    ("job limit as bool", {"max_concurrent_jobs": True}),
    ("job limit too large", {"max_concurrent_jobs": 10_001}),
]


def test_admin_limits_are_checked_and_a_bad_value_changes_nothing(env) -> None:
    from tests.security.conftest import snapshot

    fake, settings = env
    with db.session_scope(settings) as s:
        repo.ensure_user(LOCAL_ACTOR, s)
        user = repo.sign_in_actor(s, str(uuid.uuid4()), email())
    before = snapshot(settings)
    for what, change in BAD_LIMITS:
        with db.session_scope(settings) as s, pytest.raises(InvalidInput):
            admin.set_limits(LOCAL_ACTOR, s, user.user_id, **change)
        assert snapshot(settings) == before, what
    with db.session_scope(settings) as s:
        admin.set_limits(LOCAL_ACTOR, s, user.email, monthly_budget_usd=12.5, max_concurrent_jobs=0)
        limits = repo.user_limits(user, s, settings)
        assert (limits.monthly_budget_usd, limits.max_concurrent_jobs) == (12.5, 0)
        admin.set_limits(LOCAL_ACTOR, s, user.user_id, monthly_budget_usd=None)
        assert repo.user_limits(user, s, settings).monthly_budget_usd == settings.monthly_budget_usd
        with pytest.raises(Conflict):  # the only admin stays one
            admin.set_role(LOCAL_ACTOR, s, LOCAL_ACTOR.user_id, "member")
    FIGURES["admin: bad per-user limits refused (nothing changed)"] = len(BAD_LIMITS)


def test_admin_command_line(env, tmp_path: Path) -> None:
    fake, settings = env
    who = email()
    fake.add_user(who, "right-password")
    with db.session_scope(settings) as s:
        target = auth.actor_for(s, auth.sign_in(auth.make_client(settings), who, "right-password"))
    runner = CliRunner()
    local = {"BRIGHTRUN_DATA_DIR": str(settings.data_dir), "AUTH": "none"}
    out = runner.invoke(
        cli, ["admin", "set-limits", who, "--monthly-budget", "33", "--max-jobs", "1"], env=local
    )
    assert out.exit_code == 0, out.output
    out = runner.invoke(cli, ["admin", "users"], env=local)
    assert (
        f"{who}  member  spent $0.00" in out.output
        and "budget $33.00  jobs at once 1" in out.output
    )
    out = runner.invoke(cli, ["admin", "set-limits", who, "--monthly-budget", "-5"], env=local)
    assert out.exit_code == 2 and "monthly budget must be between" in out.output
    out = runner.invoke(cli, ["admin", "set-role", "nobody@example.com", "admin"], env=local)
    assert out.exit_code == 2 and "not found" in out.output
    with db.session_scope(settings) as s:
        assert repo.user_limits(target, s, settings).monthly_budget_usd == 33.0


# --------------------------------------------------------------------------- the dashboard


@pytest.fixture
def app_env(
    env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, through_app_py: None
) -> Iterator[tuple[GoTrueFake, Settings]]:
    from components import session as ui_session

    fake, settings = env
    ui_session._per_session.clear()  # every AppTest shares one session id
    monkeypatch.chdir(tmp_path)
    for k, v in {
        "AUTH": "supabase",
        "SUPABASE_URL": settings.supabase_url,
        "SUPABASE_ANON_KEY": ANON_KEY,
        "BRIGHTRUN_DATA_DIR": str(settings.data_dir),
        "INFERENCE_URL": "http://127.0.0.1:9/v1",
    }.items():
        monkeypatch.setenv(k, v)
    yield fake, settings
    ui_session._per_session.clear()


def sign_in_page(who: str, password: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.text_input(key="auth.email").input(who)
    at.text_input(key="auth.password").input(password)
    return at.button(key="auth.sign_in").click().run()


def shown(at: AppTest) -> str:
    return "\n".join(
        str(e.value)
        for kind in ("title", "error", "info", "caption", "markdown")
        for e in getattr(at, kind)
    ).replace("\\", "")


def test_sign_in_page_wrong_password_then_success_refresh_and_sign_out(
    app_env, monkeypatch
) -> None:
    from components import session as ui_session

    fake, settings = app_env
    who = email()
    fake.add_user(who, "right-password")
    fake.expires_in = 5
    at = sign_in_page(who, "wrong-password")
    assert [e.value for e in at.error] == ["Wrong email or password\\."]
    assert "wrong-password" not in shown(at)

    at.text_input(key="auth.email").input(who)
    at.text_input(key="auth.password").input("right-password")
    at.button(key="auth.sign_in").click().run()
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == ["Overview"]
    assert f"Signed in as {who}" in shown(at)
    refreshes = fake.count("/token")
    at.run()
    assert fake.count("/token") > refreshes  # the expiring session was refreshed on the rerun
    assert f"Signed in as {who}" in shown(at)

    # Another browser session (another session id) is not signed in by this one.
    real_id = ui_session._session_id
    monkeypatch.setattr(ui_session, "_session_id", lambda: "another-browser")
    other = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert [t.value for t in other.title] == ["Sign in to BrightRun"]
    monkeypatch.setattr(ui_session, "_session_id", real_id)

    logouts = fake.count("/logout")
    at.button(key="auth.sign_out").click().run()
    assert fake.count("/logout") == logouts + 1
    assert [t.value for t in at.title] == ["Sign in to BrightRun"]


def test_a_session_revoked_elsewhere_ends_with_a_notice(app_env) -> None:
    fake, settings = app_env
    who = email()
    fake.add_user(who, "right-password")
    fake.expires_in = 5
    at = sign_in_page(who, "right-password")
    assert f"Signed in as {who}" in shown(at)
    uid = fake.accounts[who].id
    with fake.lock:  # an admin revokes the user's sessions in Supabase
        for tok, (owner, sid) in list(fake.refresh_tokens.items()):
            if owner == uid:
                del fake.refresh_tokens[tok]
                fake.sessions.discard(sid)
    at.run()
    assert [t.value for t in at.title] == ["Sign in to BrightRun"]
    assert any("session has ended" in i.value for i in at.info)


def test_admin_page_only_for_admins_and_it_sets_limits(app_env) -> None:
    fake, settings = app_env
    boss, member = email(), email()
    fake.add_user(boss, "boss-password")
    fake.add_user(member, "member-password")
    at = sign_in_page(member, "member-password")
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("app_pages/admin.py")
    with db.session_scope(settings) as s:
        repo.sign_in_actor(s, fake.accounts[boss].id, boss)
        repo.admin_set_role(LOCAL_ACTOR, s, fake.accounts[boss].id, "admin")
    from components import session as ui_session

    ui_session._per_session.clear()
    at = sign_in_page(boss, "boss-password")
    at.switch_page("app_pages/admin.py").run()
    assert not at.exception, at.exception
    member_id = fake.accounts[member].id
    at.selectbox(key="admin.user").set_value(member_id).run()
    at.checkbox(key=f"admin.budget_default.{member_id}").uncheck().run()
    at.number_input(key=f"admin.budget.{member_id}").set_value(42.0).run()
    at.button(key="admin.save").click().run()
    assert not at.exception, at.exception
    with db.session_scope(settings) as s:
        assert repo.get_user(repo.sign_in_actor(s, member_id, member), s).monthly_budget_usd == 42.0


def test_a_session_that_ends_on_an_open_page_shows_only_the_sign_in(
    env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The Supabase session ends while a page is open: the next run shows the sign-in page
    and nothing of the page. (A page script run alone still checks the session itself:
    tests/ui/test_playground_page.py.)"""
    from components import session as ui_session

    fake, settings = env
    ui_session._per_session.clear()
    monkeypatch.chdir(tmp_path)
    for k, v in {
        "AUTH": "supabase",
        "SUPABASE_URL": settings.supabase_url,
        "SUPABASE_ANON_KEY": ANON_KEY,
        "BRIGHTRUN_DATA_DIR": str(settings.data_dir),
    }.items():
        monkeypatch.setenv(k, v)
    who = email()
    fake.add_user(who, "right-password")
    fake.expires_in = 5
    at = sign_in_page(who, "right-password")
    at.switch_page("app_pages/costs.py").run()
    assert not at.exception and not at.warning  # signed in: the page shows its numbers
    assert at.metric
    uid = fake.accounts[who].id
    with fake.lock:
        for tok, (owner, sid) in list(fake.refresh_tokens.items()):
            if owner == uid:
                del fake.refresh_tokens[tok]
                fake.sessions.discard(sid)
    at.run()
    assert not at.exception, at.exception
    assert not at.metric and "auth.actor" not in at.session_state
    assert at.text_input(key="auth.email") is not None  # the sign-in form, and only it
    ui_session._per_session.clear()
