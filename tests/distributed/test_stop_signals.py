"""Stop signals delivered the way clusters and terminals deliver them: to every process of the
run's process group (Slurm's ``--signal``, ``scancel --signal`` and time-limit SIGTERM reach every
process of a job step; Ctrl-C reaches the whole foreground group), at any moment of the run.

Each case ends in: finish the step, save, exit 75; the resumed run ends exactly where an
uninterrupted run ends. Runs are held at named points (``MSM_FAULT_HOLD``, see
``msm_megatron.faults``) so that each signal lands exactly where it is meant to: before the first
save, right after a save, while shards are written, while an asynchronous writer runs, during the
final save. The first case needs no hold: a signal to the group after the first checkpoint, which
killed every such run while Megatron's checkpoint-writer helper died with the trainer's signal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.launch import REPO, assert_same_trajectory, finish, metrics, run_env, start

pytestmark = pytest.mark.distributed

RUN = ["train.steps=6", "checkpoint.save_interval=2"]


@pytest.fixture(scope="module")
def reference(toy_config, tmp_path_factory):
    """The uninterrupted run (single rank)."""
    root = tmp_path_factory.mktemp("stop_ref")
    code = finish(start(toy_config, [f"train.run_dir={root}", *RUN], 0, root.with_suffix(".log")))
    assert code == 0
    ref = metrics(root)
    assert sorted(ref) == [1, 2, 3, 4, 5, 6]
    return ref


def latest(run: Path) -> int | None:
    path = run / "checkpoints" / "latest_checkpointed_iteration.txt"
    return int(path.read_text()) if path.exists() else None


def wait_until(predicate, proc, timeout: float = 180.0, what: str = ""):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def attempt(toy_config, run: Path, holds: Path, point: str, sig: signal.Signals, log: Path,
            extra: list[str] = (), nproc: int = 0) -> tuple[int, str]:
    """One attempt of the run, held at ``point``, where ``sig`` goes to its whole process group;
    returns (exit code, log text)."""
    env = {"MSM_FAULT_HOLD": point, "MSM_FAULT_HOLD_DIR": str(holds)}
    cmd_overrides = [f"train.run_dir={run}", *RUN, *extra]
    if nproc:
        cmd_overrides.append(f"--nproc={nproc}")
    proc = start(toy_config, cmd_overrides, 0, log, env=env)
    held = holds / f"{point}.held"
    wait_until(held.exists, proc, what=f"the run to reach {point}")
    os.killpg(proc.pid, sig)  # every process of the group: the trainer and its helpers
    signalled = holds / f"{point}.signalled"
    wait_until(signalled.exists, proc, what=f"{sig.name} to reach the rank held at {point}")
    held.unlink()
    code = finish(proc, timeout=300)
    return code, log.read_text()


def test_signal_to_the_group_after_the_first_checkpoint(toy_config, reference, tmp_path):
    """No hold: the run goes on while the test waits for its first checkpoint, then the whole
    process group gets SIGUSR1 (what ``scancel --signal=USR1`` does to a job step)."""
    run = tmp_path / "run"
    proc = start(toy_config, [f"train.run_dir={run}", "train.steps=400",
                              "checkpoint.save_interval=2"], 0, tmp_path / "a.log")
    wait_until(lambda: latest(run) is not None, proc, what="the first checkpoint")
    os.killpg(proc.pid, signal.SIGUSR1)
    code = finish(proc, timeout=300)
    log = (tmp_path / "a.log").read_text()
    assert code == 75, log[-3000:]
    stopped = max(metrics(run))
    assert latest(run) == stopped and "stopped by SIGUSR1" in log
    assert "BrokenPipeError" not in log


def test_one_run_stopped_at_every_point_resumes_exactly(toy_config, reference, tmp_path):
    """Before the first save (USR1), right after a save (TERM), while shards are written (INT),
    during the final save (USR1): each stop saves and exits 75, the last run completes; the
    trajectory is the uninterrupted one, bit for bit."""
    run, holds = tmp_path / "run", tmp_path / "holds"
    cases = [("step:1", signal.SIGUSR1, 75, 1), ("after_save:2", signal.SIGTERM, 75, 2),
             ("during_save:4", signal.SIGINT, 75, 4), ("during_save:6", signal.SIGUSR1, 0, 6)]
    for i, (point, sig, want_code, want_latest) in enumerate(cases):
        code, log = attempt(toy_config, run, holds, point, sig, tmp_path / f"{i}.log")
        assert code == want_code, (point, log[-3000:])
        assert latest(run) == want_latest, (point, log[-3000:])
        if want_code == 75:
            assert f"stopped by {sig.name} at step {want_latest}" in log, log[-2000:]
    assert_same_trajectory(metrics(run), reference, "stopped at every point")
    for step in range(1, 7):
        assert metrics(run)[step]["loss"] == reference[step]["loss"]  # bit-exact


def test_async_writer_survives_the_signal(toy_config, reference, tmp_path):
    """SIGUSR1 to the group while the forked asynchronous writer of step 2 runs."""
    run, holds = tmp_path / "run", tmp_path / "holds"
    code, log = attempt(toy_config, run, holds, "async_save:2", signal.SIGUSR1, tmp_path / "a.log",
                        ["checkpoint.async_save=true"])
    assert code == 75, log[-3000:]
    assert latest(run) == 2 and "stopped by SIGUSR1 at step 2" in log
    done = finish(start(toy_config, [f"train.run_dir={run}", *RUN, "checkpoint.async_save=true"],
                        0, tmp_path / "b.log"))
    assert done == 0
    assert_same_trajectory(metrics(run), reference, "async")


def test_requeue_without_progress_stops_with_a_clear_error(toy_config, tmp_path):
    """Two stops in a row from the same step without saving (save_on_exit=false): the next
    attempt would repeat them forever, so it refuses to start."""
    run = tmp_path / "run"
    no_save = ["checkpoint.save_on_exit=false"]
    code, _ = attempt(toy_config, run, tmp_path / "h1", "step:3", signal.SIGUSR1,
                      tmp_path / "a.log", no_save)
    assert code == 75 and latest(run) == 2
    code, _ = attempt(toy_config, run, tmp_path / "h2", "step:3", signal.SIGUSR1,
                      tmp_path / "b.log", no_save)
    assert code == 75 and latest(run) == 2
    code = finish(start(toy_config, [f"train.run_dir={run}", *RUN, *no_save], 0,
                        tmp_path / "c.log"))
    log = (tmp_path / "c.log").read_text()
    assert code not in (0, 75) and "requeueing would repeat it forever" in log, log[-2000:]


def test_local_ranks_stop_together_on_ctrl_c(toy_config, reference, tmp_path):
    """``msm train --nproc 2`` (TP=2): Ctrl-C reaches the launcher's process group; the ranks
    get it once, save together and the launcher exits 75; the resumed run ends as the
    single-rank reference does."""
    run, holds = tmp_path / "run", tmp_path / "holds"
    code, log = attempt(toy_config, run, holds, "step:3", signal.SIGINT, tmp_path / "a.log",
                        ["parallel.tp=2"], nproc=2)
    assert code == 75, log[-3000:]
    assert latest(run) == 3 and "KeyboardInterrupt" not in log
    cmd = [sys.executable, "-m", "msm_megatron.cli", "train", str(toy_config),
           f"train.run_dir={run}", *RUN, "parallel.tp=2", "--nproc", "2"]
    done = subprocess.run(cmd, cwd=REPO, env=run_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert_same_trajectory(metrics(run), reference, "tp2 after ctrl-c")
