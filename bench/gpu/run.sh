#!/usr/bin/env bash
# The one-GPU benchmark in one command (bench/gpu/train_throughput.py; ≈6 min on one H100):
#
#   bash bench/gpu/run.sh                 # results in $OUT or bench/gpu/results/
#   bash bench/gpu/run.sh --sweep         # the throughput-switch ladder, both sizes, ≤ 8 min
#                                         # on one H200 (table.md, results.json, profile-*.txt)
#
# On a machine without internet, carry the wheels it lacks in .whl/ (megatron-core 0.19.2 for
# its Python; see docs/benchmarks.md) — they are installed into a private folder first.
set -euo pipefail
cd "$(dirname "$0")/../.."
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/msm-site .whl/*.whl
    export PYTHONPATH=/tmp/msm-site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
export PYTHONUNBUFFERED=1
python3 bench/gpu/train_throughput.py --out "${OUT:-bench/gpu/results}" "$@"
