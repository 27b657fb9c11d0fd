"""How the vocabulary is padded for Megatron: the one place this rule lives.

Megatron pads the embedding and LM head to a multiple of ``make_vocab_size_divisible_by × tp``.
Taken literally that makes the padded size — and so the global shape of two checkpoint tensors —
depend on TP (Qwen's 151,936 stays 151,936 at TP 1 but is 152,576 at TP 8), and a checkpoint
saved at one TP cannot be loaded at another (Megatron-LM #1517-style resume failures). We pad to
a multiple of ``divisor × lcm(8, tp)`` instead: the same padded size for every TP in {1, 2, 4, 8},
so training checkpoints and converted HF checkpoints reshard freely across those TPs, at the
cost of at most ``8 × divisor`` extra rows (0.4 % of Qwen's embedding). Padded rows start at zero
in converted checkpoints and are dropped exactly on export.
"""

from __future__ import annotations

import math

from msm_megatron.config import ModelConfig

PORTABLE_TP = 8


def padded_vocab_size(model: ModelConfig, tp: int) -> int:
    """Rows of the embedding/LM head: vocab rounded up to ``divisor × lcm(8, tp)``."""
    multiple = model.make_vocab_size_divisible_by * math.lcm(PORTABLE_TP, tp)
    return math.ceil(model.vocab_size / multiple) * multiple
