"""Per-GPU memory estimate and the ``--dry-run`` report, from the config alone (no torch).

Example::

    msm train qwen3_32b_midtrain --dry-run          # prints dry_run_report(cfg, 16)

Assumptions (stated so the numbers can be checked and argued with):

* **Weights / grads / optimizer** follow Megatron's mixed precision: with bf16 or fp16 each
  parameter costs 2 bytes (bf16 weight) + 4 (fp32 main grad) + 12 (fp32 master copy + Adam m and
  v); with fp32 training 4 + 4 + 8 (the weight is its own master). The distributed optimizer shards
  the 12 (or 8) optimizer bytes over the dp ranks; grads and weights stay whole.
* **Parameters per GPU** are those of the largest pipeline stage divided by tp: the first stage
  holds the (padded) embedding, the last the final norm and the LM head (a copy of the embedding
  when tied and pp > 1). Norms and biases are counted as if TP-sharded (they are tiny).
* **Activations** use Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
  Transformer Models"), bytes per layer for a micro-batch of ``b`` sequences of ``s`` tokens,
  hidden ``h``, ``a`` heads, tensor parallel ``t``: ``s·b·h·(10 + 24/t + 5·a·s/(h·t))`` without
  sequence parallel, ``s·b·h·(34/t + 5·a·s/(h·t))`` with it. The ``5·a·s/h`` term is the
  materialized attention matrix: it vanishes with fused/flash attention (Transformer Engine's
  kernels, assumed by default as on the NGC container) and with selective recompute. Megatron's
  local spec without TE materializes it: pass ``flash_attention=False`` for that case. Full
  recompute keeps only each layer's
  input (``2·s·b·h`` bytes, ÷ t with sequence parallel) plus the working set of one recomputed group
  of ``train.recompute_num_layers`` layers. The constants are for a GPT block with 2-byte
  activations; fp32 training doubles them. Context parallel divides ``s`` by cp.
* **Pipeline**: with 1F1B the first stage holds ``min(pp, micro-batches)`` micro-batches in
  flight; the interleaved schedule multiplies that by ``1 + (pp − 1)/(pp·vpp)``.
* **Logits**: ``s·b·V/t`` values × 12 bytes on the last stage: the LM head's output (2 bytes), the
  fp32 copy the loss makes (4), the softmax it saves for backward (4) and the logits' gradient
  (2). Measured on an H100 (``bench/gpu/train_throughput.py``), counting the logits at 4 bytes
  left Qwen3-0.6B at seq 4096 23% under its peak; at 12 the estimate is within a few percent.
* The total adds the worst stage of each term (conservative when pp > 1) and leaves out the
  CUDA context, NCCL buffers and allocator fragmentation (typically 3–8 GiB).
"""

from __future__ import annotations

import math

from msm_megatron.config import Config, ConfigError
from msm_megatron.flops import (
    layer_params,
    model_flops_per_token,
    param_count,
    projection_shapes,
)
from msm_megatron.models.vocab import padded_vocab_size
from msm_megatron.validate import derive_layout, microbatch_shape, problems

GIB = 1024**3
H100_GIB = 80.0
RECOMPUTE_MODES = ("none", "selective", "full")


def params_per_gpu(cfg: Config) -> int:
    """Parameters held by one GPU of the largest pipeline stage (÷ tp)."""
    m, p = cfg.model, cfg.parallel
    layers = (m.num_layers // p.pp) * layer_params(m)
    embedding = padded_vocab_size(m, p.tp) * m.hidden_size
    if p.pp == 1:
        largest = layers + embedding + m.hidden_size + (0 if m.tie_word_embeddings else embedding)
    else:
        largest = layers + embedding + m.hidden_size  # first: embedding; last: norm + head
    return math.ceil(largest / p.tp)


def adapter_params_per_gpu(cfg: Config) -> int:
    """LoRA adapter parameters one GPU holds: column-parallel layers (q, k, v, gate, up) keep
    A whole and 1/tp of B; row-parallel ones (o, down) 1/tp of A and B whole."""
    r, tp = cfg.lora.rank, cfg.parallel.tp
    shapes = projection_shapes(cfg.model)
    row = {"o_proj", "down_proj"}
    per_layer = sum(r * (i / tp + o) if t in row else r * (i + o / tp)
                    for t in cfg.lora.targets for i, o in [shapes[t]])
    return math.ceil(per_layer * cfg.model.num_layers / cfg.parallel.pp)


def _state_bytes(precision: str) -> tuple[int, int, int]:
    """Bytes per parameter for (weights, grads, optimizer state)."""
    return (4, 4, 8) if precision == "fp32" else (2, 4, 12)


def _layer_activation_bytes(cfg: Config, keep_attention_matrix: bool) -> float:
    """Korthikanti bytes per layer for one micro-batch (see the module docstring)."""
    m, p = cfg.model, cfg.parallel
    s, b, h, t = cfg.data.seq_length / p.cp, cfg.train.micro_batch_size, m.hidden_size, p.tp
    linear = 34 / t if p.sequence_parallel else 10 + 24 / t
    quadratic = 5 * m.num_attention_heads * s / (h * t) if keep_attention_matrix else 0.0
    scale = 2.0 if cfg.train.precision == "fp32" else 1.0
    return s * b * h * (linear + quadratic) * scale


def activation_bytes(
    cfg: Config, world_size: int, recompute: str, flash_attention: bool = True
) -> int:
    """Activation memory of the first pipeline stage for a recompute mode.

    Args:
        cfg: The config (its own ``train.recompute`` is ignored here).
        world_size: Ranks, to derive the number of micro-batches.
        recompute: ``"none"``, ``"selective"`` or ``"full"``.
        flash_attention: Whether attention runs a fused kernel that never stores ``s × s``.

    Returns:
        Bytes per GPU.
    """
    m, p = cfg.model, cfg.parallel
    layers = m.num_layers // p.pp
    in_flight = min(p.pp, derive_layout(cfg, world_size)["num_microbatches"])
    if p.vpp and p.pp > 1:
        in_flight *= 1 + (p.pp - 1) / (p.pp * p.vpp)
    per_layer = _layer_activation_bytes(cfg, keep_attention_matrix=not flash_attention)
    if recompute == "none":
        stored = per_layer
    elif recompute == "selective":
        stored = _layer_activation_bytes(cfg, keep_attention_matrix=False)
    elif recompute == "full":
        s, b = cfg.data.seq_length / p.cp, cfg.train.micro_batch_size
        scale = 2.0 if cfg.train.precision == "fp32" else 1.0
        stored = 2 * s * b * m.hidden_size * scale / (p.tp if p.sequence_parallel else 1)
        group = min(cfg.train.recompute_num_layers, layers)
        return int(stored * layers * in_flight + per_layer * group)
    else:
        raise ValueError(f"unknown recompute mode {recompute!r}; expected {RECOMPUTE_MODES}")
    return int(stored * layers * in_flight)


LOGIT_BYTES = 12  # bf16 output + fp32 copy + saved fp32 softmax + bf16 gradient


def logits_bytes(cfg: Config) -> int:
    """Logits of one micro-batch in the loss on the last stage: s·b·V_padded/tp · 12 bytes, or
    those of one ``train.loss_chunk`` of tokens when the LM head runs chunked."""
    p = cfg.parallel
    vocab = padded_vocab_size(cfg.model, p.tp)
    seq, rows = microbatch_shape(cfg)  # the loss runs over [s, b]
    seq /= p.cp
    if cfg.train.loss_chunk:  # chunks are cut along s
        seq = min(seq, cfg.train.loss_chunk)
    return int(seq * rows * vocab / p.tp * LOGIT_BYTES)


def estimate_memory(cfg: Config, world_size: int, flash_attention: bool = True) -> dict:
    """Estimate per-GPU memory in bytes for ``cfg`` on ``world_size`` ranks.

    Returns:
        A dict of ints: ``params_per_gpu`` (a count), ``dp``, and bytes for ``weights``,
        ``grads``, ``optimizer_replicated``, ``optimizer_distributed`` (÷ dp), ``optimizer``
        (the one ``parallel.distributed_optimizer`` selects), ``activations_none``,
        ``activations_selective``, ``activations_full``, ``activations`` (``train.recompute``),
        ``logits`` and ``total`` (weights + grads + optimizer + activations + logits).
    """
    dp = derive_layout(cfg, world_size)["dp"]
    n = params_per_gpu(cfg)
    w_bytes, g_bytes, o_bytes = _state_bytes(cfg.train.precision)
    out: dict = {"params_per_gpu": n, "dp": dp, "weights": n * w_bytes, "grads": n * g_bytes}
    trained = n
    if cfg.lora.rank:  # frozen base: weights only; adapters: the usual mixed-precision bytes
        trained = adapter_params_per_gpu(cfg)
        out.update(adapter_params_per_gpu=trained, weights=(n + trained) * w_bytes,
                   grads=g_bytes * trained)
    out["optimizer_replicated"] = trained * o_bytes
    out["optimizer_distributed"] = math.ceil(trained * o_bytes / dp)
    dist = cfg.parallel.distributed_optimizer
    out["optimizer"] = out["optimizer_distributed" if dist else "optimizer_replicated"]
    for mode in RECOMPUTE_MODES:
        out[f"activations_{mode}"] = activation_bytes(cfg, world_size, mode, flash_attention)
    out["activations"] = out[f"activations_{cfg.train.recompute}"]
    out["logits"] = logits_bytes(cfg)
    out["total"] = sum(out[k] for k in ("weights", "grads", "optimizer", "activations", "logits"))
    return out


def _header_lines(cfg: Config, world_size: int) -> list[str]:
    p, t, m = cfg.parallel, cfg.train, cfg.model
    samples, epoch_note = epoch_budget(cfg)
    layout = derive_layout(cfg, world_size, samples)
    seq, tps = cfg.data.seq_length, layout["tokens_per_step"]
    flops = model_flops_per_token(m, seq)
    if t.steps is not None:
        duration = f"{t.steps} steps (train.steps) = {t.steps * tps:,} tokens"
    elif t.tokens is not None:
        duration = f"{t.tokens:,} tokens (train.tokens) -> {layout['total_steps']} steps"
    elif t.epochs is not None:
        duration = f"{t.epochs:g} epoch(s) (train.epochs) of data.prepared{epoch_note}"
        if layout["total_steps"] is not None:
            duration += f" -> {layout['total_steps']} steps"
    else:
        duration = "not set (train.steps, train.tokens or train.epochs)"
    vocab = padded_vocab_size(m, p.tp)
    return [
        f"{cfg.name}: {m.arch}, {_count(param_count(m))} params, {m.num_layers} layers, "
        f"vocab {m.vocab_size} (padded to {vocab} at tp {p.tp})",
        f"world {world_size} = tp {p.tp} × pp {p.pp} × cp {p.cp} × dp {layout['dp']}"
        + (f" (vpp {p.vpp})" if p.vpp else ""),
        f"batch: micro {t.micro_batch_size} × dp {layout['dp']} × {layout['num_microbatches']} "
        f"micro-batches = global {t.global_batch_size} sequences × {seq} tokens "
        f"= {tps:,} tokens/step",
        f"duration: {duration}",
        f"model FLOPs/token: {flops:.3e} at seq {seq} (6·matmul params + attention, no causal ½)",
        f"precision {t.precision}{f' + fp8 {t.fp8}' if t.fp8 else ''}, recompute {t.recompute}, "
        f"distributed optimizer {'on' if p.distributed_optimizer else 'off'}, "
        f"sequence parallel {'on' if p.sequence_parallel else 'off'}",
    ] + _switch_lines(cfg) + _lora_lines(cfg)


def _switch_lines(cfg: Config) -> list[str]:
    """The throughput switches that are on (docs/gpu.md#throughput-switches)."""
    t = cfg.train
    on = [f"loss_chunk {t.loss_chunk}"] if t.loss_chunk else []
    on += [name for name in ("fused_swiglu", "compile", "cuda_graphs") if getattr(t, name)]
    return [f"throughput switches: {', '.join(on)}"] if on else []


def epoch_budget(cfg: Config) -> tuple[int | None, str]:
    """(samples of ``train.epochs``, a note for the duration line) — counted from the prepared
    data when epochs decide the length and the data exists; (None, why not) otherwise."""
    from pathlib import Path

    from msm_megatron.validate import duration_unit

    if duration_unit(cfg) != "epochs":
        return None, ""
    missing = [p for p in cfg.data.prepared if not Path(f"{p}.idx").is_file()]
    if not cfg.data.prepared or missing:
        return None, (" (steps are counted once the data is prepared"
                      + (f"; missing {missing[0]}.idx)" if missing else ")"))
    from msm_megatron.data.datasets import build_dataset, epoch_samples

    samples = epoch_samples(cfg, build_dataset(cfg.data))
    unit = "packed rows" if cfg.data.mode == "packed" else "windows"
    return samples, f" = {samples:,} {unit} of {cfg.data.seq_length} tokens"


def _lora_lines(cfg: Config) -> list[str]:
    from msm_megatron.flops import lora_param_count

    lo = cfg.lora
    if not lo.rank:
        return []
    count = lora_param_count(cfg.model, lo.rank, lo.targets)
    return [f"LoRA r={lo.rank} alpha={lo.alpha:g} on {', '.join(lo.targets)}: {_count(count)} "
            f"trainable params ({count / param_count(cfg.model):.2%} of the model); base frozen "
            "(weights only), adapters fp32 with their own grads and Adam state"]


def _count(n: float) -> str:
    """1234567 -> '1.23M' (parameter counts in the report)."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))


def _memory_lines(cfg: Config, mem: dict, num_microbatches: int) -> list[str]:
    unit, scale = ("GiB", GIB) if mem["total"] >= GIB else ("MiB", 1024**2)

    def row(label: str, key: str, chosen: bool = False) -> str:
        return f"  {label:<44}{mem[key] / scale:>10.2f}" + ("  <- chosen" if chosen else "")

    dist, rc = cfg.parallel.distributed_optimizer, cfg.train.recompute
    in_flight = min(cfg.parallel.pp, num_microbatches)
    w = "fp32" if cfg.train.precision == "fp32" else "bf16"
    opt = "Adam m, v" if cfg.train.precision == "fp32" else "fp32 master + Adam m, v"
    title = f"memory per GPU (largest stage: {_count(mem['params_per_gpu'])} params)"
    return [
        f"{title:<46}{unit:>10}",
        row(f"weights ({w})", "weights"),
        row("grads (fp32 main grads)", "grads"),
        f"  optimizer ({opt})",
        row(f"  distributed optimizer (÷ dp {mem['dp']})", "optimizer_distributed", dist),
        row("  replicated (no distributed optimizer)", "optimizer_replicated", not dist),
        f"  activations (micro-batch {cfg.train.micro_batch_size}, {in_flight} in flight)",
        *(row(f"  recompute {m}", f"activations_{m}", rc == m) for m in RECOMPUTE_MODES),
        row("logits in the loss (last stage)", "logits"),
        row("total (chosen settings)", "total"),
    ]


def _verdict(cfg: Config, mem: dict, gpu_memory_gib: float) -> str:
    headroom = gpu_memory_gib - mem["total"] / GIB
    if headroom >= 0:
        return (
            f"verdict: fits in {gpu_memory_gib:.0f} GiB per GPU (headroom {headroom:.1f} GiB; "
            "CUDA context, NCCL and fragmentation take 3-8 GiB of it)"
        )
    fixes = []
    if not cfg.parallel.distributed_optimizer and mem["dp"] > 1:
        fixes.append("parallel.distributed_optimizer=true")
    if cfg.train.recompute != "full":
        fixes.append("train.recompute=full")
    fixes.append("larger parallel.tp / parallel.pp (more GPUs)")
    return (
        f"verdict: does not fit in {gpu_memory_gib:.0f} GiB per GPU (over by {-headroom:.1f} GiB);"
        f" try {', '.join(fixes)}"
    )


def dry_run_report(cfg: Config, world_size: int, gpu_memory_gib: float = H100_GIB
                   ) -> tuple[str, list[str]]:
    """Human-readable plan: layout, batch, duration, FLOPs, memory table, checks and a verdict.

    Args:
        cfg: The resolved config.
        world_size: Ranks the run would launch.
        gpu_memory_gib: Memory of one GPU (80 GiB H100 by default).

    Returns:
        (report, problems). ``problems`` are :func:`~msm_megatron.validate.problems`' (assuming
        Transformer Engine on the target); the report lists them after ``checks: FAILED`` and
        then gives no verdict, or says ``checks: ok`` and ends with ``verdict: fits`` or
        ``verdict: does not fit``. A layout that cannot exist (world or global batch not
        divisible) has no layout or memory lines.
    """
    found = problems(cfg, world_size, te_available=True)
    try:
        mem = estimate_memory(cfg, world_size)
        num_microbatches = derive_layout(cfg, world_size)["num_microbatches"]
        lines = _header_lines(cfg, world_size) + [""] + _memory_lines(cfg, mem, num_microbatches)
        lines += ["", "activations assume flash attention (no s×s matrix); see "
                  "msm_megatron.estimate"]
    except (ConfigError, ArithmeticError):
        if not found:
            raise
        lines = [f"{cfg.name}: no layout or memory estimate for world {world_size} (see the "
                 "checks)"]
    if found:
        lines.append(f"checks: FAILED — {len(found)} problem(s):")
        lines += [f"  - {problem}" for problem in found]
        return "\n".join([*lines, "verdict: none until the checks pass"]), found
    lines.append("checks: ok (assuming Transformer Engine on the target, as in NGC containers)")
    return "\n".join([*lines, _verdict(cfg, mem, gpu_memory_gib)]), found
