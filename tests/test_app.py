"""The dashboard starts and routes; every page renders without an exception."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT

PAGES = sorted(p.name for p in (ROOT / "app_pages").glob("*.py"))


def test_app_starts_on_overview(data_dir: Path) -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Overview"


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders(data_dir: Path, page: str) -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page(f"app_pages/{page}").run()
    assert not at.exception, at.exception


def test_settings_page_masks_secrets(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPU_CLUSTER_API_KEY", "rpa_SECRET_abc123")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("app_pages/settings.py").run()
    df = next(d.value for d in at.dataframe if "setting" in d.value.columns)
    row = df[df["setting"] == "gpu_cluster_api_key"]
    assert row["value"].item() == "set"
    assert "SECRET" not in df.to_string()
