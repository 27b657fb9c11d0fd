"""Graceful stop on preemption signals (SIGUSR1 from Slurm's ``--signal=USR1@N`` — with ``B:``
only the batch shell gets it and must forward it to the tasks — ``scancel``'s SIGTERM).

The handler only sets a flag; the trainer checks it at step boundaries, agrees across ranks
(so all ranks save together), saves a checkpoint and exits with :data:`REQUEUE_EXIT_CODE` so a
requeue wrapper (``slurm/``) can tell "stopped to be resumed" from success or failure.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist

REQUEUE_EXIT_CODE = 75  # EX_TEMPFAIL: "try again later"
EXIT_STATUS = "exit_status.json"


def write_exit_status(run_dir: str | Path, exit_code: int, stopped_by: str | None,
                      iteration: int) -> None:
    """Record how a run ended (rank 0), for launchers that lose the ranks' exit codes."""
    path = Path(run_dir) / EXIT_STATUS
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"exit_code": exit_code, "stopped_by": stopped_by,
                               "iteration": iteration, "time": time.time()}))
    os.replace(tmp, path)


def read_exit_status(run_dir: str | Path) -> dict | None:
    """The last recorded end of a run in ``run_dir`` (None if there is none)."""
    path = Path(run_dir) / EXIT_STATUS
    return json.loads(path.read_text()) if path.exists() else None


class PreemptionHandler:
    """Record the first of the configured signals; restore the old handlers on ``close``."""

    def __init__(self, signal_names: list[str]):
        self.received: str | None = None
        self._old = {}
        for name in signal_names:
            sig = getattr(signal, name, None)
            if not isinstance(sig, signal.Signals):
                raise ValueError(f"checkpoint.exit_signals: unknown signal {name!r} (e.g. SIGUSR1)")
            self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.received = self.received or signal.Signals(signum).name

    def should_stop(self) -> bool:
        """True on every rank when any rank received a signal (a collective call)."""
        flag = torch.tensor([1.0 if self.received else 0.0])
        if dist.is_initialized():
            if dist.get_backend() == "nccl":
                flag = flag.cuda()
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)

    def close(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
