"""The main flow in a real browser (headless Debian chromium through Playwright), against the
local stack that `brightrun up` starts (GPU endpoint, inference server, syncer, dashboard)
on free loopback ports in a temporary data folder: upload a dataset, launch a tiny job,
watch its chart update and the job complete, see its cost in the history, open the adapter
in the playground. Before anything else, a new visitor opens each page's own URL (a
bookmark after a restart) and must get the app; a shared link to one job or to a comparison
(`/jobs?job=ID`, `/jobs?compare=A,B`) must open it as the first visit to a dashboard just
started. Saves a screenshot of every page: into a temporary folder by default,
into docs/screenshots/ (the README's pictures) when BRIGHTRUN_SCREENSHOTS=docs/screenshots."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
SHOTS_DIR = os.environ.get("BRIGHTRUN_SCREENSHOTS")  # unset: a temporary folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The local stack as `brightrun up` builds it (cli.stack.local_services); yields the
    dashboard's URL."""
    from cli.stack import local_services, stop_all, wait_healthy
    from core.db import upgrade
    from core.settings import load_settings

    home = tmp_path_factory.mktemp("stack")
    shutil.copytree(
        ROOT / ".streamlit", home / ".streamlit"
    )  # the dashboard's config, no stray .env
    ep, inf, dash = _free_port(), _free_port(), _free_port()
    env = {
        "BRIGHTRUN_DATA_DIR": str(home / "data"),
        "GPU_CLUSTER_API_URL": f"http://127.0.0.1:{ep}/v2/local",
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{ep}",
        "INFERENCE_URL": f"http://127.0.0.1:{inf}/v1",
        "SYNC_INTERVAL_S": "1",
        "LOCAL_DEVICE": "cpu",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    procs: list[subprocess.Popen] = []
    logs = home / "logs"
    logs.mkdir()
    try:
        settings = load_settings()
        upgrade(settings)
        services = local_services(settings, dashboard_port=dash)
        assert [s.name for s in services] == ["gpu-endpoint", "inference", "syncer", "dashboard"]
        for svc in services:
            out = open(logs / f"{svc.name}.log", "wb")  # noqa: SIM115 - closed with the process
            procs.append(
                subprocess.Popen(
                    svc.argv, env={**os.environ, **svc.env}, cwd=home, stdout=out, stderr=out
                )
            )
            if svc.health_url:
                wait_healthy(svc.health_url, procs[-1], timeout_s=180)
        yield f"http://127.0.0.1:{dash}"
    finally:
        stop_all(procs)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for log in sorted(logs.glob("*.log")):
            print(
                f"--- {log.name} (tail)\n"
                + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            )


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
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


@pytest.fixture(scope="module")
def page(browser, stack: str) -> Iterator[object]:
    pg = browser.new_page(viewport={"width": 1400, "height": 1700})
    pg.set_default_timeout(60_000)
    pg.goto(stack)
    yield pg
    pg.close()


# Every page's own URL and the heading it shows (the app's url_path: the file name).
DEEP_LINKS = {
    "datasets": "Datasets",
    "train": "Train",
    "jobs": "Jobs",
    "adapters": "Adapters",
    "playground": "Playground",
    "costs": "Costs",
    "settings": "Settings",
    "admin": "Admin",
    "": "Overview",
}
SIDEBAR = [
    "Overview",
    "Datasets",
    "Train",
    "Jobs",
    "Adapters",
    "Playground",
    "Costs",
    "Settings",
    "Admin",
]


def test_every_page_url_gives_the_app_on_a_fresh_server(browser, stack: str) -> None:
    """Runs first, before anyone has opened `/`: each page's URL, opened by a new visitor
    (a fresh browser context), shows that page inside the app: the app's title, its
    sidebar of page titles (never the raw file names), the page's heading."""
    for path, heading in DEEP_LINKS.items():
        ctx = browser.new_context(viewport={"width": 1200, "height": 900})
        pg = ctx.new_page()
        pg.set_default_timeout(60_000)
        pg.goto(f"{stack}/{path}")
        pg.get_by_role("heading", name=heading, level=1).wait_for()
        nav = pg.get_by_test_id("stSidebarNav")
        links = [t.strip() for t in nav.get_by_role("link").all_inner_texts()]
        assert [x for x in SIDEBAR if any(x in t for t in links)] == SIDEBAR, (path, links)
        assert not any(t in ("app", "admin", "datasets") for t in links), (path, links)  # the files
        assert pg.title() == "BrightRun", (path, pg.title())  # app.py's page config ran
        ctx.close()


def _dataset_file(tmp: Path) -> Path:
    lines = []
    for i in range(60):
        a, b = i % 7, i % 5
        chat = [
            {"role": "user", "content": f"What is {a} plus {b}?"},
            {"role": "assistant", "content": f"{a} plus {b} is {a + b}."},
        ]
        lines.append(json.dumps({"messages": chat}))
    lines.insert(10, json.dumps({"messages": [{"role": "user", "content": "unanswered"}]}))
    path = tmp / "arithmetic.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _shots_dir() -> Path:
    if SHOTS_DIR:
        return ROOT / SHOTS_DIR
    return Path(tempfile.gettempdir()) / "brightrun-screenshots"


def _shot(page, name: str) -> None:
    shots = _shots_dir()
    shots.mkdir(parents=True, exist_ok=True)
    page.wait_for_function(  # every chart drawn
        "() => [...document.querySelectorAll('[data-testid=stPlotlyChart]')].every(e => e.querySelector('.main-svg'))"
    )
    page.wait_for_timeout(500)
    page.evaluate(
        "() => document.querySelectorAll('[data-testid=stMain], section').forEach(e => e.scrollTo(0, 0))"
    )
    page.screenshot(path=str(shots / f"{name}.png"))


def _goto(page, label: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=label).click()
    page.get_by_role("heading", name=label, level=1).wait_for()


def _progress(page) -> str:
    return page.get_by_test_id("stProgress").first.inner_text()


def test_upload_train_watch_and_chat(page, tmp_path: Path) -> None:
    page.get_by_text("Welcome to BrightRun").wait_for()
    _shot(page, "overview-first-run")

    # Upload: the bad row is shown by kind, then dropped
    _goto(page, "Datasets")
    page.locator('input[type="file"]').set_input_files(str(_dataset_file(tmp_path)))
    page.get_by_role("button", name="Add dataset").click()
    page.get_by_text("missing assistant: 1 row(s)").wait_for()
    page.get_by_role("button", name=re.compile(r"Drop the 1 bad row")).click()
    page.get_by_text("Valid rows").wait_for()
    page.get_by_role("tab", name="Preview").click()
    page.get_by_text("What is 0 plus 0?").first.wait_for()
    page.get_by_role("tab", name="Statistics").click()
    page.get_by_text("rows are truncated").wait_for()
    _shot(page, "datasets")

    # Train: long enough that the chart is seen moving
    _goto(page, "Train")
    for label, value in (("Epochs", "20"), ("Micro-batch", "1"), ("Gradient accumulation", "1")):
        box = page.get_by_label(label, exact=True)
        box.fill(value)
        box.press("Enter")
    page.get_by_label("Adapter name").fill("arith-bot")
    page.get_by_label("Adapter name").press("Enter")
    page.get_by_text("Peak memory").wait_for()
    launch = page.get_by_role("button", name="Launch")
    page.wait_for_function("b => !b.disabled", arg=launch.element_handle())
    _shot(page, "train")
    launch.click()

    # Jobs: the live detail syncs; the chart appears and moves; the job completes
    page.get_by_role("heading", name="arith-bot").wait_for()
    page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
    first = int(re.search(r"step (\d+)", _progress(page)).group(1))
    deadline = time.monotonic() + 120
    while int(
        re.search(r"step (\d+)", _progress(page)).group(1)
    ) == first and "completed" not in _progress(page):
        assert time.monotonic() < deadline, _progress(page)
        page.wait_for_timeout(500)
    seen = int(re.search(r"step (\d+)", _progress(page)).group(1))
    assert seen > first, (first, seen)
    _shot(page, "job-running")
    page.get_by_test_id("stProgress").get_by_text("completed").wait_for(timeout=240_000)
    cost = (
        page.get_by_test_id("stMetric")
        .filter(has_text="Cost")
        .get_by_test_id("stMetricValue")
        .inner_text()
    )
    assert cost.startswith("$")
    _shot(page, "job-completed")

    # History: the job's row carries its cost
    page.get_by_role("button", name="← All jobs").click()
    page.get_by_text("Page 1 of 1 · 1 job(s)").wait_for()
    grid = page.get_by_test_id("stDataFrame").first.locator("table[role=grid]")
    grid.wait_for(state="attached")
    row = grid.text_content() or ""
    assert "completed" in row and "arith-bot" in row, row
    cells = [c.strip().lstrip("$") for c in grid.locator("td").all_text_contents()]
    numbers = [float(c) for c in cells if re.fullmatch(r"\d+\.\d+", c)]
    # the table keeps 4 decimals, the job's metric rounds to money precision
    assert any(abs(n - float(cost.lstrip("$"))) <= 0.0006 for n in numbers), (cost, cells)
    _shot(page, "jobs")

    _goto(page, "Costs")
    page.get_by_text("Serverless against an always-on pod").wait_for()
    _shot(page, "costs")

    _goto(page, "Settings")
    page.get_by_role("heading", name="All settings").wait_for()  # after every health probe answered
    assert (
        page.get_by_text("answering", exact=True).count() == 4
    )  # database, storage, endpoint, inference
    _shot(page, "settings")

    # The adapter: listed, then opened in the playground beside the base model
    _goto(page, "Adapters")
    page.get_by_role("heading", name="arith-bot v1").wait_for()
    _shot(page, "adapters")
    page.get_by_role("button", name="Open in playground").click()
    page.get_by_role("heading", name="Playground", level=1).wait_for()
    page.get_by_text("arith-bot v1").first.wait_for()
    page.get_by_test_id("stChatInputTextArea").fill("What is 2 plus 3?")
    page.get_by_test_id("stChatInputTextArea").press("Enter")
    page.get_by_test_id("stChatMessage").nth(2).wait_for(timeout=120_000)
    _shot(page, "playground")

    _goto(page, "Overview")
    page.get_by_text("Latest adapters").wait_for()
    _shot(page, "overview")


def test_compare_two_runs(page, stack: str) -> None:
    """A second run of the same dataset with other settings, launched from the command line;
    both picked in the Jobs list and compared: curves against tokens seen, the cost to reach
    an eval loss, the settings that differ."""
    from typer.testing import CliRunner

    from cli import app
    from core import datasets, db
    from core.settings import load_settings
    from core.users import LOCAL_ACTOR

    with db.session_scope(load_settings()) as s:
        ds = datasets.list_datasets(LOCAL_ACTOR, s)[0].id
    r = CliRunner().invoke(
        app,
        [
            "train",
            "--dataset",
            ds,
            "--model",
            "brightrun/tiny-chat",
            "--adapter-name",
            "arith-bot-lr",
            "--epochs",
            "10",
            "--micro-batch",
            "2",
            "--grad-accum",
            "1",
            "--lr",
            "5e-4",
            "--eval-fraction",
            "0.05",
            "--wait",
        ],
    )
    assert r.exit_code == 0, r.output

    _goto(page, "Jobs")
    page.get_by_text("Page 1 of 1 · 2 job(s)").wait_for()
    picker = page.get_by_test_id("stMultiSelect").filter(has_text="Compare runs")
    for name in ("arith-bot-lr ·", "arith-bot ·"):
        picker.locator("input").click()
        page.get_by_role("option").filter(has_text=name).first.click()
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Compare").click()
    page.get_by_role("heading", name="Comparing 2 runs").wait_for()
    page.get_by_role("button", name="Curves as CSV").wait_for()  # the whole view is drawn
    assert page.get_by_role("button", name="Compare").count() == 0  # the list is gone
    settings_table = page.get_by_test_id("stDataFrame").nth(1).locator("table[role=grid]")
    settings_table.wait_for(state="attached")
    assert "training.learning_rate" in (settings_table.text_content() or "")
    assert "tokens seen" in page.get_by_test_id("stPlotlyChart").first.inner_text()
    _shot(page, "compare")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A data folder holding two finished runs of one dataset, with curves and settings that
    differ (no dashboard has opened it yet); their adapter names and job ids."""
    from core import db
    from core.settings import Settings
    from tests.ui.conftest import seed_dataset, seed_job

    data = tmp_path_factory.mktemp("shared-links") / "data"
    settings = Settings(data_dir=data)
    db.upgrade(settings)
    ds = seed_dataset(settings)
    runs = {
        name: seed_job(
            settings, ds, adapter=name, metrics=20, spec={"training": {"learning_rate": lr}}
        )
        for name, lr in (("linked-bot", 2e-4), ("linked-bot-lr", 5e-4))
    }
    db.dispose_engines()
    return data, runs


@contextmanager
def fresh_dashboard(data: Path, home: Path) -> Iterator[str]:
    """Only the dashboard of `brightrun up`, just started on `data`; yields its URL."""
    from cli.stack import local_services, stop_all, wait_healthy
    from core.settings import Settings

    shutil.copytree(ROOT / ".streamlit", home / ".streamlit")
    port = _free_port()
    env = {**os.environ, "BRIGHTRUN_DATA_DIR": str(data), "OMP_NUM_THREADS": "1"}
    (svc,) = [s for s in local_services(Settings(data_dir=data), port) if s.name == "dashboard"]
    with open(home / "dashboard.log", "wb") as log:
        proc = subprocess.Popen(svc.argv, env=env, cwd=home, stdout=log, stderr=log)
        try:
            wait_healthy(svc.health_url or "", proc, timeout_s=180)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop_all([proc])


def _first_visit(browser, url: str) -> tuple[object, list[str]]:
    """A new visitor's page at `url`, and the errors its scripts raise."""
    pg = browser.new_context(viewport={"width": 1400, "height": 1200}).new_page()
    pg.set_default_timeout(60_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(url)
    return pg, errors


def _nothing_failed(pg, errors: list[str], home: Path) -> None:
    """No exception box, no error (a page section's "Could not show ... (error id)"
    included), no traceback on the page or in the dashboard's log, no script error."""
    body = pg.locator("body").inner_text()
    assert pg.get_by_test_id("stException").count() == 0, body
    assert pg.get_by_test_id("stAlertContentError").count() == 0, body
    assert "Traceback" not in body and "Exception" not in body, body
    assert "Traceback" not in (home / "dashboard.log").read_text(errors="replace")
    assert errors == []


def test_a_link_to_one_job_opens_it_as_the_first_visit(browser, two_runs, tmp_path: Path) -> None:
    data, runs = two_runs
    with fresh_dashboard(data, tmp_path) as url:
        pg, errors = _first_visit(browser, f"{url}/jobs?job={runs['linked-bot-lr']}")
        pg.get_by_role("heading", name="Jobs", level=1).wait_for()
        pg.get_by_role("heading", name="linked-bot-lr").wait_for()
        pg.get_by_text("Resolved settings").wait_for()
        assert pg.get_by_role("button", name="← All jobs").count() == 1
        assert pg.get_by_role("heading", name="linked-bot", exact=True).count() == 0
        assert pg.get_by_role("button", name="Compare").count() == 0  # not the list
        _nothing_failed(pg, errors, tmp_path)
        pg.context.close()


def test_a_link_to_a_comparison_opens_it_as_the_first_visit(
    browser, two_runs, tmp_path: Path
) -> None:
    data, runs = two_runs
    with fresh_dashboard(data, tmp_path) as url:
        pg, errors = _first_visit(browser, f"{url}/jobs?compare={','.join(runs.values())}")
        pg.get_by_role("heading", name="Jobs", level=1).wait_for()
        pg.get_by_role("heading", name="Comparing 2 runs").wait_for()
        pg.get_by_role("button", name="Curves as CSV").wait_for()  # the whole view is drawn
        table = pg.get_by_test_id("stDataFrame").nth(1).locator("table[role=grid]")
        table.wait_for(state="attached")
        differ = table.text_content() or ""
        assert "training.learning_rate" in differ, differ
        for name, job_id in runs.items():  # each run, as the legend labels it
            assert f"{name} ({job_id[-6:]})" in differ, (name, differ)
        assert pg.get_by_role("button", name="Compare").count() == 0  # not the list
        _nothing_failed(pg, errors, tmp_path)
        pg.context.close()
