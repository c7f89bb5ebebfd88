#!/usr/bin/env bash
# The one command for a GPU machine (H100/H200, no network): install the wheels carried in .whl/,
# run the GPU tests, then the throughput benchmark. Everything lands in $OUT (default bench/results):
#   device.txt  gpu_tests.log  bench.log  results.jsonl  gpu_throughput.md
# Usage, from the repository root: bash bench/gpu_run.sh [total seconds, default 500]
# WHEELS (default .whl) names the wheel folder; BENCH_ARGS adds benchmark flags (--smoke on CPU).
# A second call that finishes what the first ran out of time for, without the tests:
#   SKIP_TESTS=1 BENCH_ARGS=--resume bash bench/gpu_run.sh 300   (same $OUT as the first)
set -uo pipefail

total=${1:-500}
start=$(date +%s)
root=$(pwd)
out=${OUT:-$root/bench/results}
mkdir -p "$out"

wheels=${WHEELS:-.whl}
if ls "$wheels"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$wheels"/*.whl || { echo "wheel install failed" | tee "$out/device.txt"; exit 3; }
fi
export PYTHONPATH=/tmp/site:$root/operator:$root/trainer:$root${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True TRITON_CACHE_DIR=/tmp/triton-cache
export KUBETUNE_LOG_LEVEL=WARNING

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
  # DeepSpeed's own FusedAdam is JIT-built: it needs nvcc and ninja on the machine.
  echo "nvcc: $(command -v nvcc || echo missing) | ninja: $(command -v ninja || echo missing) | CUDA_HOME=${CUDA_HOME:-unset}"
  python3 - <<'EOF'
import importlib.metadata as md, inspect, sys
import torch
device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
print("python", sys.version.split()[0], "| cuda", torch.version.cuda, "| device", device)
for name in ("torch", "transformers", "deepspeed", "peft", "accelerate", "liger-kernel", "bitsandbytes", "triton", "pydantic"):
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name} MISSING")
try:
    from torch.nn.attention.varlen import varlen_attn
    print("varlen_attn", inspect.signature(varlen_attn))
except Exception as e:
    print("varlen_attn unavailable:", e)
from kubetune_trainer import perf
print("varlen self-check:", torch.cuda.is_available() and perf.varlen_selfcheck())
EOF
} 2>&1 | tee "$out/device.txt"

if [ "${SKIP_TESTS:-0}" = 1 ]; then
  echo "== GPU tests skipped (SKIP_TESTS=1)"
else
  echo "== GPU tests"
  timeout 170 python3 -m pytest --noconftest -p no:cacheprovider -q -rA -m gpu tests/gpu 2>&1 \
    | tee "$out/gpu_tests.log"
  echo "GPU tests exit: ${PIPESTATUS[0]}" | tee -a "$out/gpu_tests.log"
fi

nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader 2>/dev/null \
  | sed 's/^/GPU memory in use before the benchmark: /'
left=$((total - ($(date +%s) - start) - 20))
[ "$left" -lt 200 ] && left=200
echo "== benchmark, budget ${left}s"
python3 bench/gpu_throughput.py --out "$out" --budget-s "$left" ${BENCH_ARGS:-} 2>&1 \
  | tee "$out/bench.log"
code=${PIPESTATUS[0]}
echo "total $(( $(date +%s) - start ))s, benchmark exit $code"
exit "$code"
