"""Megatron optimizer (AdamW, optional distributed optimizer) and LR/WD schedule.

The schedule is Megatron's ``OptimizerParamScheduler`` counted in optimizer steps: linear warmup
from 0 to ``optim.lr`` over ``warmup_steps`` (or ``warmup_fraction`` of the run, capped below the
run length), then cosine / linear decay to ``optim.min_lr`` at the last step (or constant). Its
step counter is checkpointed; its settings always come from the current config.
"""

from __future__ import annotations

import math

from msm_megatron.config import Config
from msm_megatron.models.build import PRECISION_DTYPES


def build_optimizer(cfg: Config, model_chunks: list):
    """``get_megatron_optimizer`` for AdamW with decoupled weight decay and grad clipping."""
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    o = cfg.optim
    dtype = PRECISION_DTYPES[cfg.train.precision]
    ocfg = OptimizerConfig(
        optimizer="adam", lr=o.lr, min_lr=o.min_lr, weight_decay=o.weight_decay,
        adam_beta1=o.adam_beta1, adam_beta2=o.adam_beta2, adam_eps=o.adam_eps,
        clip_grad=o.clip_grad, bf16=cfg.train.precision == "bf16",
        fp16=cfg.train.precision == "fp16", params_dtype=dtype,
        use_distributed_optimizer=cfg.parallel.distributed_optimizer,
        overlap_param_gather=cfg.parallel.overlap_param_gather,
    )
    return get_megatron_optimizer(ocfg, model_chunks)


def warmup_steps(cfg: Config, total_steps: int) -> int:
    """Warmup length in optimizer steps."""
    if cfg.optim.warmup_steps is not None:
        return cfg.optim.warmup_steps
    return min(int(math.ceil(cfg.optim.warmup_fraction * total_steps)), max(total_steps - 1, 0))


def build_scheduler(cfg: Config, optimizer, total_steps: int):
    """Megatron ``OptimizerParamScheduler`` stepping once per optimizer step."""
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    o = cfg.optim
    return OptimizerParamScheduler(
        optimizer, init_lr=0.0, max_lr=o.lr, min_lr=o.min_lr,
        lr_warmup_steps=warmup_steps(cfg, total_steps), lr_decay_steps=max(total_steps, 1),
        lr_decay_style=o.decay_style, start_wd=o.weight_decay, end_wd=o.weight_decay,
        wd_incr_steps=max(total_steps, 1), wd_incr_style="constant",
        # The config is the source of truth on resume (Megatron's default silently keeps the
        # checkpoint's lr/warmup/decay length); the trainer reports what changed.
        override_opt_param_scheduler=True, use_checkpoint_opt_param_scheduler=False,
    )
