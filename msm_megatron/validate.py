"""Semantic checks of a :class:`Config` against a world size, before any process group exists.

Pure Python: no torch, no megatron. :func:`validate` collects every problem it finds and raises
one :class:`~msm_megatron.config.ConfigError` listing them all, each naming the keys involved and
a fix. :func:`derive_layout` computes the derived sizes (dp, micro-batches, steps).

Example::

    validate(cfg, world_size=16, te_available=True)
    derive_layout(cfg, 16)   # {'dp': 1, 'num_microbatches': 64, 'tokens_per_step': ..., ...}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType

from msm_megatron.config import Config, ConfigError


def _factorization(cfg: Config) -> str:
    p = cfg.parallel
    return f"tp {p.tp} × pp {p.pp} × cp {p.cp} = {p.tp * p.pp * p.cp}"


def _check_world(cfg: Config, world_size: int) -> list[str]:
    p = cfg.parallel
    sizes = {"parallel.tp": p.tp, "parallel.pp": p.pp, "parallel.cp": p.cp}
    errors = [f"{key}={val} must be ≥ 1" for key, val in sizes.items() if val < 1]
    if world_size < 1:
        errors.append(f"world size {world_size} must be ≥ 1")
    if errors:
        return errors
    model_parallel = p.tp * p.pp * p.cp
    if world_size % model_parallel:
        errors.append(
            f"world {world_size} is not divisible by {_factorization(cfg)}: "
            f"dp = world / (tp·pp·cp) must be an integer. Launch a multiple of {model_parallel} "
            f"ranks, or change parallel.tp/pp/cp so their product divides {world_size}"
        )
    return errors


def _check_heads(cfg: Config, world_size: int) -> list[str]:
    m, tp = cfg.model, cfg.parallel.tp
    if m.num_attention_heads < 1 or m.num_key_value_heads < 1:
        return ["model.num_attention_heads and model.num_key_value_heads must be ≥ 1"]
    errors = []
    if m.head_dim is None and m.hidden_size % m.num_attention_heads:
        errors.append(
            f"model.hidden_size={m.hidden_size} is not divisible by model.num_attention_heads="
            f"{m.num_attention_heads}; set model.head_dim explicitly"
        )
    if m.num_attention_heads % m.num_key_value_heads:
        errors.append(
            f"model.num_attention_heads={m.num_attention_heads} is not a multiple of "
            f"model.num_key_value_heads={m.num_key_value_heads} (GQA groups must be equal)"
        )
    valid = f"; valid parallel.tp for this model: {tp_values(m)}"
    if tp >= 1 and m.num_attention_heads % tp:
        errors.append(
            f"model.num_attention_heads={m.num_attention_heads} is not divisible by "
            f"parallel.tp={tp}; each TP rank must hold whole heads{valid}"
        )
    kv = m.num_key_value_heads
    if tp >= 1 and kv % tp and tp % kv:
        errors.append(
            f"model.num_key_value_heads={kv} and parallel.tp={tp}: the KV heads must divide "
            f"evenly across TP ranks (kv % tp == 0) or be replicated evenly (tp % kv == 0)"
            + valid
        )
    return errors


def tp_values(m) -> list[int]:
    """The tensor-parallel sizes Megatron-Core accepts for a model's heads: divisors of the
    query heads that divide the KV heads or are a multiple of them (KV heads replicated)."""
    kv = m.num_key_value_heads
    return [t for t in range(1, m.num_attention_heads + 1)
            if m.num_attention_heads % t == 0 and (kv % t == 0 or t % kv == 0)]


def _check_pipeline(cfg: Config, world_size: int) -> list[str]:
    p, layers = cfg.parallel, cfg.model.num_layers
    errors = []
    if p.pp >= 1 and layers % p.pp:
        errors.append(
            f"model.num_layers={layers} is not divisible by parallel.pp={p.pp}; "
            "pipeline stages must hold equal numbers of layers; valid parallel.pp: "
            f"{[d for d in range(1, layers + 1) if layers % d == 0]}"
        )
    if p.vpp is not None:
        if p.pp <= 1:
            errors.append(
                f"parallel.vpp={p.vpp} (interleaved pipeline) requires parallel.pp > 1; "
                "set parallel.vpp=null"
            )
        elif p.vpp < 1 or layers % (p.pp * p.vpp):
            errors.append(
                f"model.num_layers={layers} is not divisible by parallel.pp × parallel.vpp = "
                f"{p.pp} × {p.vpp}; each virtual stage must hold whole, equal layer chunks"
            )
    return errors


def _check_batch(cfg: Config, world_size: int) -> list[str]:
    p, t = cfg.parallel, cfg.train
    if t.micro_batch_size < 1 or t.global_batch_size < 1:
        return ["train.micro_batch_size and train.global_batch_size must be ≥ 1"]
    model_parallel = max(p.tp, 1) * max(p.pp, 1) * max(p.cp, 1)
    if world_size < 1 or world_size % model_parallel:
        return []  # reported by _check_world
    dp = world_size // model_parallel
    if t.global_batch_size % (t.micro_batch_size * dp):
        return [
            f"train.global_batch_size={t.global_batch_size} is not divisible by "
            f"train.micro_batch_size × dp = {t.micro_batch_size} × {dp}; "
            f"use a multiple of {t.micro_batch_size * dp}"
        ]
    return []


def _check_interleaved(cfg: Config, world_size: int) -> list[str]:
    p = cfg.parallel
    if p.vpp is None or p.pp <= 1 or _check_world(cfg, world_size) or _check_batch(cfg, world_size):
        return []
    num_mb = derive_layout(cfg, world_size)["num_microbatches"]
    if num_mb < p.pp:
        return [
            f"interleaved pipeline (parallel.vpp={p.vpp}) needs at least parallel.pp={p.pp} "
            f"micro-batches per step, got {num_mb}; raise train.global_batch_size"
        ]
    return []


def _check_precision(cfg: Config, world_size: int, te_available: bool) -> list[str]:
    t = cfg.train
    errors = []
    if t.fp8 is not None and not te_available:
        errors.append(
            f"recipe '{cfg.name}' sets train.fp8={t.fp8}, but FP8 needs Transformer Engine, which "
            "is not importable here; without it Megatron would silently train in bf16. Run in "
            "the NGC PyTorch container (it ships Transformer Engine) or set train.fp8=null"
        )
    if t.fp8 is not None and t.precision == "fp32":
        errors.append(
            f"train.fp8={t.fp8} with train.precision=fp32: FP8 runs inside a bf16 mixed-precision "
            "step; set train.precision=bf16"
        )
    return errors


def _check_te_features(cfg: Config, world_size: int, te_available: bool) -> list[str]:
    p = cfg.parallel
    errors = []
    if p.sequence_parallel and p.tp <= 1:
        errors.append(
            "parallel.sequence_parallel=true requires parallel.tp > 1 (it splits the sequence "
            "across TP ranks); set parallel.sequence_parallel=false or raise parallel.tp"
        )
    if p.sequence_parallel and not te_available:
        errors.append(
            "parallel.sequence_parallel=true is unsupported without Transformer Engine (e.g. on "
            "CPU): it needs TE's norms. Set parallel.sequence_parallel=false"
        )
    if p.cp > 1 and not te_available:
        errors.append(
            f"parallel.cp={p.cp}: context parallelism needs Transformer Engine's attention, which "
            "is not importable here; set parallel.cp=1"
        )
    if p.cp > 1 and cfg.data.seq_length % (2 * p.cp):
        errors.append(
            f"data.seq_length={cfg.data.seq_length} must be a multiple of 2 × parallel.cp = "
            f"{2 * p.cp} (context parallel splits each sequence into 2·cp chunks)"
        )
    if p.cp > 1:
        errors.append(
            f"parallel.cp={p.cp}: the trainer does not split sequences across context-parallel "
            "ranks yet (it comes with the TE/THD attention path); set parallel.cp=1"
        )
    return errors


def _check_training(cfg: Config, world_size: int) -> list[str]:
    t, o, m, p = cfg.train, cfg.optim, cfg.model, cfg.parallel
    errors = []
    if t.steps is None and t.tokens is None and t.epochs is None:
        errors.append("set a training duration: train.steps, train.tokens (a token budget) or "
                      "train.epochs (passes over data.prepared)")
    if t.steps is not None and t.steps < 0:
        errors.append(f"train.steps={t.steps} must be ≥ 0 (0 saves the initial weights only)")
    if t.tokens is not None and t.tokens < 1:
        errors.append(f"train.tokens={t.tokens} must be ≥ 1")
    if t.epochs is not None and not t.epochs > 0:
        errors.append(f"train.epochs={t.epochs} must be > 0")
    d = cfg.data
    if d.weights is not None and len(d.weights) != len(d.prepared):
        errors.append(f"data.weights has {len(d.weights)} entries for {len(d.prepared)} "
                      "data.prepared datasets")
    if cfg.data.seq_length > m.max_position_embeddings:
        errors.append(
            f"data.seq_length={cfg.data.seq_length} exceeds model.max_position_embeddings="
            f"{m.max_position_embeddings}; shorten data.seq_length"
        )
    if p.overlap_param_gather and not p.distributed_optimizer:
        errors.append(
            "parallel.overlap_param_gather=true requires parallel.distributed_optimizer=true"
        )
    if p.overlap_param_gather and not p.overlap_grad_reduce:
        errors.append(
            "parallel.overlap_param_gather=true requires parallel.overlap_grad_reduce=true"
        )
    if o.min_lr > o.lr:
        errors.append(f"optim.min_lr={o.min_lr} is larger than optim.lr={o.lr}")
    if not 0.0 <= o.warmup_fraction < 1.0:
        errors.append(f"optim.warmup_fraction={o.warmup_fraction} must be in [0, 1)")
    return errors


def parse_signals(names: list[str]) -> list:
    """``["SIGTERM", "SIGUSR1"]`` → signals; a ``ConfigError`` naming every unknown one."""
    import signal

    sigs = {name: getattr(signal, str(name), None) for name in names}
    bad = [name for name, sig in sigs.items() if not isinstance(sig, signal.Signals)]
    if bad:
        raise ConfigError(
            f"checkpoint.exit_signals: {', '.join(map(repr, bad))} "
            f"{'is not a signal' if len(bad) == 1 else 'are not signals'}; use names of the "
            "signal module, e.g. SIGTERM, SIGUSR1, SIGUSR2, SIGINT, SIGHUP")
    return list(sigs.values())


def _check_exit_signals(cfg: Config, world_size: int) -> list[str]:
    """Each of ``checkpoint.exit_signals`` must name a signal of this platform (``SIGTERM``)."""
    try:
        parse_signals(cfg.checkpoint.exit_signals)
    except ConfigError as exc:
        return [str(exc)]
    return []


def _check_switches(cfg: Config, world_size: int) -> list[str]:
    """The throughput switches (docs/gpu.md#throughput-switches)."""
    t = cfg.train
    errors = []
    if t.loss_chunk is not None and t.loss_chunk < 1:
        errors.append(f"train.loss_chunk={t.loss_chunk} must be ≥ 1 token (or null: the whole "
                      "micro-batch at once)")
    if t.loss_chunk is not None and cfg.parallel.sequence_parallel:
        errors.append("train.loss_chunk cuts the LM head along the sequence, which "
                      "parallel.sequence_parallel splits across TP ranks: set one of them off")
    if t.cuda_graphs and cfg.data.mode == "packed":
        errors.append("train.cuda_graphs=true replays fixed shapes, but packed rows change their "
                      "sequence boundaries every micro-batch: use data.mode=concat or set "
                      "train.cuda_graphs=false")
    if t.cuda_graphs and cfg.lora.rank:
        errors.append("train.cuda_graphs=true is not supported with LoRA (lora.rank > 0): set "
                      "train.cuda_graphs=false")
    if t.cuda_graphs and t.compile:
        errors.append("train.cuda_graphs and train.compile both take over each layer's call: "
                      "choose one")
    return errors


def _check_lora(cfg: Config, world_size: int, te_available: bool) -> list[str]:
    from msm_megatron.config import LORA_PROJECTIONS

    lo = cfg.lora
    if lo.rank == 0:
        return []
    errors = []
    if lo.rank < 0:
        errors.append(f"lora.rank={lo.rank} must be ≥ 0 (0 = full-parameter training)")
    unknown = [t for t in lo.targets if t not in LORA_PROJECTIONS]
    if unknown or not lo.targets:
        errors.append(f"lora.targets={lo.targets}: choose from {LORA_PROJECTIONS}")
    if lo.dropout != 0.0:
        errors.append(f"lora.dropout={lo.dropout}: only 0.0 is supported (the paper's setting)")
    if cfg.train.spec == "te" or (cfg.train.spec == "auto" and te_available):
        errors.append("LoRA adapts Megatron's local-spec linear layers: set train.spec=local "
                      "(the TE spec fuses the input norm into linear_qkv/linear_fc1)")
    if cfg.parallel.sequence_parallel:
        errors.append("LoRA does not support parallel.sequence_parallel yet: set it to false")
    if cfg.train.fp8 is not None:
        errors.append("LoRA runs on the local spec, which has no FP8: set train.fp8=null")
    return errors


def problems(cfg: Config, world_size: int, te_available: bool) -> list[str]:
    """Every problem :func:`validate` would raise for, one message each (empty: none)."""
    checks: list[Callable[[Config, int], list[str]]] = [
        _check_world,
        _check_heads,
        _check_pipeline,
        _check_batch,
        _check_interleaved,
        _check_training,
        _check_exit_signals,
        _check_switches,
    ]
    errors = [msg for check in checks for msg in check(cfg, world_size)]
    errors += _check_precision(cfg, world_size, te_available)
    errors += _check_te_features(cfg, world_size, te_available)
    errors += _check_lora(cfg, world_size, te_available)
    return errors


def validate(cfg: Config, world_size: int, te_available: bool) -> None:
    """Check ``cfg`` for a launch on ``world_size`` ranks; raise on any problem.

    Checks: the tp·pp·cp factorization of the world, head / KV-head / layer divisibility, the
    virtual pipeline, global batch vs micro batch × dp, FP8 and its Transformer Engine
    requirement, sequence parallel prerequisites, context parallel (not supported by the
    trainer yet), the training duration, sequence length vs ``max_position_embeddings``, the
    overlap options and the names in ``checkpoint.exit_signals``. Tied embeddings with pp > 1 are
    allowed (Megatron keeps a synchronized copy on the last stage). ``parallel.world_size`` is a
    planning default (for ``--dry-run``), not checked against ``world_size``: a larger launch just
    raises dp.

    Args:
        cfg: The resolved config.
        world_size: Number of ranks that will be launched.
        te_available: Whether ``transformer_engine`` is importable in the training environment.

    Raises:
        ConfigError: listing every problem found, one per line.
    """
    errors = problems(cfg, world_size, te_available)
    if len(errors) == 1:
        raise ConfigError(f"config '{cfg.name}': {errors[0]}")
    if errors:
        listing = "\n".join(f"  - {e}" for e in errors)
        raise ConfigError(f"config '{cfg.name}' has {len(errors)} problems:\n{listing}")


def duration_unit(cfg: Config) -> str | None:
    """Which duration field decides the run's length: ``steps``, ``tokens`` or ``epochs``
    (that order of precedence), or None when none is set."""
    t = cfg.train
    return next((k for k in ("steps", "tokens", "epochs") if getattr(t, k) is not None), None)


def microbatch_shape(cfg: Config) -> tuple[int, int]:
    """(sequence length, rows) of one micro-batch as the model sees it: ``micro_batch_size``
    windows of ``seq_length``, or, packed, those rows as one THD sequence of mbs·seq tokens
    (the activation shape pipeline stages exchange)."""
    seq, rows = cfg.data.seq_length, cfg.train.micro_batch_size
    return (seq * rows, 1) if cfg.data.mode == "packed" else (seq, rows)


def derive_layout(cfg: Config, world_size: int, epoch_samples: int | None = None
                  ) -> Mapping[str, int | None]:
    """Derived sizes for a launch on ``world_size`` ranks.

    Args:
        cfg: The run's config.
        world_size: Ranks of the launch.
        epoch_samples: The samples ``train.epochs`` passes over the data hold (the dataset's
            ``samples_in_epochs``); needed only when epochs decide the duration.

    Returns:
        A read-only mapping (the layout is decided once per launch, never patched later):
        ``dp``, ``num_microbatches`` (global / (micro·dp)), ``tokens_per_step``
        (global batch × seq length) and ``total_steps`` (``train.steps`` if set, else
        ``ceil(train.tokens / tokens_per_step)``, else ``ceil(epoch_samples / global batch)``;
        None when no duration is set, or epochs decide it and ``epoch_samples`` is unknown).

    Raises:
        ConfigError: the world is not divisible by tp·pp·cp, or the global batch by micro × dp.
    """
    p, t = cfg.parallel, cfg.train
    errors = _check_world(cfg, world_size) or _check_batch(cfg, world_size)
    if errors:
        raise ConfigError(errors[0])
    dp = world_size // (p.tp * p.pp * p.cp)
    tokens_per_step = t.global_batch_size * cfg.data.seq_length
    return MappingProxyType({
        "dp": dp,
        "num_microbatches": t.global_batch_size // (t.micro_batch_size * dp),
        "tokens_per_step": tokens_per_step,
        "total_steps": total_steps(cfg, epoch_samples),
    })


def total_steps(cfg: Config, epoch_samples: int | None = None) -> int | None:
    """The run's optimizer steps (see :func:`derive_layout`)."""
    t = cfg.train
    unit = duration_unit(cfg)
    if unit == "steps":
        return t.steps
    if unit == "tokens":
        return math.ceil(t.tokens / (t.global_batch_size * cfg.data.seq_length))
    if unit == "epochs" and epoch_samples is not None:
        return math.ceil(epoch_samples / t.global_batch_size)
    return None
