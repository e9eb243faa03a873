"""What a page can do, the command line can do, and the reverse.

`CAPABILITIES` is the table: each capability with the page widgets that do it (action keys:
buttons, downloads, form submits, the chat box, the uploader) and the `brightrun` commands
that do it. The test walks every action widget in `app_pages/` and `components/` (from the
source, so an action behind data a test would have to seed is not missed) and every
command of the typer app, and checks that each one is in the table, that every row names
both a page side and a command side that exist, and that nothing is only on one side.
What is not a capability (moving between views, confirming, the stack's own operations)
is listed apart, each with why.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

# capability: (page action keys, `brightrun` commands). A key ending in "*" is an f-string
# key's fixed start. "view:" names a page that shows it without an action widget.
CAPABILITIES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "upload and validate a dataset": (
        ("datasets.file.*", "datasets.add", "datasets.drop"),
        ("dataset inspect", "dataset add"),
    ),
    "list, show and preview datasets": (
        ("view:datasets",),
        ("dataset list", "dataset show", "dataset preview"),
    ),
    "rename a dataset": (("datasets.rename",), ("dataset rename",)),
    "delete a dataset": (("datasets.delete",), ("dataset delete",)),
    "plan a job (memory, fit per GPU, time, cost)": (("view:train",), ("plan",)),
    "launch a training job": (("train.launch",), ("train",)),
    "try GRPO graders on a dataset's rows": (("train.try_graders",), ("grader test",)),
    "cache a base model on the volume": (("train.cache_model",), ("cache-model",)),
    "job history and one job's detail and events": (
        ("view:jobs",),
        ("jobs list", "jobs show", "jobs events"),
    ),
    "cancel a job": (("jobs.cancel",), ("jobs cancel",)),
    "retry a job from its checkpoint": (("jobs.retry",), ("jobs retry",)),
    "relaunch a failed job with the suggested settings": (("jobs.relaunch",), ("jobs relaunch",)),
    "compare runs": (("jobs.compare", "jobs.compare_csv"), ("jobs compare",)),
    "promote a checkpoint to a version": (("jobs.promote.*",), ("adapters promote",)),
    "list adapters and versions": (
        ("view:adapters",),
        ("adapters list", "adapters versions", "adapters show"),
    ),
    "download an adapter": (("adapters.download",), ("adapters export",)),
    "delete an adapter": (("adapters.delete",), ("adapters delete",)),
    "push an adapter to the Hub": (("adapters.push",), ("adapters push",)),
    "merge an adapter into its base": (("adapters.merge",), ("adapters merge",)),
    "export a version as GGUF (llama.cpp, Ollama)": (
        ("adapters.gguf_export",),
        ("export gguf", "export gguf-status"),  # the page shows a job's progress live
    ),
    "evaluate an adapter now": (("adapters.evaluate",), ("adapters eval",)),
    "continue training an adapter": (("adapters.continue",), ("adapters continue",)),
    "chat with base and adapter": (("playground.prompt",), ("chat",)),
    "export the conversation": (("playground.export",), ("chat",)),  # chat --export
    "chat with tools: calls shown as calls, a result sent back": (
        ("playground.agent_send", "playground.continue.*"),
        ("agent",),
    ),
    "use a dataset's own tools": (("playground.tools_use",), ("agent",)),  # --dataset-tools
    "clear the tool conversation": (("playground.agent_clear",), ("agent",)),  # --clear
    "compare on a set and export it": (
        ("playground.run_set", "playground.export_set"),
        ("chat-set",),
    ),
    "spend and the pod comparison": (("view:costs",), ("costs",)),
    "health of each part": (("settings.recheck",), ("status",)),
    "users' spend and limits": (("admin.save",), ("admin users", "admin set-limits")),
    "a user's role": (("admin.save_role",), ("admin set-role",)),
    "a user's Hub namespaces": (("admin.save_hub",), ("admin set-hub",)),
    "sign in": (("auth.sign_in",), ("login",)),
    "create an account": (("auth.sign_up",), ("login",)),  # login --sign-up
    "sign out": (("auth.sign_out",), ("logout",)),
    "who am I": (("view:sidebar",), ("whoami",)),
}

# Actions that move between views or confirm another action: nothing to do on a command line.
PAGE_ONLY = {
    "jobs.back": "back from a job to the list",
    "jobs.prev": "previous page of the table (`jobs list --limit`)",
    "jobs.next": "next page of the table",
    "jobs.compare_back": "back from a comparison to the list",
    "overview.open.*": "open a running job's page",
    "adapters.playground": "open the adapter in the playground (`chat --adapter`)",
    "playground.clear": "clear the conversation on the screen",
    ".yes.*": "confirm a delete (the command deletes when asked)",
    ".no.*": "keep it after all",
}
# Commands that run or set up the deployment itself: no page would be the place for them.
CLI_ONLY = {
    "version": "the installed version",
    "up": "starts the local stack, the dashboard included",
    "deploy": "creates the RunPod volume, template and endpoint",
    "sync": "the background syncer process",
    "db upgrade": "migrations, run before the dashboard starts",
    "db current": "migration revision (`status` shows the database's health)",
}
# Train-page widgets built in components/train_options.py that the Train page does not call
# yet (it is being rewritten); remove from here once it does.
_ACTIONS = {"button", "download_button", "form_submit_button", "chat_input", "file_uploader"}


def _page_actions() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for f in sorted([*(ROOT / "app_pages").glob("*.py"), *(ROOT / "components").glob("*.py")]):
        for node in ast.walk(ast.parse(f.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in _ACTIONS
            ):
                key = next((k.value for k in node.keywords if k.arg == "key"), None)
                assert key is not None, f"{f.name}:{node.lineno}: an action without a key"
                if isinstance(key, ast.Constant):
                    found[key.value] = f
                else:
                    assert isinstance(key, ast.JoinedStr), f"{f.name}:{node.lineno}"
                    found[
                        "".join(str(v.value) for v in key.values if isinstance(v, ast.Constant))
                        + "*"
                    ] = f
    return found


def _commands() -> set[str]:
    from cli import app

    out: set[str] = set()

    def walk(t, prefix: str) -> None:
        for c in t.registered_commands:
            out.add(prefix + (c.name or c.callback.__name__.replace("_", "-")))
        for g in t.registered_groups:
            walk(g.typer_instance, prefix + g.name + " ")

    walk(app, "")
    return out


def test_every_page_action_has_its_command() -> None:
    in_table = {k for keys, _ in CAPABILITIES.values() for k in keys}
    missing = sorted(set(_page_actions()) - in_table - set(PAGE_ONLY))
    assert not missing, (
        f"page actions with no command (add them to CAPABILITIES with theirs): {missing}"
    )


def test_every_command_has_its_page() -> None:
    in_table = {c for _, cmds in CAPABILITIES.values() for c in cmds}
    missing = sorted(_commands() - in_table - set(CLI_ONLY))
    assert not missing, (
        f"commands with no page (add them to CAPABILITIES with their page): {missing}"
    )


def test_every_capability_exists_on_both_sides() -> None:
    actions, commands = _page_actions(), _commands()
    pages = {p.stem for p in (ROOT / "app_pages").glob("*.py")} | {"sidebar"}
    for name, (keys, cmds) in CAPABILITIES.items():
        assert keys and cmds, name
        for k in keys:
            assert k in actions or k.removeprefix("view:") in pages, f"{name}: no page action {k!r}"
        for c in cmds:
            assert c in commands, f"{name}: no command `brightrun {c}`"
    assert not set(PAGE_ONLY) - set(actions), "PAGE_ONLY lists actions that are gone"
    assert not set(CLI_ONLY) - commands, "CLI_ONLY lists commands that are gone"


def test_the_options_the_pages_set_are_on_the_command_line() -> None:
    """Settings both sides must offer (the issue's list), by option name."""
    import typer.main

    from cli import app

    root = typer.main.get_command(app)

    wanted = {
        ("train",): [
            "--preset",
            "--scheduler",
            "--warmup",
            "--packing",
            "--gradient-checkpointing",
            "--target-modules",
            "--lora-on-experts",
            "--gpu",
        ],
        ("chat",): ["--export"],
        ("login",): ["--sign-up"],
        ("jobs", "compare"): ["--target-eval-loss", "--csv"],
    }
    for path, options in wanted.items():
        cmd = root
        for part in path:
            cmd = cmd.commands[part]
        given = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
        for o in options:
            assert o in given, (path, o)


def test_widgets_built_for_a_page_are_called_by_one() -> None:
    """Every components module with page actions is imported by a page."""
    page_source = "\n".join(p.read_text() for p in (ROOT / "app_pages").glob("*.py"))
    page_source += (ROOT / "app.py").read_text()
    used = {
        m
        for m in (
            "compare",
            "jobs",
            "publish",
            "datasets",
            "chat",
            "quality",
            "sign_in",
            "auth_gate",
            "widgets",
            "train_options",
            "agent_chat",
        )
        if f"import {m}" in page_source or f", {m}" in page_source or f"{m}," in page_source
    }
    for key, f in _page_actions().items():
        assert f.parent.name == "app_pages" or f.stem in used or f.stem == "widgets", (key, f)
