"""The launch request, presets, and the job-ended subscribers (no endpoint needed)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from core import jobs
from core.errors import InvalidInput
from core.jobs import bus, subscribers
from trainer.shared.spec import LoraSpec, TrainingSpec


def test_a_preset_changes_only_the_settings_it_names() -> None:
    quick, base = jobs.preset("Quick try"), jobs.defaults()
    assert quick["lora"]["r"] == 8 and quick["training"]["max_length"] == 1024
    assert quick["lora"]["dropout"] == base["lora"]["dropout"] == LoraSpec().dropout
    assert quick["training"]["learning_rate"] == TrainingSpec().learning_rate
    with pytest.raises(InvalidInput, match="Quick try, Balanced, Thorough"):
        jobs.preset("Fastest")


def test_a_launch_request_names_the_setting_it_refuses() -> None:
    with pytest.raises(InvalidInput, match=r"lora\.r"):
        jobs.LaunchRequest.build(model="m", lora={"r": 0})
    with pytest.raises(InvalidInput, match=r"training\.rm_rf"):
        jobs.LaunchRequest.build(model="m", training={"rm_rf": True})
    request = jobs.LaunchRequest.build(model="m", training={"max_steps": 5})
    assert request.training.max_steps == 5 and request.training.model_fields_set == {"max_steps"}


def test_every_subscriber_hears_a_job_end_even_when_one_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    heard: list[str] = []

    def broken(e: bus.JobEnded) -> None:
        raise RuntimeError("a part failed")

    def listening(e: bus.JobEnded) -> None:
        heard.append(e.job.id)

    monkeypatch.setattr(bus, "_handlers", [broken, listening])
    bus.publish(
        bus.JobEnded(
            actor=None, settings=None, job=SimpleNamespace(id="job-1"), first=True, store=None
        )
    )  # type: ignore[arg-type]
    assert heard == ["job-1"]


def test_notification_evaluation_and_the_oom_relaunch_listen_in_that_order() -> None:
    wanted: list[Any] = [
        subscribers.notify_owner,
        subscribers.evaluate_adapter,
        subscribers.relaunch_lighter,
    ]
    assert [h for h in bus._handlers if h in wanted] == wanted
