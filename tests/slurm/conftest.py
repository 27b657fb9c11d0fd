"""A real Slurm cluster on localhost for the Slurm tests (tests/helpers/local_cluster.sh): two
nodes (node1, node2), the tests' jobs on the non-default partition ``h100-long`` (set by
slurm/clusters/local.env, so it proves the cluster file reaches sbatch) and a ``cpu`` partition.

Started once per session, installing Debian's packages if needed (MSM_SLURM_INSTALL=1); where
Slurm cannot be started (not root, no packages and no network, ...) the tests are skipped with
the reason, not failed. ``MSM_SLURM_KEEP_UP=1`` leaves the cluster running at the end of the
session (several test sessions may share it; ``local_cluster.sh down`` stops it).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "helpers" / "local_cluster.sh"
PARTITION = "h100-long"  # slurm/clusters/local.env's SBATCH_PARTITION
CPU_PARTITION = "cpu"


@pytest.fixture(scope="session")
def slurm_cluster():
    if os.geteuid() != 0:
        pytest.skip("a local Slurm cluster needs root (slurmd launches jobs as their user)")
    env = {**os.environ, "MSM_SLURM_INSTALL": os.environ.get("MSM_SLURM_INSTALL", "1")}
    up = subprocess.run(["bash", str(SCRIPT), "up"], env=env, capture_output=True, text=True,
                        timeout=600)
    if up.returncode != 0:
        pytest.skip(f"could not start a local Slurm cluster: {up.stderr.strip()[-500:]}")
    conf = up.stdout.strip().splitlines()[-1].split("=", 1)[1]
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf  # for sbatch/scontrol/scancel run by the tests and msm
    yield conf
    if os.environ.get("MSM_SLURM_KEEP_UP") != "1":
        subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True, timeout=120)
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old
