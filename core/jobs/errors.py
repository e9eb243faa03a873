"""Why a job was not launched or sent: the errors of `core.jobs` beyond `core.errors`."""

from __future__ import annotations

from core.errors import BrightRunError, InvalidInput


class SubmitFailed(BrightRunError):
    """The endpoint refused the job or could not be reached; the job is stored as FAILED."""


class PlanRefused(InvalidInput):
    """The planner says the job cannot fit its GPU, or would cost more than its budget."""


class UploadUrlsExpire(PlanRefused):
    """The file store's upload URLs would expire before the job can end."""
