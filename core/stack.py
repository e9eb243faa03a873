"""Which processes `brightrun up` starts for the given settings.

The local GPU endpoint and inference server start only when the settings point at them
(the defaults); with cloud URLs configured, only the syncer and the dashboard run here.
"""

from __future__ import annotations

from pathlib import Path

from core.settings import Settings
from local.stack import Service, python_module

ROOT = Path(__file__).resolve().parent.parent


def local_services(settings: Settings, dashboard_port: int, headless: bool = True) -> list[Service]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    dashboard = Service(
        "dashboard",
        [
            *python_module("streamlit"),
            "run",
            str(ROOT / "app.py"),
            "--server.port",
            str(dashboard_port),
            "--server.headless",
            "true" if headless else "false",
            "--browser.gatherUsageStats",
            "false",
        ],
        health_url=f"http://127.0.0.1:{dashboard_port}/_stcore/health",
    )
    from local.endpoint import stack_service as endpoint_service
    from local.inference import stack_service as inference_service

    endpoint = endpoint_service(settings)  # None when GPU_CLUSTER_API_URL is not the local one
    inference = inference_service(settings)  # None when INFERENCE_URL is not the local one
    syncer = Service("syncer", python_module("core.syncer"))  # jobs stay synced with no page open
    local = [svc for svc in (endpoint, inference) if svc is not None]
    return [*local, syncer, dashboard]

