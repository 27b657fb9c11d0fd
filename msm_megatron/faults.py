"""Fault injection for the crash-and-resume tests: kill this process at a named point.

Each subsystem reads its own variable (so a test kills exactly the process it means)::

    MSM_FAULT_KILL=during_save:4        training: shards of iteration 4 written, marker not moved
    MSM_FAULT_KILL=after_save:4         training: right after iteration 4's save completed
    MSM_GEN_FAULT_KILL=after_calls:3    LLM client: once the 3rd call of this process is cached
    MSM_GEN_FAULT_KILL=after_batch_submit   LLM client: a batch submitted, nothing collected
    MSM_EVAL_FAULT_KILL=after_samples:2 eval: after the 2nd new sample written

SIGKILL, not an exception: nothing gets to clean up, as in a real crash or an OOM kill.
"""

from __future__ import annotations

import os
import signal

TRAIN = "MSM_FAULT_KILL"
GENERATE = "MSM_GEN_FAULT_KILL"
EVAL = "MSM_EVAL_FAULT_KILL"


def kill_at(variable: str, point: str) -> None:
    """SIGKILL this process when ``$variable`` names ``point`` (e.g. ``after_save:4``)."""
    if os.environ.get(variable) == point:
        os.kill(os.getpid(), signal.SIGKILL)
