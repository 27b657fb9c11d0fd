"""Graceful stop on preemption signals (SIGUSR1 from Slurm's ``--signal=USR1@N`` — with ``B:``
only the batch shell gets it and must forward it to the tasks — ``scancel``'s SIGTERM).

The handler only sets a flag; the trainer checks it at step boundaries, agrees across ranks
(so all ranks save together), saves a checkpoint and exits with :data:`REQUEUE_EXIT_CODE` so a
requeue wrapper (``slurm/``) can tell "stopped to be resumed" from success or failure.
"""

from __future__ import annotations

import signal

import torch
import torch.distributed as dist


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
