"""Where a process sits in the job, read from torchrun or Slurm variables."""

from __future__ import annotations

from msm_megatron.distributed import _first_slurm_host, pick_backend, read_launch_env


def test_torchrun_env():
    env = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "n1",
           "MASTER_PORT": "29400", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}
    launch = read_launch_env(env)
    assert (launch.rank, launch.world_size, launch.local_rank) == (3, 8, 1)
    assert (launch.master_addr, launch.master_port, launch.launcher) == ("n1", 29400, "torchrun")


def test_slurm_env_one_task_per_gpu():
    env = {"SLURM_PROCID": "9", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1",
           "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "123456"}
    launch = read_launch_env(env)
    assert (launch.rank, launch.world_size, launch.local_rank) == (9, 16, 1)
    assert launch.master_addr == "gpu07" and launch.launcher == "slurm"
    assert launch.master_port == 20000 + 123456 % 20000  # same on every task of the job
    assert read_launch_env({**env, "MASTER_ADDR": "10.0.0.5"}).master_addr == "10.0.0.5"


def test_slurm_nodelists():
    assert _first_slurm_host("node[03-05,9],gpu1") == "node03"
    assert _first_slurm_host("a100-12") == "a100-12"
    assert _first_slurm_host("dgx[1,4]") == "dgx1"


def test_single_process_and_backend():
    launch = read_launch_env({})
    assert (launch.rank, launch.world_size, launch.launcher) == (0, 1, "single")
    assert launch.master_port > 0
    assert pick_backend("gloo") == "gloo"
    assert pick_backend("auto") in ("gloo", "nccl")
