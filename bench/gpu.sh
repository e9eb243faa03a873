#!/usr/bin/env bash
# The GPU measurements in one run, for a machine with one H100/H200 lent for a short time
# (multi_gpu and multi_gpu_qlora need at least two GPUs; on one they record that they were
# skipped).
# The image there has torch, transformers, peft and accelerate; bitsandbytes and trl come as
# wheels carried in WHEELS_DIR (default bench/wheels). Results: JSON files under OUT (default
# bench/out), then copy the numbers into bench/RESULTS.md with the date and the card.
#
#   bash bench/gpu.sh            # all five, each with its own time limit
#   ONLY=planner bash bench/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out}
WHEELS_DIR=${WHEELS_DIR:-bench/wheels}
mkdir -p "$OUT"
if compgen -G "$WHEELS_DIR/*.whl" >/dev/null; then
  python -m pip install -q --no-deps "$WHEELS_DIR"/*.whl
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python -c "import torch, bitsandbytes, transformers, peft; print(torch.__version__, torch.version.cuda, bitsandbytes.__version__, transformers.__version__, peft.__version__)" | tee -a "$OUT/gpu.txt"

run() {  # name, limit in seconds, command...
  local name=$1 limit=$2; shift 2
  [ -n "${ONLY:-}" ] && [ "$ONLY" != "$name" ] && return 0
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" 2>&1 | tail -40 | tee "$OUT/$name.log"
  echo "== $name exit ${PIPESTATUS[0]}"
}

run planner 150 python bench/plan_vs_measured.py --json "$OUT/plan_vs_measured.json"
run qwen3_next 200 python bench/qwen3_next_real.py --json "$OUT/qwen3_next_real.json"
run trainer 240 python bench/trainer.py --gpu-real-size --json "$OUT/trainer-gpu.json"
run multi_gpu 300 python bench/multi_gpu.py --json "$OUT/multi_gpu.json"
run multi_gpu_qlora 300 python bench/multi_gpu.py --quantization nf4 --json "$OUT/multi_gpu_qlora.json"
