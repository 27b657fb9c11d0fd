"""Fault injection for the crash-and-resume tests: kill this process at a named point.

Each subsystem reads its own variable (so a test kills exactly the process it means)::

    MSM_FAULT_KILL=during_save:4        training: shards of iteration 4 written, marker not moved
    MSM_FAULT_KILL=after_save:4         training: right after iteration 4's save completed
    MSM_GEN_FAULT_KILL=after_calls:3    LLM client: once the 3rd call of this process is cached
    MSM_GEN_FAULT_KILL=after_batch_submit   LLM client: a batch submitted, nothing collected
    MSM_EVAL_FAULT_KILL=after_samples:2 eval: after the 2nd new sample written

SIGKILL, not an exception: nothing gets to clean up, as in a real crash or an OOM kill.

A fault may also target one rank: ``MSM_FAULT_KILL=after_save:10@rank1``.

Signal tests hold a run at a point instead, so that the test can deliver real signals exactly
there, the way a cluster would (to the batch script, to the whole job step)::

    MSM_FAULT_HOLD=step:3,after_save:10  MSM_FAULT_HOLD_DIR=/tmp/holds

Rank 0 writes ``<dir>/<point>.held`` at each listed point and waits until the test deletes it;
each point holds once per directory (``<point>.done`` records it), so a requeued or resumed run
passes the points it already held. A stop signal that arrives during a hold is noted in
``<point>.signalled`` (its name), so a test can release the hold once the signal has really
reached the rank rather than after a guessed delay.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

TRAIN = "MSM_FAULT_KILL"
GENERATE = "MSM_GEN_FAULT_KILL"
EVAL = "MSM_EVAL_FAULT_KILL"
HOLD = "MSM_FAULT_HOLD"
HOLD_DIR = "MSM_FAULT_HOLD_DIR"
HOLD_LIMIT_S = 900  # a hold nobody releases ends here, so a broken test cannot hang a job


def kill_at(variable: str, point: str, rank: int | None = None) -> None:
    """SIGKILL this process when ``$variable`` names ``point`` (e.g. ``after_save:4``), or
    ``point@rank<rank>`` for this process's ``rank``."""
    wanted = os.environ.get(variable)
    if wanted == point or (rank is not None and wanted == f"{point}@rank{rank}"):
        os.kill(os.getpid(), signal.SIGKILL)


def hold_at(point: str) -> None:
    """Wait at ``point`` while ``$MSM_FAULT_HOLD_DIR/<point>.held`` exists (see above); signal
    handlers run meanwhile."""
    if point not in os.environ.get(HOLD, "").split(","):
        return
    folder = Path(os.environ.get(HOLD_DIR, "."))
    held, done = folder / f"{point}.held", folder / f"{point}.done"
    if done.exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    done.write_text(str(os.getpid()))
    noted = _note_signals(folder / f"{point}.signalled")  # before the test can see the hold
    held.write_text(str(os.getpid()))
    try:
        end = time.monotonic() + HOLD_LIMIT_S
        while held.exists() and time.monotonic() < end:
            time.sleep(0.05)
    finally:
        for sig, old in noted.items():
            signal.signal(sig, old)


def _note_signals(note: Path) -> dict:
    """Chain a handler that writes the signal's name to ``note`` before the installed handler
    of each stop signal runs; return the old handlers."""
    noted = {}
    for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
        old = signal.getsignal(sig)
        if not callable(old):
            continue

        def handler(signum, frame, old=old):
            note.write_text(signal.Signals(signum).name)
            old(signum, frame)

        noted[sig] = old
        signal.signal(sig, handler)
    return noted
