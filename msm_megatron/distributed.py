"""The only place that creates process groups.

Reads the launcher's environment (torchrun: ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/
``MASTER_ADDR``/``MASTER_PORT``; Slurm ``srun`` one task per GPU: ``SLURM_PROCID``/
``SLURM_NTASKS``/``SLURM_LOCALID`` with ``MASTER_ADDR`` from the batch script or the first host
of ``SLURM_JOB_NODELIST``), picks gloo on CPU and NCCL on GPU, and builds Megatron's TP/PP(+VPP)/
CP/DP groups. On CPU it also switches on the Megatron CPU adaptations first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import re
import signal
import socket
import subprocess
import sys
import time

import torch
import torch.distributed as dist

from msm_megatron.config import ParallelConfig


@dataclasses.dataclass(frozen=True)
class LaunchEnv:
    """Where this process sits in the job, as the launcher described it."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    launcher: str


def _first_slurm_host(nodelist: str) -> str:
    """First hostname of a Slurm nodelist such as ``node[03-05,9],gpu1`` → ``node03``."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist)
    if not match:
        return "127.0.0.1"
    prefix, ranges = match.groups()
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def free_port() -> int:
    """An unused TCP port on localhost."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_launch_env(environ: dict | None = None) -> LaunchEnv:
    """Describe this process from torchrun or Slurm variables (single process if neither)."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return LaunchEnv(
            int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
            env.get("MASTER_ADDR", "127.0.0.1"), int(env.get("MASTER_PORT", 29500)), "torchrun",
        )
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        addr = env.get("MASTER_ADDR") or _first_slurm_host(env.get("SLURM_JOB_NODELIST", ""))
        port = int(env.get("MASTER_PORT", 20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000))
        return LaunchEnv(
            int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)),
            addr, port, "slurm",
        )
    return LaunchEnv(0, 1, 0, "127.0.0.1", free_port(), "single")


def strip_nproc(argv: list[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (what each relaunched rank runs)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def relaunch_local_ranks(nproc: int, argv: list[str]) -> int:
    """Re-run ``msm <argv>`` (``--nproc`` removed) as ``nproc`` local ranks; returns the exit code.

    Each rank gets torchrun's variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_*``).
    The ranks run in a process group of their own, and a stop signal that reaches this launcher
    (Ctrl-C in a terminal, ``kill -USR1``, a scheduler) is passed to that whole group exactly
    once: the ranks finish the step, save and exit 75, which is returned. If a rank fails, the
    others are stopped and its exit code is returned.
    """
    from msm_megatron._compat.checkpoint_writers import STOP_SIGNALS

    env = {**os.environ, "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc),
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "GROUP_RANK": "0"}
    cmd = [sys.executable, "-m", "msm_megatron.cli", *strip_nproc(argv)]
    procs: list[subprocess.Popen] = []
    for rank in range(nproc):
        procs.append(subprocess.Popen(
            cmd, env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            process_group=procs[0].pid if procs else 0))
    group = procs[0].pid

    def forward(signum, frame) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signum)

    old = {sig: signal.signal(sig, forward) for sig in STOP_SIGNALS}
    try:
        return _wait_ranks(procs)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)  # nothing outlives the launcher


def _wait_ranks(procs: list[subprocess.Popen], grace_s: float = 5.0) -> int:
    """Wait for every rank; on the first failure (not 0, not 75) give the others ``grace_s`` to
    end, then kill them. Returns 0, 75 when the ranks stopped to be resumed, or the failure."""
    from msm_megatron.run_files import REQUEUE_EXIT_CODE

    failed_at = None
    while any(p.poll() is None for p in procs):
        failing = any(p.returncode not in (None, 0, REQUEUE_EXIT_CODE) for p in procs)
        if failing and failed_at is None:
            failed_at = time.monotonic()
            for p in procs:
                if p.poll() is None:
                    p.terminate()
        if failed_at is not None and time.monotonic() - failed_at > grace_s:
            for p in procs:
                p.kill()
        time.sleep(0.1)
    codes = [p.returncode for p in procs]
    bad = [c for c in codes if c not in (0, REQUEUE_EXIT_CODE)]
    if bad:
        return bad[0] if bad[0] > 0 else 128 - bad[0]
    return REQUEUE_EXIT_CODE if REQUEUE_EXIT_CODE in codes else 0


def pick_backend(requested: str = "auto") -> str:
    """``nccl`` when CUDA is available, ``gloo`` otherwise (or what the config asks for)."""
    if requested != "auto":
        return requested
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_distributed(parallel: ParallelConfig, seed: int, timeout_minutes: int = 30) -> LaunchEnv:
    """Initialise torch.distributed and Megatron's model-parallel groups and RNG.

    Args:
        parallel: the layout; ``dp`` is derived as world / (tp·pp·cp).
        seed: base seed for Megatron's model-parallel RNG tracker.
        timeout_minutes: collective timeout.

    Returns:
        The launch environment of this process.
    """
    launch = read_launch_env()
    backend = pick_backend(parallel.backend)
    if backend == "gloo":
        from msm_megatron._compat import megatron_cpu

        megatron_cpu.enable()
    else:
        torch.cuda.set_device(launch.local_rank)
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", launch.master_addr)
        os.environ.setdefault("MASTER_PORT", str(launch.master_port))
        dist.init_process_group(
            backend=backend, rank=launch.rank, world_size=launch.world_size,
            init_method=f"tcp://{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
            timeout=datetime.timedelta(minutes=timeout_minutes),
        )
    from megatron.core import parallel_state, tensor_parallel

    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=parallel.tp,
            pipeline_model_parallel_size=parallel.pp,
            virtual_pipeline_model_parallel_size=parallel.vpp,
            context_parallel_size=parallel.cp,
            distributed_timeout_minutes=timeout_minutes,
        )
    tensor_parallel.model_parallel_cuda_manual_seed(seed)
    return launch


def destroy_distributed() -> None:
    """Tear down Megatron's groups and the default process group."""
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()


def ranks() -> dict[str, int]:
    """This process's ranks and group sizes in every parallel dimension."""
    from megatron.core import parallel_state as ps

    return {
        "rank": dist.get_rank(), "world": dist.get_world_size(),
        "tp_rank": ps.get_tensor_model_parallel_rank(),
        "tp": ps.get_tensor_model_parallel_world_size(),
        "pp_rank": ps.get_pipeline_model_parallel_rank(),
        "pp": ps.get_pipeline_model_parallel_world_size(),
        "dp_rank": ps.get_data_parallel_rank(), "dp": ps.get_data_parallel_world_size(),
        "cp": ps.get_context_parallel_world_size(),
    }
