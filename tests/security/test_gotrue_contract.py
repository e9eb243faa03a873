"""BrightRun's Supabase Auth client and the Auth stand-in, held to Auth's published OpenAPI
document (`../shared/contracts/supabase-auth.openapi.yaml`, see `tests/supabase_contract.py`):
sign-up, sign-in, refresh, the session's user, sign-out and their refusals run through the
real `supabase` client (supabase_auth) with a new-format publishable key, and every request
and answer the stand-in recorded is validated.

Where the document is older than the live service or silent, the test says so:
- Errors. The document describes GoTrue's initial error envelope, `{"code": <HTTP status>,
  "error_code", "msg"}`. The client asks for API version 2024-01-01 (`X-Supabase-Api-Version`)
  and GoTrue then answers `{"code": "<error code>", "message"}` (its `HTTPErrorResponse20240101`),
  which the document does not describe: those answers are checked for that shape here, and
  each refused request is sent again without the version header, whose answer must hold to
  the document.
- `/signup` refusals are 422 on the live service (`user_already_exists`, `weak_password`,
  `signup_disabled`); the document lists only 400 and 429 for it (`SIGNUP_422`). `GET /user`
  documents only its 200 (`USER_403`).
- The `supabase` client always sends `gotrue_meta_security: {"captcha_token": null}`; the
  document's `captcha_token` is a non-nullable string (GoTrue's Go decoder reads the null as
  empty). That one deviation of the client is asserted and taken out before validation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from core.clients import auth
from core.settings import Settings
from tests.security.gotrue_fake import GoTrueFake, ServedGoTrue
from tests.supabase_contract import AUTH_DOC, Exchange, load_auth, skip_reason

CONTRACT = load_auth()
pytestmark = pytest.mark.skipif(CONTRACT is None, reason=skip_reason(AUTH_DOC))

PUBLISHABLE = "sb_publishable_" + "q" * 32
SIGNUP_422 = ("POST", "/signup", 422)
USER_403 = ("GET", "/user", 403)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[GoTrueFake, Settings, str]]:
    fake = GoTrueFake(anon_key=PUBLISHABLE)
    with ServedGoTrue(fake) as s:
        settings = Settings(
            _env_file=None,
            data_dir=tmp_path / "data",
            auth="supabase",
            supabase_url=s.url,
            supabase_anon_key=PUBLISHABLE,
            cli_profile=str(tmp_path / "profile.json"),
        )
        yield fake, settings, s.url


def _as_documented(ex: Exchange) -> Exchange:
    """The exchange without the client's null captcha token (see the module doc)."""
    if not ex.body:
        return ex
    body = json.loads(ex.body)
    if "gotrue_meta_security" in body:
        assert body.pop("gotrue_meta_security") == {"captcha_token": None}
    return replace(ex, body=json.dumps(body).encode())


def _check(fake: GoTrueFake, url: str, since: int = 0) -> set[tuple[str, str, int]]:
    """Validate the exchanges recorded from `since` on (see the module doc); the silent
    answers."""
    assert CONTRACT is not None
    silent, errors = set(), []
    for ex in fake.exchanges[since:]:
        versioned = ex.headers.get("x-supabase-api-version") == "2024-01-01"
        if ex.status >= 400 and versioned:
            body = json.loads(ex.response_body)
            assert set(body) == {"code", "message"} and isinstance(body["code"], str), ex
            assert ex.response_headers["x-supabase-api-version"] == "2024-01-01"
            headers = {k: v for k, v in ex.headers.items() if k != "x-supabase-api-version"}
            headers.pop("content-length", None)
            before = len(fake.exchanges)
            httpx.request(ex.method, url + ex.url, headers=headers, content=ex.body)
            ex = fake.exchanges[before]  # the same request, answered in the initial envelope
            assert ex.status >= 400 and isinstance(json.loads(ex.response_body)["code"], int)
        for e in CONTRACT.errors(_as_documented(ex)):
            if e.startswith("SILENT: "):
                silent.add((ex.method, CONTRACT.operation(ex.method, ex.path)[0], ex.status))
            else:
                errors.append(f"{ex}: {e}")
    assert errors == []
    return silent


def test_every_exchange_of_brightruns_sign_in_flows_holds_to_the_published_document(
    served, monkeypatch
) -> None:
    fake, settings, url = served
    who, password = "ada@example.com", "long-enough-pw"
    up = auth.sign_up(auth.make_client(settings), who, password)
    assert up.signed_in
    client = auth.make_client(settings)
    identity = auth.sign_in(client, who, password)
    auth.save_profile(settings, client)
    used = json.loads(auth.profile_path(settings).read_text())
    assert auth.refresh(client) == identity == auth.current_identity(client)
    auth.save_profile(settings, client)
    again = auth.cli_client(settings)  # the command line's path: set_session -> GET /user
    assert auth.current_identity(again) == identity
    auth.sign_out(client)
    # Refusals: wrong password, an existing account, a weak password, a used refresh token,
    # sign-ups closed, and an unconfirmed account.
    with pytest.raises(auth.WrongCredentials):
        auth.sign_in(auth.make_client(settings), who, "not-the-password")
    with pytest.raises(auth.AccountExists):
        auth.sign_up(auth.make_client(settings), who, password)
    with pytest.raises(auth.WeakPassword, match="password: too weak"):
        auth.sign_up(auth.make_client(settings), "bo@example.com", "abc")
    used["expires_at"] = 0  # the profile's refresh token was used by the refresh above
    auth.profile_path(settings).write_text(json.dumps(used))
    with pytest.raises(auth.SessionEnded):
        auth.cli_client(settings)
    fake.confirm_emails = True
    pending = auth.sign_up(auth.make_client(settings), "cy@example.com", password)
    assert not pending.signed_in and not pending.identity.email_confirmed
    with pytest.raises(auth.EmailNotConfirmed):
        auth.sign_in(auth.make_client(settings), "cy@example.com", password)
    fake.signup_open = False
    with pytest.raises(auth.SignUpClosed):
        auth.sign_up(auth.make_client(settings), "di@example.com", password)
    assert all(key == PUBLISHABLE for _, _, key, _ in fake.requests)
    assert _check(fake, url) == {SIGNUP_422}


def test_an_expired_or_wrong_audience_session_is_refused_and_brightrun_says_it_ended(
    served,
) -> None:
    """Auth refuses a token its clock says has expired (403 bad_jwt) and one issued for
    another audience (403 unexpected_audience): the command line's session ends with the
    message to sign in again, and its profile is removed."""
    fake, settings, url = served
    who, password = "ed@example.com", "long-enough-pw"
    client = auth.make_client(settings)
    fake.add_user(who, password)
    auth.sign_in(client, who, password)
    auth.save_profile(settings, client)
    fake.skew_s = 7200  # the server's clock is past the token's expiry; the client's is not
    with pytest.raises(auth.SessionEnded, match="run `brightrun login` again"):
        auth.cli_client(settings)
    assert not auth.profile_path(settings).exists()
    assert _check(fake, url) == {USER_403}
    fake.skew_s = 0
    since = len(fake.exchanges)
    auth.sign_in(client, who, password)
    auth.save_profile(settings, client)
    profile = json.loads(auth.profile_path(settings).read_text())
    profile["access_token"] = fake.access_token(who, aud="another-project")
    auth.profile_path(settings).write_text(json.dumps(profile))
    with pytest.raises(auth.SessionEnded, match="run `brightrun login` again"):
        auth.cli_client(settings)
    assert _check(fake, url, since) == {USER_403}
    refused = [ex for ex in fake.exchanges if ex.status == 403]
    codes = [
        json.loads(ex.response_body).get("error_code") or json.loads(ex.response_body)["code"]
        for ex in refused
    ]
    assert codes == ["bad_jwt", "bad_jwt", "unexpected_audience", "unexpected_audience"]
