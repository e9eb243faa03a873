"""Deep links with AUTH=supabase, in a real browser (headless Debian chromium through
Playwright): on a freshly started dashboard, before anyone opened `/`, a signed-out
visitor who opens any page's URL gets the app's sign-in page (never a page script run
alone, never "page not found"), and signing in opens the page the link named."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.security.conftest import ANON_KEY
from tests.security.gotrue_fake import GoTrueFake, ServedGoTrue
from tests.ui.test_browser import CHROMIUM, DEEP_LINKS, _free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]
MEMBER, PASSWORD = "member@example.com", "member-pass-1234"


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The dashboard alone (no jobs run here), signing in against a Supabase Auth stand-in."""
    from cli.stack import stop_all, wait_healthy

    home = tmp_path_factory.mktemp("signin")
    shutil.copytree(ROOT / ".streamlit", home / ".streamlit")
    fake = GoTrueFake(anon_key=ANON_KEY)
    fake.add_user(MEMBER, PASSWORD)
    port = _free_port()
    with ServedGoTrue(fake) as served:
        env = {
            **os.environ,
            "AUTH": "supabase",
            "SUPABASE_URL": served.url,
            "SUPABASE_ANON_KEY": ANON_KEY,
            "BRIGHTRUN_DATA_DIR": str(home / "data"),
            "GPU_CLUSTER_API_URL": "http://127.0.0.1:9/v2/none",
            "INFERENCE_URL": "http://127.0.0.1:9/v1",
        }
        log = open(home / "dashboard.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                str(ROOT / "app.py"),
                "--server.port",
                str(port),
                "--server.headless",
                "true",
            ],
            env=env,
            cwd=home,
            stdout=log,
            stderr=log,
        )
        try:
            wait_healthy(f"http://127.0.0.1:{port}/_stcore/health", proc, timeout_s=120)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop_all([proc])
            print(
                "--- dashboard.log (tail)\n"
                + "\n".join((home / "dashboard.log").read_text(errors="replace").splitlines()[-15:])
            )


@pytest.fixture(scope="module")
def browser(dashboard: str) -> Iterator[object]:
    if not Path(CHROMIUM).is_file():
        pytest.fail("Debian's chromium is missing: `make chromium` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


def test_a_signed_out_deep_link_signs_in_then_opens_the_page(browser, dashboard: str) -> None:
    for path in DEEP_LINKS:  # first visits, each a new visitor
        ctx = browser.new_context()
        pg = ctx.new_page()
        pg.set_default_timeout(60_000)
        pg.goto(f"{dashboard}/{path}")
        pg.get_by_role("heading", name="Sign in to BrightRun", level=1).wait_for()
        assert pg.title() == "BrightRun", (path, pg.title())
        assert pg.get_by_test_id("stSidebarNav").count() == 0, path  # no page list, no file names
        assert pg.get_by_role("dialog").count() == 0, path  # no "page not found"
        ctx.close()

    pg = browser.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(f"{dashboard}/jobs")
    pg.get_by_label("Email").first.fill(MEMBER)
    pg.get_by_label("Password").first.fill(PASSWORD)
    pg.get_by_role("button", name="Sign in", exact=True).click()
    pg.get_by_role("heading", name="Jobs", level=1).wait_for()  # the page the link named
    nav = [
        t.strip() for t in pg.get_by_test_id("stSidebarNav").get_by_role("link").all_inner_texts()
    ]
    assert any("Jobs" in t for t in nav) and not any("Admin" in t for t in nav), (
        nav
    )  # a member's pages
    assert pg.url.endswith("/jobs")
