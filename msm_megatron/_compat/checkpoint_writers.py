"""Megatron-Core's checkpoint-writer helper processes, started so that stop signals spare them.

Slurm delivers ``--signal``, ``scancel --signal`` and the time limit's SIGTERM to *every* process
of a job step, and a terminal's Ctrl-C reaches the whole foreground process group. The trainer
handles these signals (finish the step, save, exit 75), but the helpers Megatron-Core starts do
not, and the default action of SIGUSR1 and SIGTERM is to die:

- megatron-core 0.19 (``dist_checkpointing/strategies/filesystem_async.py``) sends every save's
  write results through a queue served by a ``multiprocessing`` Manager process, started with the
  spawn method at the first save and kept, as a module global, for the rest of the run. Once a
  signal has killed it, the next save dies with ``BrokenPipeError``, so every preemption after the
  first checkpoint failed the run;
- an asynchronous save forks a writer process per save (``async_utils.TemporalAsyncCaller``);
- Python's ``resource_tracker``, which the spawn method starts on demand.

The mechanism: helpers are started with the stop signals *blocked* (:func:`shielded`). A child
inherits the signal mask of the thread that started it, and neither Megatron's helpers nor
Python's multiprocessing unblock them, so in a helper the signal stays pending, harmlessly,
while the trainer records it. The parent's mask is restored right after, and a signal that came
in meanwhile is delivered then: none is lost.

The Manager is started here rather than by Megatron, with an initializer
(:func:`_helper_init`) that ignores the stop signals and ends the process once its parent is
gone: a rank killed outright (OOM, SIGKILL) must not leave a helper behind that a job step's
SIGTERM can no longer end. :func:`ensure_results_queue` also restarts the Manager when something
has taken it down.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

SUPPORTED_MEGATRON_CORE = ("0.19.",)

# what Slurm, ``scancel`` and a terminal send to stop a job
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2,
                          signal.SIGHUP})


@contextlib.contextmanager
def shielded(signals=STOP_SIGNALS):
    """Block ``signals`` in this thread while helper processes are started inside the block.

    Python's resource tracker is started first: starting it unblocks SIGINT and SIGTERM in the
    caller (a choice of the standard library), which would otherwise leave the next helper
    unprotected.
    """
    from multiprocessing import resource_tracker

    old = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        resource_tracker.ensure_running()
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _check_version() -> None:
    import megatron.core

    version = megatron.core.__version__
    if not version.startswith(SUPPORTED_MEGATRON_CORE):
        raise RuntimeError(
            f"msm_megatron._compat.checkpoint_writers was written for megatron-core "
            f"{SUPPORTED_MEGATRON_CORE}, found {version}: check how its checkpoint writer starts "
            "helper processes (dist_checkpointing/strategies/filesystem_async.py) and update this "
            "module")


def _alive(queue) -> bool:
    try:
        queue.qsize()  # one round trip to the Manager process
    except (OSError, EOFError):  # BrokenPipeError, ConnectionRefusedError, ...
        return False
    return True


def _helper_init(parent: int) -> None:
    """First thing in a helper process: ignore the stop signals (they were blocked until now,
    so none got through), and exit as soon as ``parent`` is gone."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="msm-parent-watch", daemon=True).start()


def ensure_results_queue() -> None:
    """Start (or restart, if it died) the Manager behind Megatron's write-results queue, shielded
    from stop signals. Call it before every save; it costs one round trip when all is well."""
    import multiprocessing
    from multiprocessing.managers import SyncManager

    from megatron.core.dist_checkpointing.strategies import filesystem_async

    _check_version()
    queue = filesystem_async._results_queue
    if queue is not None and _alive(queue):
        return
    # what filesystem_async.get_write_results_queue() does, plus the initializer
    manager = SyncManager(ctx=multiprocessing.get_context("spawn"))
    with shielded():
        manager.start(initializer=_helper_init, initargs=(os.getpid(),))
    filesystem_async._results_queue = manager.Queue()

