"""The planner: before launch, will this job fit a GPU, how long will it take, what will it cost.

Pure functions over plain data (a `JobSpec`, the model's `ModelFacts`, the GPU table,
token statistics, measured throughputs): no database, no network, no torch.

Inputs, and what wins when two sources disagree
- What the user asked for comes from the `JobSpec` (quantisation, LoRA rank/targets,
  micro-batch, max length, checkpointing, packing, epochs).
- What the trainer does with it comes from `trainer/shared/arch.py` (the same capability table
  the worker reads: which LoRA targets "all-linear" becomes, whether fused MoE experts are
  stored in NF4 under nf4, the bits per quantised weight) and from `TrainerFacts`, whose
  defaults describe BrightRun's trainer (`trainer/model.py`, `trainer/train.py`) with the
  pinned PEFT and transformers. An explicit `TrainerFacts` field wins over the table; the
  published anchors in the tests use that to describe other stacks.

The parts, each a module with one job (its docstring states its contract):
- `catalog`: the Qwen models a user can pick, as their published config.json fields;
  `describe`: `ModelFacts` for a catalog id, the tiny demo model, a folder or a cached hub
  id; `from_config`, `facts`, `weights`: the facts and parameter tensors of a config.
- `pricing`: GPU types and rates, billed seconds, budgets as time limits, spend totals,
  Serverless against always-on pods.
- `trainer_facts`: how the trainer runs a job beyond the spec; `lora_params`: LoRA
  parameters equal to PEFT's; `memory`: peak GPU memory term by term; `fit`: verdict per
  GPU type and the settings that make a job fit; `timing`: training time (a generating
  method's sampling included) and measured throughput; `budget`: cost range, budget
  check, execution timeout; `multi_gpu`: memory per GPU with sharding, the smallest GPU
  count per type, its time and cost; `planning`: all of it for one job (`plan`).

Everything public is re-exported here: callers write `from core import planner` and
`planner.plan(...)`, `planner.describe(...)`, `planner.rate_per_second(...)`.
"""

from core.planner.budget import (
    BudgetCheck,
    CostEstimate,
    check_budget,
    estimate_cost,
    execution_timeout_ms,
    training_time_limit_s,
)
from core.planner.catalog import (
    CATALOG,
    TINY_DIR_NAME,
    TINY_ENTRY,
    TINY_ID,
    CatalogEntry,
    catalog_ids,
)
from core.planner.describe import (
    catalog_models,
    describe,
)
from core.planner.facts import (
    FUSED_EXPERT_MODEL_TYPES,
    SUPPORTED_MODEL_TYPES,
    LinearAttention,
    ModelFacts,
    ModelNotDescribable,
    ParamCounts,
    Weight,
)
from core.planner.fit import (
    FIT_FRACTION,
    GpuVerdict,
    Verdict,
    device_bytes,
    fit_verdicts,
    oom_suggestion,
    suggest,
    verdict_for,
)
from core.planner.from_config import (
    facts_from_config,
)
from core.planner.lora_params import (
    EXPERT_LORA_SERVING,
    LoraCount,
    lora_count,
    peft_lora_params,
)
from core.planner.memory import (
    ALLOCATOR_HEADROOM,
    CUDA_CONTEXT_BYTES,
    GIB,
    MemoryEstimate,
    MemoryTerm,
    estimate_memory,
    kv_bytes_per_token,
    kv_cache_bytes,
    layer_activation_bytes,
)
from core.planner.multi_gpu import (
    GpuCount,
    per_gpu_memory,
)
from core.planner.planning import (
    Plan,
    plan,
)
from core.planner.pricing import (
    DRIVER_MEMORY_MIB,
    GPU_TYPES,
    LOCAL_CPU,
    MEMORY_BANDWIDTH_GB_S,
    MIN_BUDGET_GPU_S,
    PRICES_READ_ON,
    BudgetTooSmall,
    ExecutionLimits,
    GpuType,
    PodComparison,
    SpendTotal,
    Tier,
    UnknownGpuType,
    aggregate_spend,
    billed_seconds,
    compare_for_gpu,
    execution_limits,
    gpu_type,
    gpu_type_for_device,
    job_cost_usd,
    live_cost_usd,
    pods_needed,
    pool_gpu_types,
    rate_per_second,
    serverless_vs_pod,
)
from core.planner.timing import (
    COLD_START_FIXED_S,
    DECODE_BANDWIDTH_EFFICIENCY,
    DEFAULT_UTILISATION,
    MEASURED_RANGE,
    MOE_UTILISATION_FACTOR,
    PACKING_EFFICIENCY,
    PADDED_EFFICIENCY,
    TIME_RANGE,
    WEIGHT_READ_BYTES_PER_S,
    TimeEstimate,
    TokenStats,
    cold_start_s,
    decode_weight_bytes,
    default_utilisation,
    estimate_local_time,
    estimate_time,
    flops_per_token,
    matmul_params,
    measured_tokens_per_s,
    optimizer_steps,
    sampling_seconds,
    token_stats_from_report,
    training_tokens,
)
from core.planner.trainer_facts import (
    LOSS_CHUNK_ELEMENTS,
    TrainerFacts,
    capabilities,
    experts_quantized,
)
from core.planner.weights import (
    weights,
)

__all__ = [
    "FUSED_EXPERT_MODEL_TYPES",
    "SUPPORTED_MODEL_TYPES",
    "LinearAttention",
    "ModelFacts",
    "ModelNotDescribable",
    "ParamCounts",
    "Weight",
    "weights",
    "facts_from_config",
    "CATALOG",
    "TINY_DIR_NAME",
    "TINY_ENTRY",
    "TINY_ID",
    "CatalogEntry",
    "catalog_ids",
    "catalog_models",
    "describe",
    "DRIVER_MEMORY_MIB",
    "GPU_TYPES",
    "LOCAL_CPU",
    "MIN_BUDGET_GPU_S",
    "BudgetTooSmall",
    "ExecutionLimits",
    "GpuType",
    "PodComparison",
    "SpendTotal",
    "Tier",
    "UnknownGpuType",
    "PRICES_READ_ON",
    "aggregate_spend",
    "gpu_type_for_device",
    "pool_gpu_types",
    "billed_seconds",
    "compare_for_gpu",
    "execution_limits",
    "gpu_type",
    "job_cost_usd",
    "live_cost_usd",
    "pods_needed",
    "rate_per_second",
    "serverless_vs_pod",
    "LOSS_CHUNK_ELEMENTS",
    "TrainerFacts",
    "capabilities",
    "experts_quantized",
    "EXPERT_LORA_SERVING",
    "LoraCount",
    "lora_count",
    "peft_lora_params",
    "ALLOCATOR_HEADROOM",
    "CUDA_CONTEXT_BYTES",
    "GIB",
    "MemoryEstimate",
    "GpuCount",
    "per_gpu_memory",
    "MemoryTerm",
    "estimate_memory",
    "kv_bytes_per_token",
    "kv_cache_bytes",
    "layer_activation_bytes",
    "FIT_FRACTION",
    "GpuVerdict",
    "Verdict",
    "device_bytes",
    "fit_verdicts",
    "oom_suggestion",
    "suggest",
    "verdict_for",
    "COLD_START_FIXED_S",
    "DEFAULT_UTILISATION",
    "MEASURED_RANGE",
    "MOE_UTILISATION_FACTOR",
    "PACKING_EFFICIENCY",
    "PADDED_EFFICIENCY",
    "TIME_RANGE",
    "WEIGHT_READ_BYTES_PER_S",
    "TimeEstimate",
    "TokenStats",
    "cold_start_s",
    "default_utilisation",
    "estimate_local_time",
    "decode_weight_bytes",
    "matmul_params",
    "sampling_seconds",
    "DECODE_BANDWIDTH_EFFICIENCY",
    "MEMORY_BANDWIDTH_GB_S",
    "estimate_time",
    "flops_per_token",
    "measured_tokens_per_s",
    "optimizer_steps",
    "token_stats_from_report",
    "training_tokens",
    "BudgetCheck",
    "CostEstimate",
    "check_budget",
    "estimate_cost",
    "execution_timeout_ms",
    "training_time_limit_s",
    "Plan",
    "plan",
]
