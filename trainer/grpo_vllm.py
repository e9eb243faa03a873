"""GRPO's sampling on vLLM: an engine inside the worker, on the GPU the job trains on.

`VllmSampler(model, max_lora_rank=..., dtype=..., max_model_len=..., seed=..., **engine)`
starts vLLM's offline engine (`vllm.LLM`) on the base model's folder with LoRA enabled
(one adapter at a time) in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`: no engine
process beside the worker). `engine` goes to `vllm.LLM` as it is: the worker passes
`gpu_memory_utilization` (`MEMORY_SHARE`, the share of the GPU vLLM may take for the
weights it loads and its KV cache; the training model holds the rest), a test on the CPU
passes `kv_cache_memory_bytes` and `enforce_eager`.

`sample(prompts, n, settings, adapter)` draws `n` completions of each prompt (token ids)
with `SamplingParams` built from `trainer.grpo_sampling.SampleSettings`: the same
temperature, top-k (0: none), top-p, stop tokens and max new tokens as the transformers
sampler, no other processing (vLLM's defaults, not the model's generation config; a
completion keeps its stop token). `adapter` is a folder holding a PEFT LoRA adapter: each
call names it with a fresh LoRA id (vLLM caches adapters by id, so a new id makes it read
the new weights) and removes the previous one from the engine afterwards. Temperature 0 is
greedy (each prompt asked `n` times: vLLM samples one greedy completion per request). Importing this module needs neither torch nor peft (vLLM's own environment runs
it in tests).

`PolicyOnVllm(lm, max_model_len)` is what the GRPO objective calls: it saves the job's
adapter as it is now (the LoRA weights of the step about to be taken) into a temporary
folder and samples with it; the base is the same folder the trainer loaded.

Tested against vLLM's CPU build (`tests/trainer/test_grpo_vllm.py`: the tokens, the adapter
of each call). Not yet run on a GPU beside a training job: the memory share, and adapters
vLLM's LoRA does not take (LoRA on MoE experts), are unmeasured there.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from trainer.grpo_sampling import SampleSettings, cut_at_stop

MEMORY_SHARE = 0.3  # of the GPU's memory, for vLLM's copy of the base and its KV cache
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the ranks vLLM's LoRA kernels take


def lora_rank_bound(rank: int) -> int:
    """The smallest `max_lora_rank` vLLM accepts that holds an adapter of `rank`."""
    for r in LORA_RANKS:
        if r >= rank:
            return r
    raise ValueError(f"LoRA rank {rank} is above vLLM's largest, {LORA_RANKS[-1]}")


class VllmSampler:
    """Samples with vLLM (module docstring)."""

    def __init__(
        self,
        model: str | Path,
        *,
        max_lora_rank: int,
        dtype: str,
        max_model_len: int,
        seed: int = 0,
        **engine: Any,
    ) -> None:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        self.llm = LLM(
            model=str(model),
            enable_lora=True,
            max_loras=1,
            max_lora_rank=lora_rank_bound(max_lora_rank),
            dtype=dtype,
            max_model_len=max_model_len,
            seed=seed,
            **engine,
        )
        self._lora_id = 0

    def sample(
        self, prompts: list[list[int]], n: int, s: SampleSettings, adapter: str | Path | None
    ) -> list[list[int]]:
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest

        greedy = s.temperature == 0  # vLLM takes n = 1 only: each prompt asked n times
        params = SamplingParams(
            n=1 if greedy else n,
            temperature=s.temperature,
            top_k=s.top_k,
            top_p=s.top_p,
            max_tokens=s.max_new_tokens,
            stop_token_ids=list(s.stop_ids),
            detokenize=False,
        )
        lora = None
        if adapter is not None:
            self._lora_id += 1
            lora = LoRARequest(f"grpo-policy-{self._lora_id}", self._lora_id, str(adapter))
        asked = [{"prompt_token_ids": list(p)} for p in prompts for _ in range(n if greedy else 1)]
        outputs = self.llm.generate(asked, params, lora_request=lora, use_tqdm=False)
        if lora is not None and self._lora_id > 1:
            self.llm.llm_engine.remove_lora(self._lora_id - 1)
        completions = []
        for out in outputs:
            for c in sorted(out.outputs, key=lambda c: c.index):
                completions.append(cut_at_stop(list(c.token_ids), s.stop_ids))
        return completions


class PolicyOnVllm:
    """The GRPO objective's sampler on vLLM: the job's current adapter each call."""

    def __init__(self, lm: Any, max_model_len: int) -> None:
        import torch

        model = lm.model
        self.model = model
        self.folder = Path(tempfile.mkdtemp(prefix="grpo-policy-"))
        self.engine = VllmSampler(
            model.get_base_model().config._name_or_path,
            max_lora_rank=model.peft_config["default"].r,
            dtype=str(lm.compute_dtype).removeprefix("torch."),
            max_model_len=max_model_len,
            seed=torch.initial_seed() % (2**31),
            gpu_memory_utilization=MEMORY_SHARE,
        )

    def sample(self, prompts: list[list[int]], n: int, s: SampleSettings) -> list[list[int]]:
        self.model.save_pretrained(self.folder)
        return self.engine.sample(prompts, n, s, self.folder)
