"""Graceful stop on the signals clusters and terminals send to stop a job.

Slurm sends SIGUSR1 (``--signal=USR1@N``; with ``B:`` only the batch shell gets it and forwards
it), ``scancel`` and the time limit send SIGTERM, a terminal sends SIGINT (Ctrl-C); all of them
reach every process of the job step or process group. The handler is installed when ``msm train``
starts, before anything slow, and only records the signal; the trainer checks it at step
boundaries, agrees across ranks (so all ranks save together), finishes the step, saves a
checkpoint and exits with :data:`~msm_megatron.run_files.REQUEUE_EXIT_CODE` so a requeue wrapper
(``slurm/``) can tell "stopped to be resumed" from success or failure. A second Ctrl-C stops at
once (``KeyboardInterrupt``). The helper processes of checkpoint saves are shielded from these
signals (:mod:`msm_megatron._compat.checkpoint_writers`).
"""

from __future__ import annotations

import signal

from msm_megatron.validate import parse_signals


class PreemptionHandler:
    """Record the first of the configured signals; restore the old handlers on ``close``."""

    def __init__(self, signal_names: list[str]):
        self.received: str | None = None
        self._old = {sig: signal.signal(sig, self._handle) for sig in parse_signals(signal_names)}

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.received == name == "SIGINT":  # Ctrl-C twice: the user wants out now
            raise KeyboardInterrupt
        self.received = self.received or name

    def should_stop(self) -> bool:
        """True on every rank when any rank received a signal (a collective call)."""
        import torch
        import torch.distributed as dist

        flag = torch.tensor([1.0 if self.received else 0.0])
        if dist.is_initialized():
            if dist.get_backend() == "nccl":
                flag = flag.cuda()
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)

    def close(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}
