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
"refresh_token", "user"}`; access tokens are HS256 JWTs with `sub`, `email`, `exp`,
`session_id`. Errors are GoTrue's envelope `{"code", "error_code", "msg"}` with the
`X-Supabase-Api-Version: 2024-01-01` header, so the client reads `code`:
`invalid_credentials` (400), `email_not_confirmed` (400), `user_already_exists` (422),
`signup_disabled` (422), `refresh_token_not_found` / `refresh_token_already_used` (400),
`bad_jwt` (403), `no_authorization` (401). Every request must carry the anon key as
`apikey`. `requests` records (method, path, apikey, body keys) for assertions;
`expires_in` sets the lifetime of new access tokens (a small value forces refreshes).
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
    accounts: dict[str, _Account] = field(default_factory=dict)  # by email
    refresh_tokens: dict[str, tuple[str, str]] = field(
        default_factory=dict
    )  # token -> (user id, session id)
    used_refresh_tokens: set[str] = field(default_factory=set)
    sessions: set[str] = field(default_factory=set)  # live session ids
    requests: list[tuple[str, str, str, tuple[str, ...]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # accounts -----------------------------------------------------------------------
    def add_user(self, email: str, password: str, confirmed: bool = True) -> str:
        acc = _Account(str(uuid.uuid4()), email.lower(), password, time.time(), confirmed)
        self.accounts[acc.email] = acc
        return acc.id

    def confirm(self, email: str) -> None:
        self.accounts[email.lower()].confirmed = True

    def _user(self, acc: _Account) -> dict[str, Any]:
        confirmed = _iso(acc.created) if acc.confirmed else None
        return {
            "id": acc.id,
            "aud": "authenticated",
            "role": "authenticated",
            "email": acc.email,
            "email_confirmed_at": confirmed,
            "confirmed_at": confirmed,
            "phone": "",
            "confirmation_sent_at": None if acc.confirmed else _iso(acc.created),
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
    def _jwt(self, acc: _Account, session_id: str, exp: int) -> str:
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = {
            "sub": acc.id,
            "email": acc.email,
            "exp": exp,
            "iat": int(time.time()),
            "role": "authenticated",
            "aal": "aal1",
            "session_id": session_id,
            "aud": "authenticated",
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
        if claims["exp"] <= time.time() or claims["session_id"] not in self.sessions:
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
            return 422, {
                **_err(422, "weak_password", "Password should be at least 6 characters."),
                "weak_password": {"reasons": ["length"]},
            }
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


def _err(status: int, code: str, msg: str) -> dict[str, Any]:
    return {"code": code, "error_code": code, "msg": msg}


class ServedGoTrue:
    """Serve a `GoTrueFake` on a free loopback port; `url` is the Supabase project URL."""

    def __init__(self, fake: GoTrueFake) -> None:
        fake_ref = fake

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                return

            def _do(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw.strip() else {}
                if not parts.path.startswith(PREFIX):
                    status, payload = 404, _err(404, "not_found", "no such route")
                else:
                    status, payload = fake_ref.handle(
                        self.command,
                        parts.path[len(PREFIX) :],
                        parse_qs(parts.query),
                        {k.lower(): v for k, v in self.headers.items()},
                        body if isinstance(body, dict) else {},
                    )
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("X-Supabase-Api-Version", "2024-01-01")
                if payload is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _do

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ServedGoTrue:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
