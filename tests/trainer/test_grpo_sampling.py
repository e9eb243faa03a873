"""GRPO's lean sampler (`trainer.grpo_sampling.LeanSampler`) draws what transformers'
`generate` draws: the same tokens under greedy decoding, and the same tokens from the same
seed when sampling (temperature, top-k, top-p), on the tiny model with a random LoRA
adapter, prompts of different lengths (left padding) and several completions per prompt;
it stops each completion at its first stop token and ends early when every completion has
stopped. The worker on the CPU samples with it (not vLLM, even where vLLM imports). The
worker's side of the vLLM backend hands the engine the adapter as it is at each call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.trainer.conftest import make_spec
from tests.trainer.test_preference_vs_trl import _perturb_b

PROMPTS = ["Write the letter a.", "What is the secret word for a river far away?", "Hi"]


@pytest.fixture(scope="module", params=["brightrun_varlen", "sdpa"])
def loaded(request: pytest.FixtureRequest, tiny_model: Path) -> Any:
    """The job's model (LoRA, the attention the job picks: BrightRun's varlen SDPA for
    packed rows, plain SDPA with packing off), its LoRA weights made non-zero."""
    from trainer.model import load_for_training, load_tokenizer
    from trainer.shared.spec import JobSpec

    packing = request.param == "brightrun_varlen"
    spec = JobSpec.model_validate(
        make_spec(tiny_model, tiny_model / "config.json", training={"packing": packing})
    )
    torch.manual_seed(0)
    lm = load_for_training(spec, tiny_model, load_tokenizer(tiny_model))
    assert lm.model.config._attn_implementation == request.param
    _perturb_b(lm.model, 0)
    return lm


def _prompt_ids(lm: Any) -> list[list[int]]:
    tok = lm.tokenizer
    out = []
    for p in PROMPTS:
        text = tok.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        out.append(tok(text, add_special_tokens=False)["input_ids"])
    assert len({len(p) for p in out}) == len(out)  # left padding takes part
    return out


def _generate(lm: Any, prompts: list[list[int]], n: int, stop: int, **kw: Any) -> list[list[int]]:
    """transformers' `generate` on the same left-padded batch, cut after the stop token."""
    from trainer.grpo_sampling import cut_at_stop
    from trainer.preference_loss import dropout_off

    pad = lm.tokenizer.pad_token_id
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad(), dropout_off(lm.model):
        out = lm.model.generate(
            input_ids=ids,
            attention_mask=mask,
            num_return_sequences=n,
            pad_token_id=pad,
            eos_token_id=stop,
            **kw,
        )
    return [cut_at_stop(row, (stop,)) for row in out[:, width:].tolist()]


def _lean(lm: Any, prompts: list[list[int]], n: int, settings: Any) -> list[list[int]]:
    from trainer.grpo_sampling import LeanSampler

    sampler = LeanSampler(lm.model, lm.tokenizer.pad_token_id, lm.device, lm.compute_dtype)
    return sampler.sample(prompts, n, settings)


def test_greedy_gives_generates_tokens(loaded: Any) -> None:
    from trainer.grpo_sampling import SampleSettings

    prompts, eos = _prompt_ids(loaded), loaded.tokenizer.eos_token_id
    ours = _lean(loaded, prompts, 2, SampleSettings(0.0, 12, (eos,)))
    theirs = _generate(loaded, prompts, 1, eos, do_sample=False, max_new_tokens=12)
    assert ours == [c for c in theirs for _ in range(2)]  # generate greedy: one per prompt
    assert len({tuple(c) for c in ours}) > 1  # the prompts lead to different answers


@pytest.mark.parametrize(
    "temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.3, 20, 0.9), (1.0, 0, 0.8)]
)
def test_sampling_from_the_same_seed_gives_generates_tokens(
    loaded: Any, temperature: float, top_k: int, top_p: float
) -> None:
    from trainer.grpo_sampling import SampleSettings

    prompts, eos = _prompt_ids(loaded), loaded.tokenizer.eos_token_id
    settings = SampleSettings(temperature, 10, (eos,), top_k=top_k, top_p=top_p)
    torch.manual_seed(7)
    ours = _lean(loaded, prompts, 4, settings)
    torch.manual_seed(7)
    theirs = _generate(
        loaded,
        prompts,
        4,
        eos,
        do_sample=True,
        max_new_tokens=10,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
    )
    assert ours == theirs
    assert len({tuple(c) for c in ours}) > len(prompts)  # a group's completions differ
    torch.manual_seed(8)
    assert _lean(loaded, prompts, 4, settings) != ours  # the seed matters


def test_a_completion_stops_at_its_first_stop_token(loaded: Any) -> None:
    """A stop token the greedy answers reach at different steps: each completion ends
    with it (kept), the others go on to the limit; when all have stopped, the decoding
    ends before the limit."""
    from trainer.grpo_sampling import SampleSettings

    prompts = _prompt_ids(loaded)
    free = _lean(loaded, prompts, 1, SampleSettings(0.0, 12, (loaded.tokenizer.eos_token_id,)))
    stop = free[0][3]
    ours = _lean(loaded, prompts, 1, SampleSettings(0.0, 12, (stop,)))
    assert ours[0] == free[0][: free[0].index(stop) + 1]
    for mine, unstopped in zip(ours, free, strict=True):
        assert mine == (unstopped[: unstopped.index(stop) + 1] if stop in unstopped else unstopped)
    assert ours == _generate(loaded, prompts, 1, stop, do_sample=False, max_new_tokens=12)

    calls = []
    hook = loaded.model.get_base_model().model.register_forward_hook(lambda *_: calls.append(1))
    try:
        stopped = _lean(loaded, prompts[:1], 1, SampleSettings(0.0, 200, (stop,)))
    finally:
        hook.remove()
    assert stopped == ours[:1] and len(calls) == len(stopped[0])  # prefill + decode steps


def test_the_cpu_worker_samples_with_transformers(loaded: Any, monkeypatch) -> None:
    """vLLM only where it imports, on one CUDA device, in one process."""
    from trainer import grpo_sampling as S
    from trainer.grpo import build_sampler

    assert S.choose_backend(vllm_importable=True, cuda=True, distributed=False) == "vllm"
    assert S.choose_backend(vllm_importable=False, cuda=True, distributed=False) == "transformers"
    assert S.choose_backend(vllm_importable=True, cuda=False, distributed=False) == "transformers"
    assert S.choose_backend(vllm_importable=True, cuda=True, distributed=True) == "transformers"
    monkeypatch.setattr(S, "vllm_importable", lambda: True)  # as in vLLM's CPU build
    sampler = build_sampler(loaded, 0, torch.device("cpu"), 96)
    assert isinstance(sampler, S.LeanSampler)


def test_the_vllm_sampler_is_given_the_adapter_as_it_is_at_each_call(
    loaded: Any, monkeypatch, tmp_path: Path
) -> None:
    """`PolicyOnVllm` (the worker's side; the engine is stood in for: real vLLM on the
    CPU is `test_grpo_vllm`): the engine gets the base's folder, a LoRA rank bound, the
    compute dtype, a bounded share of the GPU, and at each call the adapter's weights as
    they are then, saved with PEFT."""
    from safetensors.torch import load_file

    from trainer import grpo_vllm as V
    from trainer.grpo_sampling import SampleSettings

    seen: list[Any] = []

    class Engine:
        def __init__(self, model: str, **kw: Any) -> None:
            seen.append((model, kw))

        def sample(self, prompts: Any, n: int, s: Any, adapter: Path) -> list[list[int]]:
            seen.append(load_file(adapter / "adapter_model.safetensors"))
            return [[1]] * (len(prompts) * n)

    monkeypatch.setattr(V, "VllmSampler", Engine)
    policy = V.PolicyOnVllm(loaded, 96)
    model, kw = seen[0]
    assert Path(model) == Path(loaded.model.get_base_model().config._name_or_path)
    assert kw["max_lora_rank"] == loaded.model.peft_config["default"].r
    assert kw["dtype"] == "float32" and kw["max_model_len"] == 96
    assert 0 < kw["gpu_memory_utilization"] < 1
    settings = SampleSettings(1.0, 4, (loaded.tokenizer.eos_token_id,))
    assert policy.sample([[5, 6]], 2, settings) == [[1], [1]]
    name, b = next((k, p) for k, p in loaded.model.named_parameters() if "lora_B" in k)
    with torch.no_grad():
        b.add_(1.0)
    try:
        policy.sample([[5, 6]], 2, settings)
    finally:
        with torch.no_grad():
            b.sub_(1.0)
    saved = [k for k in seen[1] if k.split(".")[-2] == "lora_B"]
    changed = [k for k in saved if not torch.equal(seen[1][k], seen[2][k])]
    assert len(changed) == 1  # the second call saw the changed weight, and only it
    assert [V.lora_rank_bound(r) for r in (4, 16, 17)] == [8, 16, 32]  # ranks vLLM takes
