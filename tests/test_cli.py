import subprocess
import sys

from typer.testing import CliRunner

from cli import app
from trainer.shared.spec import SPEC_VERSION


def test_version() -> None:
    r = CliRunner().invoke(app, ["version"])
    assert r.exit_code == 0
    assert f"job spec v{SPEC_VERSION}" in r.output


def test_every_command_has_help() -> None:
    runner = CliRunner()
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0
    for group in app.registered_groups:
        r = runner.invoke(app, [group.name, "--help"])
        assert r.exit_code == 0, (group.name, r.output)
    for cmd in app.registered_commands:
        name = cmd.name or cmd.callback.__name__
        r = runner.invoke(app, [name, "--help"])
        assert r.exit_code == 0, (name, r.output)


def test_console_script_is_installed() -> None:
    exe = sys.executable.rsplit("/", 1)[0] + "/brightrun"
    out = subprocess.run([exe, "version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("brightrun ")
