"""The training loop: a thin layer over Megatron-Core's ``get_forward_backward_func``.

The trainer owns the loop, its cadence (log / checkpoint), resume and shutdown. Everything that
computes — model, pipeline schedules, gradient reduction, optimizer, checkpoint I/O — is
Megatron-Core. Run it through the CLI::

    msm train qwen3_toy_midtrain                      # one process
    msm train qwen3_toy_midtrain --nproc 2 parallel.tp=2   # torchrun, 2 ranks
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist

from msm_megatron import faults
from msm_megatron._compat.te import te_available
from msm_megatron.config import Config, ConfigError, save_yaml
from msm_megatron.distributed import init_distributed, read_launch_env
from msm_megatron.flops import lora_flops_per_token, model_flops_per_token
from msm_megatron.models.build import build_model_chunks
from msm_megatron.models.lm_head import chunked_loss_processor
from msm_megatron.models.weights import load_model_weights
from msm_megatron.run_files import (
    EXIT_STATUS,
    REQUEUE_EXIT_CODE,
    read_chain,
    read_exit_status,
    write_exit_status,
)
from msm_megatron.train import checkpoint as ckpt
from msm_megatron.train import lora_state
from msm_megatron.train.metrics import MetricsLogger
from msm_megatron.train.optim import build_optimizer, build_scheduler
from msm_megatron.train.preemption import PreemptionHandler
from msm_megatron.train.step import batch_iterator, forward_step
from msm_megatron.validate import derive_layout, microbatch_shape, validate


@dataclass
class TrainResult:
    """What a run did: per-step records (rank 0 has them all), final counters, exit code."""

    records: list[dict] = field(default_factory=list)
    state: ckpt.TrainState = field(default_factory=ckpt.TrainState)
    exit_code: int = 0
    stopped_by: str | None = None


def wrap_for_training(cfg: Config, chunks: list) -> list:
    """Mixed-precision wrapper (bf16/fp16) and Megatron DDP around each model chunk."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.transformer.module import Float16Module

    tconf = chunks[0].config
    ddp_cfg = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True, overlap_grad_reduce=cfg.parallel.overlap_grad_reduce,
        overlap_param_gather=cfg.parallel.overlap_param_gather,
        use_distributed_optimizer=cfg.parallel.distributed_optimizer, check_for_nan_in_grad=True,
    )
    wrapped = []
    for i, chunk in enumerate(chunks):
        if cfg.train.precision != "fp32":
            chunk = Float16Module(tconf, chunk)
        ddp = DistributedDataParallel(config=tconf, ddp_config=ddp_cfg, module=chunk,
                                      disable_bucketing=i > 0)
        ddp.broadcast_params()
        wrapped.append(ddp)
    return wrapped


def _install_schedule_hooks(cfg: Config, chunks: list, optimizer) -> None:
    """The callbacks Megatron's schedules expect on the model config (as Megatron-LM sets them)."""
    from megatron.core.distributed import finalize_model_grads

    tconf = chunks[0].config
    tconf.grad_scale_func = optimizer.scale_loss
    tconf.finalize_model_grads_func = finalize_model_grads
    one = len(chunks) == 1
    if cfg.parallel.overlap_grad_reduce:
        tconf.no_sync_func = chunks[0].no_sync if one else [c.no_sync for c in chunks]
        tconf.grad_sync_func = (chunks[0].start_grad_sync if one
                                else [c.start_grad_sync for c in chunks])
    if cfg.parallel.overlap_param_gather:
        tconf.param_sync_func = (chunks[0].start_param_sync if one
                                 else [c.start_param_sync for c in chunks])


def _flops_per_token(cfg: Config) -> float:
    """The MFU numerator: full-parameter, or frozen base + adapters (LoRA)."""
    if cfg.lora.rank:
        return lora_flops_per_token(cfg.model, cfg.data.seq_length, cfg.lora.rank,
                                    cfg.lora.targets)
    return model_flops_per_token(cfg.model, cfg.data.seq_length)


def _reduce_loss(losses: list[dict]) -> float:
    """Token-weighted mean loss of the global batch, identical on every rank."""
    total = torch.zeros(2, dtype=torch.float64)
    for item in losses:
        total += item["lm loss"].double().cpu()
    if torch.cuda.is_available():
        total = total.cuda()
    dist.all_reduce(total)  # every TP rank of the last stage reports the same sum: ratio unchanged
    return (total[0] / total[1].clamp(min=1)).item()


class Trainer:
    """Builds everything for a :class:`Config` and runs the loop."""

    def __init__(self, cfg: Config, dataset=None, signals: PreemptionHandler | None = None):
        """Validate, build process groups, model, optimizer; restore from a checkpoint.

        Args:
            cfg: the run's config.
            dataset: an object with ``batch(sample_indices) -> dict of tensors`` (tokens,
                labels, loss_mask; optionally position_ids and cu_seqlens for packed rows) to
                use instead of the one ``data`` describes (tests).
            signals: the stop-signal handler, installed by the caller as early as it can (``msm
                train`` does before anything slow); by default one is installed by ``fit``.
        """
        self.signals = signals
        launch = read_launch_env()
        validate(cfg, launch.world_size, te_available())  # before any process group exists
        from msm_megatron.data.datasets import build_dataset, epoch_samples

        # bad data fails here, before any process group exists
        self.dataset = dataset or build_dataset(cfg.data, cfg.model.vocab_size)
        self.cfg = cfg
        self.layout = derive_layout(cfg, launch.world_size, epoch_samples(cfg, self.dataset))
        torch.manual_seed(cfg.train.seed)
        init_distributed(cfg.parallel, cfg.train.seed)
        self.forward_step = partial(forward_step, output_processor=(
            chunked_loss_processor(cfg.train.loss_chunk) if cfg.train.loss_chunk else None))
        self.run_dir = Path(cfg.train.run_dir)
        self.ckpt_root = self.run_dir / "checkpoints"
        self.chunks = wrap_for_training(cfg, build_model_chunks(cfg))
        self.optimizer = build_optimizer(cfg, self.chunks)
        self.total_steps = self.layout["total_steps"]
        self.scheduler = build_scheduler(cfg, self.optimizer, self.total_steps)
        _install_schedule_hooks(cfg, self.chunks, self.optimizer)
        self.notes: list[str] = []
        self.state = self._restore()
        self._started_at = self.state.iteration
        self._refuse_requeue_loop()
        # Iteration of this run's newest checkpoint (scheduled or complete); None until one exists.
        self._last_saved = self.state.iteration if self._resumed else None
        self.async_saves = ckpt.AsyncSaves() if cfg.checkpoint.async_save else None

    def _refuse_requeue_loop(self) -> None:
        """A run stopped for a requeue must have saved progress: if the previous attempt started
        at this same step and was stopped without a newer checkpoint, a requeue would loop."""
        last = read_exit_status(self.run_dir)
        if (last and last.get("exit_code") == REQUEUE_EXIT_CODE
                and last.get("started_at") == self.state.iteration):
            raise ConfigError(
                f"{self.run_dir}: the previous attempt also started at step {self.state.iteration}"
                f" and was stopped ({last.get('stopped_by')}, at step {last.get('iteration')}) "
                "without saving a newer checkpoint, so requeueing would repeat it forever. Check "
                "checkpoint.save_on_exit (must be true for requeued jobs) and that the job has "
                f"time to save before it is killed; then delete {self.run_dir / EXIT_STATUS} "
                "and rerun.")

    def _restore(self) -> ckpt.TrainState:
        latest = ckpt.latest_iteration(self.ckpt_root)
        if latest is not None and not self.cfg.checkpoint.resume:
            raise ConfigError(
                f"{self.ckpt_root} already holds checkpoints (latest iteration {latest}) and "
                "checkpoint.resume=false: use a fresh train.run_dir (checkpoint.load=<dir> to "
                "start from those weights) or checkpoint.resume=true to continue that run")
        self._resumed = latest is not None
        lora = bool(self.cfg.lora.rank)
        if latest is not None:
            path = ckpt.iter_dir(self.ckpt_root, latest)
            if lora:  # the checkpoint holds adapters: rebuild the base they sit on first
                lora_state.restore_base(self.chunks, read_chain(path))
            self.notes += ckpt.resume_changes(path, self.cfg, self.total_steps)
            return ckpt.load(self.cfg, self.chunks, self.optimizer, self.scheduler, path)
        chain = {"base": None, "merged": []}
        if self.cfg.checkpoint.load:
            source = ckpt.resolve_load(self.cfg, self.run_dir)
            if lora:
                chain, note = lora_state.start(self.cfg, self.chunks, source)
                self.notes.append(note)
            else:
                load_model_weights(self.chunks, source)
                self.notes.append(f"initialised model weights from {source}")
        if lora:
            lora_state.write_chain(self.ckpt_root, chain)
        return ckpt.TrainState()

    def _train_step(self) -> tuple[float, float | None, float]:
        from megatron.core import parallel_state as ps
        from megatron.core.pipeline_parallel import get_forward_backward_func

        mbs, dp = self.cfg.train.micro_batch_size, self.layout["dp"]
        num_micro = self.layout["num_microbatches"]
        for chunk in self.chunks:
            chunk.zero_grad_buffer()
        self.optimizer.zero_grad()
        iters = [batch_iterator(self.dataset, self.state.consumed_samples, num_micro, mbs, dp,
                                ps.get_data_parallel_rank()) for _ in self.chunks]
        seq, shape_mbs = microbatch_shape(self.cfg)
        losses = get_forward_backward_func()(
            forward_step_func=self.forward_step,
            data_iterator=iters if len(iters) > 1 else iters[0], model=self.chunks,
            num_microbatches=num_micro, seq_length=seq, micro_batch_size=shape_mbs,
            forward_only=False,
        )
        lr = self.optimizer.param_groups[0]["lr"]  # the rate this step applies
        _, grad_norm, _ = self.optimizer.step()
        self.scheduler.step(increment=1)
        return _reduce_loss(losses), grad_norm, lr

    def fit(self) -> TrainResult:
        """Train to ``total_steps`` (or until a preemption signal); save and report."""
        cfg, state, result = self.cfg, self.state, TrainResult()
        rank0 = dist.get_rank() == 0
        if rank0:
            save_yaml(cfg, self.run_dir / "config.yaml")
        logger = MetricsLogger(cfg, self.run_dir, self.total_steps, state.iteration,
                               _flops_per_token(cfg),
                               dist.get_world_size(), enabled=rank0)
        signals = self.signals or PreemptionHandler(cfg.checkpoint.exit_signals)
        logger.message(self._banner())
        for note in self.notes:
            logger.message(note)
        tokens_per_step = self.layout["tokens_per_step"]
        try:
            while state.iteration < self.total_steps:
                loss, grad_norm, lr = self._train_step()
                state.iteration += 1
                state.consumed_samples += cfg.train.global_batch_size
                state.consumed_tokens += tokens_per_step
                record = logger.step(state.iteration, loss, lr, grad_norm, tokens_per_step,
                                     state.consumed_tokens)
                if record is not None:
                    result.records.append(record)
                if rank0:
                    faults.hold_at(f"step:{state.iteration}")
                if self.async_saves is not None:
                    self.async_saves.poll()
                interval = cfg.checkpoint.save_interval
                if interval and state.iteration % interval == 0:
                    self._save(logger)
                if state.iteration < self.total_steps and signals.should_stop():
                    result.stopped_by = signals.received or "signal on another rank"
                    if cfg.checkpoint.save_on_exit and self._last_saved != state.iteration:
                        self._save(logger)
                    result.exit_code = REQUEUE_EXIT_CODE
                    logger.message(f"stopped by {result.stopped_by} at step {state.iteration}; "
                                   f"exit {REQUEUE_EXIT_CODE} (resume with the same command)")
                    break
            else:
                if self._last_saved != state.iteration:
                    self._save(logger)  # the final state (iteration 0 = the initial weights)
            if self.async_saves is not None:
                self.async_saves.wait()
        finally:
            if signals is not self.signals:
                signals.close()
            logger.close()
        result.state = state
        if rank0:
            write_exit_status(self.run_dir, result.exit_code, result.stopped_by, state.iteration,
                              started_at=self._started_at)
        return result

    def _banner(self) -> str:
        from msm_megatron.flops import param_count

        p, lay = self.cfg.parallel, self.layout
        start = (f"resuming at step {self.state.iteration}" if self.state.iteration
                 else "starting at step 0")
        return (f"{self.cfg.name}: {param_count(self.cfg.model) / 1e6:.1f}M params | world "
                f"{dist.get_world_size()} = tp {p.tp} × pp {p.pp} × cp {p.cp} × dp {lay['dp']}"
                f"{f' (vpp {p.vpp})' if p.vpp else ''} | {self.total_steps} steps × "
                f"{lay['tokens_per_step']} tokens | {start} | run dir {self.run_dir}")

    def _save(self, logger: MetricsLogger) -> None:
        path = ckpt.save(self.cfg, self.chunks, self.optimizer, self.scheduler, self.state,
                         self.ckpt_root, self.async_saves)
        self._last_saved = self.state.iteration
        logger.restart_clock()
        verb = "saving (async)" if self.async_saves is not None else "saved"
        logger.message(f"{verb} checkpoint {path}")
