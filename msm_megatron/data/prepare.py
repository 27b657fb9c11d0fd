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
import importlib
import json
import multiprocessing as mp
import os
import pickle
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from msm_megatron.data.spm import file_sha256

FORMAT = "msm-indexed-dataset"
VERSION = 1
Kind = Literal["documents", "chats"]
SKIP_REASONS = ("invalid_utf8", "invalid_json", "not_an_object", "missing_field", "empty_text",
                "contains_eod", "invalid_chat", "no_supervised_tokens")
_SUFFIXES = {"bin": ".bin", "idx": ".idx", "mask_bin": "_mask.bin", "mask_idx": "_mask.idx",
             "stats": ".stats.json", "png": ".lengths.png"}
_CHUNK_LINES = 256
_CHUNK_BYTES = 1 << 20


class DataError(ValueError):
    """A bad input line; the message is ``file:line: reason``.

    Attributes:
        path: The input file.
        lineno: 1-based line number.
        reason: One of :data:`SKIP_REASONS` (the key counted in ``stats["skipped"]``).
    """

    def __init__(self, path: str | Path, lineno: int, reason: str, message: str) -> None:
        super().__init__(f"{path}:{lineno}: {message}")
        self.path, self.lineno, self.reason = str(path), lineno, reason


def output_paths(out_prefix: str | Path) -> dict[str, Path]:
    """The files :func:`prepare_jsonl` writes for ``out_prefix`` (mask files only for chats)."""
    p = Path(out_prefix)
    return {key: p.with_name(p.name + suffix) for key, suffix in _SUFFIXES.items()}


def mask_prefix(prefix: str | Path) -> Path:
    """Prefix of the loss-mask dataset that goes with the token dataset at ``prefix``."""
    p = Path(prefix)
    return p.with_name(p.name + "_mask")


# ----------------------------------------------------------------------------- encoding


# What workers need to know (small and picklable), and a chunk of numbered raw input lines.
_Options = collections.namedtuple("_Options", "kind text_field keep_think eod_id vocab_size dtype")
_Chunk = collections.namedtuple("_Chunk", "file_index lines nbytes")


@dataclass(slots=True)
class _Encoded:
    """One chunk's good sequences (concatenated) and its bad lines ``(lineno, reason, msg)``."""

    file_index: int
    nbytes: int
    ids: np.ndarray
    lengths: np.ndarray
    mask: np.ndarray | None
    bad: list[tuple[int, str, str]]


class _BadLine(Exception):
    """``_BadLine(reason, message)``: one input line cannot be used."""


class _Encoder:
    """Turns chunks of raw lines into token ids (and masks); runs in each worker."""

    def __init__(self, tokenizer: Any, opts: _Options, batch: bool = True) -> None:
        # In worker processes ``batch=False``: the workers are the parallelism, and a
        # tokenizer's own batch threads (SentencePiece, HF) would oversubscribe the cores.
        self.tok, self.opts, self.batch = tokenizer, opts, batch
        self.render = None
        if opts.kind == "chats":  # imported here: only chats need it
            chat = importlib.import_module("msm_megatron.data.chat")
            self.render = chat.render_chat
            # Only errors about the chat are bad lines; others (no chat template) are fatal.
            self.chat_error = getattr(chat, "ChatFormatError", ValueError)

    def __call__(self, chunk: _Chunk) -> _Encoded:
        bad: list[tuple[int, str, str]] = []
        records: list[tuple[int, Any]] = []
        for lineno, raw in chunk.lines:
            try:
                records.append((lineno, self._parse(raw)))
            except _BadLine as e:
                bad.append((lineno, *e.args))
        if self.render is None:
            return self._pack(chunk, self._encode_texts(records, bad), None, sorted(bad))
        seqs, masks = [], []
        for lineno, messages in records:
            try:
                ids, mask = self._render(messages)
            except _BadLine as e:
                bad.append((lineno, *e.args))
                continue
            seqs.append(ids)
            masks.append(mask)
        return self._pack(chunk, seqs, masks, sorted(bad))

    def _parse(self, raw: bytes) -> Any:
        """The text (documents) or message list (chats) of one line, or raises ``_BadLine``."""
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _BadLine("invalid_utf8", f"invalid UTF-8 at byte {e.start}") from None
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise _BadLine("invalid_json", f"invalid JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(record, dict):
            raise _BadLine("not_an_object", f"expected a JSON object, got {type(record).__name__}")
        if self.opts.kind == "chats":
            messages = record.get("messages")
            if not isinstance(messages, list) or not messages:
                raise _BadLine("missing_field", "expected a non-empty list 'messages'")
            return messages
        text = record.get(self.opts.text_field)
        if not isinstance(text, str):
            raise _BadLine("missing_field", f"expected a string field '{self.opts.text_field}'")
        if not text.strip():
            raise _BadLine("empty_text", f"field '{self.opts.text_field}' is empty")
        return text

    def _encode_texts(self, records: list[tuple[int, str]], bad: list) -> list[list[int]]:
        """Token ids + EOD of each text; texts that already contain EOD go to ``bad``."""
        texts = [t for _, t in records]
        batch = getattr(self.tok, "encode_batch", None) if self.batch else None
        ids = batch(texts) if batch is not None else [self.tok.encode(t) for t in texts]
        eod, seqs = self.opts.eod_id, []
        for (lineno, _), x in zip(records, ids, strict=True):
            if eod in x:  # e.g. literal "<|endoftext|>" in the text: a false document boundary
                bad.append((lineno, "contains_eod", f"text encodes to the EOD token (id {eod})"))
            else:
                seqs.append([*x, eod])
        return seqs

    def _render(self, messages: list) -> tuple[list[int], list[int]]:
        try:
            chat = self.render(self.tok, messages, keep_think=self.opts.keep_think)
        except self.chat_error as e:
            raise _BadLine("invalid_chat", f"invalid chat: {e}") from None
        ids, mask = [int(i) for i in chat.ids], [int(m) for m in chat.loss_mask]
        if len(ids) != len(mask):
            raise RuntimeError(f"render_chat returned {len(ids)} ids but {len(mask)} mask values")
        if not any(mask):
            raise _BadLine("no_supervised_tokens", "chat has no supervised (assistant) tokens")
        if not ids or ids[-1] != self.opts.eod_id:
            ids.append(self.opts.eod_id)
            mask.append(0)
        return ids, mask

    def _pack(
        self, chunk: _Chunk, seqs: list[list[int]], masks: list[list[int]] | None, bad: list
    ) -> _Encoded:
        ids = np.array([t for s in seqs for t in s], dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.opts.vocab_size):
            raise ValueError(
                f"tokenizer produced ids outside [0, {self.opts.vocab_size}): "
                f"{ids.min()}..{ids.max()}; is vocab_size right?"
            )
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        mask = None if masks is None else np.array([m for s in masks for m in s], np.uint8)
        return _Encoded(chunk.file_index, chunk.nbytes, ids.astype(self.opts.dtype), lengths,
                        mask, bad)


_WORKER: dict[str, Any] = {}


def _rebuild_tokenizer(cls: type, path: str, expected: dict) -> Any:
    """Re-creates an unpicklable tokenizer from its file in a spawned worker."""
    from msm_megatron.data.tokenizers import load_tokenizer

    for make in (cls, load_tokenizer):
        try:
            tok = make(path)
        except Exception:  # try the next way
            continue
        if tok.describe() == expected:
            return tok
    raise RuntimeError(f"cannot re-create the tokenizer {expected} from {path} in a worker")


def _init_worker(spec: tuple[str, Any], expected: dict, opts: _Options) -> None:
    # Never raise here: multiprocessing.Pool would restart the failing worker forever.
    try:
        how, what = spec
        tok = _rebuild_tokenizer(*what, expected) if how == "path" else what
        _WORKER["encoder"] = _Encoder(tok, opts, batch=False)
    except Exception as e:  # reported by the first task instead
        _WORKER["error"] = f"{type(e).__name__}: {e}"


def _encode_in_worker(chunk: _Chunk) -> _Encoded:
    if "error" in _WORKER:
        raise RuntimeError(f"tokenizer worker failed to start: {_WORKER['error']}")
    return _WORKER["encoder"](chunk)


def _tokenizer_spec(tokenizer: Any, start_method: str) -> tuple[str, Any]:
    """How workers get the tokenizer: inherited (fork), pickled, or re-created from its path."""
    if start_method == "fork":
        return ("object", tokenizer)
    try:
        pickle.dumps(tokenizer)
        return ("object", tokenizer)
    except Exception:  # unpicklable objects raise many kinds
        path = tokenizer.describe().get("path")
        if not path:
            raise ValueError(
                f"{type(tokenizer).__name__} can be neither pickled nor re-created from a path "
                f"for {start_method} workers; use workers=1"
            ) from None
        return ("path", (type(tokenizer), str(path)))


def _read_chunks(inputs: list[Path]) -> Iterator[_Chunk]:
    """Yields numbered non-blank lines in chunks of ≲256 lines / 1 MiB, file by file."""
    for file_index, path in enumerate(inputs):
        lines: list[tuple[int, bytes]] = []
        nbytes = 0
        with path.open("rb") as f:
            for lineno, raw in enumerate(f, 1):
                nbytes += len(raw)
                if raw.strip():
                    lines.append((lineno, raw))
                if len(lines) >= _CHUNK_LINES or nbytes >= _CHUNK_BYTES:
                    yield _Chunk(file_index, lines, nbytes)
                    lines, nbytes = [], 0
        if lines or nbytes:
            yield _Chunk(file_index, lines, nbytes)


def _ordered_map(
    fn: Callable[[_Chunk], _Encoded], items: Iterable[_Chunk], pool: Any, depth: int
) -> Iterator[_Encoded]:
    """``pool.imap`` that keeps at most ``depth`` chunks in flight (bounded memory), in order."""
    pending: collections.deque = collections.deque()
    for item in items:
        pending.append(pool.apply_async(fn, (item,)))
        if len(pending) >= depth:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


# ----------------------------------------------------------------------------- writing


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

    def add(self, enc: _Encoded) -> None:
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


def _encode_all(job: _Job, opts: _Options, workers: int, method: str | None) -> Iterator[_Encoded]:
    """Encoded chunks in input order, from a worker pool or (``workers == 1``) in-process."""
    chunks = _read_chunks(job.inputs)
    if workers <= 1:
        yield from map(_Encoder(job.tokenizer, opts), chunks)
        return
    method = method or ("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    init_args = (_tokenizer_spec(job.tokenizer, method), job.tokenizer.describe(), opts)
    with mp.get_context(method).Pool(workers, _init_worker, init_args) as pool:
        yield from _ordered_map(_encode_in_worker, chunks, pool, depth=4 * workers)


def _consume(encoded: Iterable[_Encoded], writer: _Writer, job: _Job, bar: Any) -> dict[str, int]:
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
    opts = _Options(kind, job.options.get("text_field", "text"),
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
