"""The Train page's plan says how an adapter with LoRA on the routed experts is served:
by merging it, not by vLLM's multi-LoRA (the local server and vLLM refuse it as a LoRA)."""

from __future__ import annotations

import pytest

from core import db, jobs
from core.planner import EXPERT_LORA_SERVING
from core.settings import Settings
from core.users import LOCAL_ACTOR

QWEN3_NEXT = "Qwen/Qwen3-Next-80B-A3B-Instruct"


@pytest.mark.parametrize("on_experts", [True, False])
def test_plan_notes_that_expert_lora_adapters_are_served_by_merging(
    settings: Settings, on_experts: bool
) -> None:
    with db.session_scope(settings) as s:
        tp = jobs.preflight(
            jobs.LaunchRequest.build(
                dataset_id=None,
                model=QWEN3_NEXT,
                lora={"lora_on_experts": on_experts},
                training={"max_length": 1024},
                quantization="nf4",
                eval_fraction=0.0,
                budget_usd=10.0,
            ),
            LOCAL_ACTOR,
            s,
            settings,
        )
    assert tp.plan is not None, tp.blockers
    assert (EXPERT_LORA_SERVING in tp.notes) is on_experts
    if on_experts:
        assert "brightrun adapters merge" in EXPERT_LORA_SERVING and "vLLM" in EXPERT_LORA_SERVING
