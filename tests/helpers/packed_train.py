"""Train the toy model on packed rows or on the same documents one at a time (for the tests).

Usage (under torchrun): ``python -m tests.helpers.packed_train {packed|separate} config.yaml
[overrides...]``. Rows hold DOCS_PER_ROW documents each (inputs d[:-1], labels d[1:], every
position supervised, no prediction across a boundary); "separate" puts each document in its own
right-padded sample (padding has loss_mask 0), so both modes train on exactly the same
(input, label) pairs per step and, with per-token loss normalization, must give the same losses
and gradients.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from msm_megatron.cli import resolve_config
from msm_megatron.distributed import destroy_distributed
from msm_megatron.train.trainer import Trainer

ROWS, DOCS_PER_ROW, SEQ = 16, 3, 64


def documents(vocab: int, seed: int = 7) -> list[np.ndarray]:
    """DOCS_PER_ROW documents per row whose inputs fill at most SEQ positions together."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(ROWS):
        cuts = np.sort(rng.choice(np.arange(4, SEQ - 4), DOCS_PER_ROW - 1, replace=False))
        lengths = np.diff(np.concatenate([[0], cuts, [SEQ - int(rng.integers(0, 4))]]))
        docs += [rng.integers(0, vocab, size=int(n) + 1) for n in lengths]
    return docs


class Rows:
    """Packed rows: tokens/labels/loss_mask/position_ids/cu_seqlens, padding at the end."""

    def __init__(self, docs):
        self.docs = docs

    def batch(self, indices):
        assert len(indices) == 1
        row = self.docs[indices[0] * DOCS_PER_ROW:(indices[0] + 1) * DOCS_PER_ROW]
        tokens = np.concatenate([d[:-1] for d in row])
        labels = np.concatenate([d[1:] for d in row])
        pad = SEQ - len(tokens)
        cu = np.concatenate([[0], np.cumsum([len(d) - 1 for d in row])])
        positions = np.concatenate([np.arange(len(d) - 1) for d in row] + [np.arange(pad)])
        return {
            "tokens": torch.tensor(np.pad(tokens, (0, pad)))[None],
            "labels": torch.tensor(np.pad(labels, (0, pad)))[None],
            "loss_mask": torch.tensor([1.0] * len(tokens) + [0.0] * pad)[None],
            "position_ids": torch.tensor(positions)[None],
            "cu_seqlens": torch.tensor(cu, dtype=torch.int32)[None],
        }


class Separate:
    """Each document alone, right-padded to SEQ (padding masked out of the loss)."""

    def __init__(self, docs):
        self.docs = docs

    def batch(self, indices):
        out = {"tokens": [], "labels": [], "loss_mask": []}
        for i in indices:
            d = self.docs[i]
            pad = SEQ - (len(d) - 1)
            out["tokens"].append(torch.tensor(np.pad(d[:-1], (0, pad))))
            out["labels"].append(torch.tensor(np.pad(d[1:], (0, pad))))
            out["loss_mask"].append(torch.tensor([1.0] * (len(d) - 1) + [0.0] * pad))
        return {k: torch.stack(v) for k, v in out.items()}


def main(argv: list[str]) -> int:
    mode, config, overrides = argv[0], argv[1], argv[2:]
    cfg = resolve_config(config, [f"data.seq_length={SEQ}", "train.micro_batch_size=1",
                                  *overrides])
    docs = documents(cfg.model.vocab_size)
    if mode == "separate":  # the same documents per step: DOCS_PER_ROW samples per packed row
        cfg = resolve_config(config, [f"data.seq_length={SEQ}", "train.micro_batch_size=1",
                                      *overrides, "train.global_batch_size="
                                      f"{cfg.train.global_batch_size * DOCS_PER_ROW}"])
    dataset = Rows(docs) if mode == "packed" else Separate(docs)
    try:
        return Trainer(cfg, dataset=dataset).fit().exit_code
    finally:
        destroy_distributed()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
