"""A loopback HTTP server that follows Supabase Auth's (GoTrue's) REST contract for the calls
BrightRun makes through the `supabase` client (paths under /auth/v1):

    POST /signup                          {"email", "password"} -> a session, or (when emails
                                          must be confirmed first) the user alone
    POST /token?grant_type=password       {"email", "password"} -> a session
    POST /token?grant_type=refresh_token  {"refresh_token"} -> a new session; the old refresh
                                          token is used up (rotation)
    POST /logout?scope=local|global       Bearer access token -> 204; revokes the session's
                                          (local) or all the user's (global) refresh tokens
    GET  /user                            Bearer access token -> the user

A session is `{"access_token", "token_type": "bearer", "expires_in", "expires_at",
"refresh_token", "user"}`; access tokens are HS256 JWTs with `sub`, `email`, `exp`, `aud`
(`authenticated`), `session_id`. A user object leaves out the fields that have no value
(GoTrue's `omitempty`: an unconfirmed user has no `email_confirmed_at`).

Errors follow GoTrue's API versions, as the live service does: a request whose
`X-Supabase-Api-Version` header is 2024-01-01 or later (the `supabase` client always sends
it) gets `{"code": "<error code>", "message"}` and the header echoed back; any other gets
the initial envelope, the one Auth's published document describes, `{"code": <HTTP
status>, "error_code": "<error code>", "msg"}`. Codes: `invalid_credentials` (400),
`email_not_confirmed` (400), `user_already_exists` (422), `signup_disabled` (422),
`weak_password` (422; its `weak_password.reasons` only in the initial envelope, as GoTrue
does), `refresh_token_not_found` / `refresh_token_already_used` (400),
`bad_jwt` (403: a token that does not verify, has expired by the server's clock or whose
session has ended), `unexpected_audience` (403, GET /user: a token issued for another
audience), `no_authorization` (401). Every request must carry the publishable (anon) key
as `apikey`, else 401 `{"message": "Invalid API key"}` (the API gateway's answer).

`requests` records (method, path, apikey, body keys) for assertions, `exchanges` every
request and answer in full (`tests.supabase_contract.Exchange`, validated against Auth's
published document by the contract tests); `expires_in` sets the lifetime of new access
tokens (a small value forces refreshes) and `skew_s` moves the server's clock ahead of the
client's; `access_token(email, aud=...)` mints a token for an existing session's user.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.supabase_contract import Exchange

PREFIX = "/auth/v1"
_JWT_SECRET = b"gotrue-fake-jwt-secret"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@dataclass
class _Account:
    id: str
    email: str
    password: str
    created: float
    confirmed: bool


@dataclass
class GoTrueFake:
    anon_key: str = "fake-anon-key"
    confirm_emails: bool = False  # signup answers the user only; sign-in needs confirmation
    signup_open: bool = True
    expires_in: int = 3600
    skew_s: float = 0.0  # the server's clock runs this far ahead of the client's
    accounts: dict[str, _Account] = field(default_factory=dict)  # by email
    refresh_tokens: dict[str, tuple[str, str]] = field(
        default_factory=dict
    )  # token -> (user id, session id)
    used_refresh_tokens: set[str] = field(default_factory=set)
    sessions: set[str] = field(default_factory=set)  # live session ids
    requests: list[tuple[str, str, str, tuple[str, ...]]] = field(default_factory=list)
    exchanges: list[Exchange] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # accounts -----------------------------------------------------------------------
    def add_user(self, email: str, password: str, confirmed: bool = True) -> str:
        acc = _Account(str(uuid.uuid4()), email.lower(), password, time.time(), confirmed)
        self.accounts[acc.email] = acc
        return acc.id

    def confirm(self, email: str) -> None:
        self.accounts[email.lower()].confirmed = True

    def _user(self, acc: _Account) -> dict[str, Any]:
        stamp = (
            {"email_confirmed_at", "confirmed_at"} if acc.confirmed else {"confirmation_sent_at"}
        )
        return {
            "id": acc.id,
            "aud": "authenticated",
            "role": "authenticated",
            "email": acc.email,
            **dict.fromkeys(sorted(stamp), _iso(acc.created)),
            "phone": "",
            "app_metadata": {"provider": "email", "providers": ["email"]},
            "user_metadata": {},
            "identities": [],
            "created_at": _iso(acc.created),
            "updated_at": _iso(acc.created),
            "is_anonymous": False,
        }

    def _by_id(self, user_id: str) -> _Account | None:
        return next((a for a in self.accounts.values() if a.id == user_id), None)

    # tokens -------------------------------------------------------------------------
    def access_token(self, email: str, aud: str = "authenticated", exp_in: int = 3600) -> str:
        """A token for `email`'s latest live session, for audience `aud` (a test's own)."""
        acc = self.accounts[email.lower()]
        session_id = next(sid for uid, sid in self.refresh_tokens.values() if uid == acc.id)
        return self._jwt(acc, session_id, int(time.time()) + exp_in, aud)

    def _jwt(self, acc: _Account, session_id: str, exp: int, aud: str = "authenticated") -> str:
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = {
            "sub": acc.id,
            "email": acc.email,
            "exp": exp,
            "iat": int(time.time()),
            "role": "authenticated",
            "aal": "aal1",
            "session_id": session_id,
            "aud": aud,
            "jti": secrets.token_hex(8),
        }
        payload = _b64(json.dumps(claims).encode())
        sig = hmac.new(_JWT_SECRET, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{_b64(sig)}"

    def _claims(self, token: str) -> dict[str, Any] | None:
        parts = token.split(".")
        if len(parts) != 3:
            return None
        sig = hmac.new(_JWT_SECRET, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(_b64(sig), parts[2]):
            return None
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        expired = claims["exp"] <= time.time() + self.skew_s
        if expired or claims["session_id"] not in self.sessions:
            return None
        return claims

    def _session(self, acc: _Account, session_id: str | None = None) -> dict[str, Any]:
        session_id = session_id or str(uuid.uuid4())
        self.sessions.add(session_id)
        exp = int(time.time()) + self.expires_in
        refresh = secrets.token_urlsafe(16)
        self.refresh_tokens[refresh] = (acc.id, session_id)
        return {
            "access_token": self._jwt(acc, session_id, exp),
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "expires_at": exp,
            "refresh_token": refresh,
            "user": self._user(acc),
        }

    # requests -----------------------------------------------------------------------
    def handle(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: Any,
        body: dict[str, Any],
    ) -> tuple[int, Any]:
        with self.lock:
            self.requests.append((method, path, headers.get("apikey", ""), tuple(sorted(body))))
            if headers.get("apikey") != self.anon_key:
                return 401, {"message": "Invalid API key"}
            status, payload = self._route(method, path, query, headers, body)
            if status >= 400 and isinstance(payload, tuple):
                code, msg = payload[0], payload[1]
                if _versioned(headers):  # GoTrue's 2024-01-01 envelope has no reasons
                    payload = {"code": code, "message": msg}
                else:
                    payload = {"code": status, "error_code": code, "msg": msg}
                    if code == "weak_password":
                        payload["weak_password"] = {"reasons": ["length"]}
            return status, payload

    def _route(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: Any,
        body: dict[str, Any],
    ) -> tuple[int, Any]:
        grant = (query.get("grant_type") or [""])[0]
        if method == "POST" and path == "/signup":
            return self._signup(body)
        if method == "POST" and path == "/token" and grant == "password":
            return self._password(body)
        if method == "POST" and path == "/token" and grant == "refresh_token":
            return self._refresh(body)
        bearer = headers.get("authorization", "")
        if not bearer.lower().startswith("bearer "):
            return 401, _err(401, "no_authorization", "This endpoint requires a Bearer token")
        claims = self._claims(bearer[7:])
        if claims is None:
            return 403, _err(403, "bad_jwt", "invalid JWT: unable to parse or verify signature")
        acc = self._by_id(claims["sub"])
        if acc is None:
            return 404, _err(404, "user_not_found", "User not found")
        if method == "GET" and path == "/user":
            if claims["aud"] != "authenticated":
                return 403, _err(
                    403, "unexpected_audience", "Token audience doesn't match request audience"
                )
            return 200, self._user(acc)
        if method == "POST" and path == "/logout":
            scope = (query.get("scope") or ["global"])[0]
            for tok, (uid, sid) in list(self.refresh_tokens.items()):
                if (scope == "global" and uid == acc.id) or (
                    scope == "local" and sid == claims["session_id"]
                ):
                    del self.refresh_tokens[tok]
                    self.sessions.discard(sid)
            return 204, None
        return 404, _err(404, "not_found", "no such route")

    def _signup(self, body: dict[str, Any]) -> tuple[int, Any]:
        if not self.signup_open:
            return 422, _err(422, "signup_disabled", "Signups not allowed for this instance")
        email, password = str(body.get("email", "")).lower(), str(body.get("password", ""))
        if len(password) < 6:
            return 422, _err(422, "weak_password", "Password should be at least 6 characters.")
        if email in self.accounts:
            return 422, _err(422, "user_already_exists", "User already registered")
        acc = _Account(str(uuid.uuid4()), email, password, time.time(), not self.confirm_emails)
        self.accounts[email] = acc
        return 200, (self._user(acc) if self.confirm_emails else self._session(acc))

    def _password(self, body: dict[str, Any]) -> tuple[int, Any]:
        acc = self.accounts.get(str(body.get("email", "")).lower())
        if acc is None or not hmac.compare_digest(acc.password, str(body.get("password", ""))):
            return 400, _err(400, "invalid_credentials", "Invalid login credentials")
        if not acc.confirmed:
            return 400, _err(400, "email_not_confirmed", "Email not confirmed")
        return 200, self._session(acc)

    def _refresh(self, body: dict[str, Any]) -> tuple[int, Any]:
        token = str(body.get("refresh_token", ""))
        if token in self.used_refresh_tokens:
            return 400, _err(
                400, "refresh_token_already_used", "Invalid Refresh Token: Already Used"
            )
        if token not in self.refresh_tokens:
            return 400, _err(
                400, "refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found"
            )
        user_id, session_id = self.refresh_tokens.pop(token)
        self.used_refresh_tokens.add(token)
        acc = self._by_id(user_id)
        if acc is None:
            return 400, _err(
                400, "refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found"
            )
        return 200, self._session(acc, session_id)

    def count(self, path: str) -> int:
        return sum(1 for _, p, _, _ in self.requests if p == path)


def _err(status: int, code: str, msg: str) -> tuple[str, str]:
    """An error; `GoTrueFake.handle` writes it in the envelope the request's version asks for."""
    return code, msg


def _versioned(headers: Any) -> bool:
    """True when the request asks for API version 2024-01-01 or later."""
    version = str(headers.get("x-supabase-api-version") or "")
    return len(version) == 10 and version >= "2024-01-01"


def handler_class(fake: GoTrueFake) -> type[BaseHTTPRequestHandler]:
    """The request handler that serves `fake` (paths under /auth/v1; others 404)."""
    fake_ref = fake

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            return

        def _do(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw.strip() else {}
            headers = {k.lower(): v for k, v in self.headers.items()}
            if not parts.path.startswith(PREFIX):
                status, payload = 404, {"message": "no such route"}
            else:
                status, payload = fake_ref.handle(
                    self.command,
                    parts.path[len(PREFIX) :],
                    parse_qs(parts.query),
                    headers,
                    body if isinstance(body, dict) else {},
                )
            data = b"" if payload is None else json.dumps(payload).encode()
            sent = {}
            if _versioned(headers):  # GoTrue echoes the version it answered in
                sent["X-Supabase-Api-Version"] = "2024-01-01"
            if payload is not None:
                sent["Content-Type"] = "application/json"
            with fake_ref.lock:
                fake_ref.exchanges.append(
                    Exchange(
                        self.command,
                        self.path,
                        headers,
                        raw,
                        status,
                        {k.lower(): v for k, v in sent.items()},
                        data,
                    )
                )
            self.send_response(status)
            for k, v in sent.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _do

    return Handler


class ServedGoTrue:
    """Serve a `GoTrueFake` on a free loopback port; `url` is the Supabase project URL."""

    def __init__(self, fake: GoTrueFake) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler_class(fake))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ServedGoTrue:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
