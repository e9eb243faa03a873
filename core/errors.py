"""BrightRun's typed errors, in one place. Pages and the CLI turn them into messages.

Every error's message is written for the user: it names the thing (dataset, job, row,
field, setting) and says what to do. Callers branch on the type, never on the text.
"""

from __future__ import annotations


class BrightRunError(Exception):
    """Base of every error BrightRun raises on purpose."""


class NotFound(BrightRunError):
    """The thing does not exist, or belongs to another user (the two are not told apart)."""


class Forbidden(BrightRunError):
    """The actor may not do this at all (a member calling an admin function)."""


class Conflict(BrightRunError):
    """The request clashes with what is stored (a name taken, a job already finished)."""


class InvalidInput(BrightRunError, ValueError):
    """A value the user gave is wrong; the message names the field or setting."""


class QuotaExceeded(BrightRunError):
    """A per-user limit (monthly budget, concurrent jobs) would be exceeded."""


class StorageError(BrightRunError):
    """The file store failed or refused an operation (not a missing object: NotFound)."""


class DatasetUnusable(BrightRunError):
    """A dataset file cannot be used (unreadable, unknown layout, no valid row), or has bad
    rows the caller chose to reject. `report` holds the inspection report when there is one."""

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report
