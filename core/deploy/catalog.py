"""GPU prices and availability for Serverless workers, from RunPod's catalog when the
account key is set (`GET /v2/catalog/gpus?include=AVAILABILITY&product=SERVERLESS`),
else from the built-in table (`core.planner.pricing`, read on `PRICES_READ_ON`).

`gpu_market(settings)` answers a `GpuMarket`: per GPU type id of the table, the catalog's
Serverless $/h and its availability. The catalog is cached in
`<data_dir>/cache/gpu-catalog.json` for `CACHE_TTL_S`; when RunPod cannot be read the
cached copy serves however old it is, else the built-in table, and `source` says which.
`priced(settings, market)` gives settings whose `gpu_prices` hold the catalog's prices
(a price the user set in `GPU_PRICES` wins). Catalog GPUs the table does not know are
left out (the planner has no memory or speed facts for them).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import planner
from core.deploy.client import RunPodApi
from core.deploy.errors import DeployError
from core.settings import Settings

log = logging.getLogger("brightrun.deploy")

CACHE_TTL_S = 3600.0
SCARCE = ("NONE", "LOW")


@dataclass(frozen=True)
class GpuMarket:
    source: str  # where the prices come from, with its date
    prices_per_h: dict[str, float] = field(default_factory=dict)  # catalog Serverless $/h
    availability: dict[str, str] = field(default_factory=dict)  # NONE | LOW | MEDIUM | HIGH

    def scarce(self, gpu_types: tuple[str, ...] | list[str]) -> list[str]:
        """The GPU types among `gpu_types` RunPod has little or none of right now."""
        return [g for g in gpu_types if self.availability.get(g) in SCARCE]

    def scarcity_note(self, gpu_types: tuple[str, ...] | list[str]) -> str:
        """One line naming the scarce GPU types ("" when none is)."""
        scarce = self.scarce(gpu_types)
        if not scarce:
            return ""
        levels = ", ".join(f"{g} ({self.availability[g].lower()})" for g in scarce)
        return (
            f"scarce on RunPod Serverless right now: {levels}; jobs may wait in the queue "
            "for a worker, or run on another of the endpoint's GPU types"
        )


def _builtin() -> GpuMarket:
    return GpuMarket(f"built-in price table of {planner.PRICES_READ_ON}")


def _from_catalog(gpus: list[dict[str, Any]], read_at: str) -> GpuMarket:
    prices: dict[str, float] = {}
    availability: dict[str, str] = {}
    for gpu in gpus:
        gpu_id = planner.gpu_type_for_device(gpu.get("id")) or planner.gpu_type_for_device(
            gpu.get("name")
        )
        if gpu_id is None or gpu_id in prices:
            continue
        price = (gpu.get("price") or {}).get("serverless")
        if isinstance(price, int | float) and price > 0:
            prices[gpu_id] = float(price)
        if gpu.get("availability"):
            availability[gpu_id] = str(gpu["availability"])
    return GpuMarket(f"RunPod catalog, read {read_at}", prices, availability)


def _cache_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / "cache" / "gpu-catalog.json"


def _read_cache(path: Path) -> tuple[list[dict[str, Any]], dt.datetime] | None:
    try:
        cached = json.loads(path.read_text())
        return cached["gpus"], dt.datetime.fromisoformat(cached["read_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def gpu_market(settings: Settings, now: dt.datetime | None = None) -> GpuMarket:
    """Prices and availability (see the module docstring); never raises for RunPod's side."""
    key = settings.runpod_api_key.get_secret_value()
    if not key:
        return _builtin()
    now = now or dt.datetime.now(dt.UTC)
    path = _cache_path(settings)
    cached = _read_cache(path)
    if cached is not None and (now - cached[1]).total_seconds() < CACHE_TTL_S:
        return _from_catalog(cached[0], _stamp(cached[1]))
    try:
        with RunPodApi(key, settings.runpod_rest_url) as api:
            gpus = api.serverless_gpus()
    except DeployError as e:
        log.warning(
            "GPU catalog not read (%s); using %s", e, "the cache" if cached else "the table"
        )
        return _from_catalog(cached[0], _stamp(cached[1])) if cached else _builtin()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"read_at": now.isoformat(), "gpus": gpus}))
    return _from_catalog(gpus, _stamp(now))


def _stamp(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def priced(settings: Settings, market: GpuMarket) -> Settings:
    """`settings` with the catalog's prices as `gpu_prices` (the user's own ones win). The
    catalog lists flex prices: settings on the active tier are left as they are."""
    if not market.prices_per_h or settings.price_tier != "flex":
        return settings
    return settings.model_copy(
        update={"gpu_prices": {**market.prices_per_h, **settings.gpu_prices}}
    )
