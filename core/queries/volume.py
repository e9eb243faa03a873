"""What the Costs page shows of the volume: its usage per part and monthly cost."""

from __future__ import annotations

from core import retention
from core.retention import VolumeUsage
from core.settings import Settings


def volume_costs(settings: Settings) -> VolumeUsage:
    """The local volume folder's bytes per part (models, checkpoints, adapters) and what
    they cost a month at VOLUME_USD_PER_GB_MONTH (`core.retention.volume_usage`)."""
    return retention.volume_usage(settings)
