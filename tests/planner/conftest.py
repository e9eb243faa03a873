"""Helpers for the planner tests: job specs and architectures built on the meta device."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import pytest

from trainer.shared.spec import DataSpec, JobSpec, LoraSpec, ModelSpec, OutputSpec, TrainingSpec

GIB = 1 << 30


def make_spec(
    model: str = "Qwen/Qwen2.5-7B-Instruct",
    quantization: str = "nf4",
    *,
    lora: Mapping[str, Any] | None = None,
    **training: Any,
) -> JobSpec:
    return JobSpec(
        job_id="plan-test",
        model=ModelSpec(name_or_path=model),
        data=DataSpec(train_path="train.jsonl"),
        output=OutputSpec(adapter_name="plan-test"),
        quantization=quantization,
        lora=LoraSpec(**dict(lora or {})),
        training=TrainingSpec(**training),
    )


def meta_model(config: Mapping[str, Any]) -> Any:
    """The architecture of `config` built by transformers on the meta device (no weights)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**dict(config))
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(cfg)


def peft_trainable(config: Mapping[str, Any], **lora_config: Any) -> int:
    """`get_peft_model(...).get_nb_trainable_parameters()[0]` on the meta-device model."""
    from peft import LoraConfig, get_peft_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = get_peft_model(
            meta_model(config),
            LoraConfig(task_type="CAUSAL_LM", **lora_config),
            low_cpu_mem_usage=True,
        )
        return pm.get_nb_trainable_parameters()[0]


@pytest.fixture
def spec_factory():
    return make_spec
