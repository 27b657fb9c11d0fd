"""Tokenization throughput: ``prepare_jsonl`` vs a plain single-process loop, same corpus.

Run from the repository root (CPU only, about a minute on a 2-core machine)::

    .venv/bin/python bench/prepare.py            # defaults: --mb 20 --workers 2 --repeats 3

The corpus is ``examples/corpus/demo_corpus.jsonl`` replicated to at least ``--mb`` MB in a
temporary directory; the tokenizer is a SentencePiece BPE model (vocab 2048) trained on the
original corpus with :func:`msm_megatron.data.spm.train_sentencepiece`.

- **peer**: read the JSONL line by line, ``json.loads``, ``tokenizer.encode(text)``, append EOD,
  write with numpy ``tofile`` (uint16): the simplest correct tokenizer loop.
- **ours**: :func:`msm_megatron.data.prepare.prepare_jsonl` end to end (input hashing, worker
  pool, Megatron ``IndexedDatasetBuilder`` ``.bin``/``.idx``, read-back check, stats file and
  histogram PNG), with ``--workers`` processes and, for reference, with 1 (in-process).

Both write the same token stream: the script checks that ours ``.bin`` equals the peer's file
byte for byte. Times are the best of ``--repeats`` runs; Megatron's import is done beforehand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from msm_megatron._compat.quiet import quiet_third_party  # noqa: E402

CORPUS = ROOT / "examples" / "corpus" / "demo_corpus.jsonl"


def replicate(src: Path, dst: Path, min_mb: float) -> int:
    """Writes ``src`` repeated until ``dst`` holds at least ``min_mb`` MB; returns bytes."""
    data = src.read_bytes()
    copies = max(1, int(np.ceil(min_mb * 1e6 / len(data))))
    with dst.open("wb") as f:
        for _ in range(copies):
            f.write(data)
    return dst.stat().st_size


def plain_loop(path: Path, tok, out: Path) -> int:
    """The peer: one process, one line at a time; returns the number of tokens written."""
    eod, total = tok.eod_id, 0
    with path.open(encoding="utf-8") as src, out.open("wb") as dst:
        for line in src:
            if not line.strip():
                continue
            ids = tok.encode(json.loads(line)["text"])
            ids.append(eod)
            np.array(ids, dtype=np.uint16).tofile(dst)
            total += len(ids)
    return total


def best_times(variants: dict[str, Callable[[], int]], repeats: int) -> dict[str, tuple]:
    """``{name: (best seconds, tokens)}``; the variants take turns, so they share the load."""
    best: dict[str, tuple[float, int]] = {}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            tokens = fn()
            secs = time.perf_counter() - start
            best[name] = min(best.get(name, (secs, tokens)), (secs, tokens))
    return best


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=20.0, help="corpus size in MB (at least)")
    parser.add_argument("--workers", type=int, default=2, help="prepare_jsonl worker processes")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant (best)")
    args = parser.parse_args()
    quiet_third_party()
    import megatron.core
    import sentencepiece
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDataset  # noqa: F401 (warm)

    from msm_megatron.data.prepare import output_paths, prepare_jsonl
    from msm_megatron.data.spm import SentencePieceTokenizer, train_sentencepiece

    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp_dir:
        tmp = Path(tmp_dir)
        tok = SentencePieceTokenizer(train_sentencepiece(CORPUS, tmp / "spm", vocab_size=2048))
        corpus = tmp / "corpus.jsonl"
        nbytes = replicate(CORPUS, corpus, args.mb)
        peer_out = tmp / "peer.bin"

        def ours(workers: int) -> Callable[[], int]:
            def run() -> int:
                prefix = tmp / f"ours{workers}"
                for p in output_paths(prefix).values():
                    p.unlink(missing_ok=True)  # no reuse: do the work every time
                stats = prepare_jsonl([corpus], tok, prefix, workers=workers, progress=False)
                return stats["tokens"]

            return run

        variants = {"peer": lambda: plain_loop(corpus, tok, peer_out)}
        for workers in sorted({args.workers, 1}, reverse=True):
            variants[f"workers={workers}"] = ours(workers)
        load_before = load_average()
        best = best_times(variants, args.repeats)
        peer_s, peer_tokens = best.pop("peer")
        for name in best:
            n = name.split("=")[1]
            if (tmp / f"ours{n}.bin").read_bytes() != peer_out.read_bytes():
                raise SystemExit(f"MISMATCH: {name} wrote different tokens than the peer")

    print(f"device   : {cpu_name()}, {os.cpu_count()} CPUs (no GPU used); load average "
          f"{load_before} before, {load_average()} after")
    print(f"versions : python {platform.python_version()}, torch {torch.__version__}, "
          f"megatron-core {megatron.core.__version__}, sentencepiece {sentencepiece.__version__}")
    print(f"corpus   : {nbytes / 1e6:.1f} MB, {peer_tokens:,} tokens (incl. EOD), SentencePiece "
          f"BPE vocab 2048; best of {args.repeats} runs; outputs identical byte for byte")
    print_table(peer_s, peer_tokens, best)


def print_table(peer_s: float, peer_tokens: int, best: dict[str, tuple]) -> None:
    """One row per variant: seconds, tokens/s and the ratio against the peer."""
    print()
    print(f"{'variant':<46} {'seconds':>8} {'tokens/s':>12} {'vs peer':>8}")
    peer_rate = peer_tokens / peer_s
    print(f"{'peer: plain loop (1 process, encode, tofile)':<46} {peer_s:>8.2f} "
          f"{peer_rate:>12,.0f} {1.0:>7.2f}x")
    for name, (secs, tokens) in best.items():
        rate = tokens / secs
        print(f"{'ours: prepare_jsonl, ' + name:<46} {secs:>8.2f} {rate:>12,.0f} "
              f"{rate / peer_rate:>7.2f}x")


if __name__ == "__main__":
    main()
