# Sourced by every msm sbatch script: the cluster's settings, then how to launch a command.
#
# Environment (msm pipeline sets these when it submits):
#   MSM_REPO           the msm-megatron checkout (its python package must be importable)
#   MSM_CLUSTER_ENV    slurm/clusters/<name>.env: modules, container, NCCL/network variables,
#                      and the cluster's default MSM_PYTHON / CONTAINER_IMAGE
#   MSM_PYTHON         the Python to run when the cluster file names none (default: python on
#                      PATH, e.g. inside the container)
#   MSM_JOB_PYTHON     this stage's own Python (its resources.python): wins over MSM_PYTHON
#   MSM_JOB_CONTAINER  this stage's own image (its resources.container): wins over
#                      CONTAINER_IMAGE; "none" runs the stage outside any container
set -euo pipefail
: "${MSM_REPO:?set MSM_REPO to the msm-megatron checkout}"
if [ -n "${MSM_CLUSTER_ENV:-}" ]; then
  set -a
  # shellcheck disable=SC1090
  source "$MSM_CLUSTER_ENV"
  set +a
fi
if [ -n "${MSM_MODULES:-}" ] && command -v module >/dev/null 2>&1; then
  # shellcheck disable=SC2086
  module load $MSM_MODULES
fi
# the stage's own environment, then the cluster file's, then python on PATH
MSM_PYTHON=${MSM_JOB_PYTHON:-${MSM_PYTHON:-python}}
CONTAINER_IMAGE=${MSM_JOB_CONTAINER:-${CONTAINER_IMAGE:-}}
[ "$CONTAINER_IMAGE" = none ] && CONTAINER_IMAGE=  # the stage runs outside any container
export PYTHONPATH="$MSM_REPO${PYTHONPATH:+:$PYTHONPATH}"
cd "$MSM_REPO"
echo "[msm] job ${SLURM_JOB_ID:-?}${SLURM_ARRAY_TASK_ID:+[$SLURM_ARRAY_TASK_ID]} on" \
     "${SLURM_JOB_NODELIST:-?} (restart ${SLURM_RESTART_COUNT:-0}): $*"
echo "[msm] python: $MSM_PYTHON${CONTAINER_IMAGE:+ in container $CONTAINER_IMAGE}"

# msm_srun ARGS...: srun, inside the stage's or the cluster's container when one is set (pyxis)
msm_srun() {
  if [ -n "${CONTAINER_IMAGE:-}" ]; then
    srun --container-image="$CONTAINER_IMAGE" \
         ${CONTAINER_MOUNTS:+--container-mounts="$CONTAINER_MOUNTS"} \
         --container-workdir="$MSM_REPO" "$@"
  else
    srun "$@"
  fi
}
