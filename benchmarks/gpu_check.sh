#!/usr/bin/env bash
# GPU rows of the README's "Inference settings" table, in one call on a lent GPU
# machine (< 8 minutes). UNTESTED: written in a session without a GPU.
#
# That machine has python3 with a CUDA torch but no ase or vesin and no network:
# first, here, in the repository root (see the device README):
#   echo /.whl/ >> .git/info/exclude
#   for p in ase==3.29.0 vesin==0.6.2; do
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl "$p"; done
# then run:  bash benchmarks/gpu_check.sh   with carry [".whl"] and timeout_s 540.
#
# The backend rows (README "Which backend": ours and fairchem:, default and turbo, on
# UMA-S-1.1- and UMA-S-1.2.1-sized random checkpoints) are a separate call per size:
#   bash benchmarks/gpu_check.sh backends 1.1     (then: backends 1.2.1), timeout_s 540.
# They need fairchem-core importable there (and, to write the checkpoints,
# tools/make_reference_fixtures.py --benchmark-checkpoint from the UMA 1.2 work);
# fairchem's import-time dependencies (warp-lang, scipy, wandb, ...) are far over the
# 64 MiB a call can carry, so without fairchem on that machine only our rows run.
# What it writes goes to $OUT (the device tool) or benchmarks/out.
set -uo pipefail
cd "$(dirname "$0")/.."
DEST=${OUT:-benchmarks/out}
mkdir -p "$DEST"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$DEST/gpu.txt"
if [[ "${1:-}" == backends ]]; then
  shift
  versions=("$@")
  [[ ${#versions[@]} -eq 0 ]] && versions=(1.1 1.2.1)
  python3 -c "import fairchem.core" 2>/dev/null \
    || echo "fairchem-core is not importable here: the fairchem: rows will fail"
  OUT="$DEST" timeout 520 python3 benchmarks/backend_gpu_check.py --versions "${versions[@]}" \
    2>&1 | tee "$DEST/backend_gpu.log"
  exit "${PIPESTATUS[0]}"
fi
status=0
timeout 180 python3 benchmarks/model_gpu_check.py correctness 2>&1 | tee "$DEST/gpu_correctness.log" || status=1
timeout 300 python3 benchmarks/model_gpu_check.py bench --out "$DEST/gpu_bench.jsonl" 2>&1 \
  | tee "$DEST/gpu_bench.log" || status=1
exit $status
