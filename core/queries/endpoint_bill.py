"""RunPod's own bill for the training endpoint beside what BrightRun recorded for its jobs.

`endpoint_bill(actor, session, settings, days=14)` reads `GET /v2/billing/serverless`
(the account key `RUNPOD_API_KEY`, at `RUNPOD_REST_URL`) for the endpoint of
`GPU_CLUSTER_API_URL`, one record per UTC day, and sums the job costs recorded those days
(every user's for an admin, the actor's own otherwise, which the view says). The
difference is what no job carried: idle or active workers kept warm, boots no job
started, disk and the platform fee. It never raises for RunPod's side: without a key,
on the local endpoint or when RunPod refuses, the view carries no days and says why.
`brightrun costs` prints the same view.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from core.db import repo
from core.db.tables import utcnow
from core.deploy.client import RunPodApi
from core.deploy.errors import DeployError
from core.settings import Settings
from core.users import Actor


@dataclass(frozen=True)
class BillDay:
    day: dt.date
    runpod_usd: float  # RunPod's total for the endpoint that day
    jobs_usd: float  # what BrightRun recorded for its jobs that day
    gpu_usd: float = 0.0
    other_usd: float = 0.0  # CPU, disk and the platform fee

    @property
    def difference_usd(self) -> float:
        return self.runpod_usd - self.jobs_usd


@dataclass(frozen=True)
class EndpointBill:
    endpoint_id: str | None
    days: list[BillDay] = field(default_factory=list)  # oldest first
    message: str = ""  # why there is no bill, when there is none
    all_users: bool = True  # the jobs' sum covers every user (else the actor's own)

    @property
    def runpod_usd(self) -> float:
        return sum(d.runpod_usd for d in self.days)

    @property
    def jobs_usd(self) -> float:
        return sum(d.jobs_usd for d in self.days)

    @property
    def difference_usd(self) -> float:
        return self.runpod_usd - self.jobs_usd


def endpoint_id_of(url: str) -> str | None:
    """The endpoint id of a job URL `https://api.runpod.ai/v2/<id>` (None for another shape)."""
    parts = [p for p in urlsplit(url).path.split("/") if p]
    return parts[1] if len(parts) >= 2 and parts[0] == "v2" else None


def _no_bill_reason(settings: Settings, endpoint_id: str | None) -> str:
    host = urlsplit(settings.gpu_cluster_api_url).hostname or ""
    if settings.is_local_endpoint or host in ("127.0.0.1", "localhost", "::1"):
        return "the local endpoint runs on this machine: RunPod sends no bill for it"
    if endpoint_id is None:
        return f"GPU_CLUSTER_API_URL names no RunPod endpoint ({settings.gpu_cluster_api_url})"
    if not settings.runpod_api_key.get_secret_value():
        return "set RUNPOD_API_KEY (the account key `brightrun deploy` uses) to see RunPod's bill"
    return ""


def endpoint_bill(
    actor: Actor,
    session: Session,
    settings: Settings,
    days: int = 14,
    now: dt.datetime | None = None,
) -> EndpointBill:
    """The last `days` UTC days (today included) of RunPod's bill and the jobs' sum."""
    endpoint_id = endpoint_id_of(settings.gpu_cluster_api_url)
    reason = _no_bill_reason(settings, endpoint_id)
    if reason:
        return EndpointBill(endpoint_id, message=reason)
    today = (now or utcnow()).astimezone(dt.UTC).date()
    start = dt.datetime.combine(today - dt.timedelta(days=days - 1), dt.time(), dt.UTC)
    end = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), dt.UTC)
    try:
        with RunPodApi(settings.runpod_api_key.get_secret_value(), settings.runpod_rest_url) as api:
            records = api.serverless_billing(endpoint_id, start, end)
    except DeployError as e:
        return EndpointBill(endpoint_id, message=f"RunPod's bill could not be read: {e}")
    jobs = repo.cost_by_day(actor, session, start, end, all_users=actor.is_admin)
    return EndpointBill(endpoint_id, _days(records, jobs), all_users=actor.is_admin)


def _days(records: list[dict], jobs: dict[dt.date, float]) -> list[BillDay]:
    billed: dict[dt.date, BillDay] = {}
    for r in records:
        day = dt.datetime.fromisoformat(str(r["startTime"]).replace("Z", "+00:00")).date()
        total, gpu = float(r.get("totalAmount") or 0), float(r.get("gpuAmount") or 0)
        billed[day] = BillDay(day, total, jobs.get(day, 0.0), gpu, total - gpu)
    for day, usd in jobs.items():
        billed.setdefault(day, BillDay(day, 0.0, usd))
    return [billed[d] for d in sorted(billed)]
