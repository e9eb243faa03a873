"""The end-of-job notification: one Slack-compatible webhook POST.

`job_ended(settings, job)` posts `{"text": ..., "blocks": [...]}` (Slack's incoming-webhook
format; Mattermost, Discord's `/slack` endpoints and most chat tools accept it) to
`NOTIFY_WEBHOOK_URL`. The URL is a secret: it is never logged, and an error names only the
HTTP status or the kind of network failure. A failed post is logged and dropped (a job's
outcome never depends on a chat server); `core.jobs` claims each job's end once and tells
this module through its `JobEnded` subscribers, so several syncers never post twice.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from core.db.tables import JobStatus
from core.settings import Settings

log = logging.getLogger("brightrun.notify")


def message(job: Any) -> dict[str, Any]:
    """The webhook body for an ended job (no URLs, no secrets)."""
    icon = {JobStatus.COMPLETED: ":white_check_mark:", JobStatus.CANCELLED: ":no_entry_sign:"}.get(
        job.status, ":x:"
    )
    cost = f"${(job.cost_usd or 0.0):.2f}"
    line = f"{icon} BrightRun job `{job.id}` ({job.adapter_name or job.base_model}) {job.status.lower()}"
    details = [f"cost {cost}"]
    if job.final_loss is not None:
        details.append(f"final loss {job.final_loss:.4f}")
    if job.eval_loss is not None:
        details.append(f"eval loss {job.eval_loss:.4f}")
    if job.stop_reason and job.stop_reason != "finished":
        details.append(f"stopped: {job.stop_reason}")
    if job.failure_message:
        details.append(f"{job.failure_kind}: {job.failure_message}")
    text = f"{line} — " + ", ".join(details)
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}


def job_ended(
    settings: Settings, job: Any, *, transport: httpx.BaseTransport | None = None
) -> bool:
    """Post the notification for `job`; True when the webhook accepted it.

    The request goes straight through an httpx transport, not an `httpx.Client`, because the
    client logs every request URL at INFO level and this URL is a credential.
    """
    url = settings.notify_webhook_url.get_secret_value()
    if not url:
        return False
    request = httpx.Request(
        "POST", url, json=message(job), extensions={"timeout": httpx.Timeout(10.0).as_dict()}
    )
    owned = transport is None
    transport = transport or httpx.HTTPTransport(retries=2)
    try:
        response = transport.handle_request(request)
        response.read()
    except httpx.HTTPError as e:
        log.warning("job %s: notification webhook unreachable (%s)", job.id, type(e).__name__)
        return False
    finally:
        if owned:
            transport.close()
    if response.status_code >= 300:
        log.warning("job %s: notification webhook answered HTTP %d", job.id, response.status_code)
        return False
    return True
