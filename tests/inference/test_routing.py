"""More than one base model: one inference endpoint per base (INFERENCE_URLS beside the
default INFERENCE_URL). Each adapter is listed, loaded and chatted with on the endpoint of
the base it was trained on; an adapter whose base no endpoint serves is not listed, and the
user is told why. Two real local servers on loopback, each serving its own tiny base."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.stack import VLLM_TINY, stop_all
from core.clients.inference import (
    InferenceRouter,
    Sampling,
    client_for_base,
    compare,
    model_choice_set,
)
from core.users import LOCAL_ACTOR
from tests.inference.conftest import Server, free_port, make_adapter, settings_for, start_server

pytestmark = pytest.mark.slow

HI = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = Sampling(temperature=0.0, max_tokens=8)


@pytest.fixture(scope="module")
def second(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A second base model on its own local server."""
    from trainer.shared.tiny import build_tiny_chat_model

    root = tmp_path_factory.mktemp("second")
    model = build_tiny_chat_model(root / "other-base", seed=5, **VLLM_TINY)
    proc, srv = start_server(model, root)
    yield srv
    stop_all([proc])


@pytest.fixture(scope="module")
def folders(tiny_model: Path, second: Server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("volume-adapters")
    make_adapter(tiny_model, d / "on-first", seed=1)
    make_adapter(Path(second.base), d / "on-second", seed=2)
    make_adapter(tiny_model, d / "on-unserved", seed=3, base_name="Qwen/Qwen2.5-7B-Instruct")
    return d


def test_adapters_are_listed_and_chatted_with_on_their_bases_endpoint(
    server: Server, second: Server, folders: Path, data_dir: Path
) -> None:
    settings = settings_for(
        server,
        data_dir,
        inference_adapters_dir=str(folders),
        inference_lora_loading="runtime",
        inference_urls={second.base: second.url},
    )
    with InferenceRouter(settings) as router:
        got = model_choice_set(LOCAL_ACTOR, None, settings, router)
        # the bases (folder paths) and this test's adapters; the shared server may list others'
        mine = {c.label: c.endpoint for c in got.available if c.label.startswith(("/", "on-"))}
        assert mine == {
            f"{server.base} (base)": server.url,
            f"{second.base} (base)": second.url,
            "on-first": server.url,
            "on-second": second.url,
        }
        [unserved] = got.unserved
        assert unserved.label == "on-unserved"
        assert "Qwen/Qwen2.5-7B-Instruct" in unserved.reason and "INFERENCE_URLS" in unserved.reason

        router.ensure_adapter("on-second", str(folders / "on-second"))
        assert "on-second" in {m.id for m in router.client(second.url).models()}
        assert "on-second" not in {m.id for m in router.client(server.url).models()}
        answers = compare(router, [server.base, "on-second", second.base], HI, GREEDY)
        with client_for_base(settings, second.base) as direct:
            assert direct.url == second.url
            assert answers["on-second"].text == direct.chat("on-second", HI, GREEDY).text
            assert answers[second.base].text == direct.chat(second.base, HI, GREEDY).text
        assert answers["on-second"].text != answers[second.base].text
        router.unload_adapter("on-second")


def test_a_base_whose_endpoint_is_down_is_named_in_the_reason(
    server: Server, folders: Path, data_dir: Path
) -> None:
    down = f"http://127.0.0.1:{free_port()}/v1"
    settings = settings_for(
        server,
        data_dir,
        inference_adapters_dir=str(folders),
        inference_urls={"Qwen/Qwen2.5-7B-Instruct": down},
    )
    with InferenceRouter(settings) as router:
        got = model_choice_set(LOCAL_ACTOR, None, settings, router)
    reasons = {u.label: u.reason for u in got.unserved}
    assert down in reasons["on-unserved"] and "not answering" in reasons["on-unserved"]
    # the adapter of the other tiny base is unserved too: nothing serves that base here
    assert "INFERENCE_URLS" in reasons["on-second"]
