"""The errors `brightrun deploy` raises; both are in the `BrightRunError` family.

`DeployError`: deploy cannot go on; the message names the resource or setting and what
to do. `RunPodProblem`: RunPod answered with an RFC 9457 problem (`title`, `status`,
`detail`, `errors`); the message carries all four as RunPod sent them (the account key
masked), and `problem` holds them as data.
"""

from __future__ import annotations

from typing import Any

from core.errors import BrightRunError


class DeployError(BrightRunError):
    """Deploy cannot go on; the message names the resource or setting and what to do."""


class RunPodProblem(DeployError):
    """RunPod refused a request; `problem` is its RFC 9457 body, `status` the HTTP status."""

    def __init__(self, message: str, problem: dict[str, Any], status: int) -> None:
        super().__init__(message)
        self.problem = problem
        self.status = status
