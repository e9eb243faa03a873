"""Several models streaming at once (`core.clients.inference.streams`), without a server."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from core.clients.inference import ModelNotServed
from core.clients.inference.streams import is_demo_model, stream_together


def test_every_models_pieces_arrive_in_order_while_the_others_stream() -> None:
    both_started = threading.Barrier(2, timeout=10)

    def model(name: str) -> Iterator[str]:
        both_started.wait()  # neither yields before the other has started
        for i in range(3):
            yield f"{name}{i} "

    got: dict[str, str] = {"a": "", "b": ""}
    done = []
    for p in stream_together({"a": lambda: model("a"), "b": lambda: model("b")}):
        if p.done:
            done.append((p.model, p.error))
        else:
            got[p.model] += p.text
    assert got == {"a": "a0 a1 a2 ", "b": "b0 b1 b2 "}
    assert sorted(done) == [("a", None), ("b", None)]


def test_a_failing_model_ends_with_its_error_and_the_others_finish() -> None:
    def broken() -> Iterator[str]:
        raise ModelNotServed("no adapter 'x'")

    pieces = list(stream_together({"x": broken, "ok": lambda: iter(["fine"])}))
    ends = {p.model: p.error for p in pieces if p.done}
    assert isinstance(ends["x"], ModelNotServed) and ends["ok"] is None
    assert [p.text for p in pieces if p.model == "ok" and not p.done] == ["fine"]


def test_an_unexpected_error_is_raised_on_the_callers_thread() -> None:
    def bug() -> Iterator[str]:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        list(stream_together({"bug": bug}))


def test_stopping_early_closes_the_other_streams() -> None:
    closed = threading.Event()

    def endless() -> Iterator[str]:
        try:
            while True:
                yield "x"
        finally:
            closed.set()

    it = stream_together({"e": endless})
    next(it)
    it.close()
    assert closed.wait(5)


@pytest.mark.parametrize(
    ("name", "demo"),
    [
        ("/data/models/tiny-chat", True),
        ("brightrun/tiny-chat", True),
        ("./data/models/tiny-chat/", True),
        ("Qwen/Qwen3-4B", False),
        ("/volume/models/Qwen3-4B", False),
    ],
)
def test_the_demo_model_is_recognised_by_its_folder(name: str, demo: bool) -> None:
    assert is_demo_model(name) is demo
