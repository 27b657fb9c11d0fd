"""Sequence packing: best-fit / first-fit decreasing bins and packed training rows.

Packing turns variable-length token sequences (documents, rendered chats) into fixed-size rows of
``capacity`` tokens (the sequence length) so that almost no slot is padding, while every sequence
stays its own attention segment. Pure numpy/python; no Megatron import. Typical use::

    packing = pack([len(s) for s in seqs], capacity=8192)            # best-fit decreasing
    print(stats(packing, supervised=masks))                          # efficiency, supervised frac
    for row in packed_rows(packing, seqs, loss_masks=masks, pad_id=tok.pad_id):
        ...  # tokens, labels, loss_mask, position_ids, cu_seqlens, seq_lens, max_seqlen

**Splitting policy.** A sequence longer than ``capacity`` (only with ``split=True``) becomes
``L // capacity`` chunks of exactly ``capacity`` tokens followed by one remainder chunk of
``L % capacity`` tokens (none when that is 0): ``[0, C), [C, 2C), ..., [kC, L)``. Full chunks fill a
row each; the remainder is packed like any other sequence. Each chunk is a separate attention
segment (it does not see the previous chunk). Zero-length sequences yield no piece.

**Order and ties (deterministic).** Pieces are placed longest first; equal lengths keep their
(sequence index, start) order (stable sort). Best-fit puts a piece into the bin with the least
room that still fits it, ties going to the lowest bin index; first-fit puts it into the lowest-index
bin that fits. A new bin is opened only when none fits. Bins are numbered in opening order, so
``bins`` come longest-first; shuffling rows is the data loader's job. Inside a bin, pieces are in
placement order.

**Row convention** (what :func:`packed_rows` yields; the consumer is Megatron-Core's
``PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu_seqlens, cu_seqlens_kv=cu_seqlens,
max_seqlen_q=max_seqlen, max_seqlen_kv=max_seqlen)``). The bin's pieces are laid out back to back
from position 0 in bin order; the ``pad = capacity - used`` padding slots are at the end.

- ``tokens`` int64 ``[capacity]``: piece tokens, then ``pad_id``.
- ``labels`` int64 ``[capacity]``: Megatron's convention, ``labels[i] = tokens[i + 1]`` **within the
  same piece**. The last position of every piece (its token has no next token inside the piece)
  and every padding position hold ``pad_id`` -- a valid vocabulary id, never -100, because
  Megatron's vocab-parallel cross-entropy indexes with the label and relies on ``loss_mask``.
- ``loss_mask`` float32 ``[capacity]``: 1.0 where the label is trained. 0 on padding and on the
  last position of every piece (no label ever crosses a document or chunk boundary). With
  ``loss_masks`` (per-sequence, per-token, truthy = "this token is a training target", e.g. the
  assistant's tokens), position ``i`` is trained iff its *label* token is a target:
  ``loss_mask[i] = bool(loss_masks[s][t + 1])`` for the token ``t`` at position ``i``.
- ``position_ids`` int64 ``[capacity]``: ``0 .. n-1`` restarting for every piece; the padding tail
  counts ``0 .. pad-1`` as its own segment.
- ``seq_lens`` int32 ``[num_pieces]``: the real piece lengths only (no padding entry).
- ``cu_seqlens`` int32: ``[0, cumsum(seq_lens)...]`` and then, **only if the row has padding**,
  ``capacity``: the padding tail is its own final segment, so ``cu_seqlens[-1] == capacity ==
  len(tokens)`` always (as NeMo's packed-SFT collator does: THD kernels and RoPE expect the
  segments to cover the whole row). Its length is ``num_pieces + 1`` (full row) or
  ``num_pieces + 2``. The real boundaries are ``cu_seqlens[:len(seq_lens) + 1]``. Padding tokens
  attend only to each other and never carry loss. Batching rows needs the collator to pad
  ``cu_seqlens`` to a common length (e.g. repeat the last value = zero-length segments).
- ``max_seqlen`` int32 0-d: the longest segment in ``cu_seqlens`` (padding segment included).

Context parallelism with THD needs every segment padded to a multiple of ``2 * cp``; that
per-segment padding is not done here (cp > 1 is refused by the trainer today).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

Algorithm = Literal["bfd", "ffd"]
ALGORITHMS: tuple[str, ...] = ("bfd", "ffd")


class Piece(NamedTuple):
    """A token range ``[start, end)`` of sequence ``seq_index``."""

    seq_index: int
    start: int
    end: int

    @property
    def length(self) -> int:
        """Number of tokens in the piece."""
        return self.end - self.start


def _as_lengths(lengths: ArrayLike) -> np.ndarray:
    arr = np.asarray(lengths)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"lengths must be a 1-D integer array, got {arr.dtype} {arr.shape}")
    arr = arr.astype(np.int64, copy=False)
    if arr.min() < 0:
        raise ValueError(f"negative sequence length at index {int(np.argmin(arr))}")
    return arr


def _check_capacity(capacity: int) -> int:
    capacity = int(capacity)
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    return capacity


def _split_arrays(lengths: np.ndarray, capacity: int) -> tuple[np.ndarray, ...]:
    """Vectorized :func:`split_long`: ``(seq_index, start, end)`` arrays in (seq, start) order."""
    n_chunks = -(-lengths // capacity)  # ceil; 0 for empty sequences
    seq = np.repeat(np.arange(len(lengths), dtype=np.int64), n_chunks)
    first = np.cumsum(n_chunks) - n_chunks
    chunk = np.arange(len(seq), dtype=np.int64) - np.repeat(first, n_chunks)
    start = chunk * capacity
    end = np.minimum(start + capacity, lengths[seq])
    return seq, start, end


def split_long(lengths: ArrayLike, capacity: int) -> list[Piece]:
    """Cuts every sequence into pieces of at most ``capacity`` tokens.

    Policy: a sequence of length ``L > capacity`` becomes ``L // capacity`` chunks of exactly
    ``capacity`` tokens plus a remainder chunk of ``L % capacity`` tokens if that is non-zero.
    Shorter sequences are one piece ``(i, 0, L)``; empty sequences give no piece.

    Args:
        lengths: Token count of each sequence.
        capacity: Maximum piece length (the packed row length).

    Returns:
        The pieces, ordered by sequence index, then start.
    """
    seq, start, end = _split_arrays(_as_lengths(lengths), _check_capacity(capacity))
    return [Piece(*p) for p in zip(seq.tolist(), start.tolist(), end.tolist(), strict=True)]


def _best_fit(sizes: list[int], capacity: int) -> tuple[list[int], int]:
    """Best-fit bin assignment of ``sizes`` (already in placement order).

    Bins are bucketed by remaining room; a Python int is the bitmask of non-empty buckets, so the
    tightest bucket with room >= x is the lowest set bit of ``mask >> x``. Each bucket is a heap of
    bin indices (ties go to the lowest index). Per piece: O(log n) heap work plus O(capacity / 30)
    machine-word big-int operations (about 270 words at capacity 8192) -- never a scan of the bins.
    """
    by_room: list[list[int]] = [[] for _ in range(capacity)]
    mask = 0  # bit r set <=> some open bin has exactly r free slots (0 < r < capacity)
    assign: list[int] = []
    num_bins = 0
    for x in sizes:
        m = mask >> x
        if m:
            room = x + (m & -m).bit_length() - 1
            bucket = by_room[room]
            b = heapq.heappop(bucket)
            if not bucket:
                mask ^= 1 << room
        else:
            b, room = num_bins, capacity
            num_bins += 1
        assign.append(b)
        room -= x
        if room:
            bucket = by_room[room]
            if not bucket:
                mask |= 1 << room
            heapq.heappush(bucket, b)
    return assign, num_bins


def _first_fit(sizes: list[int], capacity: int) -> tuple[list[int], int]:
    """First-fit bin assignment of ``sizes`` (already in placement order).

    A max segment tree over bin rooms, one leaf per possible bin (never more bins than pieces);
    unopened bins have room ``capacity``, so "lowest-index bin with room >= x" is one root-to-leaf
    descent and opening a bin needs no special case. O(log n) per piece.
    """
    if not sizes:
        return [], 0
    size = 1 << (len(sizes) - 1).bit_length()
    tree = [capacity] * (2 * size)
    assign: list[int] = []
    num_bins = 0
    for x in sizes:
        i = 1
        while i < size:
            i <<= 1
            if tree[i] < x:
                i += 1
        b = i - size
        assign.append(b)
        if b >= num_bins:
            num_bins = b + 1
        tree[i] -= x
        i >>= 1
        while i:
            left, right = tree[2 * i], tree[2 * i + 1]
            new = left if left >= right else right
            if tree[i] == new:
                break
            tree[i] = new
            i >>= 1
    return assign, num_bins


@dataclass(slots=True)
class Packing:
    """The result of :func:`pack`: which token ranges go into which row.

    Attributes:
        bins: One list of pieces per packed row; each bin's total length is <= ``capacity``.
        capacity: Row length in tokens.
        lengths: int64 ``[num_sequences]``, the packed sequences' lengths.
        algorithm: ``"bfd"`` or ``"ffd"`` (informational).
    """

    bins: list[list[Piece]]
    capacity: int
    lengths: np.ndarray
    algorithm: str = "bfd"

    @property
    def num_bins(self) -> int:
        """Number of packed rows."""
        return len(self.bins)

    @property
    def num_pieces(self) -> int:
        """Number of pieces (attention segments) over all rows."""
        return sum(len(b) for b in self.bins)

    @property
    def num_slots(self) -> int:
        """Token slots in all rows: ``num_bins * capacity``."""
        return self.num_bins * self.capacity

    @property
    def num_tokens(self) -> int:
        """Non-padding tokens in all rows."""
        return int(self.loads().sum())

    @property
    def num_pad(self) -> int:
        """Padding slots in all rows."""
        return self.num_slots - self.num_tokens

    @property
    def efficiency(self) -> float:
        """Non-pad tokens / (bins x capacity); 0.0 for an empty packing."""
        slots = self.num_slots
        return self.num_tokens / slots if slots else 0.0

    def loads(self) -> np.ndarray:
        """int64 ``[num_bins]``: tokens used in each row."""
        return np.array([sum(p.end - p.start for p in b) for b in self.bins], dtype=np.int64)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat int64 arrays (for ``np.savez``): ``bin_offsets`` [bins+1] into the piece arrays
        ``seq_index``/``start``/``end``, plus ``lengths`` and ``capacity`` (0-d)."""
        flat = [p for b in self.bins for p in b]
        cols = np.array(flat, dtype=np.int64).reshape(-1, 3)
        offsets = np.zeros(self.num_bins + 1, dtype=np.int64)
        np.cumsum([len(b) for b in self.bins], out=offsets[1:])
        return {
            "bin_offsets": offsets,
            "seq_index": cols[:, 0].copy(),
            "start": cols[:, 1].copy(),
            "end": cols[:, 2].copy(),
            "lengths": self.lengths.astype(np.int64),
            "capacity": np.array(self.capacity, dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any], algorithm: str = "bfd") -> Packing:
        """Inverse of :meth:`to_arrays` (validated with :meth:`check`)."""
        pieces = [
            Piece(*p)
            for p in zip(
                np.asarray(arrays["seq_index"]).tolist(),
                np.asarray(arrays["start"]).tolist(),
                np.asarray(arrays["end"]).tolist(),
                strict=True,
            )
        ]
        off = np.asarray(arrays["bin_offsets"]).tolist()
        bins = [pieces[a:b] for a, b in zip(off[:-1], off[1:], strict=True)]
        packing = cls(bins, int(arrays["capacity"]), _as_lengths(arrays["lengths"]), algorithm)
        packing.check()
        return packing

    def check(self) -> None:
        """Raises ValueError unless every token of every sequence is in exactly one piece, no
        piece is empty, and no bin exceeds ``capacity``."""
        loads = self.loads()
        if loads.size and loads.max() > self.capacity:
            raise ValueError(
                f"bin {int(np.argmax(loads))} holds {int(loads.max())} tokens > "
                f"capacity {self.capacity}"
            )
        if any(not b for b in self.bins):
            raise ValueError("empty bin")
        cols = np.array([p for b in self.bins for p in b], dtype=np.int64).reshape(-1, 3)
        seq, start, end = cols[np.lexsort((cols[:, 1], cols[:, 0]))].T
        n = len(self.lengths)
        if seq.size and (seq.min() < 0 or seq.max() >= n):
            raise ValueError("piece refers to a sequence index out of range")
        if np.any(end <= start):
            raise ValueError("empty or reversed piece")
        # Per sequence, the sorted pieces must tile [0, length) exactly.
        new_seq = np.ones(len(seq), dtype=bool)
        new_seq[1:] = seq[1:] != seq[:-1]
        last = np.ones(len(seq), dtype=bool)
        last[:-1] = new_seq[1:]
        prev_end = np.concatenate(([0], end[:-1]))
        ok = np.where(new_seq, start == 0, start == prev_end).all()
        ok = ok and bool((end[last] == self.lengths[seq[last]]).all())
        covered = np.zeros(n, dtype=bool)
        covered[seq] = True
        if not ok or not np.array_equal(covered, self.lengths > 0):
            raise ValueError("pieces do not cover every sequence exactly once")


def pack(
    lengths: ArrayLike,
    capacity: int,
    algorithm: Algorithm = "bfd",
    split: bool = True,
) -> Packing:
    """Packs sequences into bins of ``capacity`` tokens, longest first.

    Args:
        lengths: Token count of each sequence (index = sequence index in the pieces).
        capacity: Row length in tokens (the training sequence length).
        algorithm: ``"bfd"`` (best-fit decreasing: tightest bin that fits) or ``"ffd"``
            (first-fit decreasing: lowest-index bin that fits). See the module docstring for
            tie-breaking; both are deterministic.
        split: Cut sequences longer than ``capacity`` as :func:`split_long` documents. When
            False, such a sequence is an error (truncating or dropping is the caller's decision).

    Returns:
        The packing; every token of every sequence is in exactly one piece.

    Raises:
        ValueError: Unknown algorithm, bad capacity, negative length, or an overlong sequence
            with ``split=False``.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown packing algorithm {algorithm!r}; choose one of {ALGORITHMS}")
    capacity = _check_capacity(capacity)
    lens = _as_lengths(lengths)
    if not split:
        over = np.flatnonzero(lens > capacity)
        if over.size:
            raise ValueError(
                f"{over.size} sequence(s) longer than capacity {capacity} (first: index "
                f"{int(over[0])}, {int(lens[over[0]])} tokens); pass split=True or truncate them"
            )
    seq, start, end = _split_arrays(lens, capacity)
    order = np.argsort(start - end, kind="stable")  # longest first, ties by (seq, start)
    seq, start, end = seq[order], start[order], end[order]
    place = _best_fit if algorithm == "bfd" else _first_fit
    assign, num_bins = place((end - start).tolist(), capacity)
    bins: list[list[Piece]] = [[] for _ in range(num_bins)]
    for b, s, a, e in zip(assign, seq.tolist(), start.tolist(), end.tolist(), strict=True):
        bins[b].append(Piece(s, a, e))
    return Packing(bins, capacity, lens, algorithm)


def _fetch(sequences: Sequence[ArrayLike], i: int, expected: int, what: str) -> np.ndarray:
    arr = np.asarray(sequences[i]).reshape(-1)
    if len(arr) != expected:
        raise ValueError(f"{what}[{i}] has {len(arr)} tokens but the packing expects {expected}")
    return arr


def _build_row(
    packing: Packing,
    pieces: list[Piece],
    sequences: Sequence[ArrayLike],
    loss_masks: Sequence[ArrayLike] | None,
    pad_id: int,
    arange: np.ndarray,
) -> dict[str, np.ndarray]:
    cap = packing.capacity
    tokens = np.full(cap, pad_id, dtype=np.int64)
    labels = np.full(cap, pad_id, dtype=np.int64)
    loss_mask = np.zeros(cap, dtype=np.float32)
    position_ids = np.empty(cap, dtype=np.int64)
    seq_lens = np.empty(len(pieces), dtype=np.int32)
    off = 0
    for k, (s, a, e) in enumerate(pieces):
        n = e - a
        expected = int(packing.lengths[s])
        seq = _fetch(sequences, s, expected, "sequences")
        tokens[off : off + n] = seq[a:e]
        labels[off : off + n - 1] = seq[a + 1 : e]
        if loss_masks is None:
            loss_mask[off : off + n - 1] = 1.0
        else:
            mask = _fetch(loss_masks, s, expected, "loss_masks")
            loss_mask[off : off + n - 1] = mask[a + 1 : e] != 0
        position_ids[off : off + n] = arange[:n]
        seq_lens[k] = n
        off += n
    if off > cap:
        raise ValueError(f"bin holds {off} tokens > capacity {cap}")
    pad = cap - off
    position_ids[off:] = arange[:pad]
    cu_seqlens = np.zeros(len(pieces) + 1 + (pad > 0), dtype=np.int32)
    np.cumsum(seq_lens, out=cu_seqlens[1 : len(pieces) + 1])
    if pad:
        cu_seqlens[-1] = cap
    max_seqlen = max(int(seq_lens.max(initial=0)), pad)
    return {
        "tokens": tokens,
        "labels": labels,
        "loss_mask": loss_mask,
        "position_ids": position_ids,
        "cu_seqlens": cu_seqlens,
        "seq_lens": seq_lens,
        "max_seqlen": np.array(max_seqlen, dtype=np.int32),
    }


def packed_rows(
    packing: Packing,
    sequences: Sequence[ArrayLike],
    loss_masks: Sequence[ArrayLike] | None = None,
    pad_id: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
    """Yields one training row per bin, in bin order (convention: see the module docstring).

    Args:
        packing: From :func:`pack` over these sequences' lengths.
        sequences: ``sequences[i]`` is sequence ``i``'s token ids (any 1-D array-like; fetched
            lazily, so a memory-mapped dataset works).
        loss_masks: Optional per-sequence, per-token masks (same lengths as the sequences);
            truthy = the token is a training target. Shifted onto the position that predicts it.
        pad_id: Token id written to padding tokens and to labels that carry no loss.

    Yields:
        Dicts with ``tokens``, ``labels``, ``loss_mask``, ``position_ids``, ``cu_seqlens``,
        ``seq_lens`` and ``max_seqlen``.

    Raises:
        ValueError: A sequence or mask whose length differs from ``packing.lengths``.
    """
    if len(sequences) != len(packing.lengths):
        raise ValueError(f"{len(sequences)} sequences but the packing has {len(packing.lengths)}")
    if loss_masks is not None and len(loss_masks) != len(packing.lengths):
        raise ValueError(
            f"{len(loss_masks)} loss masks but the packing has {len(packing.lengths)} sequences"
        )
    arange = np.arange(packing.capacity, dtype=np.int64)
    for pieces in packing.bins:
        yield _build_row(packing, pieces, sequences, loss_masks, pad_id, arange)


def supervised_tokens(packing: Packing, loss_masks: Sequence[ArrayLike]) -> int:
    """Number of trained positions over all rows under the row convention: for each piece
    ``(s, a, e)``, the targets among tokens ``a+1 .. e-1`` of ``loss_masks[s]``."""
    total = 0
    for pieces in packing.bins:
        for s, a, e in pieces:
            mask = _fetch(loss_masks, s, int(packing.lengths[s]), "loss_masks")
            total += int(np.count_nonzero(mask[a + 1 : e]))
    return total


def stats(packing: Packing, supervised: Sequence[ArrayLike] | None = None) -> dict[str, Any]:
    """Summary numbers of a packing.

    Args:
        packing: The packing.
        supervised: Optional per-sequence loss masks (as for :func:`packed_rows`); adds
            ``supervised_tokens`` and ``supervised_fraction`` (= supervised tokens / slots, the
            share of row positions that carry loss).

    Returns:
        ``bins``, ``capacity``, ``sequences`` (non-empty), ``split_sequences``, ``pieces``,
        ``max_pieces_per_bin``, ``tokens``, ``slots``, ``pad_tokens``, ``efficiency``
        (non-pad tokens / slots) and, with masks, the supervised counts.
    """
    pieces_per_bin = [len(b) for b in packing.bins]
    out: dict[str, Any] = {
        "bins": packing.num_bins,
        "capacity": packing.capacity,
        "sequences": int(np.count_nonzero(packing.lengths)),
        "split_sequences": int(np.count_nonzero(packing.lengths > packing.capacity)),
        "pieces": sum(pieces_per_bin),
        "max_pieces_per_bin": max(pieces_per_bin, default=0),
        "tokens": packing.num_tokens,
        "slots": packing.num_slots,
        "pad_tokens": packing.num_pad,
        "efficiency": packing.efficiency,
    }
    if supervised is not None:
        count = supervised_tokens(packing, supervised)
        out["supervised_tokens"] = count
        out["supervised_fraction"] = count / out["slots"] if out["slots"] else 0.0
    return out
