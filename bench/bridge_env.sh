#!/usr/bin/env bash
# Create bench/.venv-bridge: an isolated CPU environment in which Megatron-Bridge's AutoBridge
# converts checkpoints (the peer in the conversion benchmark; see bench/bridge_convert.py).
# Idempotent: re-running reuses the venv and only installs what is missing.
#
#   bash bench/bridge_env.sh
#   bench/.venv-bridge/bin/python bench/bridge_convert.py --help
#
# megatron-bridge 0.6.2 declares Python >=3.12 and depends on CUDA-only packages
# (transformer-engine, flashinfer, ...), so it is installed with --no-deps and only the packages
# its conversion + checkpoint-save import chain needs are added (versions verified on Python
# 3.11.7, CPU, 2026-11). megatron-core 0.19.2 ships a cp311 wheel that works on 3.11 despite its
# metadata. The remaining import gaps (triton, transformer_engine, typing.override) are bridged by
# bench/bridge_shims/, used only by bench/bridge_convert.py.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BRIDGE_VENV:-$ROOT/bench/.venv-bridge}"
PYTHON="${PYTHON:-python3.11}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
    || { echo "bridge venv must use Python 3.11 (set PYTHON=...)" >&2; exit 1; }
PIP=("$PY" -m pip install --quiet --disable-pip-version-check)

TORCH="torch==2.13.0"  # the CPU wheel on this index; an unpinned torch pulls a CUDA build

# numpy before megatron-core, otherwise pip picks a numpy sdist that needs 3.12.
"${PIP[@]}" "$TORCH" "numpy==2.4.6" "packaging==26.4" "psutil==7.2.2"
"${PIP[@]}" --ignore-requires-python "megatron-core==0.19.2" "$TORCH"
"${PIP[@]}" --no-deps --ignore-requires-python "megatron-bridge==0.6.2"
# pip then lists megatron-bridge's other (CUDA / training-only) requirements as "dependency
# conflicts"; that message is expected and harmless here.
# What the conversion path imports:
#   transformers (<=5.12.1 per megatron-bridge), safetensors, omegaconf, einops: the bridge itself;
#   nvidia-modelopt (+requests), datasets, megatron-energon, tensorboard: imported at module level
#   by megatron.bridge.training.{checkpointing,config}, which save_megatron_model/export_ckpt use.
"${PIP[@]}" "$TORCH" \
    "transformers==5.12.1" "safetensors==0.8.0" "omegaconf==2.4.0" "einops==0.8.2" \
    "nvidia-modelopt==0.47.0" "requests==2.34.2" "datasets==5.2.0" \
    "megatron-energon==7.4.1" "tensorboard==2.21.0"

# Smoke test: the shims + AutoBridge import on CPU.
"$PY" -W ignore - "$ROOT/bench/bridge_shims" <<'EOF' 2>/dev/null | tail -n 1
import sys
sys.path.insert(0, sys.argv[1])
import bridge_cpu_shims
bridge_cpu_shims.install()
import torch
from megatron.bridge import AutoBridge  # noqa: F401
import megatron.bridge.training.model_load_save  # noqa: F401
from importlib.metadata import version
print("bridge venv ok:", ", ".join(f"{p} {version(p)}" for p in
      ("torch", "megatron-core", "megatron-bridge", "transformers")))
EOF
