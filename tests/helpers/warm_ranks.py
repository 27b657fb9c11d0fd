"""``msm train`` ranks forked from one warm process, so the suite pays Python start-up and the
imports of torch, Megatron-Core and the trainer (≈7 s of CPU per rank) once per session instead
of once per rank of every run.

A warm process (``python -m tests.helpers.warm_ranks QUEUE``) imports what ``msm train`` imports,
then waits. For each case the harness writes ``job-<k>.json`` (argv, ranks, log, environment)
into its queue folder; the warm process forks one child per rank. Each child is a fresh process
image in every way that matters: nothing was initialised before the fork (no process group, no
Megatron state, no thread pool: ``OMP_NUM_THREADS=1``), it gets the variables torchrun sets
(``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``) and the case's environment, writes to the case's log, runs
``msm_megatron.cli.main(argv)`` and exits with its code. The warm process waits for every rank
and writes ``done-<k>.json`` with the first nonzero exit code (else 0): what torchrun reports.

:func:`tests.helpers.launch.train` runs its cases here; runs that a test signals or watches
(``launch.start``) and other entry points still start as their own processes.
``MSM_TEST_WARM_RANKS=0`` turns it off.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

JOB_TIMEOUT_S = 900


class WarmProcessDied(RuntimeError):
    pass


class WarmLauncher:
    """The warm process and its queue."""

    def __init__(self, root: Path):
        from tests.helpers.launch import REPO, RUN_TAG, run_env

        self.queue = root
        self.log = root / "warm.log"
        self.tag = uuid.uuid4().hex
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.helpers.warm_ranks", str(root)],
                                     cwd=REPO, env=run_env({RUN_TAG: self.tag}),
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.next = 0

    def run(self, argv: list[str], nproc: int, log: Path, env: dict | None = None) -> int:
        """``msm <argv>`` on ``nproc`` ranks (0: one plain process); its exit code."""
        from tests.helpers.launch import RUN_TAG

        k, self.next = self.next, self.next + 1
        job = {"argv": list(argv), "nproc": nproc, "log": str(log),
               "env": {**(env or {}), RUN_TAG: self.tag}}
        tmp = self.queue / f"job-{k}.tmp"
        tmp.write_text(json.dumps(job))
        tmp.replace(self.queue / f"job-{k}.json")
        done = self.queue / f"done-{k}.json"
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while not done.exists():
            if self.proc.poll() is not None:
                raise WarmProcessDied(f"the warm process exited ({self.proc.returncode}); "
                                      f"{self.log}:\n{self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                self.close()
                raise WarmProcessDied(f"case {k} ran more than {JOB_TIMEOUT_S} s; log {log}")
            time.sleep(0.02)
        return json.loads(done.read_text())["code"]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        from tests.helpers.launch import kill_tagged

        (self.queue / "stop").touch()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        kill_tagged(self.tag)  # ranks, and anything they left behind


_LAUNCHER: list[WarmLauncher] = []


def enabled() -> bool:
    return os.environ.get("MSM_TEST_WARM_RANKS", "1") != "0"


def run(argv: list[str], nproc: int, log: Path, env: dict | None = None) -> int:
    """Run ``msm <argv>`` from the session's warm process (started on first use)."""
    import tempfile

    if not _LAUNCHER or not _LAUNCHER[0].alive():
        _LAUNCHER[:] = [WarmLauncher(Path(tempfile.mkdtemp(prefix="msm-warm-ranks-")))]
    return _LAUNCHER[0].run(argv, nproc, log, env)


@atexit.register
def close() -> None:
    for launcher in _LAUNCHER:
        launcher.close()
    _LAUNCHER.clear()


# ---------------------------------------------------------------------- the warm process's side


def _wait_for(queue: Path, k: int, parent: int) -> dict | None:
    """The next case; None once asked to stop, or once the test session is gone."""
    job, stop = queue / f"job-{k}.json", queue / "stop"
    while True:
        if job.exists():
            return json.loads(job.read_text())
        if stop.exists() or os.getppid() != parent:
            return None
        time.sleep(0.02)


def _rank(job: dict, rank: int, port: int) -> None:
    """In the forked child: become rank ``rank`` of the case, run it, exit with its code."""
    code = 1
    try:
        os.setpgid(0, 0)  # like a process torchrun starts: signals to the case reach it alone
        env = dict(job["env"])
        if job["nproc"] > 0:
            env.update(RANK=str(rank), LOCAL_RANK=str(rank), GROUP_RANK="0",
                       WORLD_SIZE=str(job["nproc"]), LOCAL_WORLD_SIZE=str(job["nproc"]),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        os.environ.update(env)
        fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        from msm_megatron.cli import main

        code = main(job["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)


def _run_case(job: dict) -> int:
    from msm_megatron.distributed import free_port

    port = free_port()
    sys.stdout.flush()
    sys.stderr.flush()
    children = []
    for rank in range(max(job["nproc"], 1)):
        pid = os.fork()
        if pid == 0:
            _rank(job, rank, port)
        children.append(pid)
    codes, live = [], set(children)
    stop_at = None
    while live:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            if stop_at is not None and time.monotonic() > stop_at:
                _signal(live, signal.SIGKILL)
            time.sleep(0.01)
            continue
        if pid not in live:
            continue
        live.discard(pid)
        codes.append(os.waitstatus_to_exitcode(status))
        if codes[-1] != 0 and stop_at is None:  # as torchrun: stop the others (TERM, then KILL)
            _signal(live, signal.SIGTERM)
            stop_at = time.monotonic() + 30
    return next((c for c in codes if c != 0), 0)


def _signal(pids, sig) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)


def serve(queue: Path) -> None:
    """Import what ``msm train`` imports, then run the cases of ``queue`` in order."""
    import msm_megatron.cli  # noqa: F401
    import msm_megatron.train.trainer  # noqa: F401
    from msm_megatron._compat.te import te_available

    te_available()
    import megatron.core.dist_checkpointing  # noqa: F401
    import megatron.core.pipeline_parallel  # noqa: F401
    from megatron.core.distributed import DistributedDataParallel  # noqa: F401
    from megatron.core.models.gpt import GPTModel  # noqa: F401
    from megatron.core.optimizer import get_megatron_optimizer  # noqa: F401

    k, parent = 0, os.getppid()
    while (job := _wait_for(queue, k, parent)) is not None:
        code = _run_case(job)
        tmp = queue / f"done-{k}.tmp"
        tmp.write_text(json.dumps({"code": code}))
        tmp.replace(queue / f"done-{k}.json")
        k += 1


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
