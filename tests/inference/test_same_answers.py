"""Real vLLM and BrightRun's local server answer alike: for the same adapter on the same
base, greedy decoding (temperature 0) gives the same tokens on both, so what a user sees
in the Playground on a laptop is what the deployed endpoint answers. Both servers run the
tiny model in float32 on the CPU (vLLM with `--dtype float32`)."""

from __future__ import annotations

import shutil
from pathlib import Path

from core.clients.inference import ChatResult, InferenceClient, LoadMode, Sampling
from tests.inference.conftest import Server, settings_for

# Long enough that a drift between the engines' numerics would show in the answer.
GREEDY = Sampling(temperature=0.0, max_tokens=48)
PROMPTS = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Numbers: 0 1 2 3",
    "The worker downloads the dataset, trains the adapter and",
]


def answers(server: Server, data_dir: Path, adapter: Path, name: str) -> dict[str, ChatResult]:
    """`adapter`'s and the base's greedy answers through `server`, by model and prompt."""
    shutil.copytree(adapter, server.adapters_dir / name)
    settings = settings_for(server, data_dir, inference_lora_loading="resolver")
    with InferenceClient(settings) as client:
        assert client.ensure_adapter(name).mode is LoadMode.RESOLVER
        return {
            f"{model} · {p}": client.chat(model, [{"role": "user", "content": p}], GREEDY)
            for model in (name, server.base)
            for p in PROMPTS
        }


def test_greedy_answers_are_the_same_tokens_on_vllm_and_the_local_server(
    vllm_server: Server,
    local_server: Server,
    adapters: dict[str, Path],
    data_dir: Path,
    unique_name: str,
) -> None:
    vllm = answers(vllm_server, data_dir, adapters["a"], unique_name)
    local = answers(local_server, data_dir, adapters["a"], unique_name)

    def tokens(results: dict[str, ChatResult]) -> dict[str, tuple]:
        """What decides the tokens: the prompt's length, the answer, its length, its end."""
        return {
            k: (r.prompt_tokens, r.text, r.completion_tokens, r.finish_reason)
            for k, r in results.items()
        }

    assert tokens(vllm) == tokens(local)
    # The adapter changes the answers (else this would compare the base twice).
    assert any(
        vllm[f"{unique_name} · {p}"].text != vllm[f"{vllm_server.base} · {p}"].text for p in PROMPTS
    )
