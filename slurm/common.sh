# Sourced by every msm sbatch script: the cluster's settings, then how to launch a command.
#
# Environment (msm pipeline sets the first three when it submits):
#   MSM_REPO         the msm-megatron checkout (its python package must be importable)
#   MSM_PYTHON       the Python to run (default: python on PATH, e.g. inside the container)
#   MSM_CLUSTER_ENV  slurm/clusters/<name>.env: modules, container, NCCL/network variables
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
MSM_PYTHON=${MSM_PYTHON:-python}
export PYTHONPATH="$MSM_REPO${PYTHONPATH:+:$PYTHONPATH}"
cd "$MSM_REPO"
echo "[msm] job ${SLURM_JOB_ID:-?}${SLURM_ARRAY_TASK_ID:+[$SLURM_ARRAY_TASK_ID]} on" \
     "${SLURM_JOB_NODELIST:-?} (restart ${SLURM_RESTART_COUNT:-0}): $*"

# msm_srun ARGS...: srun, inside the cluster's container when CONTAINER_IMAGE is set (pyxis)
msm_srun() {
  if [ -n "${CONTAINER_IMAGE:-}" ]; then
    srun --container-image="$CONTAINER_IMAGE" \
         ${CONTAINER_MOUNTS:+--container-mounts="$CONTAINER_MOUNTS"} \
         --container-workdir="$MSM_REPO" "$@"
  else
    srun "$@"
  fi
}
