"""Base model resolution and loading: cache or hub, quantisation, LoRA.

`resolve_model_path(spec.model, env)`: an existing local folder is used as is (source
`local`); a hub id comes from the model cache `MODEL_CACHE_DIR/<org>--<name>[@revision]`
(source `cache`), or is downloaded into it first with `huggingface_hub` (token from the
worker's environment; source `hub`) by `trainer.cache.ensure_cached`: into a temporary
folder, then renamed into place with its completion marker, so two workers never write one
copy. A missing local path or an unknown/gated hub repo raises `ModelUnavailable`; a
network failure raises `DownloadFailed`.

`load_for_training(spec, path, env)` loads tokenizer and model (4-bit NF4 with double
quantisation, or 8-bit, with bitsandbytes; or 16-bit), runs the architecture's
`post_load` hook (`trainer.shared.arch`), prepares it for k-bit training, enables gradient
checkpointing when asked and attaches LoRA. The choices it made (device, dtype, attention
implementation, packing mode and why) are returned as facts for the `started` event.

`load_adapter(model, path)`: a saved LoRA adapter on a loaded base model (or one more
adapter on a `PeftModel`), the one way merge and inference load adapters. On fused-expert
models (`ArchCaps.fused_experts`) it loads within `trainer.moe.peft_module_targets()`, as
training attached it: otherwise PEFT re-targets `gate_proj`/`up_proj`/`down_proj` to the
routed experts and the shared expert's trained LoRA is silently left out. An adapter with
LoRA on the routed experts loads only into a model given that structure (`expert_lora=True`
adds it to a base model, as merge does); elsewhere it raises
`trainer.expert_lora.ExpertLoraNeedsMerge`: such an adapter is served by merging it.

`ensure_quantized_copy(source, target, quantization)`: the model cache's pre-quantised
copy, loaded with `build_quantization_config` as a job would load it, saved once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer import arch_hooks
from trainer.cache import ensure_cached, is_complete, publish, staging
from trainer.env import WorkerEnv
from trainer.shared import arch
from trainer.shared.errors import BadInput, ModelUnavailable
from trainer.shared.spec import JobSpec, ModelSpec


def resolve_model_path(model: ModelSpec, env: WorkerEnv) -> tuple[Path, str]:
    """The local folder of the base model and where it came from: `local` (a folder),
    `runpod_cached` (RunPod's cached models on the host), `cache` (the volume's model
    cache) or `hub` (downloaded into that cache now)."""
    given = Path(model.name_or_path).expanduser()
    if given.is_dir():
        if not (given / "config.json").is_file():
            raise ModelUnavailable(f"model folder {model.name_or_path!r} has no config.json")
        return given, "local"
    looks_local = (
        model.name_or_path.startswith(("/", ".", "~")) or model.name_or_path.count("/") != 1
    )
    if looks_local:
        raise ModelUnavailable(
            f"base model {model.name_or_path!r} is neither an existing folder nor a hub id "
            "like 'org/name'"
        )
    cached = runpod_cached_model(model, env.cached_models_dir)
    if cached is not None:
        return cached, "runpod_cached"
    folder, downloaded = ensure_cached(model, env)
    return folder, "hub" if downloaded else "cache"


def runpod_cached_model(model: ModelSpec, hub_dir: Path) -> Path | None:
    """The snapshot folder of `model` among RunPod's cached models (the hub cache layout
    `models--ORG--NAME/snapshots/REV`, the revision named by `refs/<revision or main>`),
    or None when the host does not hold it (complete: with its config.json)."""
    repo = hub_dir / ("models--" + model.name_or_path.replace("/", "--"))
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    wanted = model.revision or "main"
    ref = repo / "refs" / wanted
    commit = ref.read_text().strip() if ref.is_file() else wanted
    folder = snapshots / commit
    if not folder.is_dir() and model.revision is None:
        found = [p for p in snapshots.iterdir() if p.is_dir()]
        folder = found[0] if len(found) == 1 else folder  # one snapshot and no ref: that one
    return folder if (folder / "config.json").is_file() else None


def pick_device(spec: JobSpec) -> Any:
    import torch

    if spec.device == "cuda" or (spec.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise BadInput("device 'cuda' was asked for but this worker has no CUDA GPU")
        return torch.device("cuda", torch.cuda.current_device())  # a rank's own GPU
    return torch.device("cpu")


def pick_compute_dtype(spec: JobSpec, device: Any) -> Any:
    """bf16 where the device computes it natively (CUDA Ampere+, CPUs with AMX/AVX512-BF16)."""
    import torch

    choice = spec.training.compute_dtype
    if choice == "float32":
        return torch.float32
    if choice == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    native_bf16 = any(
        getattr(torch.cpu, probe, lambda: False)()
        for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    )
    return torch.bfloat16 if native_bf16 else torch.float32


def _flash_attn_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("flash_attn") is not None


def pick_packing(spec: JobSpec, caps: arch.ArchCaps) -> tuple[str, str]:
    """The batching actually used: ('position_ids'|'seq_boundaries'|'padded', why)."""
    if not spec.training.packing:
        return "padded", "packing is off in the job's settings: length-grouped padding"
    return caps.packing, caps.packing_reason


def pick_attention(packing: str, device: Any, shared_prompts: bool = False) -> tuple[str, str]:
    from trainer.kernels import register_attention

    if packing == "padded":
        return "sdpa", "padded batches with an attention mask"
    if shared_prompts:
        return register_attention(), "SDPA per prompt: its answers share it, laid out once"
    if device.type == "cuda" and _flash_attn_available():
        return "flash_attention_2", "flash-attention varlen over padding-free rows"
    return register_attention(), "SDPA per sample over padding-free rows (no flash-attn)"


def build_quantization_config(
    quantization: str,
    compute_dtype: Any,
    keep_full_precision: tuple[str, ...] = (),
    *,
    sharded: bool = False,
) -> Any | None:
    """bitsandbytes' config for `quantization` (nf4: double-quantised NF4; int8), or None.
    `sharded` (an NF4 base FSDP2 shards across GPUs): the packed 4-bit weights are stored
    in float32 elements (`bnb_4bit_quant_storage`, 8 weights each) instead of uint8, so
    FSDP can shard them like the float32 norms and LoRA weights of the same layer: one
    dtype per layer, nothing cast when a layer is gathered (a cast would rewrite the bit
    patterns that read as NaN)."""
    import torch
    from transformers import BitsAndBytesConfig

    # lm_head is never quantised; the architecture may name more (routers, gates)
    skip = ["lm_head", *keep_full_precision] if keep_full_precision else None
    if quantization == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
            bnb_4bit_quant_storage=torch.float32 if sharded else torch.uint8,
            llm_int8_skip_modules=skip,
        )
    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return None


def build_lora_config(spec: JobSpec, caps: arch.ArchCaps) -> Any:
    from peft import LoraConfig

    lora = spec.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=arch.resolve_lora_targets(caps, lora.target_modules, lora.lora_on_experts),
        use_rslora=lora.use_rslora,
        use_dora=lora.use_dora,
        bias="none",
        task_type="CAUSAL_LM",
    )


@dataclass
class Loaded:
    model: Any  # the PeftModel
    tokenizer: Any
    caps: arch.ArchCaps
    device: Any
    compute_dtype: Any
    packing: str
    facts: dict[str, Any] = field(default_factory=dict)
    shared_prompts: bool = False  # a prompt laid out once for its answers (arch.shares_prompts)


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def _prepare_for_training(model: Any, spec: JobSpec, *, quantized: bool) -> Any:
    """Activation checkpointing as the spec says (non-reentrant), and a quantised model
    readied for k-bit training."""
    from peft import prepare_model_for_kbit_training

    gc_kwargs = {"use_reentrant": False}
    if quantized:
        return prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=spec.training.gradient_checkpointing,
            gradient_checkpointing_kwargs=gc_kwargs,
        )
    if spec.training.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=gc_kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
    return model


def load_for_training(
    spec: JobSpec, path: Path, tokenizer: Any, *, on_cpu: bool = False, sharded: bool = False
) -> Loaded:
    """The PEFT model ready to train on the spec's device (`on_cpu`: its weights left in
    host memory, for FSDP to move each GPU's shard there; `sharded`: its base is to be
    sharded by FSDP, see `build_quantization_config` and `trainer.parallel.shard`)."""
    import torch
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path)
    caps = arch.capabilities(config)
    device = pick_device(spec)
    dtype = pick_compute_dtype(spec, device)
    packing, packing_why = pick_packing(spec, caps)
    shared = arch.shares_prompts(spec.method, packing, config)
    attn, attn_why = pick_attention(packing, device, shared)
    keep = caps.keep_full_precision
    qconfig = build_quantization_config(spec.quantization, dtype, keep, sharded=sharded)
    with arch_hooks.load_context(spec, caps, dtype):
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=dtype,
            quantization_config=qconfig,
            device_map={"": "cpu" if on_cpu else device},
            attn_implementation=attn,
        )
    model.config.use_cache = False
    facts: dict[str, Any] = {"architecture": caps.model_type}
    facts.update(arch_hooks.post_load(model, spec, caps))
    model = _prepare_for_training(model, spec, quantized=qconfig is not None)
    if qconfig is None and dtype != torch.float32:
        _upcast_small_params(model)
    with _peft_module_targets(caps):
        model = get_peft_model(model, build_lora_config(spec, caps))
    facts.update(arch_hooks.post_lora(model, spec, caps))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    facts.update(
        {
            "base_parameters": _logical_params(model) - trainable,
            "trainable_parameters": trainable,
            "quantization": spec.quantization,
            "bits_per_quantized_param": round(arch.bits_per_param(spec.quantization), 3),
            "compute_dtype": str(dtype).removeprefix("torch."),
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "attention": attn,
            "attention_reason": attn_why,
            "packing": packing,
            "packing_reason": packing_why,
            "shared_prompts": shared,
            "gradient_checkpointing": spec.training.gradient_checkpointing,
            "lora_targets": sorted(model.peft_config["default"].target_modules),
        }
    )
    return Loaded(model, tokenizer, caps, device, dtype, packing, facts, shared)


def load_adapter(
    model: Any, path: str | Path, adapter_name: str = "default", *, expert_lora: bool = False
) -> Any:
    """The PeftModel of `model` with the adapter folder `path` loaded as `adapter_name`:
    `PeftModel.from_pretrained` on a base model, `load_adapter` on a PeftModel (returned
    as is). PEFT's own errors (a folder that is no adapter, shapes that do not fit) pass
    through.

    An adapter with LoRA on the routed experts (`trainer.expert_lora`) needs that structure
    in the model: with `expert_lora=True` (a base model, for merging) it is added first;
    otherwise, unless the model already has it for `adapter_name` (an NF4 model after
    `add_expert_lora`), `ExpertLoraNeedsMerge` is raised before the model is touched: PEFT
    alone would load the adapter without its expert LoRA, silently."""
    from peft import PeftModel

    from trainer.expert_lora import (
        ExpertLoraNeedsMerge,
        add_expert_lora_structure,
        has_expert_lora_structure,
        read_expert_lora,
    )

    experts = read_expert_lora(path)
    if experts is not None and not has_expert_lora_structure(model, experts, adapter_name):
        if not expert_lora or isinstance(model, PeftModel):
            raise ExpertLoraNeedsMerge(str(path))
        add_expert_lora_structure(model, experts, adapter_name)
    with _peft_module_targets(arch.capabilities(model.config)):
        if isinstance(model, PeftModel):
            model.load_adapter(str(path), adapter_name=adapter_name)
            return model
        return PeftModel.from_pretrained(model, str(path), adapter_name=adapter_name)


def _peft_module_targets(caps: arch.ArchCaps) -> Any:
    """PEFT adapts the named modules as they are (see trainer.moe.peft_module_targets)."""
    if not caps.fused_experts:
        from contextlib import nullcontext

        return nullcontext()
    from trainer.moe.lora import peft_module_targets

    return peft_module_targets()


def _upcast_small_params(model: Any) -> None:
    """Embeddings, norms and biases to float32, as k-bit preparation does for 4/8-bit: the
    residual stream then stays in float32 and only the matmuls of the (frozen) linear
    layers run in the 16-bit compute dtype. Costs little memory: no linear weight moves."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            module.float()
    for p in model.parameters():
        if p.ndim == 1 and p.dtype in (torch.bfloat16, torch.float16):
            p.data = p.data.float()


def _logical_params(model: Any) -> int:
    """Parameter count as published (a 4-bit tensor packs two parameters per byte)."""
    n = 0
    for p in model.parameters():
        qs = getattr(p, "quant_state", None)
        n += int(qs.shape.numel()) if qs is not None and hasattr(qs, "shape") else p.numel()
    return n


def ensure_quantized_copy(source: Path, target: Path, quantization: str) -> tuple[Path, bool]:
    """Save `source` loaded in `quantization` (nf4 | int8) to `target` once: the cache's
    pre-quantised copy (`trainer.cache`), four times smaller to read at start. Returns
    (folder, whether this call made it)."""
    if is_complete(target):
        return target, False
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    bnb = build_quantization_config(quantization, torch.bfloat16)
    if bnb is None:
        raise BadInput(f"a quantised copy needs quantization nf4 or int8 (got {quantization!r})")
    device = {"": 0} if torch.cuda.is_available() else {"": "cpu"}
    with staging(target) as tmp:
        model = AutoModelForCausalLM.from_pretrained(
            source, quantization_config=bnb, dtype=torch.bfloat16, device_map=device
        )
        model.save_pretrained(tmp, safe_serialization=True)
        AutoTokenizer.from_pretrained(source).save_pretrained(tmp)
        del model
        made = publish(tmp, target)
    return target, made
