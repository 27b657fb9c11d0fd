"""One-GPU training throughput: our Megatron-Core trainer against plain HF transformers + AdamW.

Run on a GPU (everything, one table; ``bench/gpu/run.sh`` installs carried wheels first)::

    python bench/gpu/train_throughput.py --out results/       # ≈5 min on one H100
    python bench/gpu/train_throughput.py --sweep --out results/   # the ablation ladder, ≤8 min
    python bench/gpu/train_throughput.py --smoke [--sweep]    # tiny model, CPU: plumbing only

``--sweep`` runs the throughput switches (docs/gpu.md#throughput-switches) as a ladder for both
sizes: ``baseline`` (one packed row per micro-batch, no switch), ``all`` (4 rows per THD
micro-batch + fused SwiGLU + a 4096-token chunked LM head), ``all+compile``, the HF peer, the
packed-SFT pair with everything on, then each win alone and, on concat windows, CUDA graphs.
The ``all`` row of each size is also profiled (``profile-<model>.txt``: top kernels, launch
count, GPU-busy fraction of one step). Results are written after every row, so a timeout still
leaves a table.

Rows, for Qwen3-0.6B- and Qwen3-1.7B-shaped models (random init, bf16, seq 4096; the same
packed rows of documents for every row; 4 rows = 16,384 tokens per optimizer step):

* ``ours``     — our trainer (Megatron-Core GPTModel, local spec, :class:`CoreAttention` on
  ``train.attention=auto`` → varlen flash attention over ``cu_seqlens``), Megatron's mixed
  precision (bf16 weights, fp32 grads/master/Adam) and optimizer.
* ``unfused``  — the same with ``train.attention=unfused``: Megatron's local-spec attention
  (materialized scores on a block-diagonal mask), what Megatron-Core gives without TE.
* ``hf``       — the peer a user would otherwise write: ``Qwen3ForCausalLM`` (SDPA attention,
  packed documents via restarting ``position_ids``, which transformers turns into a
  block-diagonal mask), fp32 weights + ``torch.autocast(bf16)`` (what HF Trainer's ``bf16=True``
  does), ``torch.optim.AdamW(fused=True)``, grad clipping.
* ``ours_sft`` / ``hf_sft`` — chat SFT, ≈35% supervised tokens: ours packs chats into THD rows;
  the HF peer pads batches of 4 chats (HF Trainer without packing). Tokens/s counts real tokens.
* ``kernels``  — the attention kernels alone on one packed 4096-token row (bf16, fwd+bwd):
  max |Δ| against the fp32 unfused reference, and milliseconds.

Each row runs in its own process (clean peak memory, an OOM loses one row). MFU uses
:func:`msm_megatron.flops.model_flops_per_token` (Megatron/PaLM convention) against 989 TFLOP/s.
``est GiB`` is ``msm train --dry-run``'s memory estimate for that run, next to the measured peak.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

QWEN3 = {"model_type": "qwen3", "vocab_size": 151936, "head_dim": 128, "num_hidden_layers": 28,
         "num_attention_heads": 16, "num_key_value_heads": 8, "max_position_embeddings": 40960,
         "rope_theta": 1000000, "rms_norm_eps": 1e-6, "tie_word_embeddings": True}
MODELS = {
    "0.6b": {**QWEN3, "hidden_size": 1024, "intermediate_size": 3072},
    "1.7b": {**QWEN3, "hidden_size": 2048, "intermediate_size": 6144},
    "tiny": {**QWEN3, "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
             "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "head_dim": 16},
}
ROWS = [  # (row, model) in priority order: the driver stops starting rows at the deadline
    ("ours", "0.6b"), ("hf", "0.6b"), ("ours", "1.7b"), ("hf", "1.7b"), ("ours_sft", "0.6b"),
    ("hf_sft", "0.6b"), ("unfused", "0.6b"), ("kernels", "0.6b"), ("ours_sft", "1.7b"),
    ("unfused", "1.7b"), ("hf_sft", "1.7b"),
]
SMOKE_ROWS = [("kernels", "tiny"), ("ours", "tiny"), ("unfused", "tiny"), ("hf", "tiny"),
              ("ours_sft", "tiny"), ("hf_sft", "tiny")]

# The throughput switches: what each sweep label sets (``mbs``: packed rows per THD micro-batch;
# ``mode``: data.mode; the rest are TrainConfig fields).
CHUNK = {"loss_chunk": 4096}
ALL = {"mbs": 4, "fused_swiglu": True, **CHUNK}
SWITCHES = {
    "baseline": {}, "all": ALL, "all+compile": {**ALL, "compile": True},
    "+mbs4": {"mbs": 4}, "+fused_swiglu": {"fused_swiglu": True}, "+loss_chunk": CHUNK,
    "+compile": {"compile": True}, "concat": {"mode": "concat"},
    "concat+cuda_graphs": {"mode": "concat", "cuda_graphs": True},
}
PROFILED = "all"


def sweep_rows(models=("0.6b", "1.7b")) -> list[tuple[str, str, str]]:
    """(row, model, label) in priority order: the headline rows of both sizes first (baseline,
    peer, everything on), then compile, packed SFT, each win alone, and CUDA graphs."""
    first, second = models[0], models[-1]
    rows = []
    for m in dict.fromkeys(models):
        rows += [("ours", m, "baseline"), ("hf", m, "hf"), ("ours", m, "all")]
    rows += [("ours", m, "all+compile") for m in dict.fromkeys(models)]
    rows += [("ours_sft", first, "all"), ("hf_sft", first, "hf")]
    for m in dict.fromkeys(models):
        rows += [("ours", m, label) for label in ("+mbs4", "+fused_swiglu", "+loss_chunk")]
    rows += [("ours", first, "concat"), ("ours", first, "concat+cuda_graphs"),
             ("ours", second, "+compile")]
    return rows


# ----------------------------------------------------------------------------- data


def packed_rows(n_rows: int, seq: int, vocab: int, seed: int = 0, sft: bool = False):
    """Rows of ``seq`` tokens packed from documents (or chats); each a dict of numpy arrays.

    Documents: lengths ~ lognormal (median ≈ seq/4), the last one of a row cut to fit. Chats
    (``sft``): lengths ~ lognormal (median ≈ seq/6) and never cut; a row is padded after its last
    chat; the final 35% of each chat is supervised (the assistant turn).
    """
    rng = np.random.default_rng(seed)
    rows, chats = [], []
    while len(rows) < n_rows:
        lengths, used = [], 0
        while used < seq:
            n = int(np.clip(rng.lognormal(np.log(seq / (6 if sft else 4)), 0.6), 16, seq))
            if sft and used + n > seq:
                break
            n = min(n, seq - used)
            lengths.append(n)
            used += n
        tokens = rng.integers(0, vocab, size=seq + 1)
        mask = np.zeros(seq, dtype=np.float32)
        positions = np.zeros(seq, dtype=np.int64)
        start = 0
        for n in lengths:
            positions[start:start + n] = np.arange(n)
            mask[start:start + n] = 1.0
            if sft:
                mask[start:start + n - int(0.35 * n)] = 0.0
                chats.append((tokens[start:start + n + 1], mask[start:start + n].copy()))
            start += n
        positions[start:] = np.arange(seq - start)  # padding: its own segment, no loss
        rows.append({"tokens": tokens[:-1], "labels": tokens[1:], "loss_mask": mask,
                     "position_ids": positions,
                     "cu_seqlens": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)})
    return rows, chats


class RowDataset:
    """Our trainer's dataset interface over the packed rows (sample k = row k mod n).

    ``packed=False``: the same tokens as plain concat windows ``[mbs, seq]`` (no boundaries,
    causal attention across documents), what ``data.mode=concat`` trains on.
    """

    def __init__(self, rows, packed: bool = True):
        self.rows, self.packed = rows, packed

    def batch(self, indices):
        from msm_megatron.data.datasets import concat_rows

        picked = [self.rows[i % len(self.rows)] for i in indices]
        if not self.packed:
            return {k: torch.from_numpy(np.stack([r[k] for r in picked]))
                    for k in ("tokens", "labels", "loss_mask")}
        row = concat_rows(picked)
        return {k: torch.from_numpy(np.asarray(v))[None] for k, v in row.items()}


# ----------------------------------------------------------------------------- rows


def _config(model: str, seq: int, attention: str, micro: int, device: str, mbs: int = 1,
            switches: dict | None = None):
    from msm_megatron.config import Config, DataConfig, LogConfig, ParallelConfig, TrainConfig
    from msm_megatron.models.hf_config import model_config_from_hf

    train = dict(switches or {})
    mbs, mode = train.pop("mbs", mbs), train.pop("mode", "packed")
    precision = "bf16" if device == "cuda" else "fp32"
    return Config(
        name=f"bench-{model}", model=model_config_from_hf(MODELS[model]),
        parallel=ParallelConfig(),
        data=DataConfig(seq_length=seq, mode=mode),
        train=TrainConfig(micro_batch_size=mbs, global_batch_size=micro, steps=10_000,
                          precision=precision, spec="local", attention=attention,
                          run_dir=tempfile.mkdtemp(prefix="msm-bench-"), **train),
        log=LogConfig(tensorboard=False, progress_bar=False),
    )


def _timed(step, warmup: int, steps: int, device: str, profile: str | None = None
           ) -> tuple[float, float]:
    """Mean seconds per step after ``warmup`` steps, and the last loss; with ``profile`` (a
    path) one more step is profiled and its summary written there."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    loss = float("nan")
    for _ in range(warmup):
        loss = step()
    sync()
    profile = profile or os.environ.get("MSM_BENCH_PROFILE")
    if profile:
        summary = _profile(step, device)
        print(summary, file=sys.stderr)
        if profile not in ("1", "stderr"):
            Path(profile).write_text(summary + "\n")
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    sync()
    return (time.perf_counter() - start) / steps, loss


def _busy_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of ``(start, end)`` intervals (kernels on several streams overlap)."""
    busy, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            busy += end - max(start, reach)
            reach = end
    return busy


def _profile(step, device) -> str:
    """One profiled step: the top kernels (GPU) or operators (CPU) by self time, the number of
    kernel launches, and the fraction of the step's wall time the GPU was busy."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        step()
        if cuda:
            torch.cuda.synchronize()
    wall = time.perf_counter() - start
    events = prof.events()
    kernels = [e for e in events if e.device_type == DeviceType.CUDA]
    lines = [f"one training step: wall {wall * 1e3:.1f} ms"]
    if cuda:
        busy = _busy_seconds([(e.time_range.start / 1e6, e.time_range.end / 1e6)
                              for e in kernels])
        lines.append(f"GPU kernels launched: {len(kernels)}; GPU busy {busy * 1e3:.1f} ms = "
                     f"{busy / wall:.0%} of the step")
    else:
        lines.append(f"no GPU: operator count {len(events)} (kernel launches need CUDA)")
    totals: dict[str, list[float]] = {}
    for e in kernels if cuda else [e for e in events if e.device_type == DeviceType.CPU]:
        entry = totals.setdefault(e.name, [0.0, 0])
        entry[0] += (e.time_range.end - e.time_range.start) if cuda else e.self_cpu_time_total
        entry[1] += 1
    total = sum(t for t, _ in totals.values()) or 1.0
    lines += ["", f"top {'kernels' if cuda else 'operators'} by {'GPU' if cuda else 'CPU self'} "
              "time:", "| ms | share | calls | name |", "|---|---|---|---|"]
    for name, (t, n) in sorted(totals.items(), key=lambda kv: -kv[1][0])[:15]:
        lines.append(f"| {t / 1e3:.2f} | {t / total:.1%} | {n} | {name[:90]} |")
    return "\n".join(lines)


def run_ours(model, rows, seq, attention, args, device) -> dict:
    from msm_megatron.estimate import estimate_memory
    from msm_megatron.train.trainer import Trainer

    cfg = _config(model, seq, attention, args.micro, device, args.mbs, args.switches)
    trainer = Trainer(cfg, dataset=RowDataset(rows, packed=cfg.data.mode == "packed"))
    kernel_note = attention
    if attention == "auto" and device == "cuda":
        from msm_megatron.models.attention import resolve_kernel
        kernel_note = f"auto→{resolve_kernel('auto', 'cuda', True)}"

    def step():
        loss, _, _ = trainer._train_step()
        trainer.state.consumed_samples += cfg.train.global_batch_size
        return loss

    seconds, loss = _timed(step, args.warmup, args.steps, device, args.profile)
    est = estimate_memory(cfg, 1, flash_attention=attention != "unfused")["total"]
    return {"seconds": seconds, "loss": loss, "est_bytes": est, "attention": kernel_note}


def _hf_model(model: str, device: str):
    import transformers

    from msm_megatron.models.hf_config import hf_config_from_model, model_config_from_hf

    hf = hf_config_from_model(model_config_from_hf(MODELS[model]))
    hf.pop("model_type", None)
    config = transformers.Qwen3Config(**hf, use_cache=False)
    config._attn_implementation = "sdpa"
    with torch.device(device):
        net = transformers.Qwen3ForCausalLM(config)
    net.train()
    return net


def _hf_loss(net, batch: dict, device: str):
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.autocast(device, dtype=dtype, enabled=device == "cuda"):
        kwargs = {"input_ids": batch["tokens"]}
        if "attention_mask" in batch:
            kwargs["attention_mask"] = batch["attention_mask"]
        else:
            kwargs["position_ids"] = batch["position_ids"]
        logits = net(**kwargs, use_cache=False).logits
    losses = torch.nn.functional.cross_entropy(
        logits.float().flatten(0, 1), batch["labels"].flatten(), reduction="none")
    mask = batch["loss_mask"].flatten()
    return (losses * mask).sum(), mask.sum()


def run_hf(model, batches, args, device) -> dict:
    net = _hf_model(model, device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-5, weight_decay=0.01,
                            fused=device == "cuda")
    tokens = sum(float(b["loss_mask"].sum()) for b in batches)

    def step():
        total = 0.0
        for b in batches:
            loss_sum, _ = _hf_loss(net, b, device)
            (loss_sum / tokens).backward()
            total += float(loss_sum.detach())
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return total / tokens

    seconds, loss = _timed(step, args.warmup, args.steps, device)
    return {"seconds": seconds, "loss": loss, "attention": "sdpa (HF)"}


def hf_packed_batches(rows, device, per_batch: int = 1):
    """``per_batch`` packed rows per forward (``[per_batch, seq]``)."""
    keys = ("tokens", "labels", "loss_mask", "position_ids")
    return [{k: torch.from_numpy(np.stack([r[k] for r in rows[i:i + per_batch]])).to(device)
             for k in keys} for i in range(0, len(rows), per_batch)]


def hf_padded_batches(chats, per_batch: int, device):
    """Chats in order, ``per_batch`` at a time, right-padded to the longest of each batch."""
    batches = []
    for i in range(0, len(chats), per_batch):
        group = chats[i:i + per_batch]
        width = max(len(t) - 1 for t, _ in group)
        out = {"tokens": [], "labels": [], "loss_mask": [], "attention_mask": []}
        for t, m in group:
            pad = width - (len(t) - 1)
            out["tokens"].append(np.pad(t[:-1], (0, pad)))
            out["labels"].append(np.pad(t[1:], (0, pad)))
            out["loss_mask"].append(np.pad(m, (0, pad)))
            out["attention_mask"].append(np.pad(np.ones(len(t) - 1, np.int64), (0, pad)))
        batches.append({k: torch.from_numpy(np.stack(v)).to(device) for k, v in out.items()})
    return batches


def run_kernels(model: str, seq: int, args, device) -> dict:
    """Each CoreAttention kernel on one packed row (fwd+bwd): error vs fp32 unfused, and ms."""
    from megatron.core.packed_seq_params import PackedSeqParams
    from megatron.core.transformer.enums import AttnMaskType
    from megatron.core.transformer.transformer_config import TransformerConfig

    from msm_megatron.config import ParallelConfig
    from msm_megatron.distributed import init_distributed
    from msm_megatron.models.attention import CoreAttention, resolve_kernel

    init_distributed(ParallelConfig(), 0)
    m = MODELS[model]
    heads, groups, dim = m["num_attention_heads"], m["num_key_value_heads"], m["head_dim"]
    dtype = torch.bfloat16 if device == "cuda" else torch.float32

    def module(kernel, half):
        cfg = TransformerConfig(num_layers=1, hidden_size=m["hidden_size"],
                                num_attention_heads=heads, num_query_groups=groups,
                                kv_channels=dim, bf16=half, params_dtype=dtype if half else
                                torch.float32, masked_softmax_fusion=False, attention_dropout=0.0,
                                use_cpu_initialization=device != "cuda")
        return CoreAttention(config=cfg, layer_number=1, attn_mask_type=AttnMaskType.causal,
                             attention_type="self", kernel=kernel)

    row = packed_rows(1, seq, 100)[0][0]
    cu = torch.from_numpy(np.append(row["cu_seqlens"], seq)).to(device)
    cu = torch.unique_consecutive(cu).to(torch.int32)
    params = PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu,
                             max_seqlen_q=int(torch.diff(cu).max()),
                             max_seqlen_kv=int(torch.diff(cu).max()))
    g = torch.Generator(device=device).manual_seed(0)
    base = [torch.randn(seq, h, dim, generator=g, device=device) for h in (heads, groups, groups)]
    weight = torch.randn(seq, heads * dim, generator=g, device=device)

    def fwd_bwd(kernel, half):
        inputs = [x.detach().to(dtype if half else torch.float32).requires_grad_() for x in base]
        out = module(kernel, half)(*inputs, None, packed_seq_params=params)
        (out.float() * weight).sum().backward()
        return out.float(), [x.grad.float() for x in inputs]

    ref, ref_grads = fwd_bwd("unfused", False)
    kernels = ["unfused", "sdpa", "flex"] + (["varlen"] if device == "cuda" else [])
    result = {"auto": resolve_kernel("auto", device, True), "kernels": {}}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for kernel in kernels:
        try:
            out, grads = fwd_bwd(kernel, device == "cuda")
            err = max([(out - ref).abs().max().item()]
                      + [(a - b).abs().max().item() for a, b in zip(grads, ref_grads, strict=True)])
            for _ in range(2):
                fwd_bwd(kernel, device == "cuda")
            sync()
            start = time.perf_counter()
            for _ in range(5):
                fwd_bwd(kernel, device == "cuda")
            sync()
            ms = (time.perf_counter() - start) / 5 * 1e3
            result["kernels"][kernel] = {"max_abs_err": err, "ms": ms}
        except Exception as exc:  # noqa: BLE001 - one kernel failing is a row entry, not a crash
            result["kernels"][kernel] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return result


def run_row(row: str, model: str, args) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    seq = args.seq
    vocab = MODELS[model]["vocab_size"]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if row == "kernels":
        return run_kernels(model, seq, args, device)
    sft = row.endswith("_sft")
    rows, chats = packed_rows(args.micro, seq, vocab, seed=1, sft=sft)
    real_tokens = int(sum(int(r["cu_seqlens"][-1]) for r in rows))
    if row in ("ours", "unfused", "ours_sft"):
        out = run_ours(model, rows, seq, "unfused" if row == "unfused" else args.attention,
                       args, device)
    elif row == "hf":
        out = run_hf(model, hf_packed_batches(rows, device, args.mbs), args, device)
    elif row == "hf_sft":
        out = run_hf(model, hf_padded_batches(chats, 4, device), args, device)
    else:
        raise SystemExit(f"unknown row {row!r}")
    out["tokens_per_step"] = real_tokens
    out["supervised_fraction"] = float(sum(r["loss_mask"].sum() for r in rows) / real_tokens)
    if device == "cuda":
        out["peak_bytes"] = torch.cuda.max_memory_allocated()
    return out


# ----------------------------------------------------------------------------- driver


def metrics(result: dict, model: str, seq: int) -> dict:
    """tokens/s, TFLOP/s and MFU of one training row."""
    from msm_megatron.config import LogConfig
    from msm_megatron.flops import model_flops_per_token
    from msm_megatron.models.hf_config import model_config_from_hf

    tps = result["tokens_per_step"] / result["seconds"]
    tflops = tps * model_flops_per_token(model_config_from_hf(MODELS[model]), seq) / 1e12
    # the trainer's MFU denominator (log.peak_tflops: H100 SXM dense bf16)
    return {"tokens_per_s": tps, "tflops": tflops, "mfu": tflops / LogConfig().peak_tflops}


def _label(r: dict) -> str:
    return r.get("label", r["row"])


def format_table(results: list[dict], seq: int) -> str:
    """One markdown table for the training rows, one for the kernels.

    ``vs hf``: tokens/s against the HF row of the same model (``hf_sft`` for SFT rows);
    ``vs base``: against our ``baseline`` row of the same model (sweep).
    """
    gib = 1024**3
    lines = ["| model | row | switches | attention | tokens/s | TFLOP/s | MFU | vs hf | vs base | "
             "peak GiB | est GiB (Δ) | loss |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    ok = {(r["model"], r["row"], _label(r)): r for r in results
          if "error" not in r and r["row"] != "kernels"}

    def tps(r):
        return metrics(r, r["model"], seq)["tokens_per_s"]

    for r in results:
        if r["row"] == "kernels":
            continue
        if "error" in r:
            lines.append(f"| {r['model']} | {r['row']} | {_label(r)} | | {r['error'][:80]} | "
                         "| | | | | | |")
            continue
        m = metrics(r, r["model"], seq)
        sft = r["row"].endswith("_sft")
        peer = next((v for (model, row, _), v in ok.items()
                     if model == r["model"] and row == ("hf_sft" if sft else "hf")), None)
        ratio = ("" if peer is None or r["row"].startswith("hf")
                 else f"{m['tokens_per_s'] / tps(peer):.2f}×")
        base = ok.get((r["model"], r["row"], "baseline"))
        vs_base = ("" if base is None or base is r
                   else f"{m['tokens_per_s'] / tps(base):.2f}×")
        peak = f"{r['peak_bytes'] / gib:.1f}" if "peak_bytes" in r else "–"
        est = ""
        if "est_bytes" in r:
            est = f"{r['est_bytes'] / gib:.1f}"
            if "peak_bytes" in r:
                est += f" ({(r['est_bytes'] - r['peak_bytes']) / r['peak_bytes']:+.0%})"
        lines.append(f"| {r['model']} | {r['row']} | {_label(r)} | {r.get('attention', '')} | "
                     f"{m['tokens_per_s']:,.0f} | {m['tflops']:.1f} | {m['mfu']:.1%} | {ratio} | "
                     f"{vs_base} | {peak} | {est} | {r['loss']:.3f} |")
    for r in results:
        if r["row"] != "kernels":
            continue
        if "error" in r:
            lines += ["", f"Attention kernels: {r['error'][:200]}"]
            continue
        lines += ["", f"Attention kernels, one packed {seq}-token row, {r['model']} heads, "
                  f"fwd+bwd (auto picks `{r['auto']}` for packed rows):", "",
                  "| kernel | max abs err vs fp32 unfused | ms |", "|---|---|---|"]
        for name, k in r["kernels"].items():
            if "error" in k:
                lines.append(f"| {name} | {k['error'][:90]} | |")
            else:
                lines.append(f"| {name} | {k['max_abs_err']:.2e} | {k['ms']:.2f} |")
    return "\n".join(lines)


def planned_rows(args) -> list[tuple[str, str, str]]:
    """(row, model, label) to run, in order."""
    if args.sweep:
        rows = sweep_rows(("tiny",) if args.smoke else ("0.6b", "1.7b"))
    else:
        rows = [(r, m, r) for r, m in (SMOKE_ROWS if args.smoke else ROWS)]
    if args.only:
        wanted = args.only.split(",")
        rows = [(r, m, lab) for r, m, lab in rows
                if f"{r}:{m}" in wanted or f"{r}:{m}:{lab}" in wanted]
    return rows


def row_switches(label: str, args) -> dict:
    """The switches of a sweep label; the smoke run cuts the LM head into uneven chunks of its
    short rows (4096 would not chunk a 128-token row at all)."""
    switches = dict(SWITCHES.get(label, {}))
    if args.smoke and "loss_chunk" in switches:
        switches["loss_chunk"] = 48
    return switches


def _write(out_dir: Path | None, results: list[dict], seq: int) -> str:
    table = environment_line() + "\n\n" + format_table(results, seq)
    if out_dir:  # after every row: a timeout or a crash still leaves a table
        (out_dir / "results.json").write_text(json.dumps(results, indent=1))
        (out_dir / "table.md").write_text(table + "\n")
    return table


def drive(args) -> int:
    rows = planned_rows(args)
    deadline = time.monotonic() + args.budget
    out_dir = Path(args.out) if args.out else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), os.environ.get("PYTHONPATH", "")])}
    for row, model, label in rows:
        left = deadline - time.monotonic()
        switches = row_switches(label, args)
        if left < 30:
            result = {"error": "skipped: time budget"}
        elif switches.get("cuda_graphs") and not torch.cuda.is_available():
            result = {"error": "skipped: CUDA graphs need a GPU"}
        else:
            result = _run_child(row, model, label, switches, args, env, out_dir, left)
        result.update(row=row, model=model, label=label, switches=switches)
        results.append(result)
        print(json.dumps(result), flush=True)
        _write(out_dir, results, args.seq)
    print("\n" + _write(out_dir, results, args.seq))
    return 0


def _run_child(row, model, label, switches, args, env, out_dir, left) -> dict:
    """One row in its own process (clean peak memory; an OOM or a crash loses one row)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as handle:
        cmd = [sys.executable, __file__, "--row", row, "--model", model, "--json",
               handle.name, "--seq", str(args.seq), "--micro", str(args.micro),
               "--warmup", str(args.warmup), "--steps", str(args.steps),
               "--attention", args.attention, "--mbs", str(args.mbs),
               "--switches", json.dumps(switches)]
        if out_dir and row == "ours" and label == PROFILED and args.sweep:
            cmd += ["--profile", str(out_dir / f"profile-{model}.txt")]
        start = time.monotonic()
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                                  timeout=min(left, args.row_timeout))
            text = Path(handle.name).read_text()
            result = json.loads(text) if proc.returncode == 0 and text else {
                "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
            if proc.returncode and out_dir:
                with open(out_dir / "errors.log", "a") as log:
                    log.write(f"===== {row} {model} {label}\n{proc.stderr[-20000:]}\n")
        except subprocess.TimeoutExpired:
            result = {"error": "timed out"}
    result["wall_s"] = round(time.monotonic() - start, 1)
    return result


def environment_line() -> str:
    import platform

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor()
    try:
        import transformers
        hf = transformers.__version__
    except ImportError:
        hf = "absent"
    from importlib.metadata import version
    return (f"{time.strftime('%Y-%m-%d')} · {device} · torch {torch.__version__} · "
            f"megatron-core {version('megatron-core')} · transformers {hf} · "
            f"python {platform.python_version()}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="folder for results.json and table.md")
    parser.add_argument("--smoke", action="store_true", help="tiny model on CPU (plumbing)")
    parser.add_argument("--sweep", action="store_true",
                        help="the ablation ladder of the throughput switches (both sizes)")
    parser.add_argument("--only", help="comma-separated row:model[:label], e.g. ours:0.6b,hf:0.6b")
    parser.add_argument("--budget", type=float, help="seconds for all rows "
                        "(default 420; --sweep: 450)")
    parser.add_argument("--row-timeout", type=float, default=150)
    parser.add_argument("--seq", type=int, default=4096)
    parser.add_argument("--micro", type=int, default=4, help="packed rows per optimizer step")
    parser.add_argument("--mbs", type=int, default=1,
                        help="rows per micro-batch (ours: one THD sequence; HF: a batch)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--attention", default="auto", help="train.attention for our rows")
    parser.add_argument("--row", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    parser.add_argument("--switches", type=json.loads, default={}, help=argparse.SUPPRESS)
    parser.add_argument("--profile", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.budget is None:
        args.budget = 450 if args.sweep else 420
    if args.smoke and not args.row:
        args.seq, args.micro, args.warmup, args.steps = 128, 4, 1, 2
    if args.row:
        result = run_row(args.row, args.model, args)
        Path(args.json).write_text(json.dumps(result))
        return 0
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
