#!/bin/bash
# Issue 7 item 4 as one prepared device command: the machine, the versions,
# then the gpu suite's variants, each row logged (gpu.log) as it finishes so
# that a run cut short still reports what it measured; gpu.json is written
# only at the end. Files land in $OUT (the
# device tool's folder), or in /tmp/gpu_session elsewhere.
#   bash benchmarks/gpu_session.sh            # on the GPU machine
#   bash benchmarks/gpu_session.sh --smoke    # tiny sizes, to try it here
set -o pipefail
export PYTHONUNBUFFERED=1
out=${OUT:-/tmp/gpu_session}
mkdir -p "$out"
cd "$(dirname "$0")/.." || exit 1
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm \
    --format=csv 2>&1 || echo 'no nvidia-smi'; } | tee "$out/machine.txt"
python3 -c 'import jax, flax, optax; print("jax", jax.__version__, "flax",
  flax.__version__, "optax", optax.__version__, jax.devices())' \
  2>&1 | tee -a "$out/machine.txt"
timeout -k 20 "${GPU_SESSION_TIMEOUT:-480}" python3 -m benchmarks.run --suite gpu \
  --json "$out/gpu.json" "$@" 2>&1 | tee "$out/gpu.log"
