"""`brightrun costs` and `brightrun status`: the Costs page's figures and the Settings
page's health of each part, in the terminal.

    brightrun costs [--month 2026-11] [--json]
    brightrun status [--json]

Money is US dollars. `status` exits 1 when a part is not answering (for scripts and
monitors); like the Settings page, it shows the deployment's parts to admins only (and
to the local user with AUTH=none).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import typer

from cli.tables import echo_table


def _ctx() -> tuple[Any, Any]:
    from cli.auth import acting_user
    from core.settings import load_settings

    settings = load_settings()
    return settings, acting_user(settings)


def _money(x: float | None) -> str:
    if x is None:
        return "-"
    return f"${x:,.4f}" if abs(x) < 1 else f"${x:,.2f}"


def costs(
    month: str = typer.Option("", "--month", help="YYYY-MM (default: this month)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Spend per month, GPU type, model and job; the budget; Serverless against an always-on
    pod at the utilisation you actually had."""
    from core import queries
    from core.db import session_scope
    from core.errors import BrightRunError

    settings, actor = _ctx()
    try:
        with session_scope(settings) as s:
            sv = queries.spend_view(actor, s, settings, month or None)
    except BrightRunError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    if as_json:
        typer.echo(
            json.dumps(
                {**asdict(sv), "budget_share": sv.budget_share, "utilisation": sv.utilisation},
                indent=1,
                default=str,
            )
        )
        return
    _echo_spend(sv)
    if sv.by_month:
        _echo_comparison(sv)
    with session_scope(settings) as s:
        _echo_bill(queries.endpoint_bill(actor, s, settings, days=14))


def _echo_spend(sv: Any) -> None:
    """The month against the budget, and spend per month, GPU type, model and job."""
    share = f"{sv.budget_share:.0%}" if sv.budget_share != float("inf") else "over 100%"
    typer.echo(
        f"{sv.month}: spent {_money(sv.month_spend_usd)} of the {_money(sv.monthly_budget_usd)} "
        f"monthly budget ({share})"
    )
    if sv.budget_share >= 1:
        typer.echo(
            "the monthly budget is used up: new jobs are refused until next month or a larger budget"
        )
    if not sv.by_month:
        typer.echo("no GPU time recorded yet: costs appear here when jobs finish")
        return
    for title, amounts in (
        ("per month", sv.by_month),
        (f"per GPU type ({sv.month})", sv.by_gpu),
        (f"per model ({sv.month})", sv.by_model),
    ):
        typer.echo(f"\n{title}:")
        echo_table(
            [{"": k, "cost ($)": round(v, 4)} for k, v in amounts.items()]
            or [{"": "-", "cost ($)": 0.0}]
        )
    typer.echo(f"\nper job ({sv.month}, most expensive first):")
    echo_table(
        [
            {
                "job": j.job_id,
                "model": j.model,
                "GPU": j.gpu_type,
                "GPU seconds": round(j.seconds, 1),
                "cost ($)": round(j.usd, 4),
            }
            for j in sv.by_job
        ]
    )


def _echo_bill(bill: Any) -> None:
    """RunPod's own bill for the endpoint per day beside the jobs' recorded costs."""
    if not bill.days:
        typer.echo(f"\nRunPod's bill: {bill.message or 'nothing billed in the last 14 days'}")
        return
    whose = "all users' jobs" if bill.all_users else "your jobs"
    typer.echo(f"\nRunPod's bill for endpoint {bill.endpoint_id} against {whose} (per day):")
    echo_table(
        [
            {
                "day": d.day.isoformat(),
                "RunPod ($)": round(d.runpod_usd, 4),
                "jobs ($)": round(d.jobs_usd, 4),
                "difference ($)": round(d.difference_usd, 4),
            }
            for d in bill.days
        ]
    )
    typer.echo(
        f"total: RunPod {_money(bill.runpod_usd)}, jobs {_money(bill.jobs_usd)}, difference "
        f"{_money(bill.difference_usd)} (idle or active workers, boots, what no job carried)"
    )


def _echo_comparison(sv: Any) -> None:
    """Serverless against always-on pods at the utilisation the month had."""
    cmp = sv.comparison
    if cmp is None:
        typer.echo(f"\nno GPU time in {sv.month} to compare with an always-on pod")
        return
    pods = "an always-on pod" if cmp.pods == 1 else f"{cmp.pods} always-on pods"
    typer.echo(
        f"\nServerless against {pods} ({sv.compared_gpu}): busy {cmp.busy_hours:.2f} h of "
        f"{cmp.pod_hours_on:.0f} h, utilisation {sv.utilisation:.1%}; Serverless {_money(cmp.serverless_usd)}, "
        f"pods {_money(cmp.pod_usd)}; break-even utilisation {cmp.break_even_utilisation:.0%}"
    )


def status(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Is each configured part answering (database, storage, GPU endpoint, inference), and
    with what. Exits 1 when one is not."""
    import httpx

    from core import queries
    from core.clients.inference import InferenceClient
    from core.clients.runpod import RunPodClient
    from core.clients.storage import make_blob_store

    settings, actor = _ctx()
    if settings.auth != "none" and actor.role != "admin":
        typer.echo("the deployment's parts and their health are shown to admins", err=True)
        raise typer.Exit(2)
    runpod = RunPodClient.from_settings(
        settings, max_attempts=1, timeout=httpx.Timeout(5.0, connect=2.0)
    )
    with InferenceClient(settings) as inference:
        parts = queries.health(
            settings, store=make_blob_store(settings), runpod=runpod, inference=inference
        )
    if as_json:
        typer.echo(json.dumps([asdict(p) for p in parts], indent=1))
    else:
        for p in parts:
            typer.echo(
                f"{p.part:<12} {'answering' if p.ok else 'NOT ANSWERING':<14} {p.configured}\n{'':<12} {p.detail}"
            )
    if not all(p.ok for p in parts):
        raise typer.Exit(1)
