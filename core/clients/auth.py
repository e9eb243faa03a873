"""Who is acting: Supabase Auth (email and password), or the one local user.

`AUTH=none` (the default): there is one user, `core.users.LOCAL_ACTOR`, an admin of its
own install; nothing here is called.

`AUTH=supabase`: people sign up, in and out with email and password through the
`supabase` client, built with the project's publishable key (`SUPABASE_PUBLISHABLE_KEY`;
the legacy anon key, `SUPABASE_ANON_KEY`, is read too):

- `make_client(settings)` builds a new client for ONE person: one per browser session
  (the dashboard keeps it with `components.session.per_session`, never in
  `st.cache_resource`) or one per command-line run. It holds that person's session in
  memory and never refreshes in a background thread.
- `sign_up`, `sign_in`, `sign_out` (revokes this session's refresh token on the server),
  `current_identity` (the session's user; refreshes the access token when it is within
  Supabase's 10-second margin of expiry, and raises `SessionEnded` when the refresh is
  refused), `refresh` (refresh now).
- `actor_for(db_session, identity)` turns the signed-in user into the `Actor` every core
  function takes: the user id Supabase gives owns everything they create; the role is
  the one stored in BrightRun's `users` table (a new user is a `member`; admins are made
  with `brightrun admin set-role` or SQL), read again on every call so a change applies
  at once.

The tokens never leave the server: the dashboard signs in on the person's behalf and
keeps the session in its per-session client, so no token reaches the browser, a log
line or the database.

The command line (`brightrun login`) keeps its session in a profile file
(`settings.cli_profile`, `BRIGHTRUN_PROFILE`, mode 0600): `save_profile`/`cli_actor`.
Every command then acts as that user (`cli_actor(settings)`), refreshing the session when
needed; with `AUTH=none` every command acts as the local user.

Errors (all `BrightRunError`, decided from GoTrue's error `code` field and HTTP status,
never from message text): `WrongCredentials` ("Wrong email or password."),
`EmailNotConfirmed`, `AccountExists`, `SignUpClosed`, `WeakPassword` (an `InvalidInput`),
`SessionEnded`, `NotSignedIn`, `AuthUnavailable` (Supabase Auth not configured or not
reachable).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import BrightRunError, InvalidInput
from core.settings import Settings
from core.users import LOCAL_ACTOR, Actor

if TYPE_CHECKING:
    from sqlalchemy.orm import Session as DbSession
    from supabase import Client

MAX_PASSWORD_BYTES = 72  # GoTrue hashes with bcrypt, which reads 72 bytes at most
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,252}\.[^@\s]{1,63}$")


class AuthError(BrightRunError):
    """Signing in, up or out did not work; the message says what to do."""


class WrongCredentials(AuthError):
    """The email and password do not match an account."""


class EmailNotConfirmed(AuthError):
    """The account exists but its email address is not confirmed yet."""


class AccountExists(AuthError):
    """Sign-up with an email address that already has an account."""


class SignUpClosed(AuthError):
    """This deployment does not let people sign themselves up."""


class WeakPassword(InvalidInput):
    """Supabase Auth refused the new password as too weak."""


class SessionEnded(AuthError):
    """The session expired and could not be refreshed (signed out elsewhere, or revoked)."""


class NotSignedIn(AuthError):
    """Nobody is signed in (the command line has no profile)."""


class AuthUnavailable(AuthError):
    """Supabase Auth is not configured or cannot be reached."""


@dataclass(frozen=True)
class Identity:
    """The user Supabase Auth vouches for."""

    user_id: str
    email: str
    email_confirmed: bool


@dataclass(frozen=True)
class SignUpResult:
    identity: Identity
    signed_in: bool  # False: Supabase sent a confirmation email; sign in after confirming


# --------------------------------------------------------------------------- client


def make_client(settings: Settings) -> Client:
    """A new Supabase client for one person's session (see the module doc)."""
    from supabase import ClientOptions, create_client

    key = settings.supabase_anon_key.get_secret_value()
    if not settings.supabase_url or not key:
        raise AuthUnavailable(
            "AUTH=supabase needs SUPABASE_URL and SUPABASE_PUBLISHABLE_KEY in .env"
        )
    options = ClientOptions(auto_refresh_token=False, persist_session=False)
    return create_client(settings.supabase_url, key, options=options)


def _check_email(email: str) -> str:
    email = (email or "").strip()
    if not email:
        raise InvalidInput("email: enter your email address")
    if len(email) > 254 or not _EMAIL.match(email) or any(ord(c) < 32 for c in email):
        raise InvalidInput("email: that is not an email address")
    return email


def _check_password(password: str) -> str:
    if not password:
        raise InvalidInput("password: enter your password")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise InvalidInput(f"password: at most {MAX_PASSWORD_BYTES} bytes")
    return password


def _answer_code(e: Exception) -> str:
    """The error code in the Auth answer behind a client exception ("" when none): `code`
    in GoTrue's 2024-01-01 envelope, `error_code` in the initial one."""
    import httpx

    cause = e.__cause__
    if not isinstance(cause, httpx.HTTPStatusError):
        return ""
    try:
        body = cause.response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    code = body.get("code") if isinstance(body.get("code"), str) else body.get("error_code")
    return code if isinstance(code, str) else ""


def _translate(e: Exception) -> BrightRunError:
    """A BrightRun error for an exception of the supabase auth client."""
    from supabase_auth.errors import (
        AuthApiError,
        AuthRetryableError,
        AuthUnknownError,
        AuthWeakPasswordError,
    )

    if isinstance(e, AuthWeakPasswordError):
        return WeakPassword(f"password: too weak ({', '.join(e.reasons) or 'choose a longer one'})")
    # GoTrue's 2024-01-01 envelope (the version the client asks for) carries no
    # `weak_password.reasons`; the client then fails reading them (AuthUnknownError), so
    # the code is read from the answer itself.
    if isinstance(e, AuthUnknownError) and _answer_code(e) == "weak_password":
        return WeakPassword("password: too weak (choose a longer one)")
    if isinstance(e, AuthRetryableError):
        return AuthUnavailable("Supabase Auth cannot be reached right now; try again in a moment")
    if isinstance(e, AuthApiError):
        code = e.code or ""
        if code == "invalid_credentials" or (not code and e.status == 400):
            return WrongCredentials("Wrong email or password.")
        if code == "email_not_confirmed":
            return EmailNotConfirmed(
                "Confirm your email address first: open the link Supabase sent you, then sign in."
            )
        if code in ("user_already_exists", "email_exists"):
            return AccountExists("An account with this email already exists: sign in instead.")
        if code in ("signup_disabled", "email_provider_disabled"):
            return SignUpClosed(
                "This deployment does not allow signing up; ask an admin to invite you."
            )
        if code in (
            "refresh_token_not_found",
            "refresh_token_already_used",
            "session_not_found",
            "session_expired",
            "bad_jwt",
            "user_not_found",
        ):
            return SessionEnded("Your session has ended; sign in again.")
        if code == "over_request_rate_limit" or e.status == 429:
            return AuthUnavailable("Too many attempts; wait a minute and try again.")
        if e.status in (401, 403):
            return SessionEnded("Your session has ended; sign in again.")
        return AuthError(
            f"Supabase Auth refused the request (HTTP {e.status}, {code or 'no code'})"
        )
    return AuthUnavailable(f"Supabase Auth failed ({type(e).__name__})")


def _auth_errors() -> tuple[type[Exception], ...]:
    from supabase_auth.errors import AuthError as SupabaseAuthError

    return (SupabaseAuthError,)


def _identity(user: Any) -> Identity:
    return Identity(
        user_id=str(user.id),
        email=str(user.email or ""),
        email_confirmed=user.email_confirmed_at is not None,
    )


# --------------------------------------------------------------------------- sign in/up/out


def sign_up(client: Client, email: str, password: str) -> SignUpResult:
    """Create an account. Signed in at once unless the project confirms emails first."""
    email, password = _check_email(email), _check_password(password)
    try:
        res = client.auth.sign_up({"email": email, "password": password})
    except _auth_errors() as e:
        raise _translate(e) from None
    if res.user is None:
        raise AuthError("Supabase Auth did not create the account; try again")
    # With email confirmation on, Supabase answers an existing address with a user that has
    # no identities (so as not to reveal it); both cases say: check your email.
    return SignUpResult(_identity(res.user), signed_in=res.session is not None)


def sign_in(client: Client, email: str, password: str) -> Identity:
    """Sign in with email and password; `WrongCredentials` when they do not match."""
    email, password = _check_email(email), _check_password(password)
    try:
        res = client.auth.sign_in_with_password({"email": email, "password": password})
    except _auth_errors() as e:
        raise _translate(e) from None
    if res.user is None or res.session is None:
        raise WrongCredentials("Wrong email or password.")
    return _identity(res.user)


def current_identity(client: Client) -> Identity | None:
    """The signed-in user, refreshing the session when it is about to expire; None when
    nobody is signed in. Raises `SessionEnded` when the refresh is refused."""
    try:
        session = client.auth.get_session()
    except _auth_errors() as e:
        raise _refresh_error(e) from None
    return _identity(session.user) if session is not None else None


def refresh(client: Client) -> Identity:
    """Exchange the refresh token for a new session now."""
    try:
        res = client.auth.refresh_session()
    except _auth_errors() as e:
        raise _refresh_error(e) from None
    if res.user is None:
        raise SessionEnded("Your session has ended; sign in again.")
    return _identity(res.user)


def sign_out(client: Client) -> None:
    """Sign out: the session is revoked on the server and forgotten here. Signing out a
    session the server already ended is not an error."""
    try:
        client.auth.sign_out({"scope": "local"})
    except _auth_errors() as e:
        err = _translate(e)
        if not isinstance(err, SessionEnded | WrongCredentials):
            raise err from None


def _refresh_error(e: Exception) -> BrightRunError:
    """A refused refresh (any 4xx about the token) means the session is over."""
    err = _translate(e)
    if isinstance(err, WrongCredentials):
        return SessionEnded("Your session has ended; sign in again.")
    return err


def actor_for(db: DbSession, identity: Identity) -> Actor:
    """The `Actor` for a signed-in user (their row is made on first sign-in, as a member;
    the stored role wins afterwards)."""
    from core.db import repo

    return repo.sign_in_actor(db, identity.user_id, identity.email)


def session_tokens(client: Client) -> dict[str, Any] | None:
    """The current session's tokens, for the command line's profile only."""
    session = client.auth.get_session()
    if session is None:
        return None
    return {
        "access_token": session.access_token,
        "refresh_token": session.refresh_token,
        "expires_at": session.expires_at,
        "user_id": session.user.id,
        "email": session.user.email or "",
    }


# --------------------------------------------------------------------------- command line


def profile_path(settings: Settings) -> Path:
    return Path(settings.cli_profile).expanduser()


def save_profile(settings: Settings, client: Client) -> Path:
    """Write the client's session to the profile file (mode 0600, replaced atomically)."""
    tokens = session_tokens(client)
    if tokens is None:
        raise NotSignedIn("nobody is signed in")
    tokens["supabase_url"] = settings.supabase_url
    path = profile_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(tokens, f)
    os.replace(tmp, path)
    return path


def delete_profile(settings: Settings) -> bool:
    path = profile_path(settings)
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed


def _load_profile(settings: Settings) -> dict[str, Any]:
    path = profile_path(settings)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotSignedIn("not signed in: run `brightrun login` first") from None
    except (OSError, ValueError):
        raise NotSignedIn(
            f"the sign-in profile {path} cannot be read: run `brightrun login` again"
        ) from None
    if not isinstance(data, dict) or not data.get("refresh_token"):
        raise NotSignedIn(f"the sign-in profile {path} is incomplete: run `brightrun login` again")
    if data.get("supabase_url") != settings.supabase_url:
        raise NotSignedIn(
            "you are signed in to another Supabase project: run `brightrun login` again"
        )
    return data


def cli_client(settings: Settings) -> Client:
    """A client carrying the profile's session, refreshed when it has expired (the new
    tokens are written back to the profile)."""
    data = _load_profile(settings)
    client = make_client(settings)
    access = str(data.get("access_token") or "")
    expired = int(data.get("expires_at") or 0) <= time.time() + 10
    try:
        if expired or not access:
            client.auth.refresh_session(str(data["refresh_token"]))
        else:
            client.auth.set_session(access, str(data["refresh_token"]))
    except _auth_errors() as e:
        err = _refresh_error(e)
        if isinstance(err, SessionEnded):
            delete_profile(settings)
            raise SessionEnded("your sign-in has ended: run `brightrun login` again") from None
        raise err from None
    save_profile(settings, client)
    return client


def cli_actor(settings: Settings) -> Actor:
    """Who a `brightrun` command acts as: the local user with AUTH=none, else the user of
    the profile `brightrun login` wrote."""
    if settings.auth == "none":
        return LOCAL_ACTOR
    from core.db import session_scope

    identity = current_identity(cli_client(settings))
    if identity is None:
        raise NotSignedIn("not signed in: run `brightrun login` first")
    with session_scope(settings) as db:
        return actor_for(db, identity)
