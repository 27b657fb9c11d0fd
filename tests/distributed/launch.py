"""The one helper that runs `msm train` on N CPU ranks (torchrun + gloo) for tests.

The same tests run with NCCL on a GPU box: nothing here is CPU-specific except the environment.
Runs start in their own session so that a test can SIGKILL a whole run (including the helper
processes Megatron's checkpoint writer spawns) the way a scheduler would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from msm_megatron.distributed import free_port

REPO = Path(__file__).resolve().parents[2]


def train_command(config: Path, overrides: list[str], nproc: int) -> list[str]:
    """`msm train` under torchrun (nproc > 0) or as a plain single process (nproc == 0)."""
    msm = ["-m", "msm_megatron.cli", "train", str(config), *overrides]
    if nproc == 0:
        return [sys.executable, *msm]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
            f"--master-port={free_port()}", *msm]


def run_env(extra: dict | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    env.update(extra or {})
    return env


def start(config: Path, overrides: list[str], nproc: int, log: Path,
          env: dict | None = None) -> subprocess.Popen:
    """Start a run in the background; stdout+stderr go to ``log``."""
    handle = open(log, "w")
    return subprocess.Popen(train_command(config, overrides, nproc), cwd=REPO, env=run_env(env),
                            stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> int:
    """Wait for a run, then kill anything left in its session (orphaned writer helpers)."""
    try:
        code = proc.wait(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return code


def train(config: Path, overrides: list[str], nproc: int, log: Path, env: dict | None = None,
          expect: int | None = 0) -> int:
    """Run to completion; assert the exit code (unless ``expect`` is None)."""
    code = finish(start(config, overrides, nproc, log, env))
    if expect is not None and code != expect:
        raise AssertionError(f"exit {code} != {expect}; log {log}:\n{log.read_text()[-4000:]}")
    return code


def metrics(run_dir: Path) -> dict[int, dict]:
    """Per-step records of a run; a resumed run re-logs steps, the later record wins."""
    out = {}
    path = Path(run_dir) / "metrics.jsonl"
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        out[rec["step"]] = rec
    return out
