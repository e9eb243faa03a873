"""What every command of the command line shares: settings, the acting user, and one line
per error with its exit code (2 for bad input or something not found, 1 otherwise)."""

from __future__ import annotations

from typing import Any

import typer


def settings() -> Any:
    from core.settings import load_settings

    return load_settings()


def actor(settings: Any) -> Any:
    from cli.auth import acting_user

    return acting_user(settings)  # the local user, or who `brightrun login` signed in


def fail(e: Exception) -> None:
    from core.errors import InvalidInput, NotFound

    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(2 if isinstance(e, InvalidInput | NotFound) else 1)


def errors() -> tuple[type[Exception], ...]:
    """The errors a command reports as one line (anything else is a bug and shows as one)."""
    from core.clients.runpod import RunPodError
    from core.errors import BrightRunError

    return (BrightRunError, RunPodError)


def money(x: float | None) -> str:
    return f"${(x or 0.0):.4f}" if (x or 0.0) < 1 else f"${x:.2f}"
