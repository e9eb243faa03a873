"""Settings page: each part's health with what is configured, keys only as set/not set,
prices and budgets."""

from __future__ import annotations

import pytest

from tests.ui.conftest import text_of


def _health(at) -> dict[str, str]:
    out, lines = {}, [t.value for t in at.text]
    for md, line in zip([m.value for m in at.markdown if "-badge[" in m.value], lines, strict=True):
        out[md.split("**")[1]] = ("up " if ":green-badge" in md else "down ") + line
    return out


def test_health_of_each_part_and_no_secret_in_sight(
    settings, endpoint, open_page, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFERENCE_API_KEY", "sk-INFERENCE-SECRET")
    monkeypatch.setenv("HF_TOKEN", "hf_TOKEN_SECRET")
    at = open_page("settings")
    health = _health(at)
    assert health["database"].startswith("up") and "up to date" in health["database"]
    assert health["storage"].startswith("up")
    assert (
        health["GPU endpoint"].startswith("up") and "/v2/fake (key set)" in health["GPU endpoint"]
    )
    assert health["inference"].startswith("down") and "not answering" in health["inference"]
    page = text_of(at) + "".join(d.value.to_string() for d in at.dataframe)
    for secret in ("SECRET", "fake-key", "sk-INFERENCE", "hf_TOKEN"):
        assert secret not in page
    settings_table = next(d.value for d in at.dataframe if "setting" in d.value.columns)
    assert settings_table.set_index("setting").loc["hf_token", "value"] == "set"
    prices = next(d.value for d in at.dataframe if "GPU type" in d.value.columns)
    assert prices.set_index("GPU type").loc["H100_80GB_PCIE", "Serverless flex ($/h)"] == 4.18
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {
        "Budget per job": "$10.00",
        "Your monthly budget": "$200.00",
        "Jobs at once": "2",
    }


def test_price_override_and_budgets_come_from_settings(
    data_dir, open_page, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPU_PRICES", '{"H100_80GB_PCIE": 3.0}')
    monkeypatch.setenv("MONTHLY_BUDGET_USD", "55")
    at = open_page("settings")
    prices = next(d.value for d in at.dataframe if "GPU type" in d.value.columns).set_index(
        "GPU type"
    )
    assert (
        prices.loc["H100_80GB_PCIE", "Serverless flex ($/h)"] == 3.0
        and prices.loc["H100_80GB_PCIE", "override"] == "yes"
    )
    assert next(m for m in at.metric if m.label == "Your monthly budget").value == "$55.00"
    assert _health(at)["GPU endpoint"].startswith("down") and "cannot connect" in text_of(at)
