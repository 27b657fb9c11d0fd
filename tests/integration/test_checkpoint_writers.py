"""The checkpoint writer's helper process (the Manager behind Megatron-Core's write-results
queue): stop signals do not kill it, one that died anyway is restarted before the next save, and
it does not outlive its parent (a rank killed outright must not leave it behind)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.helpers.launch import REPO, run_env

SCRIPT = """
import os, signal, sys, time
from megatron.core.dist_checkpointing.strategies import filesystem_async
from msm_megatron._compat.checkpoint_writers import ensure_results_queue

def manager_pid():
    return filesystem_async._results_queue._manager._process.pid

ensure_results_queue()
first = manager_pid()
for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    os.kill(first, sig)
time.sleep(0.5)
ensure_results_queue()
assert manager_pid() == first, "a stop signal killed the helper"
queue = filesystem_async._results_queue
queue.put("results")
assert queue.get_nowait() == "results"
os.kill(first, signal.SIGKILL)
time.sleep(0.5)
ensure_results_queue()
assert manager_pid() != first, "a dead helper was not restarted"
filesystem_async._results_queue.put(1)
print("PID", manager_pid(), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] not in "ZX"
    except OSError:
        return False


def test_helper_survives_signals_restarts_and_dies_with_its_parent():
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=REPO, env=run_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("PID "), line + proc.stderr.read()[-3000:]
        helper = int(line.split()[1])
        assert _alive(helper)
        os.kill(proc.pid, signal.SIGKILL)  # the rank dies outright
        proc.wait()
        end = time.monotonic() + 10
        while _alive(helper) and time.monotonic() < end:
            time.sleep(0.1)
        assert not _alive(helper), "the helper outlived its parent"
    finally:
        proc.kill()
        proc.wait()
