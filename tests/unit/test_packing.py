"""Sequence packing: bins, splitting, determinism and the packed-row convention.

Run: ``.venv/bin/python -m pytest tests/unit/test_packing.py -q``
"""

from __future__ import annotations

import numpy as np
import pytest

from msm_megatron.data.packing import (
    Packing,
    Piece,
    pack,
    packed_rows,
    split_long,
    stats,
    supervised_tokens,
)

PAD = 99_999_999
SEQ_STRIDE = 1_000_000  # token id = seq * SEQ_STRIDE + position: identifies every token


# ---------------------------------------------------------------- independent reference code


def naive_pieces(lengths: list[int], cap: int) -> list[Piece]:
    """Splitting written as a plain loop (the documented policy)."""
    out = []
    for i, n in enumerate(lengths):
        a = 0
        while a < n:
            out.append(Piece(i, a, min(a + cap, n)))
            a += cap
    return out


def naive_pack(lengths: list[int], cap: int, best: bool) -> list[list[Piece]]:
    """O(n x bins) BFD/FFD with the documented tie rules: longest first, ties by (seq, start);
    best fit = least room that fits, ties to the lowest bin; first fit = lowest bin that fits."""
    items = sorted(
        naive_pieces(lengths, cap), key=lambda p: (p.start - p.end, p.seq_index, p.start)
    )
    rooms: list[int] = []
    bins: list[list[Piece]] = []
    for p in items:
        fits = [b for b, r in enumerate(rooms) if r >= p.length]
        if not fits:
            rooms.append(cap)
            bins.append([])
            b = len(bins) - 1
        else:
            b = min(fits, key=lambda k: (rooms[k], k)) if best else fits[0]
        rooms[b] -= p.length
        bins[b].append(p)
    return bins


def naive_row(pieces, seqs, masks, cap, pad_id) -> dict[str, list[int]]:
    """The row convention, one token at a time."""
    row = {k: [] for k in ("tokens", "labels", "loss_mask", "position_ids")}
    cu, lens = [0], []
    for s, a, e in pieces:
        for t in range(a, e):
            row["tokens"].append(int(seqs[s][t]))
            has_next = t + 1 < e
            row["labels"].append(int(seqs[s][t + 1]) if has_next else pad_id)
            target = has_next and (masks is None or bool(masks[s][t + 1]))
            row["loss_mask"].append(1.0 if target else 0.0)
            row["position_ids"].append(t - a)
        lens.append(e - a)
        cu.append(cu[-1] + e - a)
    pad = cap - cu[-1]
    row["tokens"] += [pad_id] * pad
    row["labels"] += [pad_id] * pad
    row["loss_mask"] += [0.0] * pad
    row["position_ids"] += list(range(pad))
    row["cu_seqlens"] = cu + ([cap] if pad else [])
    row["seq_lens"] = lens
    return row


def coverage_ok(packing: Packing, lengths) -> bool:
    """Every token of every sequence in exactly one piece; every bin within capacity."""
    seen = [np.zeros(n, dtype=np.int64) for n in lengths]
    for b in packing.bins:
        assert 0 < sum(p.length for p in b) <= packing.capacity
        for s, a, e in b:
            assert 0 <= a < e <= lengths[s]
            seen[s][a:e] += 1
    return all((c == 1).all() for c in seen)


def make_seqs(lengths) -> list[np.ndarray]:
    return [i * SEQ_STRIDE + np.arange(n, dtype=np.int64) for i, n in enumerate(lengths)]


def aft_lengths(rng: np.random.Generator, n: int = 10_000, cap: int = 8192) -> np.ndarray:
    return np.clip(rng.lognormal(np.log(500) - 0.32, 0.8, n).astype(np.int64), 8, cap)


def msm_lengths(rng: np.random.Generator, n: int = 13_000) -> np.ndarray:
    return rng.lognormal(np.log(3200) - 0.28, 0.75, n).astype(np.int64) + 1


# ------------------------------------------------------------------------------------ packing


def test_split_long_policy() -> None:
    pieces = split_long([0, 5, 8, 9, 20], 8)
    assert pieces == [
        (1, 0, 5), (2, 0, 8), (3, 0, 8), (3, 8, 9), (4, 0, 8), (4, 8, 16), (4, 16, 20),
    ]  # fmt: skip
    assert [p.length for p in pieces] == [5, 8, 8, 1, 8, 8, 4]
    assert split_long([], 8) == []


@pytest.mark.parametrize("algorithm", ["bfd", "ffd"])
def test_matches_brute_force(algorithm: str) -> None:
    rng = np.random.default_rng(1)
    for trial in range(150):
        cap = int(rng.integers(1, 40))
        lengths = rng.integers(0, 3 * cap, size=int(rng.integers(0, 30))).tolist()
        got = pack(lengths, cap, algorithm)
        assert got.bins == naive_pack(lengths, cap, best=algorithm == "bfd"), (trial, cap, lengths)
        assert coverage_ok(got, lengths)
        got.check()


@pytest.mark.parametrize("algorithm", ["bfd", "ffd"])
def test_no_token_lost_or_duplicated_at_scale(algorithm: str) -> None:
    lengths = msm_lengths(np.random.default_rng(2), 3000)
    packing = pack(lengths, 8192, algorithm)
    assert coverage_ok(packing, lengths)
    assert packing.num_tokens == lengths.sum()
    assert packing.num_pieces == sum(-(-n // 8192) for n in lengths)


def test_split_false_and_bad_input() -> None:
    with pytest.raises(ValueError, match="longer than capacity"):
        pack([3, 9], 8, split=False)
    assert pack([3, 8], 8, split=False).num_bins == 2
    with pytest.raises(ValueError, match="unknown packing algorithm"):
        pack([3], 8, algorithm="greedy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative"):
        pack([3, -1], 8)
    with pytest.raises(ValueError, match="capacity"):
        pack([3], 0)
    empty = pack([], 8)
    assert empty.num_bins == 0 and empty.efficiency == 0.0


def test_check_catches_broken_packings() -> None:
    good = pack([5, 3, 9], 8)
    good.check()
    for bins in (
        [[Piece(0, 0, 5)], [Piece(1, 0, 3)], [Piece(2, 0, 8)]],  # lost a token
        [[Piece(0, 0, 5), Piece(0, 4, 5)], [Piece(1, 0, 3)], [Piece(2, 0, 9)]],
        [[Piece(0, 0, 5), Piece(1, 0, 3), Piece(2, 8, 9)], [Piece(2, 0, 8)], []],
    ):
        with pytest.raises(ValueError):
            Packing(bins, 8, good.lengths).check()
    with pytest.raises(ValueError, match="capacity"):
        Packing([[Piece(0, 0, 5), Piece(1, 0, 3), Piece(2, 8, 9)]], 8, good.lengths).check()


def test_deterministic_and_round_trip() -> None:
    lengths = aft_lengths(np.random.default_rng(3), 2000)
    a, b = pack(lengths, 8192), pack(lengths.tolist(), 8192)
    assert a.bins == b.bins
    again = Packing.from_arrays(a.to_arrays())
    assert again.bins == a.bins and again.capacity == a.capacity
    assert np.array_equal(again.lengths, a.lengths)


@pytest.mark.parametrize(("name", "make"), [("aft", aft_lengths), ("msm", msm_lengths)])
def test_efficiency_on_realistic_lengths(name: str, make) -> None:
    lengths = make(np.random.default_rng(4))
    if name == "msm":
        assert (lengths > 8192).sum() > 100  # the tail that must be split
    bfd, ffd = pack(lengths, 8192, "bfd"), pack(lengths, 8192, "ffd")
    lower_bound = -(-int(lengths.sum()) // 8192)
    assert bfd.num_bins >= lower_bound
    assert bfd.efficiency >= 0.99, (name, bfd.efficiency)
    assert bfd.efficiency >= ffd.efficiency - 1e-3


def test_bfd_not_worse_than_ffd_on_uniform_lengths() -> None:
    rng = np.random.default_rng(5)
    for _ in range(5):
        lengths = rng.integers(1, 8192, size=2000)
        assert pack(lengths, 8192, "bfd").num_bins <= pack(lengths, 8192, "ffd").num_bins + 2


# ---------------------------------------------------------------------------------------- rows


def test_row_by_hand() -> None:
    seqs = [np.array([10, 11, 12]), np.array([20, 21, 22, 23])]
    masks = [np.array([0, 1, 1]), np.array([0, 0, 1, 1])]
    packing = pack([3, 4], 8)
    assert packing.bins == [[Piece(1, 0, 4), Piece(0, 0, 3)]]  # longest first
    (row,) = packed_rows(packing, seqs, loss_masks=masks, pad_id=PAD)
    assert row["tokens"].tolist() == [20, 21, 22, 23, 10, 11, 12, PAD]
    assert row["labels"].tolist() == [21, 22, 23, PAD, 11, 12, PAD, PAD]
    # position i is trained iff its label token is a target and lies in the same piece
    assert row["loss_mask"].tolist() == [0, 1, 1, 0, 1, 1, 0, 0]
    assert row["position_ids"].tolist() == [0, 1, 2, 3, 0, 1, 2, 0]
    assert row["cu_seqlens"].tolist() == [0, 4, 7, 8]  # padding is the final segment
    assert row["seq_lens"].tolist() == [4, 3]
    assert int(row["max_seqlen"]) == 4
    assert row["loss_mask"].dtype == np.float32 and row["cu_seqlens"].dtype == np.int32
    (row,) = packed_rows(packing, seqs, pad_id=PAD)  # no masks: every in-piece label trains
    assert row["loss_mask"].tolist() == [1, 1, 1, 0, 1, 1, 0, 0]


def test_full_row_has_no_padding_segment() -> None:
    (row,) = packed_rows(pack([5, 3], 8), make_seqs([5, 3]))
    assert row["cu_seqlens"].tolist() == [0, 5, 8] and row["seq_lens"].tolist() == [5, 3]


def test_split_chunks_do_not_predict_across_the_cut() -> None:
    packing = pack([10], 4)  # chunks [0,4) [4,8) [8,10)
    rows = list(packed_rows(packing, make_seqs([10]), pad_id=PAD))
    assert [r["tokens"][:4].tolist() for r in rows] == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9, PAD, PAD],
    ]
    assert [r["loss_mask"].tolist() for r in rows] == [[1, 1, 1, 0], [1, 1, 1, 0], [1, 0, 0, 0]]
    assert rows[2]["cu_seqlens"].tolist() == [0, 2, 4]


@pytest.mark.parametrize("algorithm", ["bfd", "ffd"])
def test_rows_match_brute_force(algorithm: str) -> None:
    rng = np.random.default_rng(6)
    for _ in range(20):
        cap = int(rng.integers(2, 30))
        lengths = rng.integers(0, 2 * cap, size=int(rng.integers(1, 15))).tolist()
        seqs = make_seqs(lengths)
        masks = [rng.integers(0, 2, size=n) for n in lengths]
        packing = pack(lengths, cap, algorithm)
        rows = list(packed_rows(packing, seqs, masks, pad_id=PAD))
        assert len(rows) == packing.num_bins
        for row, pieces in zip(rows, packing.bins, strict=True):
            want = naive_row(pieces, seqs, masks, cap, PAD)
            for key, value in want.items():
                assert row[key].tolist() == value, key


def test_row_invariants_at_scale() -> None:
    rng = np.random.default_rng(7)
    cap = 2048
    lengths = np.concatenate([aft_lengths(rng, 600, cap), rng.integers(cap, 3 * cap, 10)])
    seqs = make_seqs(lengths)
    masks = [rng.random(n) < 0.5 for n in lengths]
    packing = pack(lengths, cap)
    seen = [np.zeros(n, dtype=np.int64) for n in lengths]
    trained = 0
    for row in packed_rows(packing, seqs, masks, pad_id=PAD):
        tok, lab, lm, pos, cu = (row[k] for k in ("tokens", "labels", "loss_mask",
                                                  "position_ids", "cu_seqlens"))  # fmt: skip
        lens = row["seq_lens"]
        assert cu[0] == 0 and cu[-1] == cap and np.all(np.diff(cu) > 0)
        assert np.array_equal(np.diff(cu[: len(lens) + 1]), lens)
        assert len(cu) == len(lens) + 1 + (cu[len(lens)] < cap)
        for a, e in zip(cu[:-1], cu[1:], strict=True):
            assert np.array_equal(pos[a:e], np.arange(e - a))  # positions restart per segment
        real = int(cu[len(lens)])
        assert (tok[real:] == PAD).all() and (lm[real:] == 0).all()
        s, t = tok[:real] // SEQ_STRIDE, tok[:real] % SEQ_STRIDE
        for si, ti in zip(s.tolist(), t.tolist(), strict=True):
            seen[si][ti] += 1
        on = lm[:real] > 0
        # every trained label is the next token of the same sequence, inside the same segment
        assert np.array_equal(lab[:real][on], tok[:real][on] + 1)
        seg = np.searchsorted(cu, np.arange(real), side="right")
        assert np.array_equal(seg[np.flatnonzero(on)], seg[np.flatnonzero(on) + 1])
        assert all(bool(masks[a][b + 1]) for a, b in zip(s[on], t[on], strict=True))
        trained += int(on.sum())
    assert all((c == 1).all() for c in seen)
    info = stats(packing, supervised=masks)
    assert info["supervised_tokens"] == trained == supervised_tokens(packing, masks)
    assert info["supervised_fraction"] == pytest.approx(trained / (packing.num_bins * cap))


def test_rows_reject_mismatched_inputs() -> None:
    packing = pack([3, 4], 8)
    with pytest.raises(ValueError, match="sequences"):
        list(packed_rows(packing, make_seqs([3])))
    with pytest.raises(ValueError, match="expects 4"):
        list(packed_rows(packing, make_seqs([3, 5])))
    with pytest.raises(ValueError, match="loss_masks"):
        list(packed_rows(packing, make_seqs([3, 4]), [np.ones(3), np.ones(2)]))


def test_stats() -> None:
    packing = pack([3, 4, 10], 8)  # pieces 8, 4, 3, 2 -> bins [8], [4, 3], [2]
    info = stats(packing, supervised=[np.ones(3), np.ones(4), np.ones(10)])
    assert info["bins"] == 3 and info["tokens"] == 17 and info["slots"] == 24
    assert info["pad_tokens"] == 7 and info["efficiency"] == pytest.approx(17 / 24)
    assert info["pieces"] == 4 and info["split_sequences"] == 1 and info["max_pieces_per_bin"] == 2
    assert info["supervised_tokens"] == 17 - 4  # every piece's last position carries no loss
    assert "supervised_fraction" not in stats(packing)
