"""Training samples from prepared datasets: the two midtraining/SFT sequence modes.

Both read a :class:`~msm_megatron.data.blend.Blend` of ``msm data prepare`` outputs, one *epoch*
at a time (an epoch = as many blend positions as there are sequences in all datasets together),
and both are fully determined by ``(data.seed, sample index)`` — so a checkpoint only needs
``consumed_samples`` and a resumed run continues with exactly the next sample.

* ``concat`` (Megatron's classic): the epoch's sequences (each document ends with EOD) are
  concatenated into one stream and cut into windows of ``seq_length + 1`` tokens; attention runs
  across document boundaries. Window order is shuffled per epoch. Chat loss masks are honoured.
* ``packed`` (document-aware): the epoch's sequences are packed into rows of ``seq_length``
  tokens by best-/first-fit decreasing (:mod:`msm_megatron.data.packing`; longer sequences are
  split), emitted as THD rows with ``cu_seqlens`` so no token attends across sequences and
  positions restart per sequence. Row order is shuffled per epoch. Needs micro batch size 1.
"""

from __future__ import annotations

import numpy as np
import torch

from msm_megatron.config import ConfigError, DataConfig
from msm_megatron.data.blend import Blend
from msm_megatron.data.packing import pack, packed_rows


def build_dataset(data: DataConfig, vocab_size: int | None = None):
    """The trainer's dataset for ``data`` (an object with ``batch(sample_indices)``).

    Raises:
        ConfigError: no/missing datasets, mismatched weights or tokenizers, or token ids that do
            not fit ``vocab_size`` (the model's vocabulary).
    """
    if data.prepared:
        weights = data.weights or [1.0] * len(data.prepared)
        try:
            blend = Blend(data.prepared, weights, data.seed)
        except ValueError as exc:
            raise ConfigError(f"data.prepared: {exc}") from exc
        _check_vocab(data.prepared, vocab_size)
        if data.mode == "packed":
            return PackedRows(blend, data.seq_length, data.seed, data.packing)
        return ConcatWindows(blend, data.seq_length, data.seed)
    raise ConfigError("no training data: set data.prepared=[<prefix>, ...] (outputs of "
                      "`msm data prepare`)")


def epoch_samples(cfg, dataset) -> int | None:
    """The samples of ``train.epochs`` passes over ``dataset`` when epochs decide the run's
    length (see :func:`~msm_megatron.validate.derive_layout`), else None."""
    from msm_megatron.validate import duration_unit

    if duration_unit(cfg) != "epochs":
        return None
    return dataset.samples_in_epochs(cfg.train.epochs)


def _check_vocab(prefixes: list[str], vocab_size: int | None) -> None:
    import json
    from pathlib import Path

    for prefix in prefixes if vocab_size else []:
        stats = Path(f"{prefix}.stats.json")
        data_vocab = json.loads(stats.read_text()).get("vocab_size") if stats.exists() else None
        if data_vocab and data_vocab > vocab_size:
            raise ConfigError(f"{prefix}: tokenized with a {data_vocab}-token vocabulary but "
                              f"model.vocab_size={vocab_size}; set model.vocab_size={data_vocab}")


class _Epochs:
    """Per-epoch sample tables built on demand; maps a global sample index to (epoch, index)."""

    def __init__(self, blend: Blend, seed: int):
        self.blend, self.seed = blend, seed
        self.per_epoch = int(sum(blend.sizes))
        self._built: list = []
        self._starts = [0]

    def epoch_sequences(self, epoch: int) -> list[tuple[np.ndarray, np.ndarray | None]]:
        first = epoch * self.per_epoch
        return [self.blend.sequence(k) for k in range(first, first + self.per_epoch)]

    def locate(self, sample: int, build) -> tuple[object, int]:
        """``(epoch payload, index within the epoch)``; ``build(epoch) -> (payload, samples)``."""
        while sample >= self._starts[-1]:
            payload, count = build(len(self._built))
            self._built.append(payload)
            self._starts.append(self._starts[-1] + count)
        epoch = int(np.searchsorted(self._starts, sample, side="right")) - 1
        return self._built[epoch], sample - self._starts[epoch]

    def samples_in(self, epochs: float, build) -> int:
        """Samples in the first ``epochs`` epochs (a fractional last epoch is floored)."""
        whole, frac = int(epochs), epochs - int(epochs)
        while len(self._built) < whole + (frac > 0):
            payload, count = build(len(self._built))
            self._built.append(payload)
            self._starts.append(self._starts[-1] + count)
        total = self._starts[whole]
        if frac > 0:
            total += int(frac * (self._starts[whole + 1] - self._starts[whole]))
        return total

    def order(self, epoch: int, n: int) -> np.ndarray:
        return np.random.default_rng([self.seed, 7919, epoch]).permutation(n)


def concat_rows(rows: list[dict]) -> dict:
    """Several packed rows as one longer THD row (their boundaries shifted; each row's padding
    stays a segment of its own), so a micro-batch of ``b`` rows is one sequence of ``b·s`` tokens
    with per-document attention: more tokens per kernel launch, the same loss."""
    if len(rows) == 1:
        return rows[0]
    out = {k: np.concatenate([r[k] for r in rows])
           for k in ("tokens", "labels", "loss_mask", "position_ids")}
    cus, offset = [np.zeros(1, dtype=np.int32)], 0
    for r in rows:
        cu = np.asarray(r["cu_seqlens"], dtype=np.int64)
        if cu[-1] != len(r["tokens"]):  # rows end with a boundary at their capacity
            cu = np.append(cu, len(r["tokens"]))
        cus.append((cu[1:] + offset).astype(np.int32))
        offset += len(r["tokens"])
    out["cu_seqlens"] = np.concatenate(cus)
    return out


class PackedRows:
    """Document-aware packed rows (THD) over a blend; ``batch([k])`` gives one row as tensors."""

    def __init__(self, blend: Blend, seq_length: int, seed: int, algorithm: str = "bfd",
                 pad_id: int = 0):
        self.seq_length, self.algorithm, self.pad_id = seq_length, algorithm, pad_id
        self._epochs = _Epochs(blend, seed)

    def _build(self, epoch: int) -> list[dict]:
        seqs = self._epochs.epoch_sequences(epoch)
        tokens = [np.asarray(t, dtype=np.int64) for t, _ in seqs]
        masks = [m for _, m in seqs]
        packing = pack([len(t) for t in tokens], self.seq_length, self.algorithm)
        rows = list(packed_rows(packing, tokens, masks if masks[0] is not None else None,
                                pad_id=self.pad_id))
        return [rows[i] for i in self._epochs.order(epoch, len(rows))], len(rows)

    def samples_in_epochs(self, epochs: float) -> int:
        """Packed rows in ``epochs`` passes over the data (what ``train.epochs`` counts)."""
        return self._epochs.samples_in(epochs, self._build)

    def row(self, sample: int) -> dict:
        """Row ``sample`` of the run (numpy arrays)."""
        table, i = self._epochs.locate(sample, self._build)
        return table[i]

    def batch(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """Rows ``indices`` as one THD micro-batch: ``[1, len(indices)·seq_length]`` tokens."""
        row = concat_rows([self.row(i) for i in indices])
        out = {k: torch.from_numpy(np.asarray(row[k]))[None]
               for k in ("tokens", "labels", "loss_mask", "position_ids", "cu_seqlens")}
        out["loss_mask"] = out["loss_mask"].float()
        return out


class ConcatWindows:
    """Megatron-style concat-and-split windows of ``seq_length + 1`` tokens over a blend."""

    def __init__(self, blend: Blend, seq_length: int, seed: int):
        self.seq_length = seq_length
        self._epochs = _Epochs(blend, seed)

    def _build(self, epoch: int) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], int]:
        seqs = self._epochs.epoch_sequences(epoch)
        stream = np.concatenate([np.asarray(t, dtype=np.int64) for t, _ in seqs])
        mask = np.concatenate([np.ones(len(t), np.float32) if m is None
                               else np.asarray(m, np.float32) for t, m in seqs])
        n = (len(stream) - 1) // self.seq_length
        if n < 1:
            raise ValueError(f"data: one epoch holds {len(stream)} tokens, fewer than "
                             f"data.seq_length+1={self.seq_length + 1}; shorten data.seq_length")
        return (stream, mask, self._epochs.order(epoch, n)), n

    def samples_in_epochs(self, epochs: float) -> int:
        """Windows in ``epochs`` passes over the data (what ``train.epochs`` counts)."""
        return self._epochs.samples_in(epochs, self._build)

    def window(self, sample: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens (``seq_length + 1``) and target mask of window ``sample``."""
        (stream, mask, order), i = self._epochs.locate(sample, self._build)
        start = int(order[i]) * self.seq_length
        end = start + self.seq_length + 1
        return stream[start:end], mask[start + 1:end]

    def batch(self, indices: list[int]) -> dict[str, torch.Tensor]:
        windows = [self.window(k) for k in indices]
        tokens = torch.from_numpy(np.stack([w for w, _ in windows]))
        return {"tokens": tokens[:, :-1], "labels": tokens[:, 1:],
                "loss_mask": torch.from_numpy(np.stack([m for _, m in windows]))}

