"""Concat and packed training samples over prepared datasets: no token lost or duplicated,
boundaries respected, fully determined by (seed, sample index)."""

from __future__ import annotations

import numpy as np
import pytest

from msm_megatron.data.blend import Blend
from msm_megatron.data.datasets import ConcatWindows, PackedRows
from msm_megatron.data.prepare import prepare_jsonl
from msm_megatron.data.spm import SentencePieceTokenizer, train_sentencepiece
from msm_megatron.data.tokenizers import load_tokenizer
from msm_megatron.data.toy_tokenizer import CORPUS

SEQ = 128


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    lines = CORPUS.read_text().splitlines()[:30]
    corpus = root / "docs.jsonl"
    corpus.write_text("\n".join(lines) + "\n")
    model = train_sentencepiece(corpus, root / "spm", vocab_size=512)
    prepare_jsonl([corpus], load_tokenizer(model), root / "docs", workers=1, progress=False)
    blend = Blend([root / "docs"], [1.0], seed=3)
    return blend, SentencePieceTokenizer(model)


def epoch_tokens(blend):
    return [np.asarray(blend.sequence(k)[0]) for k in range(sum(blend.sizes))]


def test_packed_rows_cover_every_token_once(docs):
    blend, _ = docs
    data = PackedRows(blend, SEQ, seed=5)
    seqs = epoch_tokens(blend)
    n_rows = data._epochs.locate(0, data._build)[0].__len__()
    pieces = []
    for k in range(n_rows):
        row = data.row(k)
        cu = row["cu_seqlens"]
        assert cu[0] == 0 and cu[-1] == SEQ and len(row["tokens"]) == SEQ
        for a, b in zip(cu[:-1], cu[1:], strict=True):
            seg = row["position_ids"][a:b]
            assert np.array_equal(seg, np.arange(b - a))  # positions restart per piece
        real = row["seq_lens"]
        starts = np.concatenate([[0], np.cumsum(real)])
        for a, b in zip(starts[:-1], starts[1:], strict=True):
            pieces.append(tuple(row["tokens"][a:b]))
            # never predict across a piece boundary; the piece's last position is unsupervised
            assert row["loss_mask"][b - 1] == 0
            assert np.array_equal(row["labels"][a:b - 1], row["tokens"][a + 1:b])
    want = sorted(t for s in seqs for t in s.tolist())
    got = sorted(t for p in pieces for t in p)
    assert got == want  # no token lost or duplicated
    assert sum(len(p) for p in pieces) / (n_rows * SEQ) > 0.9


def test_samples_depend_only_on_seed_and_index(docs):
    blend, _ = docs
    a, b = PackedRows(blend, SEQ, seed=5), PackedRows(blend, SEQ, seed=5)
    n = 3 * len(a._epochs.locate(0, a._build)[0])  # spans epochs
    forward = [a.row(k)["tokens"].tolist() for k in range(n)]
    backward = [b.row(k)["tokens"].tolist() for k in reversed(range(n))][::-1]
    assert forward == backward
    other = PackedRows(blend, SEQ, seed=6)
    assert [other.row(k)["tokens"].tolist() for k in range(5)] != forward[:5]
    batch = a.batch([7])
    assert batch["tokens"].shape == (1, SEQ)
    assert not batch["cu_seqlens"].dtype.is_floating_point



def test_a_micro_batch_of_rows_is_one_longer_thd_row(docs):
    blend, _ = docs
    data = PackedRows(blend, SEQ, seed=5)
    rows = [data.row(k) for k in (3, 4)]
    batch = data.batch([3, 4])
    assert batch["tokens"].shape == (1, 2 * SEQ)
    for key in ("tokens", "labels", "loss_mask", "position_ids"):
        assert batch[key][0].tolist() == np.concatenate([r[key] for r in rows]).tolist()
    cu = batch["cu_seqlens"][0].tolist()
    first, second = (np.asarray(r["cu_seqlens"]).tolist() for r in rows)
    # each row's boundaries (ending at its capacity: padding is a segment), the second shifted
    assert first[-1] == SEQ and cu == first + [c + SEQ for c in second[1:]]


def test_concat_windows_are_a_permutation_of_the_stream(docs):
    blend, _ = docs
    data = ConcatWindows(blend, SEQ, seed=5)
    stream = np.concatenate(epoch_tokens(blend))
    n = (len(stream) - 1) // SEQ
    starts = []
    for k in range(n):
        window, mask = data.window(k)
        start = int(np.flatnonzero([np.array_equal(stream[s:s + SEQ + 1], window)
                                    for s in range(0, n * SEQ, SEQ)])[0]) * SEQ
        starts.append(start)
        assert mask.shape == (SEQ,) and mask.min() == 1.0
    assert sorted(starts) == list(range(0, n * SEQ, SEQ))
    batch = data.batch([0, 1])
    assert batch["tokens"].shape == (2, SEQ)
    assert (batch["labels"][:, :-1] == batch["tokens"][:, 1:]).all()


def test_build_dataset_errors_name_the_problem(docs, tmp_path):
    from msm_megatron.config import ConfigError, DataConfig
    from msm_megatron.data.datasets import build_dataset

    blend, _ = docs
    prefix = str(blend.prefixes[0])
    with pytest.raises(ConfigError, match="msm data prepare"):
        build_dataset(DataConfig())
    with pytest.raises(ConfigError, match="data.prepared"):
        build_dataset(DataConfig(prepared=[str(tmp_path / "missing")]))
    with pytest.raises(ConfigError, match="model.vocab_size=512"):
        build_dataset(DataConfig(prepared=[prefix]), vocab_size=100)
    packed = build_dataset(DataConfig(prepared=[prefix], mode="packed", seq_length=SEQ), 512)
    assert isinstance(packed, PackedRows)
    assert isinstance(build_dataset(DataConfig(prepared=[prefix], seq_length=SEQ), 512),
                      ConcatWindows)


def _pieces(rows):
    """Every real (unpadded) piece of ``rows``, as token tuples."""
    out = []
    for row in rows:
        starts = np.concatenate([[0], np.cumsum(row["seq_lens"])])
        out += [tuple(row["tokens"][a:b]) for a, b in zip(starts[:-1], starts[1:], strict=True)]
    return out


def test_one_epoch_is_exactly_one_pass_over_the_data(docs):
    """train.epochs counts samples from the data: the first ``samples_in_epochs(1)`` packed rows
    hold every token of the data once, and so do the next epoch's; halves are floored."""
    blend, _ = docs
    data = PackedRows(blend, SEQ, seed=5)
    one, two = data.samples_in_epochs(1), data.samples_in_epochs(2)
    want = sorted(t for s in epoch_tokens(blend) for t in s.tolist())
    for first, last in ((0, one), (one, two)):
        got = sorted(t for p in _pieces([data.row(k) for k in range(first, last)]) for t in p)
        assert got == want
    assert data.samples_in_epochs(0.5) == one // 2
    assert data.samples_in_epochs(1.5) == one + (two - one) // 2
    windows = ConcatWindows(blend, SEQ, seed=5)
    assert windows.samples_in_epochs(1) == (sum(len(s) for s in epoch_tokens(blend)) - 1) // SEQ


def test_dry_run_counts_the_steps_of_an_epoch(docs):
    """--dry-run with train.epochs prints the steps the prepared data implies."""
    import math

    from msm_megatron.config import apply_overrides
    from msm_megatron.estimate import dry_run_report
    from msm_megatron.recipes import get_recipe

    blend, _ = docs
    cfg = apply_overrides(get_recipe("qwen3_toy_sft"), [
        f"data.prepared=[{blend.prefixes[0]}]", f"data.seq_length={SEQ}", "train.steps=null",
        "train.epochs=1", "model.vocab_size=512"])
    rows = PackedRows(blend, SEQ, seed=cfg.data.seed).samples_in_epochs(1)
    steps = math.ceil(rows / cfg.train.global_batch_size)
    assert (f"duration: 1 epoch(s) (train.epochs) of data.prepared = {rows:,} packed rows of "
            f"{SEQ} tokens -> {steps} steps") in dry_run_report(cfg, 1)[0]
