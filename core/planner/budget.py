"""What a job will cost, whether its budget covers it, and the time limits it runs under.

Cost (`estimate_cost`) = (training time + cold start) x the Serverless rate, as a low-high
range. `check_budget` compares that range with a budget; `execution_timeout_ms` and
`training_time_limit_s` turn a time estimate and a budget into RunPod's
`policy.executionTimeout` and the worker's own graceful stop below it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from core.errors import InvalidInput
from core.planner.pricing import rate_per_second
from core.planner.timing import TimeEstimate


@dataclass(frozen=True)
class CostEstimate:
    gpu: str
    tier: str
    rate_per_s: float
    usd_low: float
    usd_high: float
    billed_s_low: float
    billed_s_high: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate_cost(
    time: TimeEstimate,
    tier: str = "flex",
    price_overrides: Mapping[str, float] | None = None,
) -> CostEstimate:
    """(training time + cold start) x the Serverless rate, low and high."""
    rate = rate_per_second(time.gpu, tier, dict(price_overrides or {}))  # type: ignore[arg-type]
    lo = time.seconds_low + time.cold_start_low_s
    hi = time.seconds_high + time.cold_start_high_s
    return CostEstimate(time.gpu, tier, rate, lo * rate, hi * rate, lo, hi)


@dataclass(frozen=True)
class BudgetCheck:
    ok: bool  # False: even the low estimate exceeds the budget
    level: Literal["within", "may_exceed", "exceeds"]
    message: str


def check_budget(cost: CostEstimate, budget_usd: float) -> BudgetCheck:
    """Compare a cost range with a budget: within, may exceed (high above), exceeds (low above)."""
    if cost.usd_low > budget_usd:
        return BudgetCheck(
            False,
            "exceeds",
            (
                f"the job is estimated at ${cost.usd_low:.2f}-${cost.usd_high:.2f}, above its budget "
                f"of ${budget_usd:.2f}: raise the budget, train fewer tokens or pick a cheaper GPU"
            ),
        )
    if cost.usd_high > budget_usd:
        return BudgetCheck(
            True,
            "may_exceed",
            (
                f"the job may reach its ${budget_usd:.2f} budget (estimate ${cost.usd_low:.2f}-"
                f"${cost.usd_high:.2f}); it stops at the budget and keeps what it trained"
            ),
        )
    return BudgetCheck(
        True,
        "within",
        (
            f"estimated ${cost.usd_low:.2f}-${cost.usd_high:.2f}, within the ${budget_usd:.2f} budget"
        ),
    )


def execution_timeout_ms(time: TimeEstimate | None, budget_usd: float, rate_per_s: float) -> int:
    """RunPod `policy.executionTimeout`: the seconds the budget buys at this rate.

    Capped at 3x the high estimate (cold start included) plus 30 minutes when an estimate
    is given: a job that runs that long is stuck, not slow. At least 10 minutes.
    """
    if budget_usd <= 0:
        raise InvalidInput(f"budget must be positive (got {budget_usd})")
    seconds = budget_usd / rate_per_s if rate_per_s > 0 else math.inf
    if time is not None:
        seconds = min(seconds, 3 * (time.seconds_high + time.cold_start_high_s) + 1800)
    if math.isinf(seconds):
        seconds = 24 * 3600.0
    return int(max(600.0, seconds) * 1000)


def training_time_limit_s(timeout_ms: int, time: TimeEstimate | None = None) -> float:
    """The worker's own graceful stop (`TrainingSpec.time_limit_s`), below the hard stop.

    Leaves the cold start (high estimate) and a margin to save and upload the adapter
    (5% or 2 minutes, whichever is larger).
    """
    total = timeout_ms / 1000
    cold = time.cold_start_high_s if time is not None else 120.0
    return max(60.0, total - cold - max(120.0, 0.05 * total))
