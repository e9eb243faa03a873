"""LoRA parameters of a job, counted exactly as PEFT creates them for the targets the trainer
passes (`peft_lora_params`), plus the trainer's own LoRA on every routed expert when the spec
asks for it (`lora_count`).

On fused-expert models the trainer turns off PEFT's remapping of
`gate_proj/up_proj/down_proj/gate` onto the routed experts, so those names adapt the shared
expert. Raises `core.errors.InvalidInput` for settings the trainer would refuse (LoRA
targets that match nothing, half of a fused pair, expert LoRA without nf4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from core.errors import InvalidInput
from core.planner.facts import ModelFacts, Weight
from core.planner.trainer_facts import TrainerFacts, capabilities, experts_quantized
from core.planner.weights import weights
from trainer.shared import arch, moe_facts
from trainer.shared.spec import JobSpec


@dataclass(frozen=True)
class LoraCount:
    params: int  # all trainable LoRA parameters
    by_target: dict[str, int]  # leaf name ("q_proj", "experts.gate_up_proj") -> parameters
    target_modules: list[str] | str  # what PEFT is given
    adapted_linear: tuple[Weight, ...] = field(repr=False, default=())  # for activations
    notes: tuple[str, ...] = ()


_MOE_NAME_MAP = (
    ("gate", "gate.weight"),
    ("gate_proj", "gate_up_proj"),
    ("up_proj", "gate_up_proj"),
    ("down_proj", "down_proj"),
)

# The trainer's LoRA on fused routed experts is no LoRA vLLM can load (trainer.expert_lora).
EXPERT_LORA_SERVING = (
    "an adapter with LoRA on the routed experts is served by merging it into the base model "
    "(`brightrun adapters merge REF`, then serve the merged model), not by vLLM's multi-LoRA "
    "alongside other adapters"
)


def _matches(name: str, targets: set[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def _leaf(name: str) -> str:
    parts = name.split(".")
    if parts[-1] in ("weight",):
        parts = parts[:-1]
    return ".".join(parts[-2:]) if len(parts) > 1 and parts[-2] == "experts" else parts[-1]


def peft_lora_params(
    model: ModelFacts,
    target_modules: Sequence[str] | str,
    r: int,
    *,
    target_parameters: Sequence[str] = (),
    use_dora: bool = False,
    experts_are_parameters: bool = True,
    remap_expert_names: bool = True,
    experts_as_modules: bool = False,
) -> LoraCount:
    """Trainable parameters PEFT's `get_peft_model(model, LoraConfig(...))` creates.

    Follows PEFT 0.21: a module is targeted when its name equals a target or ends with
    "." + target; "all-linear" is every `nn.Linear` but the LM head; on qwen3_moe /
    qwen3_next (transformers >= 5) the names gate_proj/up_proj/down_proj/gate are taken
    off the module targets and put on the fused expert parameters (gate_up_proj gets rank
    2r when both halves are named) and the router weight -- so the shared expert's
    projections are never adapted by those names. A 3-D expert parameter gets
    r*E*(in+out) parameters; a module r*(in+out) (+ out with DoRA).
    `experts_are_parameters=False`: the experts were replaced (the trainer's NF4 experts)
    and PEFT finds no expert parameter to wrap. `remap_expert_names=False`: the remapping is
    off and names match modules as they are. `experts_as_modules`: the transformers < 5
    layout, one nn.Linear per expert and projection (and the router an nn.Linear).
    """
    modules, params = _targetable(model, experts_are_parameters, experts_as_modules)
    fused = model.fused_experts and remap_expert_names and not experts_as_modules
    tm = _module_targets(target_modules, modules, fused)
    given = set(tm)
    tp = set(target_parameters)
    notes: list[str] = []
    gate_up_rank = r
    if fused:
        tm, tp, gate_up_rank, note = _fused_targets(model, tm, tp, r, experts_are_parameters)
        notes += [note] if note else []
    by, adapted = _count_modules(modules, tm, r, use_dora)
    _count_parameters(params, tp, r, gate_up_rank, use_dora, by)
    if not by:
        _refuse_nothing_adapted(model, modules, given, tm, fused)
    unmatched = sorted(t for t in tm if not any(_matches(n, {t}) for n in modules))
    if unmatched:
        notes.append(f"LoRA targets {', '.join(unmatched)} match no layer of {model.id}")
    return LoraCount(
        sum(by.values()),
        by,
        sorted(given) if not isinstance(target_modules, str) else target_modules,
        tuple(adapted),
        tuple(notes),
    )


def _fused_targets(
    model: ModelFacts, tm: set[str], tp: set[str], r: int, experts_are_parameters: bool
) -> tuple[set[str], set[str], int, str | None]:
    """PEFT's remapping of expert names on a fused-experts model: the module targets left,
    the parameter targets, the rank of gate_up_proj, and a note on what was moved."""
    remapped, moved, both_halves = _remap_expert_names(model, tm)
    moved_names = sorted(tm - remapped)
    note = None
    if moved_names:
        note = (
            f"PEFT maps {', '.join(moved_names)} onto the routed experts and the router on "
            f"{model.model_type}, not onto the shared expert"
            + (
                ""
                if experts_are_parameters
                else "; the trainer's NF4 experts have no such "
                "parameters, so those targets adapt nothing"
            )
        )
    return remapped, tp | moved, 2 * r if both_halves else r, note


def _targetable(
    model: ModelFacts, experts_are_parameters: bool, experts_as_modules: bool
) -> tuple[dict[str, Weight], dict[str, Weight]]:
    """The modules PEFT can wrap (by module name) and the parameters it can (by name)."""
    ws = weights(model)
    modules = {w.name.removesuffix(".weight"): w for w in ws if w.role in ("linear", "lm_head")}
    if model.tied_embeddings and model.model_type != "qwen":  # the LM head shares the weight
        modules["lm_head"] = Weight("lm_head.weight", (model.vocab, model.hidden), "lm_head")
    params = {w.name: w for w in ws if w.role == "router"}
    if experts_are_parameters:
        params.update({w.name: w for w in ws if w.role == "routed_experts"})
    if model.is_moe and experts_as_modules:
        modules.update(_per_expert_modules(ws))
        params = {}
    return modules, params


def _per_expert_modules(ws: list[Weight]) -> dict[str, Weight]:
    """Experts as per-expert nn.Linear (transformers < 5): one stand-in per projection, and
    the router as an nn.Linear."""
    modules: dict[str, Weight] = {}
    for w in ws:
        if w.role == "routed_experts":
            e, out_f, in_f = w.shape
            base = w.name.rsplit(".", 1)[0]
            if w.name.endswith("gate_up_proj"):
                for proj in ("gate_proj", "up_proj"):
                    modules[f"{base}.{proj}"] = Weight(
                        base + f".{proj}.weight", (e, out_f // 2, in_f), "routed_experts"
                    )
            else:
                modules[f"{base}.down_proj"] = Weight(
                    base + ".down_proj.weight", (e, out_f, in_f), "routed_experts"
                )
        if w.role == "router":
            modules[w.name.removesuffix(".weight")] = w
    return modules


def _module_targets(
    target_modules: Sequence[str] | str, modules: dict[str, Weight], fused: bool
) -> set[str]:
    """The module names PEFT is given, "all-linear" expanded as PEFT expands it."""
    if not isinstance(target_modules, str):
        return set(target_modules)
    if target_modules != "all-linear":
        raise InvalidInput(
            f"LoRA target_modules {target_modules!r}: give a list of module names or "
            "'all-linear' (the planner does not evaluate regular expressions)"
        )
    linear = {n for n, w in modules.items() if w.role == "linear"}
    if not fused:
        return linear
    return {n.rsplit(".", 1)[-1] for n in linear} | {old for old, _ in _MOE_NAME_MAP}


def _remap_expert_names(model: ModelFacts, tm: set[str]) -> tuple[set[str], set[str], bool]:
    """PEFT's remapping of pre-fusion names onto fused expert parameters: the module targets
    left, the parameter targets added, and whether gate_up_proj gets both halves (rank 2r)."""
    remaining: set[str] = set()
    moved: set[str] = set()
    named_halves: set[str] = set()
    for t in tm:
        for old, new in _MOE_NAME_MAP:
            if t == old or t.endswith("." + old):
                moved.add(new)
                if new == "gate_up_proj":
                    named_halves.add(old)
                break
        else:
            remaining.add(t)
    if len(named_halves) == 1:
        (half,) = named_halves
        other = ({"gate_proj", "up_proj"} - named_halves).pop()
        raise InvalidInput(
            f"LoRA target {half!r} without {other!r}: on {model.model_type} PEFT maps both "
            "onto the fused experts' gate_up_proj; name both or neither"
        )
    return remaining, moved, bool(named_halves)


def _count_modules(
    modules: dict[str, Weight], tm: set[str], r: int, use_dora: bool
) -> tuple[dict[str, int], list[Weight]]:
    """LoRA parameters per leaf name on the targeted modules, and the adapted nn.Linear."""
    by: dict[str, int] = {}
    adapted: list[Weight] = []
    for name, w in modules.items():
        if not _matches(name, tm):
            continue
        if w.role == "routed_experts":  # per-expert nn.Linear stand-in
            e, out_f, in_f = w.shape
            n = e * r * (in_f + out_f) + (e * out_f if use_dora else 0)
        else:
            out_f, in_f = w.shape
            n = r * (in_f + out_f) + (out_f if use_dora else 0)
            adapted.append(w)
        key = _leaf(name + ".weight")
        by[key] = by.get(key, 0) + n
    return by, adapted


def _count_parameters(
    params: dict[str, Weight],
    tp: set[str],
    r: int,
    gate_up_rank: int,
    use_dora: bool,
    by: dict[str, int],
) -> None:
    """Add the LoRA parameters on targeted parameters (fused experts, router) to `by`."""
    for name, w in params.items():
        if not _matches(name, tp):
            continue
        if use_dora:
            raise InvalidInput("DoRA cannot adapt fused expert parameters; turn DoRA off")
        rank = gate_up_rank if name.endswith("gate_up_proj") else r
        if len(w.shape) == 3:
            e, out_f, in_f = w.shape
            n = rank * e * (in_f + out_f)
        else:
            out_f, in_f = w.shape
            n = rank * (in_f + out_f)
        key = _leaf(name)
        by[key] = by.get(key, 0) + n


def _refuse_nothing_adapted(
    model: ModelFacts, modules: dict[str, Weight], given: set[str], tm: set[str], fused: bool
) -> None:
    if given and fused and not tm:
        raise InvalidInput(
            f"the LoRA targets {sorted(given)} adapt nothing on {model.id}: PEFT moves them "
            "onto routed-expert parameters this model does not have as loaded"
        )
    linear_leaves = sorted({n.rsplit(".", 1)[-1] for n, w in modules.items() if w.role == "linear"})
    raise InvalidInput(
        f"none of the LoRA targets {sorted(given)} is a linear layer of {model.id}; its "
        f"linear layers are {', '.join(linear_leaves)}"
    )


def lora_count(spec: JobSpec, model: ModelFacts, trainer: TrainerFacts | None = None) -> LoraCount:
    """LoRA parameters of this job as the trainer builds them (PEFT + expert LoRA)."""
    trainer = trainer or TrainerFacts()
    caps = capabilities(model)
    lora = spec.lora
    q_experts = experts_quantized(model, spec.quantization, trainer)
    if trainer.lora_target_modules is not None:
        targets: Any = trainer.lora_target_modules
        if not isinstance(targets, str):
            targets = list(targets)
    else:
        targets = arch.resolve_lora_targets(caps, lora.target_modules, lora.lora_on_experts)
    count = peft_lora_params(
        model,
        targets,
        lora.r,
        target_parameters=trainer.lora_target_parameters,
        use_dora=lora.use_dora,
        experts_are_parameters=not (model.fused_experts and q_experts),
        remap_expert_names=(
            not caps.fused_experts
            if trainer.peft_remaps_expert_names is None
            else trainer.peft_remaps_expert_names
        ),
        experts_as_modules=trainer.experts_are_linear_modules,
    )
    notes = list(count.notes)
    by = dict(count.by_target)
    if lora.lora_on_experts:
        if not model.is_moe:
            notes.append("LoRA on experts is ignored: the model has no routed experts")
        elif (
            caps.fused_experts
            if trainer.expert_lora_by_trainer is None
            else trainer.expert_lora_by_trainer
        ):
            by["experts (trainer LoRA)"] = _trainer_expert_lora(spec, model, notes)
    elif model.is_moe and any(k.startswith("experts.") for k in by):
        notes.append(
            "these LoRA targets adapt every routed expert through PEFT "
            f"({sum(v for k, v in by.items() if k.startswith('experts.')) / 1e9:.2f}B "
            "parameters)"
        )
    return replace(count, params=sum(by.values()), by_target=by, notes=tuple(notes))


def _trainer_expert_lora(spec: JobSpec, model: ModelFacts, notes: list[str]) -> int:
    """Parameters of the trainer's LoRA on every routed expert (needs nf4); adds its notes."""
    if spec.quantization != "nf4":
        raise InvalidInput(
            f"LoRA on the routed experts of {model.model_type} needs quantization "
            f"'nf4' (got {spec.quantization!r}): turn lora_on_experts off or use nf4"
        )
    n = moe_facts.expert_lora_params(model.config, spec.lora.r)
    notes.append(
        f"LoRA on all {model.experts} routed experts of every MoE layer: "
        f"{n / 1e9:.2f}B trainable parameters"
    )
    notes.append(EXPERT_LORA_SERVING)
    return n
