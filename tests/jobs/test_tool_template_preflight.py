"""A tool-calling dataset on a model whose chat template cannot render tools is refused at
plan time, with the reason; the same dataset on a template that renders them plans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core import db, jobs, planner
from core.settings import Settings
from core.users import LOCAL_ACTOR
from tests.jobs.helpers import add_dataset

CALL = {"type": "function", "function": {"name": "get_time", "arguments": {}}}
ROWS = [
    {
        "tools": [{"type": "function", "function": {"name": "get_time", "parameters": {}}}],
        "messages": [
            {"role": "user", "content": f"time {i}?"},
            {"role": "assistant", "content": "", "tool_calls": [CALL]},
            {"role": "tool", "content": "09:00"},
            {"role": "assistant", "content": "nine"},
        ],
    }
    for i in range(4)
]
STATS = {"agent": {"rows_with_tools": 4, "rows_with_tool_calls": 4}}
PLAIN_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"


def plan(tmp_path: Path, template: str | None) -> jobs.Preflight:
    from trainer.shared.tiny import build_tiny_chat_model

    settings = Settings(_env_file=None, data_dir=tmp_path / "data")
    folder = build_tiny_chat_model(settings.data_dir / "models" / planner.TINY_DIR_NAME)
    if template is not None:
        cfg_path = folder / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["chat_template"] = template
        cfg_path.write_text(json.dumps(cfg))
        (folder / "chat_template.jinja").unlink(missing_ok=True)
    db.upgrade(settings)
    try:
        ds = add_dataset(settings, LOCAL_ACTOR, ROWS, stats=STATS)
        request = jobs.LaunchRequest.build(
            model=planner.TINY_ID, dataset_id=ds, quantization="none", budget_usd=1.0
        )
        with db.session_scope(settings) as s:
            return jobs.preflight(request, LOCAL_ACTOR, s, settings)
    finally:
        db.dispose_engines()


@pytest.mark.parametrize("renders_tools", [True, False])
def test_a_template_that_cannot_render_tools_is_refused_at_plan_time(
    tmp_path: Path, renders_tools: bool
) -> None:
    pre = plan(tmp_path, None if renders_tools else PLAIN_TEMPLATE)
    refusals = [b for b in pre.blockers if "tool calls" in b]
    if renders_tools:
        assert refusals == [], pre.blockers
    else:
        (refusal,) = refusals
        assert "cannot train on them" in refusal and "does not render" in refusal
        assert not pre.can_launch
