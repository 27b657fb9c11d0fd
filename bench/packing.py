"""Packing benchmark: our BFD/FFD packer vs TRL's best-fit-decreasing packer, same lengths.

Command (repository root; needs the ``bench`` extra: ``trl``, with its ``datasets``, ``pyarrow``)::

    .venv/bin/python bench/packing.py                  # seed 0, seq 8192, 5 timed runs each
    .venv/bin/python bench/packing.py --repeats 9 --seed 1

Two seeded synthetic corpora, the same token arrays for every packer:

- **aft**: 10,000 chats, lognormal lengths (mean ~650 tokens, capped at the sequence length as the
  chat renderer caps them), each a prompt followed by a completion that is 35-60% of the chat
  (the supervised part).
- **msm**: 13,000 documents, lognormal lengths (mean ~3,200 tokens, ~5% longer than 8,192),
  every token a target (midtraining).

Packers, all in this process:

- ``ours bfd`` / ``ours ffd``: :func:`msm_megatron.data.packing.pack` (the plan), and
  ``ours bfd +rows``: the plan plus every training row built by ``packed_rows``.
- ``trl plan``: TRL's ``_pack_bfd`` (what ``pack_dataset(strategy="bfd"|"bfd_split")`` maps)
  over the whole corpus as one batch, on a table whose lists hold no data (nulls): its planning
  cost without data movement. ``trl 1 batch``: the same over the real ``input_ids``/``labels``
  columns -- packed arrow columns out. ``trl pack_dataset``: the public call as ``SFTTrainer``
  makes it (``datasets.map`` default batches of 1,000 rows, so best-fit sees 1,000 sequences at a
  time).

Fairness: TRL's ``"bfd"`` truncates sequences longer than ``seq_length`` (tokens are dropped);
``"bfd_split"`` cuts them into ``seq_length`` chunks plus a remainder -- the same policy as ours.
Documents are compared with ``bfd_split`` (``bfd`` shown for reference, with its token loss); chats
never exceed the length, so both strategies coincide there. All packers get the same lengths and are
scored by the same formulas: efficiency = non-pad tokens / (rows x seq_length); supervised fraction
= positions whose next token (inside the same segment) is a target / (rows x seq_length) -- TRL's
collator likewise drops each segment's first label. TRL rows are unpadded (its padding-free
collator concatenates them); the rows count here is the number of fixed ``seq_length`` rows a
Megatron batch needs. Times: min and median of ``--repeats`` runs after one warm-up run, with the
garbage collector off while timing (as ``timeit``); ratios use the min (the least disturbed run
on a shared box).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from msm_megatron.data.packing import Packing, pack, packed_rows, stats  # noqa: E402

try:
    import datasets
    import pyarrow as pa
    import pyarrow.compute as pc
    import trl
    from trl import pack_dataset
    from trl.data_utils import _pack_bfd
except ImportError as exc:  # the peer is the point of the benchmark: fail loudly
    sys.exit(f"bench/packing.py needs trl (pip install trl, or the bench extra): {exc}")

VOCAB = 151_000


def make_corpus(kind: str, seed: int, seq_length: int, n: int | None) -> dict[str, Any]:
    """Seeded lengths, token ids and per-token target masks for one corpus."""
    rng = np.random.default_rng(seed)
    if kind == "aft":
        n = n or 10_000
        lengths = rng.lognormal(np.log(650) - 0.32, 0.8, n).astype(np.int64)
        lengths = np.clip(lengths, 32, seq_length)
        supervised = rng.uniform(0.35, 0.60, n)
        prompt = np.round(lengths * (1 - supervised)).astype(np.int64)
    else:
        n = n or 13_000
        lengths = rng.lognormal(np.log(3200) - 0.28, 0.75, n).astype(np.int64) + 1
        prompt = np.zeros(n, dtype=np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = rng.integers(0, VOCAB, int(offsets[-1]), dtype=np.int64)
    pos = np.arange(len(flat)) - np.repeat(offsets[:-1], lengths)
    mask_flat = pos >= np.repeat(prompt, lengths)
    return {
        "kind": kind,
        "lengths": lengths,
        "offsets": offsets,
        "flat": flat,
        "mask_flat": mask_flat,
        "seqs": np.split(flat, offsets[1:-1]),
        "masks": np.split(mask_flat, offsets[1:-1]),
    }


def trl_tables(corpus: dict[str, Any]) -> tuple[pa.Table, pa.Table]:
    """(real input_ids/labels table as SFTTrainer packs it, lengths-only table with null lists)."""
    off = pa.array(corpus["offsets"].astype(np.int32))
    labels = np.where(corpus["mask_flat"], corpus["flat"], -100)
    real = pa.table(
        {
            "input_ids": pa.ListArray.from_arrays(off, pa.array(corpus["flat"])),
            "labels": pa.ListArray.from_arrays(off, pa.array(labels)),
        }
    )
    plan = pa.table({"input_ids": pa.ListArray.from_arrays(off, pa.nulls(len(corpus["flat"])))})
    return real, plan


def timed(fn: Callable[[], Any], repeats: int) -> tuple[tuple[float, float], Any]:
    """(min, median) wall time of ``repeats`` calls after one warm-up call, and the last result.

    As ``timeit`` does, the cyclic garbage collector is off while timing (collected before each
    run), so one packer is not billed for collecting another's garbage.
    """
    out = fn()
    times = []
    for _ in range(repeats):
        del out
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        finally:
            gc.enable()
    return (min(times), statistics.median(times)), out


def score_ours(packing: Packing, corpus: dict[str, Any]) -> dict[str, Any]:
    packing.check()
    info = stats(packing, supervised=corpus["masks"])
    return {
        "rows": info["bins"],
        "efficiency": info["efficiency"],
        "supervised": info["supervised_fraction"],
        "kept": info["tokens"] / int(corpus["lengths"].sum()),
    }


def score_trl(table: pa.Table, corpus: dict[str, Any], seq_length: int) -> dict[str, Any]:
    """Same formulas over TRL's packed columns (``labels`` -100 = no loss, ``seq_lengths``)."""
    seg = pc.list_flatten(table["seq_lengths"]).to_numpy()
    rows = table.num_rows
    lengths = pc.list_value_length(table["input_ids"]).to_numpy()
    assert lengths.max() <= seq_length and int(lengths.sum()) == int(seg.sum())
    target = pc.list_flatten(table["labels"]).to_numpy() != -100
    starts = np.concatenate(([0], np.cumsum(seg)[:-1]))
    target[starts] = False  # TRL's collator: labels[position_ids == 0] = -100
    slots = rows * seq_length
    return {
        "rows": rows,
        "efficiency": int(seg.sum()) / slots,
        "supervised": int(target.sum()) / slots,
        "kept": int(seg.sum()) / int(corpus["lengths"].sum()),
    }


def run_ours(corpus: dict[str, Any], seq: int, repeats: int) -> list[tuple[str, Any, dict]]:
    out = []
    for algorithm in ("bfd", "ffd"):
        t, packing = timed(lambda a=algorithm: pack(corpus["lengths"], seq, a), repeats)
        out.append((f"ours {algorithm}", t, score_ours(packing, corpus)))

    def plan_and_rows() -> Packing:
        packing = pack(corpus["lengths"], seq, "bfd")
        for _ in packed_rows(packing, corpus["seqs"], corpus["masks"]):
            pass
        return packing

    t, packing = timed(plan_and_rows, repeats)
    out.append(("ours bfd +rows", t, score_ours(packing, corpus)))
    return out


def run_trl(corpus: dict[str, Any], seq: int, repeats: int) -> list[tuple[str, Any, dict]]:
    real, plan = trl_tables(corpus)
    ds = datasets.Dataset(datasets.table.InMemoryTable(real))
    strategies = ["bfd"] if corpus["kind"] == "aft" else ["bfd_split", "bfd"]
    out = []
    for strategy in strategies:
        overflow = "split" if strategy == "bfd_split" else "truncate"
        if strategy == strategies[0]:
            t, _ = timed(lambda o=overflow: _pack_bfd(plan, seq, o), repeats)
            t_real, packed = timed(lambda o=overflow: _pack_bfd(real, seq, o), repeats)
            out.append((f"trl {strategy} plan", t, score_trl(packed, corpus, seq)))
            out.append((f"trl {strategy} 1 batch", t_real, score_trl(packed, corpus, seq)))
        t, packed_ds = timed(lambda s=strategy: pack_dataset(ds, seq, s), repeats)
        table = packed_ds.with_format("arrow")[:]
        out.append((f"trl pack_dataset {strategy}", t, score_trl(table, corpus, seq)))
    return out


def print_table(kind: str, results: list[tuple[str, Any, dict]]) -> None:
    """One markdown table per corpus, then ours-vs-TRL ratios (time ratios use the min)."""
    print(
        f"\n| {kind} packer | rows | efficiency | supervised | tokens kept | min ms | median ms |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, (t_min, t_med), r in results:
        print(
            f"| {name} | {r['rows']} | {r['efficiency']:.3%} | {r['supervised']:.2%} | "
            f"{r['kept']:.2%} | {t_min * 1e3:.1f} | {t_med * 1e3:.1f} |"
        )
    by = {name: (t, r) for name, t, r in results}
    peer = "trl bfd" if kind == "aft" else "trl bfd_split"
    print()
    for ours, theirs in (
        ("ours bfd", f"{peer} plan"),
        ("ours bfd", f"{peer} 1 batch"),
        ("ours bfd +rows", f"{peer} 1 batch"),
        ("ours bfd +rows", f"trl pack_dataset {peer[4:]}"),
    ):
        (t0, r0), (t1, r1) = by[ours], by[theirs]
        print(
            f"{kind}: {ours} / {theirs}: time x{t0[0] / t1[0]:.3f}, efficiency "
            f"{(r0['efficiency'] - r1['efficiency']) * 100:+.3f} pt, supervised "
            f"{(r0['supervised'] - r1['supervised']) * 100:+.3f} pt"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seq-length", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--aft-chats", type=int, default=10_000)
    parser.add_argument("--msm-docs", type=int, default=13_000)
    args = parser.parse_args()
    datasets.disable_progress_bars()
    cpu = platform.processor() or platform.machine()
    print(
        f"packing benchmark: seq_length={args.seq_length} seed={args.seed} "
        f"timed runs={args.repeats} (min and median, after 1 warm-up)\n"
        f"python {platform.python_version()}, numpy {np.__version__}, trl {trl.__version__}, "
        f"datasets {datasets.__version__}, pyarrow {pa.__version__}; {cpu}, {os.cpu_count()} CPUs"
    )
    for kind, n in (("aft", args.aft_chats), ("msm", args.msm_docs)):
        corpus = make_corpus(kind, args.seed, args.seq_length, n)
        lens = corpus["lengths"]
        print(
            f"\n{kind}: {len(lens)} sequences, {int(lens.sum())} tokens, mean {lens.mean():.0f}, "
            f"max {lens.max()}, {(lens > args.seq_length).sum()} longer than {args.seq_length}, "
            f"lower bound {-(-int(lens.sum()) // args.seq_length)} rows"
        )
        results = run_ours(corpus, args.seq_length, args.repeats)
        results += run_trl(corpus, args.seq_length, args.repeats)
        print_table(kind, results)


if __name__ == "__main__":
    main()
