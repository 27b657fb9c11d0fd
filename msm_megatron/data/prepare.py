"""JSONL → Megatron-Core indexed datasets (``.bin``/``.idx``): the work of ``msm data prepare``.

Each non-blank input line becomes one sequence (and one Megatron "document"), in input order:

- ``documents``: ``{"text": ...}`` → ``tokenizer.encode(text) + [EOD]``.
- ``chats``: ``{"messages": [...]}`` → :func:`msm_megatron.data.chat.render_chat` ids, plus EOD
  unless the rendering already ends with it; a second dataset holds the loss mask (1 = the token
  is a training target; the appended EOD gets 0).

Files written for ``out_prefix = runs/data/demo`` (all via temporary names, renamed at the end)::

    demo.bin / demo.idx             token ids, Megatron IndexedDataset (uint16 if vocab < 65500)
    demo_mask.bin / demo_mask.idx   chats only: uint8 loss mask, same sequence lengths
    demo.stats.json                 counts, length percentiles, skips, tokenizer, input hashes
    demo.lengths.png                histogram of sequence lengths (log y)

The stats file is written last; a rerun whose inputs (sha256), tokenizer and options match it
returns the recorded stats without redoing the work. Typical use::

    tok = SentencePieceTokenizer("runs/tok/spm.model")
    stats = prepare_jsonl([Path("examples/corpus/demo_corpus.jsonl")], tok,
                          Path("runs/data/demo"), kind="documents", workers=2)
    ds = IndexedDataset("runs/data/demo")  # megatron.core.datasets.indexed_dataset
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from msm_megatron.data.encode import (
    Encoded,
    Encoder,
    Options,
    encode_in_worker,
    init_worker,
    ordered_map,
    read_chunks,
    tokenizer_spec,
)
from msm_megatron.data.spm import file_sha256

FORMAT = "msm-indexed-dataset"
VERSION = 1
Kind = Literal["documents", "chats"]
SKIP_REASONS = ("invalid_utf8", "invalid_json", "not_an_object", "missing_field", "empty_text",
                "contains_eod", "invalid_chat", "no_supervised_tokens")
_SUFFIXES = {"bin": ".bin", "idx": ".idx", "mask_bin": "_mask.bin", "mask_idx": "_mask.idx",
             "stats": ".stats.json", "png": ".lengths.png"}


class DataError(ValueError):
    """A bad input line; the message is ``file:line: reason``.

    Attributes:
        path: The input file.
        lineno: 1-based line number.
        message: What is wrong (without the location).
        reason: One of :data:`SKIP_REASONS` (the key counted in ``stats["skipped"]``).
    """

    def __init__(self, path: str | Path, lineno: int, reason: str, message: str,
                 location: str | None = None) -> None:
        super().__init__(f"{location or f'{path}:{lineno}'}: {message}")
        self.path, self.lineno, self.reason, self.message = str(path), lineno, reason, message


def output_paths(out_prefix: str | Path) -> dict[str, Path]:
    """The files :func:`prepare_jsonl` writes for ``out_prefix`` (mask files only for chats)."""
    p = Path(out_prefix)
    return {key: p.with_name(p.name + suffix) for key, suffix in _SUFFIXES.items()}


def mask_prefix(prefix: str | Path) -> Path:
    """Prefix of the loss-mask dataset that goes with the token dataset at ``prefix``."""
    p = Path(prefix)
    return p.with_name(p.name + "_mask")


class _Writer:
    """Megatron ``IndexedDatasetBuilder``s for tokens (and the mask), plus running counts."""

    def __init__(self, prefix: Path, dtype: type, with_mask: bool, n_inputs: int) -> None:
        from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

        self.prefix, self.dtype_name = prefix, np.dtype(dtype).name
        self.tokens = IndexedDatasetBuilder(str(prefix) + ".bin", dtype=dtype)
        mask_bin = str(mask_prefix(prefix)) + ".bin"
        self.mask = IndexedDatasetBuilder(mask_bin, dtype=np.uint8) if with_mask else None
        self.lengths: list[np.ndarray] = []
        self.supervised = 0
        self.per_input = [{"sequences": 0, "skipped": 0} for _ in range(n_inputs)]

    def add(self, enc: Encoded) -> None:
        import torch

        ends = np.cumsum(enc.lengths)
        for start, end in zip(ends - enc.lengths, ends, strict=True):
            self.tokens.add_item(torch.from_numpy(enc.ids[start:end]))
            self.tokens.end_document()
            if self.mask is not None:
                self.mask.add_item(torch.from_numpy(enc.mask[start:end]))
                self.mask.end_document()
        self.lengths.append(enc.lengths)
        if enc.mask is not None:
            self.supervised += int(enc.mask.sum(dtype=np.int64))
        self.per_input[enc.file_index]["sequences"] += len(enc.lengths)

    def finalize(self) -> np.ndarray:
        """Writes the ``.idx`` files, reads both datasets back; returns all sequence lengths."""
        from megatron.core.datasets.indexed_dataset import IndexedDataset

        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)
        written = [(self.prefix, self.tokens), (mask_prefix(self.prefix), self.mask)]
        written = [(str(p), b) for p, b in written if b is not None]
        for prefix, builder in written:
            builder.finalize(prefix + ".idx")
        if lengths.size == 0:
            raise ValueError("no sequences to write: every line was blank or skipped")
        for prefix, _ in written:
            back = IndexedDataset(prefix)  # keep it alive: its arrays are views of its mmap
            if not np.array_equal(back.sequence_lengths, lengths):
                raise RuntimeError(f"{prefix}: IndexedDataset reads back different lengths")
            del back
        return lengths


# ----------------------------------------------------------------------------- stats


def _fingerprint(inputs: list[dict], tokenizer: dict, options: dict) -> str:
    """Hash of what determines the output: format, options, tokenizer, input contents."""
    key = {"format": FORMAT, "version": VERSION, "options": options, "tokenizer": tokenizer,
           "inputs": [i["sha256"] for i in inputs]}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _reusable_stats(out_prefix: Path, fingerprint: str) -> dict | None:
    """The recorded stats if they match ``fingerprint`` and every file they list is intact."""
    stats_path = output_paths(out_prefix)["stats"]
    try:
        stats = json.loads(stats_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(stats, dict) or stats.get("fingerprint") != fingerprint:
        return None
    intact = all((p := stats_path.with_name(name)).is_file() and p.stat().st_size == size
                 for name, size in stats.get("file_bytes", {}).items())
    return stats if intact else None


def _length_summary(lengths: np.ndarray) -> dict:
    pct = {f"p{q}": int(np.percentile(lengths, q, method="nearest")) for q in (50, 90, 99)}
    return {**pct, "min": int(lengths.min()), "max": int(lengths.max()),
            "mean": round(float(lengths.mean()), 2)}


def _plot_lengths(lengths: np.ndarray, path: Path, title: str) -> None:
    """Histogram of sequence lengths with a log y axis, written to ``path`` (PNG)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.subplots()
    ax.hist(lengths, bins=min(60, max(1, int(np.unique(lengths).size))), color="#4C72B0")
    ax.set_yscale("log")
    for q, style in ((50, "-"), (90, "--"), (99, ":")):
        v = np.percentile(lengths, q, method="nearest")
        ax.axvline(v, color="k", linestyle=style, linewidth=1, label=f"p{q} = {v:.0f}")
    ax.set(xlabel="sequence length (tokens, incl. EOD)", ylabel="sequences", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")


# ----------------------------------------------------------------------------- driver


# What one prepare_jsonl call reads and writes, and its identity (fingerprint).
_Job = collections.namedtuple("_Job", "inputs input_info tokenizer tok_id out_prefix options "
                               "fingerprint")


def _encode_all(job: _Job, opts: Options, workers: int, method: str | None) -> Iterator[Encoded]:
    """Encoded chunks in input order, from a worker pool or (``workers == 1``) in-process."""
    chunks = read_chunks(job.inputs)
    if workers <= 1:
        yield from map(Encoder(job.tokenizer, opts), chunks)
        return
    method = method or ("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    init_args = (tokenizer_spec(job.tokenizer, method), job.tokenizer.describe(), opts)
    with mp.get_context(method).Pool(workers, init_worker, init_args) as pool:
        yield from ordered_map(encode_in_worker, chunks, pool, depth=4 * workers)


def _consume(encoded: Iterable[Encoded], writer: _Writer, job: _Job, bar: Any) -> dict[str, int]:
    """Feeds encoded chunks to the writer; raises or counts bad lines. Returns skip counts."""
    skipped: dict[str, int] = {}
    for enc in encoded:
        for lineno, reason, message in enc.bad:
            if not job.options["skip_bad"]:
                raise DataError(job.inputs[enc.file_index], lineno, reason, message)
            skipped[reason] = skipped.get(reason, 0) + 1
            writer.per_input[enc.file_index]["skipped"] += 1
        writer.add(enc)
        bar.update(enc.nbytes)
    return skipped


def _stats(job: _Job, writer: _Writer, lengths: np.ndarray, skipped: dict, extra: dict) -> dict:
    """The content of ``<out_prefix>.stats.json``."""
    chats = job.options["kind"] == "chats"
    return {
        "format": FORMAT, "version": VERSION, "kind": job.options["kind"],
        "fingerprint": job.fingerprint, "documents": int(lengths.size),
        "tokens": int(lengths.sum()), "supervised_tokens": writer.supervised if chats else None,
        "lengths": _length_summary(lengths),
        "skipped": skipped, "skipped_total": sum(skipped.values()),
        "dtype": writer.dtype_name, "mask_dtype": "uint8" if chats else None,
        "eod_id": job.tok_id["eod_id"], "vocab_size": job.tok_id["vocab_size"],
        "tokenizer": job.tok_id, "options": job.options,
        "inputs": [{**i, **c} for i, c in zip(job.input_info, writer.per_input, strict=True)],
        **extra,
    }


def _install(tmp: Path, out_prefix: Path, kind: str, stats: dict, lengths: np.ndarray) -> None:
    """Moves the temporary files into place; the stats file goes last."""
    final, temp = output_paths(out_prefix), output_paths(tmp)
    final["stats"].unlink(missing_ok=True)
    _plot_lengths(lengths, temp["png"], f"{out_prefix.name}: {len(lengths)} {kind}")
    names = ["bin", "idx", "png"] + (["mask_bin", "mask_idx"] if kind == "chats" else [])
    stats["file_bytes"] = {final[n].name: temp[n].stat().st_size for n in names}
    for n in names:
        os.replace(temp[n], final[n])
    if kind != "chats":
        final["mask_bin"].unlink(missing_ok=True)
        final["mask_idx"].unlink(missing_ok=True)
    temp["stats"].write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    os.replace(temp["stats"], final["stats"])


def _run(job: _Job, workers: int, progress: bool, start_method: str | None) -> dict:
    """Does the work of :func:`prepare_jsonl` once the outputs are known to be stale."""
    from megatron.core.datasets.indexed_dataset import DType
    from tqdm import tqdm

    kind, vocab, out = job.options["kind"], job.tok_id["vocab_size"], job.out_prefix
    dtype = DType.optimal_dtype(vocab)  # a numpy type, as the builder wants
    opts = Options(kind, job.options.get("text_field", "text"),
                    job.options.get("keep_think", True), job.tok_id["eod_id"], vocab,
                    np.dtype(dtype).name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    start = time.perf_counter()
    try:
        writer = _Writer(tmp, dtype, kind == "chats", len(job.inputs))
        total = sum(i["bytes"] for i in job.input_info)
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"prepare {out.name}",
                  disable=not progress) as bar:
            encoded = _encode_all(job, opts, workers, start_method)
            with contextlib.closing(encoded):  # stops the worker pool at once on errors
                skipped = _consume(encoded, writer, job, bar)
        lengths = writer.finalize()
        elapsed = time.perf_counter() - start
        stats = _stats(job, writer, lengths, skipped, {
            "workers": workers, "elapsed_s": round(elapsed, 3),
            "tokens_per_s": round(float(lengths.sum()) / max(elapsed, 1e-9), 1)})
        _install(tmp, out, kind, stats, lengths)
        return stats
    finally:
        for p in output_paths(tmp).values():
            p.unlink(missing_ok=True)


def prepare_jsonl(
    inputs: list[Path],
    tokenizer: Any,
    out_prefix: Path,
    *,
    kind: Kind = "documents",
    text_field: str = "text",
    workers: int = 2,
    skip_bad: bool = False,
    keep_think: bool = True,
    progress: bool = True,
    start_method: str | None = None,
) -> dict:
    """Tokenizes JSONL files into a Megatron indexed dataset (plus a loss mask for chats).

    Args:
        inputs: JSONL files, read in order; output order equals input order.
        tokenizer: Has ``encode(text)``, ``eod_id``, ``vocab_size`` and ``describe()`` (as
            :func:`msm_megatron.data.tokenizers.load_tokenizer` returns).
        out_prefix: Output prefix, e.g. ``runs/data/demo`` (see :func:`output_paths`).
        kind: ``"documents"`` (``{"text": ...}`` lines) or ``"chats"`` (``{"messages": ...}``).
        text_field: Field holding the text of a document.
        workers: Tokenizer processes; 1 runs in this process. The result does not depend on it.
        skip_bad: Skip bad lines and count them per reason instead of failing on the first.
        keep_think: Chats: keep ``<think>`` blocks (passed to ``render_chat``).
        progress: Show a tqdm bar over input bytes.
        start_method: Multiprocessing start method; default ``fork`` where available.

    Returns:
        The stats (as in ``<out_prefix>.stats.json``) plus ``reused``: True when an existing
        output matched and nothing was redone.

    Raises:
        DataError: A bad line (``file:line: reason``) and ``skip_bad`` is False.
        ValueError: Unknown ``kind``, a missing input, chats with a tokenizer that has no chat
            template, or nothing left to write.
    """
    if kind not in ("documents", "chats"):
        raise ValueError(f"kind must be 'documents' or 'chats', got {kind!r}")
    inputs = [Path(p) for p in inputs]
    if not inputs or (missing := [str(p) for p in inputs if not p.is_file()]):
        raise ValueError(f"input files not found: {missing}" if inputs else "no input files")
    if kind == "chats" and getattr(tokenizer, "chat_template", "") is None:
        raise ValueError(f"{tokenizer!r} has no chat template; chats need one (load_tokenizer's "
                         "chat_template=... argument adds it)")
    options = {"kind": kind, "skip_bad": skip_bad}
    options.update({"keep_think": keep_think} if kind == "chats" else {"text_field": text_field})
    tok_id = {**tokenizer.describe(), "eod_id": int(tokenizer.eod_id),
              "vocab_size": int(tokenizer.vocab_size)}
    info = [{"path": str(p), "sha256": file_sha256(p), "bytes": p.stat().st_size} for p in inputs]
    job = _Job(inputs, info, tokenizer, tok_id, Path(out_prefix), options,
               _fingerprint(info, tok_id, options))
    if (old := _reusable_stats(job.out_prefix, job.fingerprint)) is not None:
        return {**old, "reused": True}
    return {**_run(job, workers, progress, start_method), "reused": False}
