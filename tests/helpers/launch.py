"""The one helper that runs `msm train` on N CPU ranks (torchrun + gloo) for tests.

The same tests run with NCCL on a GPU box: nothing here is CPU-specific except the environment.
Every run is tagged with a unique environment variable; when it ends, any process still carrying
the tag (e.g. the multiprocessing manager Megatron's checkpoint writer spawns, which outlives a
SIGKILLed rank) is killed — what a scheduler's job cleanup would do.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from msm_megatron.distributed import free_port
from msm_megatron.train.metrics import read_metrics

REPO = Path(__file__).resolve().parents[2]


MSM_TRAIN = ("msm_megatron.cli", "train")


def train_command(config: Path, overrides: list[str], nproc: int,
                  entry: tuple[str, ...] = MSM_TRAIN) -> list[str]:
    """``python -m <entry> config overrides`` (default `msm train`) under torchrun (nproc > 0)
    or as a plain single process (nproc == 0)."""
    msm = ["-m", *entry, str(config), *overrides]
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


def assert_script_prints_ok(script: str, timeout: float) -> None:
    """Run ``script`` in a fresh Python process (for what patches a process for good, such as
    the Megatron-on-CPU adaptations); it must exit 0 with ``OK`` as its last output."""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=run_env(),
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0 and out.stdout.strip().endswith("OK"), out.stderr[-3000:]


def start(config: Path, overrides: list[str], nproc: int, log: Path,
          env: dict | None = None, entry: tuple[str, ...] = MSM_TRAIN) -> subprocess.Popen:
    """Start a run in the background; stdout+stderr go to ``log``."""
    tag = uuid.uuid4().hex
    handle = open(log, "w")
    proc = subprocess.Popen(train_command(config, overrides, nproc, entry), cwd=REPO,
                            env=run_env({**(env or {}), RUN_TAG: tag}), stdout=handle,
                            stderr=subprocess.STDOUT, start_new_session=True)
    proc.run_tag = tag
    return proc


RUN_TAG = "MSM_TEST_RUN_TAG"


def kill_tagged(tag: str) -> None:
    """SIGKILL every process whose environment carries ``RUN_TAG=tag``."""
    needle = f"{RUN_TAG}={tag}".encode()
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            if needle in (proc_dir / "environ").read_bytes().split(b"\0"):
                os.kill(int(proc_dir.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


def ctrl_c_when(command: list[str], ready, what: str, cwd: Path, env: dict,
                wait: float = 300, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``command``; once ``ready()`` holds, send it SIGINT (what Ctrl-C sends) and return
    the finished process with its output. Fails when ``ready()`` does not hold within ``wait``
    seconds (``what`` says what it waits for)."""
    import time

    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + wait
        while not ready() and proc.poll() is None:
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def finish(proc: subprocess.Popen, timeout: float = 300) -> int:
    """Wait for a run, then kill anything left in its session (orphaned writer helpers)."""
    try:
        code = proc.wait(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        kill_tagged(proc.run_tag)
    return code


def train(config: Path, overrides: list[str], nproc: int, log: Path, env: dict | None = None,
          expect: int | None = 0, entry: tuple[str, ...] = MSM_TRAIN) -> int:
    """Run to completion; assert the exit code (unless ``expect`` is None).

    ``msm train`` runs with ranks forked from the session's warm process
    (:mod:`tests.helpers.warm_ranks`) when the exit code means the same as torchrun's (one
    process, or a run expected to succeed); otherwise, and for other entry points, under
    torchrun as its own processes."""
    from tests.helpers import warm_ranks

    if entry == MSM_TRAIN and (nproc == 0 or expect == 0) and warm_ranks.enabled():
        log.write_text("")
        code = warm_ranks.run(["train", str(config), *overrides], nproc, log, env)
    else:
        code = finish(start(config, overrides, nproc, log, env, entry))
    if expect is not None and code != expect:
        raise AssertionError(f"exit {code} != {expect}; log {log}:\n{log.read_text()[-4000:]}")
    return code


def metrics(run_dir: Path) -> dict[int, dict]:
    """Per-step records of a run (see :func:`msm_megatron.train.metrics.read_metrics`)."""
    return read_metrics(run_dir)


LOSS_TOL = 1e-6
# Grad norms sum the squares of every fp32 gradient; TP changes the reduction order (vocab-parallel
# cross entropy, sharded norms). Observed up to 1.7e-6 relative when the padded vocabulary leaves
# one TP rank holding only never-targeted rows; losses stay within 1e-6 absolute at every step.
GRAD_NORM_RTOL = 5e-6


def assert_same_trajectory(got: dict[int, dict], ref: dict[int, dict], context) -> None:
    """Same steps; per-step loss within LOSS_TOL and grad norm within GRAD_NORM_RTOL."""
    assert sorted(got) == sorted(ref), (context, sorted(got), sorted(ref))
    for step in ref:
        assert abs(got[step]["loss"] - ref[step]["loss"]) <= LOSS_TOL, (context, step, got[step],
                                                                       ref[step])
        assert (abs(got[step]["grad_norm"] - ref[step]["grad_norm"])
                <= GRAD_NORM_RTOL * abs(ref[step]["grad_norm"])), (context, step, got[step],
                                                                    ref[step])
