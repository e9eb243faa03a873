"""The `brightrun` command line. Every dashboard action is also a command here.

Subcommand groups live in their own modules in this package and are registered below;
`brightrun up` starts the local stack through `cli.stack`. The command line sits above
`core` and `local` (it may use both); neither imports it (see the contracts in
pyproject.toml).
"""

from __future__ import annotations

import typer

from core import __version__
from core.settings import DASHBOARD_PORT, load_settings

app = typer.Typer(
    help="BrightRun: self-service LoRA/QLoRA fine-tuning.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def version() -> None:
    """Print the BrightRun version and the job-spec version the worker speaks."""
    from trainer.shared.spec import SPEC_VERSION

    typer.echo(f"brightrun {__version__} (job spec v{SPEC_VERSION})")


@app.command()
def up(
    port: int = typer.Option(DASHBOARD_PORT, help="dashboard port"),
    headless: bool = typer.Option(True, help="do not open a browser"),
) -> None:
    """Start the local stack (database migrations, local GPU endpoint, inference server,
    background syncer) and the dashboard on http://localhost:PORT."""
    from cli.stack import local_services, run_stack
    from core.db import upgrade

    settings = load_settings()
    upgrade(settings)
    services = local_services(settings, dashboard_port=port, headless=headless)
    raise typer.Exit(run_stack(services, echo=typer.echo))


from cli import account as _account  # noqa: E402
from cli import adapters as _adapters  # noqa: E402
from cli import admin as _admin  # noqa: E402
from cli import agent as _agent  # noqa: E402
from cli import auth as _auth  # noqa: E402
from cli import chat as _chat  # noqa: E402 - groups register after the app exists
from cli import dataset as _dataset  # noqa: E402
from cli import db as _db  # noqa: E402
from cli import deploy as _deploy  # noqa: E402
from cli import export as _export  # noqa: E402
from cli import grader as _grader  # noqa: E402
from cli import jobs as _jobs  # noqa: E402
from cli import plan as _plan  # noqa: E402
from cli import playground as _playground  # noqa: E402
from cli import runs as _runs  # noqa: E402
from cli import train as _train  # noqa: E402

app.add_typer(_db.app, name="db")
app.add_typer(_dataset.app, name="dataset")
app.add_typer(_grader.app, name="grader")
app.command("deploy")(_deploy.deploy)
app.add_typer(_jobs.app, name="jobs")
_jobs.app.command("compare")(_runs.compare)
_jobs.app.command("relaunch")(_runs.relaunch)
app.command("train")(_train.train)
app.command("sync")(_jobs.sync_command)
app.command("chat")(_chat.chat)
app.command("chat-set")(_playground.chat_set)
app.command("agent")(_agent.agent)
app.command("costs")(_account.costs)
app.command("status")(_account.status)
app.command("plan")(_plan.plan)
app.command("login")(_auth.login)
app.command("logout")(_auth.logout)
app.command("whoami")(_auth.whoami)
app.add_typer(_admin.app, name="admin")
app.add_typer(_adapters.app, name="adapters")
app.add_typer(_export.app, name="export")
app.command("cache-model")(_adapters.cache_model)


def main() -> None:
    app()
