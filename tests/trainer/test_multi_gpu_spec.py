"""The job spec's `gpus` and `sharding`: bounds and the combinations refused with a reason
a user can act on (`trainer.shared.spec`, the rule in `trainer.shared.parallel`)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from trainer.shared.parallel import DDP_MAX_BASE_BYTES, choose
from trainer.shared.spec import JobSpec


def _spec(**over: Any) -> JobSpec:
    base: dict[str, Any] = {
        "job_id": "j",
        "model": {"name_or_path": "m"},
        "data": {"train_path": "rows.jsonl", "eval_fraction": 0.1},
        "output": {"adapter_name": "a"},
    }
    return JobSpec.model_validate({**base, **over})


def test_gpus_default_to_one_and_go_up_to_eight() -> None:
    assert (_spec().gpus, _spec().sharding) == (1, "auto")
    assert _spec(gpus=8, quantization="none", sharding="fsdp").gpus == 8
    for bad in (0, 9):
        with pytest.raises(ValidationError, match="gpus"):
            _spec(gpus=bad)


@pytest.mark.parametrize(
    ("over", "says"),
    [
        ({"sharding": "fsdp"}, "sharding applies to jobs on several GPUs"),
        ({"gpus": 2, "sharding": "fsdp", "quantization": "int8"}, "FSDP2 cannot shard int8"),
        ({"gpus": 2, "method": "dpo"}, "trains on one GPU for now"),
        (
            {"gpus": 2, "training": {"eval_every": 5, "early_stopping": {"patience": 2}}},
            "early stopping runs on one GPU",
        ),
    ],
)
def test_combinations_that_do_not_run_are_refused_with_the_reason(
    over: dict[str, Any], says: str
) -> None:
    with pytest.raises(ValidationError, match=says):
        _spec(**over)


def test_the_rule_replicates_small_and_8bit_bases_and_shards_big_ones_4bit_too() -> None:
    assert choose(1, "auto", "none", 1e12)[0] == "single"
    assert choose(2, "auto", "int8", 1e12)[0] == "ddp"
    for quantization in ("none", "nf4"):  # an NF4 base counted at its 4-bit size
        assert choose(2, "auto", quantization, DDP_MAX_BASE_BYTES)[0] == "ddp"
        assert choose(4, "auto", quantization, DDP_MAX_BASE_BYTES + 1)[0] == "fsdp"
    assert choose(2, "fsdp", "none", 1.0) == ("fsdp", "sharding fsdp set in the job")
    assert _spec(gpus=2, sharding="fsdp").quantization == "nf4"  # QLoRA may be sharded
