"""Near-duplicate removal for documents: MinHash signatures of word shingles, LSH banding.

Each document becomes the set of its 5-word shingles; a 128-permutation MinHash estimates the
Jaccard similarity of two sets. LSH (32 bands × 4 rows) proposes candidate pairs, whose
estimated similarity is then compared with the threshold; of each group of near-duplicates the
first document (in input order) is kept. Deterministic: hashes are seeded, not Python's.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

PERMUTATIONS = 128
BANDS = 32
SHINGLE = 5
_PRIME = (1 << 61) - 1


def _shingles(text: str) -> np.ndarray:
    words = re.findall(r"\w+", text.lower())
    if len(words) < SHINGLE:
        words = words + [""] * (SHINGLE - len(words))
    grams = {" ".join(words[i:i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)}
    return np.fromiter((zlib.crc32(g.encode()) for g in grams), dtype=np.uint64)


def signatures(texts: list[str], seed: int = 0) -> np.ndarray:
    """``[len(texts), PERMUTATIONS]`` MinHash signatures."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, _PRIME, PERMUTATIONS, dtype=np.uint64)
    b = rng.integers(0, _PRIME, PERMUTATIONS, dtype=np.uint64)
    out = np.empty((len(texts), PERMUTATIONS), dtype=np.uint64)
    for i, text in enumerate(texts):
        x = _shingles(text)[:, None]
        out[i] = ((x * a + b) % _PRIME).min(axis=0)  # uint64 wraps: still a fine hash family
    return out


def near_duplicates(texts: list[str], threshold: float, seed: int = 0) -> dict[int, int]:
    """``{index of a duplicate: index of the kept document it duplicates}``."""
    sigs = signatures(texts, seed)
    rows = PERMUTATIONS // BANDS
    buckets: dict[tuple, list[int]] = {}
    for i in range(len(texts)):
        for band in range(BANDS):
            buckets.setdefault((band, sigs[i, band * rows:(band + 1) * rows].tobytes()),
                               []).append(i)
    duplicate_of: dict[int, int] = {}
    for members in buckets.values():
        for pos, j in enumerate(members):
            if j in duplicate_of:
                continue
            for i in members[:pos]:
                if i in duplicate_of:
                    continue
                if float(np.mean(sigs[i] == sigs[j])) >= threshold:
                    duplicate_of[j] = i
                    break
    return duplicate_of
