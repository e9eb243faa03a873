"""One Supabase project on loopback, as BrightRun reaches a real one through SUPABASE_URL:
the Storage stand-in (`tests.state.supabase_fake.FakeStorage`) under /storage/v1 and the
Auth stand-in (`tests.security.gotrue_fake.GoTrueFake`) under /auth/v1 on the same host,
each held to its own rules and recording its own exchanges.

`SupabaseProject(root, secret_key, publishable_key)`: Storage takes the secret key (and
treats the publishable one as `anon`), Auth takes the publishable key only. `settings()`
is what a deployment with STORAGE=supabase and AUTH=supabase puts in `.env`.
"""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.security.gotrue_fake import PREFIX as AUTH_PREFIX
from tests.security.gotrue_fake import GoTrueFake, handler_class
from tests.state.supabase_fake import FakeStorage, _Handler


class SupabaseProject:
    """Start with `with SupabaseProject(...) as project:`; `project.url` is SUPABASE_URL."""

    def __init__(self, root: Path, secret_key: str, publishable_key: str) -> None:
        self.secret_key, self.publishable_key = secret_key, publishable_key
        self.storage = FakeStorage(
            root=root, service_key=secret_key, publishable_key=publishable_key
        )
        self.auth = GoTrueFake(anon_key=publishable_key)
        auth_do, storage = handler_class(self.auth)._do, self.storage

        class Handler(_Handler):
            fake = storage

            def _auth(self) -> bool:
                if self.path.startswith(AUTH_PREFIX + "/"):
                    auth_do(self)
                    return True
                return False

            def do_GET(self) -> None:  # noqa: N802
                if not self._auth():
                    super().do_GET()

            def do_POST(self) -> None:  # noqa: N802
                if not self._auth():
                    super().do_POST()

            def do_PUT(self) -> None:  # noqa: N802
                if not self._auth():
                    super().do_PUT()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def settings(self) -> dict[str, Any]:
        """The Settings fields of a deployment on this project (STORAGE and AUTH supabase)."""
        return {
            "storage": "supabase",
            "auth": "supabase",
            "supabase_url": self.url,
            "supabase_key": self.secret_key,
            "supabase_anon_key": self.publishable_key,
        }

    def __enter__(self) -> SupabaseProject:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)
