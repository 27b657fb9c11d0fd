"""Training metrics: console progress, ``metrics.jsonl``, TensorBoard, optional W&B.

Only global rank 0 writes, once every ``log.interval`` steps (and at the last step): the loss is the
mean over the interval's steps, lr and grad norm are the last step's, throughput is over the
interval. MFU = achieved model FLOP/s per GPU / ``log.peak_tflops`` (989 for an
H100 SXM, dense bf16), with model FLOPs per token from
:func:`msm_megatron.flops.model_flops_per_token`
(the 6·N + attention formula documented there; recompute FLOPs are not counted, as is usual).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from msm_megatron.config import Config


def read_metrics(run_dir: str | Path) -> dict[int, dict]:
    """A run's ``metrics.jsonl`` by step; a resumed run re-logs steps and the later record wins."""
    records = {}
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        records[rec["step"]] = rec
    return records


def peak_memory_gib() -> float:
    """Peak accelerator memory (GPU) or peak resident set size (CPU), in GiB."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class MetricsLogger:
    """Write one record per logged step to every configured sink."""

    def __init__(self, cfg: Config, run_dir: Path, total_steps: int, start_step: int,
                 flops_per_token: float, world_size: int, enabled: bool):
        self.cfg, self.enabled = cfg, enabled
        self.flops_per_token, self.world_size = flops_per_token, world_size
        self._last_time = time.perf_counter()
        self._pending: list[float] = []
        self._timed_steps = 0
        self.total_steps = total_steps
        self._tb = self._bar = self._wandb = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(run_dir / "metrics.jsonl", "a", buffering=1)
        if cfg.log.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        if cfg.log.wandb_project:
            import wandb

            self._wandb = wandb.init(project=cfg.log.wandb_project, name=cfg.name, resume="allow")
        if cfg.log.progress_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, desc=cfg.name, unit="step",
                             file=sys.stdout, dynamic_ncols=True)

    def step(self, step: int, loss: float, lr: float, grad_norm: float | None, tokens: int,
             consumed_tokens: int) -> dict | None:
        """Record one optimizer step; returns the emitted record at interval ends, else None."""
        self._pending.append(loss)
        self._timed_steps += 1
        if step % self.cfg.log.interval and step != self.total_steps:
            return None
        steps, loss = len(self._pending), sum(self._pending) / len(self._pending)
        self._pending = []
        now = time.perf_counter()
        dt = max(now - self._last_time, 1e-9)
        self._last_time = now
        tok_s = tokens * max(self._timed_steps, 1) / dt
        self._timed_steps = 0
        tflops = tok_s * self.flops_per_token / self.world_size / 1e12
        rec = {"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
               "tokens_per_s": tok_s, "tflops_per_gpu": tflops,
               "mfu": tflops / self.cfg.log.peak_tflops, "consumed_tokens": consumed_tokens,
               "mem_gib": peak_memory_gib()}
        if not self.enabled:
            return rec
        self._jsonl.write(json.dumps(rec) + "\n")
        if self._tb:
            for key, value in rec.items():
                if key != "step" and value is not None:
                    self._tb.add_scalar(f"train/{key}", value, step)
        if self._wandb:
            self._wandb.log(rec, step=step)
        self._show(rec, steps)
        return rec

    def _show(self, rec: dict, steps: int) -> None:
        gn = rec["grad_norm"]
        text = (f"loss {rec['loss']:.4f} | lr {rec['lr']:.2e} | gnorm "
                f"{gn if gn is None else f'{gn:.3f}'} | {rec['tokens_per_s']:.0f} tok/s | "
                f"MFU {100 * rec['mfu']:.1f}% | mem {rec['mem_gib']:.2f} GiB")
        if self._bar is not None:
            self._bar.update(steps)
            self._bar.set_postfix_str(text, refresh=True)
        else:
            print(f"step {rec['step']} | {text}", flush=True)

    def restart_clock(self) -> None:
        """Exclude time spent outside training steps (e.g. checkpoint saves) from throughput.

        The next record's throughput then covers only the steps after this call.
        """
        self._last_time = time.perf_counter()
        self._timed_steps = 0

    def message(self, text: str) -> None:
        """A line of text that does not break the progress bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        if self._tb:
            self._tb.close()
        self._jsonl.close()
