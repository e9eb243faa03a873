"""The life of a training job: preflight, launch, sync, cancel, retry, reconcile.

Every function takes the acting user and scopes to them (another user's job is
`NotFound`). One module per step:

- `preflight`: `LaunchRequest` and `preflight(...) -> Preflight`, the one place that
  decides whether a job may launch (plan, pricing, limits, upload window, blockers,
  notes); `presets`: the presets and defaults the Train page and the command line share.
- `launch`: `submit`, which raises the preflight's first blocker and sends the job.
- `dispatch`: `dispatch`, the one function that sends a spec to the endpoint (training,
  merge and cache jobs), and the signed URLs a training job gets.
- `sync`, `pull`, `finish`: following a job on the endpoint, and its end.
- `billing`: billed seconds, live cost, the earlier attempts' cost. `quotas`: the
  concurrent-job and monthly-budget limits, checked under the user's row lock.
- `lifecycle`: cancel, retry, relaunch, continued training. `oom`: the relaunch after
  running out of memory. `reconcile`: syncing every user's unfinished jobs.
- `bus`: `JobEnded`, published when a job ends; `subscribers` lists who acts on it
  (notification, evaluation, the out-of-memory relaunch).
- `pricing`, `window`, `spec`, `errors`: what a job runs on and costs, how long its
  upload URLs must live, its `JobSpec`, and the errors raised here.

Local jobs run on this machine's CPU but are priced at the configured GPU type's
Serverless rate; they are recorded with GPU type `LOCAL_CPU` and price tier `local` so
they never skew the per-GPU history the planner learns from.

Errors: `core.errors` types (`NotFound`, `Conflict`, `InvalidInput`, `QuotaExceeded`),
`PlanRefused` (and its `UploadUrlsExpire`), `SubmitFailed`; `core.clients.runpod.RunPodError`
from `sync`/`cancel` when the endpoint cannot be reached (nothing is changed then).
"""

from core.adapters import version_id_for
from core.jobs.billing import eta_text, live_cost_usd
from core.jobs.bus import JobEnded
from core.jobs.dispatch import dispatch, log_upload_urls
from core.jobs.errors import PlanRefused, SubmitFailed, UploadUrlsExpire
from core.jobs.launch import submit
from core.jobs.lifecycle import cancel, continue_training, relaunch, relaunch_settings, retry
from core.jobs.oom import oom_settings, relaunch_after_oom
from core.jobs.preflight import LaunchRequest, Preflight, budget_verdict, preflight
from core.jobs.presets import DEFAULT_PRESET, METHOD_PRESETS, PRESETS, defaults, preset
from core.jobs.pricing import (
    LOCAL_GPU,
    Pricing,
    device_for,
    execution_limits,
    pricing_for,
    worker_model,
)
from core.jobs.quotas import check_quotas, lock_row
from core.jobs.reads import events, get, list_jobs
from core.jobs.reconcile import SyncReport, reconcile
from core.jobs.spec import LOG_FILES, build_spec, spec_errors
from core.jobs.subscribers import subscribe_all
from core.jobs.sync import sync
from core.jobs.window import (
    MAX_TTL_S,
    MIN_QUEUE_ALLOWANCE_S,
    QUEUE_ALLOWANCE_S,
    UPLOAD_URL_MARGIN_S,
    UploadWindow,
    upload_window,
)

subscribe_all()

__all__ = [
    "DEFAULT_PRESET",
    "LOCAL_GPU",
    "LOG_FILES",
    "MAX_TTL_S",
    "MIN_QUEUE_ALLOWANCE_S",
    "METHOD_PRESETS",
    "PRESETS",
    "QUEUE_ALLOWANCE_S",
    "UPLOAD_URL_MARGIN_S",
    "JobEnded",
    "LaunchRequest",
    "PlanRefused",
    "Preflight",
    "Pricing",
    "SubmitFailed",
    "SyncReport",
    "UploadUrlsExpire",
    "UploadWindow",
    "budget_verdict",
    "build_spec",
    "cancel",
    "check_quotas",
    "continue_training",
    "defaults",
    "device_for",
    "dispatch",
    "eta_text",
    "events",
    "execution_limits",
    "get",
    "list_jobs",
    "live_cost_usd",
    "lock_row",
    "log_upload_urls",
    "oom_settings",
    "preflight",
    "preset",
    "pricing_for",
    "reconcile",
    "relaunch",
    "relaunch_after_oom",
    "relaunch_settings",
    "retry",
    "spec_errors",
    "submit",
    "sync",
    "upload_window",
    "version_id_for",
    "worker_model",
]
