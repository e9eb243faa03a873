"""The local inference server's engine: one base model, its PEFT LoRA adapters (loaded at
runtime or by the filesystem resolver) and generation. No HTTP here; errors are raised as
`ServerError` in vLLM's envelope."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local.inference.protocol import ChatRequest, ServerError, bad_request, not_found
from local.inference.tool_calls import template_kwargs, template_messages

log = logging.getLogger("brightrun.inference")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class Prepared:
    """A validated chat request, ready to generate."""

    model: str
    adapter: str | None  # internal peft adapter name, None for the base
    input_ids: list[int]
    max_tokens: int
    temperature: float  # 0: greedy
    top_p: float
    seed: int | None
    stop: list[str]


@dataclass
class Delta:
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class _Adapter:
    name: str
    internal: str
    path: str


@dataclass
class Engine:
    """The model, its adapters and generation; no HTTP here."""

    base: str
    served_name: str
    adapters_dir: Path | None = None
    device: str = "auto"
    resolver: bool = True
    max_lora_rank: int = 16  # vLLM's default
    max_model_len: int | None = None  # None: the model's max_position_embeddings
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(self.base)
        self.model = AutoModelForCausalLM.from_pretrained(self.base, dtype=dtype)
        self.model.to(self.device).eval()
        if self.max_model_len is None:
            self.max_model_len = int(
                getattr(self.model.config, "max_position_embeddings", 0) or 4096
            )
        self.gen_config = getattr(self.model, "generation_config", None)
        eos = {self.tokenizer.eos_token_id}
        if self.gen_config is not None and self.gen_config.eos_token_id is not None:
            ids = self.gen_config.eos_token_id
            eos |= set(ids if isinstance(ids, list) else [ids])
        self.eos_ids = {i for i in eos if i is not None}
        self.adapters: dict[str, _Adapter] = {}
        self._counter = 0
        self.created = int(time.time())

    # -- models and adapters --

    def models(self) -> list[dict[str, Any]]:
        perm = [{"id": f"modelperm-{uuid.uuid4().hex}", "object": "model_permission"}]
        cards = [
            {
                "id": self.served_name,
                "object": "model",
                "created": self.created,
                "owned_by": "brightrun",
                "root": self.base,
                "parent": None,
                "max_model_len": self.max_model_len,
                "permission": perm,
            }
        ]
        cards += [
            {
                "id": a.name,
                "object": "model",
                "created": self.created,
                "owned_by": "brightrun",
                "root": a.path,
                "parent": self.served_name,
                "max_model_len": None,
                "permission": perm,
            }
            for a in self.adapters.values()
        ]
        return cards

    def _read_adapter_config(self, name: str, path: str) -> dict[str, Any]:
        """The adapter's config. Like vLLM's runtime loading, the base it was trained on is
        not checked here (the resolver checks it; BrightRun's client checks it first)."""
        cfg_path = Path(path) / "adapter_config.json"
        if not cfg_path.is_file():
            raise not_found(f"Loading lora {name} failed: No adapter found for {path}")
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise bad_request(f"adapter '{name}': {cfg_path} is not readable JSON ({e})") from e
        if not isinstance(cfg, dict) or cfg.get("peft_type") != "LORA":
            raise bad_request(
                f"adapter '{name}': {cfg_path} is not a LoRA adapter (peft_type LORA)"
            )
        rank = max([int(cfg.get("r") or 0), *map(int, (cfg.get("rank_pattern") or {}).values())])
        if rank > self.max_lora_rank:  # vLLM answers this one with a 500
            raise ServerError(
                500,
                "InternalServerError",
                f"Call to add_lora method failed: LoRA rank {rank} is greater than "
                f"max_lora_rank {self.max_lora_rank}.",
            )
        return cfg

    def load_adapter(self, name: str, path: str, inplace: bool = False) -> None:
        """Load a PEFT LoRA folder under `name`; raises ServerError."""
        if not name or not path:
            raise bad_request(
                "Both 'lora_name' and 'lora_path' must be provided.", err_type="InvalidUserInput"
            )
        if name == self.served_name:
            raise bad_request(
                f"The lora adapter '{name}' conflicts with a served base model.",
                err_type="InvalidUserInput",
            )
        if not _NAME.match(name) or ".." in name:
            raise bad_request(
                f"adapter name {name!r} must be 1-128 letters, digits, '.', '_' or '-'",
                "lora_name",
                err_type="InvalidUserInput",
            )
        self._read_adapter_config(name, path)
        with self.lock:
            if name in self.adapters and not inplace:
                raise bad_request(
                    f"The lora adapter '{name}' has already been loaded. If you want to load "
                    "the adapter in place, set 'load_inplace' to True.",
                    err_type="InvalidUserInput",
                )
            old = self.adapters.get(name)
            self._counter += 1
            internal = f"a{self._counter}"
            self._peft_load(name, internal, path)
            self.adapters[name] = _Adapter(name, internal, path)
            if old is not None:
                self._peft_delete(old.internal)
        log.info("loaded adapter %s from %s", name, path)

    def unload_adapter(self, name: str) -> None:
        if not name:
            raise bad_request(
                "'lora_name' needs to be provided to unload a LoRA adapter.",
                err_type="InvalidUserInput",
            )
        with self.lock:
            adapter = self.adapters.pop(name, None)
            if adapter is None:
                raise not_found(f"The lora adapter '{name}' cannot be found.")
            self._peft_delete(adapter.internal)
        log.info("unloaded adapter %s", name)

    def _peft_load(self, name: str, internal: str, path: str) -> None:
        from peft import PeftModel

        from trainer.expert_lora import NEEDS_MERGE, ExpertLoraNeedsMerge
        from trainer.model import load_adapter  # as the trainer attached it (fused experts)

        try:
            self.model = load_adapter(self.model, path, adapter_name=internal)
        except ExpertLoraNeedsMerge as e:  # refused before the model was touched
            raise bad_request(
                f"adapter '{name}': {NEEDS_MERGE}", "lora_path", err_type="ExpertLoraNeedsMerge"
            ) from e
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
            # A failed load can leave LoRA layers injected (with their random initial
            # weights) in the base: take them out, so the base and the other adapters
            # answer exactly as before.
            if isinstance(self.model, PeftModel):
                if internal in self.model.peft_config:
                    self._peft_delete(internal)
                _drop_adapter_layers(self.model, internal)
            else:
                _strip_lora_layers(self.model)
            raise bad_request(
                f"adapter '{name}' at {path} could not be loaded: {e}", "lora_path"
            ) from e
        self.model.eval()

    def _peft_delete(self, internal: str) -> None:
        from peft import PeftModel

        if not isinstance(self.model, PeftModel):
            return
        if set(self.model.peft_config) <= {internal}:
            self.model = self.model.unload()  # the last adapter: back to the plain base
            _strip_lora_layers(self.model)
        else:
            self.model.delete_adapter(internal)
        self.model.eval()

    def resolve(self, name: str) -> str | None:
        """The internal adapter for a requested model name, loading it from the adapter
        folder on first use; None for the base. Raises ServerError when not servable."""
        if name == self.served_name or name == self.base:
            return None
        adapter = self.adapters.get(name)
        if adapter is not None:
            return adapter.internal
        folder = self._resolver_folder(name)
        if folder is None:
            raise not_found(f"The model `{name}` does not exist.", "model")
        try:
            self.load_adapter(name, str(folder))
        except ServerError as e:
            if e.err_type == "InvalidUserInput" and name in self.adapters:
                pass  # another request loaded it meanwhile
            else:  # vLLM: a 400 whatever the loader said
                raise bad_request(
                    f"LoRA adapter '{name}' was found but could not be loaded: {e.message}"
                ) from e
        return self.adapters[name].internal

    def _resolver_folder(self, name: str) -> Path | None:
        """vLLM's filesystem resolver: `<adapters_dir>/<name>` holding a LoRA config whose
        `base_model_name_or_path` is exactly the served name; anything else is not found."""
        if not self.resolver or self.adapters_dir is None:
            return None
        if not _NAME.match(name) or ".." in name:
            return None
        folder = self.adapters_dir / name
        try:
            cfg = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        if not isinstance(cfg, dict) or cfg.get("peft_type") != "LORA":
            return None
        return folder if cfg.get("base_model_name_or_path") == self.served_name else None

    # -- chat --

    def prepare(self, req: ChatRequest) -> Prepared:
        adapter = self.resolve(req.model)
        if not getattr(self.tokenizer, "chat_template", None):
            raise bad_request(
                f"the base model '{self.served_name}' has no chat template", "messages"
            )
        text = self.tokenizer.apply_chat_template(
            template_messages(req),
            tokenize=False,
            add_generation_prompt=True,
            **template_kwargs(req),
        )
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        room, wanted = self._room(len(ids), req.max_completion_tokens or req.max_tokens)
        temperature = req.temperature
        top_p = req.top_p
        if temperature is None:
            gc = self.gen_config
            sampling = bool(gc is not None and gc.do_sample)
            temperature = float(gc.temperature or 1.0) if sampling else 0.0
        if top_p is None:
            gc = self.gen_config
            top_p = float(gc.top_p) if gc is not None and gc.do_sample and gc.top_p else 1.0
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        return Prepared(
            model=req.model,
            adapter=adapter,
            input_ids=list(ids),
            max_tokens=min(wanted or room, room),  # vLLM shortens what does not fit
            temperature=temperature,
            top_p=top_p,
            seed=req.seed,
            stop=[s for s in stop if s],
        )

    def _room(self, prompt_tokens: int, wanted: int | None) -> tuple[int, int | None]:
        """Tokens left for the answer; vLLM's two refusals (answer or prompt too long)."""
        limit = self.max_model_len
        if wanted is not None and wanted > limit:
            raise bad_request(
                f"max_tokens={wanted} cannot be greater than max_model_len={limit}. Please "
                f"request fewer output tokens. (parameter=max_tokens, value={wanted})",
                "max_tokens",
            )
        if prompt_tokens >= limit:
            raise bad_request(
                f"This model's maximum context length is {limit} tokens. However, your prompt "
                f"contains at least {prompt_tokens} input tokens, which exceeds this limit even "
                "without any output tokens. Please reduce the length of the input prompt. "
                f"(parameter=input_tokens, value={prompt_tokens})",
                "input_tokens",
            )
        return limit - prompt_tokens, wanted

    def generate(self, p: Prepared, cancel: threading.Event) -> Iterator[Delta]:
        """Sample token by token under the lock; the last Delta has the finish reason."""
        import torch

        with self.lock:
            if p.adapter is not None and p.adapter not in {
                a.internal for a in self.adapters.values()
            }:
                raise not_found(f"The model `{p.model}` was unloaded.", "model")
            gen = torch.Generator(device=self.device)
            if p.seed is not None:
                gen.manual_seed(p.seed)
            else:
                gen.seed()
            ctx = self._adapter_context(p.adapter)
            emitted, final, whole = "", None, ""
            out_ids: list[int] = []
            eos = 0  # vLLM counts the end-of-sequence token among the completion tokens
            # Hold back enough characters that a stop string split across tokens is never
            # half-sent.
            hold = max((len(s) for s in p.stop), default=1) - 1
            with torch.inference_mode(), ctx:
                cur = torch.tensor([p.input_ids], device=self.device)
                past = None
                for _ in range(p.max_tokens):
                    if cancel.is_set():
                        finish = "abort"
                        break
                    out = self.model(input_ids=cur, cache=past, use_cache=True)
                    past = out.cache
                    token = _sample(out.logits[0, -1].float(), p.temperature, p.top_p, gen)
                    if token in self.eos_ids:
                        finish, eos = "stop", 1
                        break
                    out_ids.append(token)
                    cur = torch.tensor([[token]], device=self.device)
                    text = self.tokenizer.decode(out_ids, skip_special_tokens=True)
                    cut = _first_stop(text, p.stop)
                    if cut is not None:
                        final, finish = text[:cut], "stop"
                        break
                    if text.endswith("\ufffd"):
                        continue  # an incomplete multi-byte character: wait for the rest
                    whole = text
                    safe = len(text) - hold
                    if safe > len(emitted):
                        yield Delta(text[len(emitted) : safe])
                        emitted = text[:safe]
                else:
                    finish = "length"
            if final is None:  # as vLLM: a character still incomplete at the end is dropped
                final = whole
            if len(final) > len(emitted):
                yield Delta(final[len(emitted) :])
            yield Delta(
                finish_reason=finish,
                prompt_tokens=len(p.input_ids),
                completion_tokens=len(out_ids) + eos,
            )

    def score(self, model: str, text: str) -> dict[str, Any]:
        """`text` tokenised as is, each token with its log-probability under `model` (the
        first has none), in the OpenAI completions `logprobs` shape."""
        import torch

        internal = self.resolve(model)
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        if not ids or len(ids) > self.max_model_len:
            raise bad_request(f"the prompt must be 1 to {self.max_model_len} tokens", "prompt")
        with self.lock, torch.inference_mode(), self._adapter_context(internal):
            logits = self.model(input_ids=torch.tensor([ids], device=self.device)).logits[0]
            logps = torch.log_softmax(logits[:-1].float(), -1)
            picked = logps.gather(1, torch.tensor(ids[1:], device=self.device)[:, None])
        return {
            "tokens": self.tokenizer.convert_ids_to_tokens(ids),
            "token_logprobs": [None, *(float(x) for x in picked.squeeze(1).tolist())],
            "text_offset": [int(a) for a, _ in enc["offset_mapping"]],
            "top_logprobs": None,
        }

    def _adapter_context(self, internal: str | None):
        from contextlib import nullcontext

        from peft import PeftModel

        if not isinstance(self.model, PeftModel):
            return nullcontext()
        if internal is None:
            return self.model.disable_adapter()
        self.model.set_adapter(internal)
        return nullcontext()


def _strip_lora_layers(model: Any) -> None:
    """Put every LoRA-wrapped module of a plain (non-PEFT) model back to its base layer and
    drop the adapter config peft left on it (else the next adapter would inherit it)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
    for attr in ("peft_config", "_hf_peft_config_loaded"):
        if attr in vars(model):
            delattr(model, attr)


def _drop_adapter_layers(model: Any, internal: str) -> None:
    """Remove one adapter's weights from every LoRA layer that still holds them."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer) and internal in getattr(module, "lora_A", {}):
            module.delete_adapter(internal)


def _first_stop(text: str, stops: list[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _sample(logits, temperature: float, top_p: float, gen) -> int:
    import torch

    if temperature <= 0.0:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, idx = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < top_p  # always keeps the first
        sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
        choice = torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=gen)
        return int(idx[choice].item())
    return int(torch.multinomial(probs, 1, generator=gen).item())
