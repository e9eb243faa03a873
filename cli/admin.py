"""`brightrun admin`: every user's spend, and per-user limits and roles (admins only).

    brightrun admin users [--month 2026-11] [--json]
    brightrun admin set-limits USER [--monthly-budget USD | --default-budget]
                                    [--max-jobs N | --default-jobs]
    brightrun admin set-role USER member|admin
    brightrun admin set-hub USER [NAMESPACE...]   (Hub namespaces for the deployment's token)

USER is a user id or an email address. The command acts as the signed-in user (see
`brightrun login`); with AUTH=none that is the local user, an admin. Errors print one line
and exit 2.
"""

from __future__ import annotations

import json
from typing import Any

import typer

app = typer.Typer(help="Admin: every user's spend, per-user budgets, job limits and roles.")


def _run(fn: Any) -> Any:
    from cli.auth import acting_user
    from core.db import session_scope, upgrade
    from core.errors import BrightRunError
    from core.settings import load_settings

    settings = load_settings()
    upgrade(settings)
    actor = acting_user(settings)
    try:
        with session_scope(settings) as s:
            return fn(actor, s, settings)
    except BrightRunError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


@app.command()
def users(
    month: str = typer.Option("", "--month", help="YYYY-MM (default: this month)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Every user with the month's spend, unfinished jobs and the limits in force."""
    from dataclasses import asdict

    from core import admin

    rows = _run(lambda a, s, st: [asdict(r) for r in admin.user_rows(a, s, st, month or None)])
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    for r in rows:
        budget = f"${r['monthly_budget_usd']:.2f}" + (
            " (default)" if r["budget_is_default"] else ""
        )
        jobs = f"{r['max_concurrent_jobs']}" + (" (default)" if r["jobs_limit_is_default"] else "")
        typer.echo(
            f"{r['email'] or r['user_id']}  {r['role']}  spent ${r['month_spend_usd']:.2f} in {r['month']}"
            f"  budget {budget}  jobs at once {jobs}  unfinished {r['unfinished_jobs']}"
        )


@app.command("set-limits")
def set_limits(
    user: str = typer.Argument(..., help="user id or email"),
    monthly_budget: float | None = typer.Option(None, "--monthly-budget", help="dollars per month"),
    default_budget: bool = typer.Option(
        False, "--default-budget", help="back to MONTHLY_BUDGET_USD"
    ),
    max_jobs: int | None = typer.Option(
        None, "--max-jobs", help="unfinished jobs at once (0: none)"
    ),
    default_jobs: bool = typer.Option(False, "--default-jobs", help="back to MAX_CONCURRENT_JOBS"),
) -> None:
    """Set a user's monthly budget and/or concurrent-job limit; applies to their next launch."""
    from core import admin

    changes: dict[str, Any] = {}
    if monthly_budget is not None or default_budget:
        changes["monthly_budget_usd"] = None if default_budget else monthly_budget
    if max_jobs is not None or default_jobs:
        changes["max_concurrent_jobs"] = None if default_jobs else max_jobs
    if not changes:
        raise typer.BadParameter(
            "give --monthly-budget/--default-budget and/or --max-jobs/--default-jobs"
        )
    u = _run(lambda a, s, st: admin.set_limits(a, s, user, **changes))
    typer.echo(
        f"limits of {u.email or u.id}: budget {u.monthly_budget_usd if u.monthly_budget_usd is not None else 'default'}, "
        f"jobs at once {u.max_concurrent_jobs if u.max_concurrent_jobs is not None else 'default'}"
    )


@app.command("set-hub")
def set_hub(
    user: str = typer.Argument(..., help="user id or email"),
    namespaces: list[str] = typer.Argument(
        None, help="Hub users or organisations; none: allow none"
    ),
) -> None:
    """Set the Hugging Face Hub namespaces a member may push versions to with the
    deployment's HF_TOKEN (replacing the ones set before)."""
    from core import admin

    u = _run(lambda a, s, st: admin.set_hub_namespaces(a, s, user, list(namespaces or [])))
    allowed = u.hub_namespaces.replace(",", ", ") if u.hub_namespaces else "none"
    typer.echo(f"{u.email or u.id} may push with the deployment's token to: {allowed}")


@app.command("set-role")
def set_role(
    user: str = typer.Argument(..., help="user id or email"),
    role: str = typer.Argument(..., help="member or admin"),
) -> None:
    """Make a user an admin, or a member again."""
    from core import admin

    u = _run(lambda a, s, st: admin.set_role(a, s, user, role))
    typer.echo(f"{u.email or u.id} is now {u.role}")
