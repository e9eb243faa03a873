"""Playground page (fast, no model): who it serves.

The real local server's page test is tests/inference/test_playground_page.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT


def test_signed_out_playground_asks_to_sign_in(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run alone, as Streamlit may run a page script without app.py: the page takes the user
    from the one session source, which finds nobody signed in."""
    from components import session as ui_session

    ui_session._per_session.clear()  # every AppTest shares one session id
    monkeypatch.setenv("AUTH", "supabase")
    monkeypatch.setenv("SUPABASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("SUPABASE_ANON_KEY", "fake-anon-key")
    at = AppTest.from_file(str(ROOT / "pages" / "playground.py"), default_timeout=60).run()
    assert not at.exception, at.exception
    assert [w.value for w in at.warning] == ["Sign in to see your datasets, jobs and adapters."]
    assert not at.chat_input and not at.multiselect
    ui_session._per_session.clear()
