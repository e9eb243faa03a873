"""`brightrun login`, `brightrun logout`, `brightrun whoami`: who the command line acts as.

With AUTH=none every command acts as the one local user. With AUTH=supabase, `login`
signs in through Supabase Auth (email and password, the password read without echo) and
keeps the session in the profile file (BRIGHTRUN_PROFILE, default
~/.config/brightrun/session.json, mode 0600); every later command acts as that user,
refreshing the session when it has expired, until `logout`.

Errors print one line and exit 2.
"""

from __future__ import annotations

from typing import Any

import typer


def acting_user(settings: Any) -> Any:
    """The `Actor` a command acts as (see the module doc); exits 2 when nobody is signed in."""
    from core.clients import auth
    from core.errors import BrightRunError

    try:
        return auth.cli_actor(settings)
    except BrightRunError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


def login(
    email: str = typer.Option(..., "--email", prompt=True, help="your account's email address"),
    password: str = typer.Option(
        ...,
        "--password",
        prompt=True,
        hide_input=True,
        envvar="BRIGHTRUN_PASSWORD",
        help="your password (prompted without echo when left out)",
    ),
    sign_up: bool = typer.Option(
        False, "--sign-up", help="create the account first (as the sign-in page's other tab)"
    ),
) -> None:
    """Sign in with Supabase Auth (AUTH=supabase); later commands act as you. With
    --sign-up, create the account first."""
    from core.clients import auth
    from core.db import session_scope, upgrade
    from core.errors import BrightRunError
    from core.settings import load_settings

    settings = load_settings()
    if settings.auth == "none":
        typer.echo("AUTH=none: there is one local user and nothing to sign in to")
        return
    try:
        client = auth.make_client(settings)
        if sign_up and not (created := auth.sign_up(client, email, password)).signed_in:
            typer.echo(
                "account created: open the confirmation link Supabase sent you, then `brightrun login`"
            )
            return
        identity = created.identity if sign_up else auth.sign_in(client, email, password)
        path = auth.save_profile(settings, client)
        upgrade(settings)
        with session_scope(settings) as s:
            actor = auth.actor_for(s, identity)
    except BrightRunError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"signed in as {actor.email} ({actor.role}); session kept in {path}")


def logout() -> None:
    """Sign out: revoke this command line's session and delete its profile."""
    from core.clients import auth
    from core.errors import BrightRunError
    from core.settings import load_settings

    settings = load_settings()
    if settings.auth == "none":
        typer.echo("AUTH=none: there is one local user and nothing to sign out of")
        return
    try:
        auth.sign_out(auth.cli_client(settings))
    except BrightRunError as e:  # ended already, or Supabase unreachable: forget it here anyway
        typer.echo(f"note: {e}", err=True)
    auth.delete_profile(settings)
    typer.echo("signed out")


def whoami() -> None:
    """Print the user commands act as, and their role."""
    from core.settings import load_settings

    settings = load_settings()
    actor = acting_user(settings)
    typer.echo(f"{actor.email or actor.user_id} ({actor.role}, id {actor.user_id})")
