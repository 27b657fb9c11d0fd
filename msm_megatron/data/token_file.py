"""Flat token files: the trainer's input until the Megatron indexed-dataset pipeline lands.

A token file is two files side by side:

- ``<name>.bin``: every document's token ids followed by the EOD id, concatenated, as raw
  little-endian ``uint16`` (when ``vocab_size <= 65536``) or ``uint32``.
- ``<name>.json``: the sidecar: ``format``, ``version``, ``dtype``, ``num_tokens``,
  ``num_documents``, ``eod_id``, ``vocab_size`` and ``meta`` (tokenizer path and hash, source).

Functions accept the ``.bin`` path, the ``.json`` path or the bare ``<name>``. The sidecar is
written last, so a file without one is incomplete. Typical use::

    tok = SentencePieceTokenizer("runs/tok/spm.model")
    tokenize_jsonl_to_token_file("examples/corpus/demo_corpus.jsonl", tok, "runs/data/demo")
    ds = TokenDataset("runs/data/demo", seq_length=256, seed=1234)
    batch = ds.batch([0, 1, 2, 3])  # the first four samples of the run, [4, 256] tensors

Samples follow Megatron's concat-and-split layout: documents are not aligned to samples; sample
``i`` is ``tokens[i*s : i*s + s + 1]`` (inputs are the first ``s``, labels the last ``s``), so
consecutive samples share one boundary token and a sample may span several documents.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

FORMAT = "msm-token-file"
VERSION = 1
_MAKE_HINT = "create it with msm_megatron.data.token_file.tokenize_jsonl_to_token_file"

PathLike = str | Path


class Tokenizer(Protocol):
    """What :func:`tokenize_jsonl_to_token_file` needs from a tokenizer."""

    @property
    def vocab_size(self) -> int: ...  # noqa: D102

    @property
    def eod_id(self) -> int: ...  # noqa: D102

    def encode(self, text: str) -> list[int]: ...  # noqa: D102


def token_file_paths(path: PathLike) -> tuple[Path, Path]:
    """Returns ``(bin_path, sidecar_path)`` for a ``.bin``, ``.json`` or suffix-less path."""
    p = Path(path)
    if p.suffix in (".bin", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".bin"), p.with_name(p.name + ".json")


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """``uint16`` when every id fits (``vocab_size <= 65536``), else ``uint32``."""
    if vocab_size < 1 or vocab_size > 2**32:
        raise ValueError(f"vocab_size must be in [1, 2**32], got {vocab_size}")
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


# ----------------------------------------------------------------------------- writing


def _write_json_atomic(path: Path, obj: dict) -> None:
    """Writes ``obj`` as JSON through a temporary file renamed into place."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _check_doc(doc: Any, index: int, eod_id: int, vocab_size: int) -> np.ndarray:
    """Validates one document's ids and returns them as an int64 array."""
    arr = np.asarray(doc)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"document {index}: expected a non-empty 1-D list of ids, got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"document {index}: ids must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"document {index}: id out of range [0, {vocab_size}): {lo}..{hi}")
    if np.any(arr == eod_id):
        raise ValueError(f"document {index}: contains the EOD id {eod_id}, which marks ends")
    return arr


def _write_bin(
    docs: Iterable[list[int]], bin_path: Path, eod_id: int, vocab_size: int, dtype: np.dtype
) -> tuple[int, int]:
    """Streams documents + EOD into ``bin_path`` via a temporary file; returns (tokens, docs)."""
    tmp = bin_path.with_name(bin_path.name + ".tmp")
    eod = np.array([eod_id], dtype=dtype).tobytes()
    num_tokens = num_docs = 0
    try:
        with tmp.open("wb") as f:
            for i, doc in enumerate(docs):
                arr = _check_doc(doc, i, eod_id, vocab_size)
                f.write(arr.astype(dtype).tobytes())
                f.write(eod)
                num_tokens += arr.size + 1
                num_docs += 1
        os.replace(tmp, bin_path)
    finally:
        tmp.unlink(missing_ok=True)
    return num_tokens, num_docs


def write_token_file(
    docs: Iterable[list[int]],
    out_path: PathLike,
    eod_id: int,
    vocab_size: int,
    meta: dict | None = None,
) -> Path:
    """Writes documents, each followed by ``eod_id``, as a flat token file plus sidecar.

    Streams: documents are written as they arrive, so ``docs`` may be a generator. The data go to
    a temporary file that is renamed into place, and any old sidecar is removed first, so a
    failure never leaves a sidecar that describes the wrong ``.bin``.

    Args:
        docs: Token ids of each document (lists or integer arrays), without EOD.
        out_path: ``<name>``, ``<name>.bin`` or ``<name>.json``.
        eod_id: End-of-document id appended after each document.
        vocab_size: Size of the vocabulary; every id must be below it. Picks the dtype.
        meta: JSON-serializable extras stored under ``meta`` (tokenizer, source, ...).

    Returns:
        The ``.bin`` path.

    Raises:
        ValueError: A document is empty, has ids out of range or contains ``eod_id``; ``meta``
            is not JSON-serializable; ``eod_id`` is not below ``vocab_size``.
    """
    dtype = dtype_for_vocab(vocab_size)
    if not 0 <= eod_id < vocab_size:
        raise ValueError(f"eod_id {eod_id} is not in [0, {vocab_size})")
    try:
        meta_json = json.loads(json.dumps(meta or {}))
    except (TypeError, ValueError) as e:
        raise ValueError(f"meta must be JSON-serializable: {e}") from e
    bin_path, sidecar = token_file_paths(out_path)
    bin_path.parent.mkdir(parents=True, exist_ok=True)
    sidecar.unlink(missing_ok=True)
    num_tokens, num_docs = _write_bin(docs, bin_path, eod_id, vocab_size, dtype)
    info = {
        "format": FORMAT,
        "version": VERSION,
        "bin": bin_path.name,
        "dtype": dtype.name,
        "num_tokens": num_tokens,
        "num_documents": num_docs,
        "eod_id": eod_id,
        "vocab_size": vocab_size,
        "meta": meta_json,
    }
    _write_json_atomic(sidecar, info)
    return bin_path


def _iter_jsonl_texts(path: Path, field: str, progress: bool) -> Iterator[tuple[int, str]]:
    """Yields ``(line_number, text)`` per non-blank line; errors name ``file:line``."""
    with (
        path.open("rb") as f,
        tqdm(
            total=path.stat().st_size,
            unit="B",
            unit_scale=True,
            desc=f"tokenize {path.name}",
            disable=not progress,
        ) as bar,
    ):
        for lineno, raw in enumerate(f, 1):
            bar.update(len(raw))
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{where}: not valid UTF-8 ({e.reason} at byte {e.start})"
                ) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
            if field not in record:
                keys = ", ".join(sorted(record)) or "none"
                raise ValueError(
                    f"{where}: missing field '{field}' (keys: {keys}); pass field=... to read "
                    "another key"
                )
            text = record[field]
            if not isinstance(text, str):
                raise ValueError(
                    f"{where}: field '{field}' must be a string, got {type(text).__name__}"
                )
            if not text.strip():
                raise ValueError(f"{where}: field '{field}' is empty; remove the line or fill it")
            yield lineno, text


def tokenize_jsonl_to_token_file(
    jsonl_path: PathLike,
    tokenizer: Tokenizer,
    out_path: PathLike,
    field: str = "text",
    progress: bool = True,
) -> Path:
    """Tokenizes one document per JSONL line into a token file.

    Blank lines are skipped. The sidecar's ``meta`` records the source path and size, the field,
    and the tokenizer's ``describe()`` (path and SHA-256) when it has one.

    Args:
        jsonl_path: Input file, one JSON object per line.
        tokenizer: Provides ``encode``, ``eod_id`` and ``vocab_size``.
        out_path: ``<name>``, ``<name>.bin`` or ``<name>.json``.
        field: Key holding each document's text.
        progress: Show a tqdm progress bar (bytes read).

    Returns:
        The ``.bin`` path.

    Raises:
        ValueError: The input is missing; a line is not valid JSON, lacks ``field``, or its text
            is empty; the message names ``file:line``.
    """
    src = Path(jsonl_path)
    if not src.is_file():
        raise ValueError(f"input {src} not found; pass the path of a .jsonl corpus")
    describe = getattr(tokenizer, "describe", None)
    meta = {
        "source": str(src),
        "source_bytes": src.stat().st_size,
        "field": field,
        "tokenizer": describe() if callable(describe) else {"type": type(tokenizer).__name__},
    }

    def docs() -> Iterator[list[int]]:
        for lineno, text in _iter_jsonl_texts(src, field, progress):
            ids = tokenizer.encode(text)
            if not ids:
                raise ValueError(f"{src}:{lineno}: field '{field}' encodes to no tokens")
            yield ids

    return write_token_file(docs(), out_path, tokenizer.eod_id, tokenizer.vocab_size, meta)


# ----------------------------------------------------------------------------- reading


def read_token_file_meta(path: PathLike) -> dict:
    """Loads and checks a token file's sidecar against its ``.bin``.

    Raises:
        ValueError: Either file is missing, the sidecar is not a token-file sidecar, or the
            ``.bin`` size does not match ``num_tokens``; the message names the path and the fix.
    """
    bin_path, sidecar = token_file_paths(path)
    for p in (bin_path, sidecar):
        if not p.is_file():
            raise ValueError(
                f"token file {p} not found (a token file is {bin_path.name} plus "
                f"{sidecar.name}); {_MAKE_HINT}"
            )
    try:
        info = json.loads(sidecar.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{sidecar}: sidecar is not valid JSON ({e.msg}); {_MAKE_HINT}") from e
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ValueError(f"{sidecar}: not a {FORMAT} sidecar; {_MAKE_HINT}")
    if info.get("version") != VERSION:
        raise ValueError(
            f"{sidecar}: version {info.get('version')}, expected {VERSION}; "
            f"re-create the file ({_MAKE_HINT})"
        )
    itemsize = np.dtype(info["dtype"]).itemsize
    expected, actual = info["num_tokens"] * itemsize, bin_path.stat().st_size
    if actual != expected:
        raise ValueError(
            f"{bin_path} has {actual} bytes but {sidecar.name} says num_tokens="
            f"{info['num_tokens']} ({info['dtype']}, {expected} bytes): the pair is truncated or "
            f"from different runs; delete both and {_MAKE_HINT}"
        )
    return info


def iter_documents(path: PathLike) -> Iterator[np.ndarray]:
    """Yields each document's ids (EOD stripped) from a token file, in order."""
    info = read_token_file_meta(path)
    bin_path, _ = token_file_paths(path)
    if info["num_tokens"] == 0:
        return
    tokens = np.memmap(bin_path, dtype=info["dtype"], mode="r")
    ends = np.flatnonzero(tokens == info["eod_id"])
    start = 0
    for end in ends:
        yield np.asarray(tokens[start:end], dtype=np.int64)
        start = int(end) + 1


class TokenDataset:
    """Fixed-length training samples cut from a token file, in a seeded shuffled order.

    Sample ``i`` (unshuffled) is ``tokens[i*s : i*s + s + 1]`` with ``s = seq_length``: inputs
    are its first ``s`` ids and labels its last ``s``, so labels are inputs shifted by one and
    the last label of sample ``i`` is the first input of sample ``i + 1``. There are
    ``num_samples = (num_tokens - 1) // seq_length`` samples; a tail shorter than a sample is
    dropped.

    The run's order is fixed by ``(seed, k)`` alone: global sample ``k`` lies in epoch
    ``k // num_samples`` and is entry ``k % num_samples`` of that epoch's permutation, drawn
    from ``np.random.default_rng([seed, epoch])``. Each epoch visits every sample once, and a
    resumed run only needs ``consumed_samples`` to continue exactly where it stopped.

    The loss mask is all ones, as in Megatron's default (``eod_mask_loss=False``) for
    concatenated documents: EOD tokens and the transition from one document's end into the next
    are trained on, which teaches the model to end documents, and attention is not reset at
    document boundaries.

    Args:
        path: Token file (``<name>``, ``<name>.bin`` or ``<name>.json``).
        seq_length: Tokens per sample (model context length).
        seed: Non-negative shuffle seed (``data.seed`` in the config).

    Raises:
        ValueError: The token file is missing or inconsistent, ``seed`` is negative, or the file
            holds fewer than ``seq_length + 1`` tokens.
    """

    def __init__(self, path: PathLike, seq_length: int, seed: int) -> None:
        self.info = read_token_file_meta(path)
        self.path, _ = token_file_paths(path)
        if seq_length < 1:
            raise ValueError(f"seq_length must be >= 1, got {seq_length}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.seq_length, self.seed = seq_length, seed
        self.num_tokens: int = self.info["num_tokens"]
        self.num_samples = max(0, (self.num_tokens - 1) // seq_length)
        if self.num_samples < 1:
            raise ValueError(
                f"{self.path} has {self.num_tokens} tokens, fewer than the seq_length + 1 = "
                f"{seq_length + 1} one sample needs; lower data.seq_length or add documents"
            )
        self.tokens = np.memmap(self.path, dtype=self.info["dtype"], mode="r")
        self._perms: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self) -> str:
        return (
            f"TokenDataset({str(self.path)!r}, seq_length={self.seq_length}, "
            f"seed={self.seed}, num_samples={self.num_samples})"
        )

    def epoch_permutation(self, epoch: int) -> np.ndarray:
        """The order of samples in ``epoch`` (cached for the two most recent epochs)."""
        perm = self._perms.get(epoch)
        if perm is None:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)
            if len(self._perms) >= 2:
                self._perms.pop(next(iter(self._perms)))
            self._perms[epoch] = perm
        return perm

    def index_for(self, global_sample_idx: int) -> int:
        """Unshuffled sample index of the run's ``global_sample_idx``-th sample."""
        k = int(global_sample_idx)
        if k < 0:
            raise ValueError(f"global sample index must be >= 0, got {global_sample_idx}")
        epoch, pos = divmod(k, self.num_samples)
        return int(self.epoch_permutation(epoch)[pos])

    def sample(self, sample_idx: int) -> dict[str, np.ndarray]:
        """Unshuffled sample ``sample_idx``: ``tokens``, ``labels`` (int64), ``loss_mask``."""
        if not 0 <= sample_idx < self.num_samples:
            raise IndexError(f"sample {sample_idx} out of range [0, {self.num_samples})")
        start = sample_idx * self.seq_length
        chunk = np.array(self.tokens[start : start + self.seq_length + 1], dtype=np.int64)
        return {
            "tokens": chunk[:-1].copy(),
            "labels": chunk[1:].copy(),
            "loss_mask": np.ones(self.seq_length, dtype=np.float32),
        }

    def get(self, global_sample_idx: int) -> dict[str, np.ndarray]:
        """The run's ``global_sample_idx``-th sample (see :meth:`sample`)."""
        return self.sample(self.index_for(global_sample_idx))

    def batch(self, global_sample_indices: list[int]) -> dict[str, torch.Tensor]:
        """Stacks samples into ``[b, s]`` tensors: tokens/labels int64, loss_mask float32."""
        if len(global_sample_indices) == 0:
            raise ValueError("batch() needs at least one sample index")
        samples = [self.get(k) for k in global_sample_indices]
        return {
            key: torch.from_numpy(np.stack([s[key] for s in samples]))
            for key in ("tokens", "labels", "loss_mask")
        }
