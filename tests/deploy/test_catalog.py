"""GPU prices and availability from RunPod's catalog (`GET /v2/catalog/gpus`), cached, with
the built-in table as the fallback; the stand-in's answers checked against the v2 document."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pydantic import SecretStr

from core import planner
from core.deploy.catalog import gpu_market, priced
from core.jobs import pricing_for
from core.settings import Settings
from tests.deploy.contract import SKIP_REASON, load_contract
from tests.deploy.fake_runpod import FakeRunPod

KEY = "rp-catalog-key"
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def catalog_gpu(gpu_id: str, name: str, pool: str, serverless: float, level: str) -> dict:
    return {
        "id": gpu_id,
        "name": name,
        "pool": pool,
        "manufacturer": "NVIDIA",
        "memory": 80,
        "secure": True,
        "community": False,
        "price": {"secure": 2.0, "community": 0, "serverless": serverless},
        "maxCount": {"secure": 8, "community": 0},
        "availability": level,
        "dataCenters": [{"id": "US-KS-2", "name": "US Kansas 2", "availability": level}],
    }


GPUS = [
    catalog_gpu("NVIDIA H100 PCIe", "H100 PCIe", "ADA_80_PRO", 4.0, "HIGH"),
    catalog_gpu("NVIDIA A40", "A40", "AMPERE_48", 1.1, "LOW"),
    catalog_gpu("NVIDIA GeForce RTX 4090", "RTX 4090", "ADA_24", 1.1, "HIGH"),  # not priced here
]


@pytest.fixture
def fake():
    contract = load_contract()
    if contract is None:
        pytest.skip(SKIP_REASON)
    f = FakeRunPod(api_key=KEY, contract=contract, gpus=GPUS).start()
    yield f
    f.stop()
    assert f.violations == []


def _settings(tmp_path: Path, fake: FakeRunPod | None, key: str = KEY) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        runpod_api_key=SecretStr(key),
        runpod_rest_url=fake.rest_url if fake else "http://127.0.0.1:9/v2",
        gpu_cluster_api_url="https://api.runpod.ai/v2/ep1",
        gpu_type="H100_80GB_PCIE",
        endpoint_gpu_types=["A40_48GB"],
    )


def test_catalog_prices_and_availability_are_read_once_then_cached(tmp_path, fake) -> None:
    settings = _settings(tmp_path, fake)
    market = gpu_market(settings, now=NOW)
    (call,) = [r for r in fake.requests if r.path == "/v2/catalog/gpus"]
    assert call.query == "include=AVAILABILITY&product=SERVERLESS"
    assert market.source == "RunPod catalog, read 2026-12-01 12:00 UTC"
    assert market.prices_per_h == {"H100_80GB_PCIE": 4.0, "A40_48GB": 1.1}
    assert market.scarce(["H100_80GB_PCIE", "A40_48GB"]) == ["A40_48GB"]
    assert "A40_48GB (low)" in market.scarcity_note(["A40_48GB"])
    # Jobs are priced at the catalog's rates, a price the user set still wins.
    p = pricing_for(priced(settings, market))
    assert p.rate_per_s == pytest.approx(4.0 / 3600) and p.low_rate_per_s == pytest.approx(
        1.1 / 3600
    )
    mine = settings.model_copy(update={"gpu_prices": {"A40_48GB": 0.9}})
    assert priced(mine, market).gpu_prices["A40_48GB"] == 0.9
    # Within the hour the cache answers; after it, RunPod is asked again.
    assert gpu_market(settings, now=NOW + dt.timedelta(minutes=30)) == market
    assert len([r for r in fake.requests if r.path == "/v2/catalog/gpus"]) == 1
    gpu_market(settings, now=NOW + dt.timedelta(hours=2))
    assert len([r for r in fake.requests if r.path == "/v2/catalog/gpus"]) == 2


def test_without_a_key_or_when_runpod_refuses_the_table_serves_with_its_date(
    tmp_path, fake
) -> None:
    table = f"built-in price table of {planner.PRICES_READ_ON}"
    assert gpu_market(_settings(tmp_path, fake, key=""), now=NOW).source == table
    assert fake.requests == []  # no key: RunPod is not asked
    wrong = gpu_market(_settings(tmp_path, fake, key="wrong"), now=NOW)
    assert wrong.source == table and wrong.prices_per_h == {}
    # A copy read earlier serves, however old, while RunPod cannot be read.
    settings = _settings(tmp_path, fake)
    gpu_market(settings, now=NOW)
    fake.api_key = "rotated"
    stale = gpu_market(settings, now=NOW + dt.timedelta(days=3))
    assert stale.source == "RunPod catalog, read 2026-12-01 12:00 UTC" and stale.prices_per_h
