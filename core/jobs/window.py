"""How long a job may take end to end, and how long its upload URLs live.

`upload_window(limits, max_url_s)`: a job must be able to end while its upload URLs still
work. Upload URLs live until the job can no longer be running (queue allowance + budget +
an hour, at least `UPLOAD_URL_TTL_S`). When the store cannot give that (Supabase without
S3 keys: 2 h), the queue allowance shrinks so that queue + `executionTimeout` +
`UPLOAD_URL_MARGIN_S` fits the URLs' lifetime, and `policy.ttl` makes the platform drop a
job still waiting past it. Raises `UploadUrlsExpire` when even `MIN_QUEUE_ALLOWANCE_S`
does not fit, naming the S3 settings and the largest budget that does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from core import planner
from core.clients.storage import DOWNLOAD_URL_TTL_S, UPLOAD_URL_TTL_S
from core.jobs.errors import UploadUrlsExpire

QUEUE_ALLOWANCE_S = DOWNLOAD_URL_TTL_S  # a job that waits longer would find its dataset URL expired
MAX_TTL_S = 7 * 24 * 3600
# With short-lived upload URLs a job is given at least this long to find a worker...
MIN_QUEUE_ALLOWANCE_S = 30 * 60
# ...and its upload URLs outlive the moment the platform would drop it by this much.
UPLOAD_URL_MARGIN_S = 5 * 60


@dataclass(frozen=True)
class UploadWindow:
    """How long a job may take, end to end, and how long its upload URLs live."""

    queue_s: float  # the wait for a worker the job is allowed
    ttl_ms: int  # RunPod `policy.ttl` (queue + execution): the platform drops the job after it
    url_s: int  # lifetime of the job's upload URLs


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.3g} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def upload_window(limits: planner.ExecutionLimits, max_url_s: int | None) -> UploadWindow:
    """The queue allowance, `policy.ttl` and upload URL lifetime for a job with `limits` on
    a store whose upload URLs live at most `max_url_s` (None: no limit); see the module
    docstring."""
    want = int(min(MAX_TTL_S, max(UPLOAD_URL_TTL_S, QUEUE_ALLOWANCE_S + limits.budget_s + 3600)))
    if max_url_s is None or want <= max_url_s:
        ttl_s = min(MAX_TTL_S, QUEUE_ALLOWANCE_S + limits.budget_s)
        return UploadWindow(QUEUE_ALLOWANCE_S, int(ttl_s * 1000), want)
    run_s = limits.execution_timeout_ms / 1000
    queue_s = min(QUEUE_ALLOWANCE_S, max_url_s - UPLOAD_URL_MARGIN_S - run_s)
    if queue_s < MIN_QUEUE_ALLOWANCE_S:
        most_s = max_url_s - UPLOAD_URL_MARGIN_S - MIN_QUEUE_ALLOWANCE_S
        usd = math.floor(most_s * limits.rate_per_s * 100) / 100
        raise UploadUrlsExpire(
            f"this job may run {hours(run_s)} after up to {hours(MIN_QUEUE_ALLOWANCE_S)} "
            f"waiting for a worker, but the file store's upload URLs last {hours(max_url_s)}: "
            "its adapter, event log and result could not be stored. Set "
            "SUPABASE_S3_ACCESS_KEY_ID and SUPABASE_S3_SECRET_ACCESS_KEY (with "
            "SUPABASE_S3_REGION; see docs/supabase.md) for upload URLs of up to 7 days, or "
            f"lower the budget to at most ${usd:.2f} so the job ends within {hours(max_url_s)}"
        )
    return UploadWindow(queue_s, int((queue_s + run_s) * 1000), int(max_url_s))
