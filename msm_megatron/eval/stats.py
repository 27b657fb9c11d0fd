"""Rates with honest uncertainty: Wilson score intervals and arm-vs-arm differences.

A misalignment rate is a binomial proportion: ``k`` harmful verdicts out of ``n`` samples. Its
95 % interval is the Wilson score interval (good at small ``n`` and near 0 or 1, where the
normal "± 1.96·stderr" interval goes below 0 or above 1). The difference of two arms' rates
gets Newcombe's hybrid score interval (method 10), built from the two Wilson intervals.

A rate of nothing (``n`` = 0: no sample judged) is ``None``, never NaN: summaries are strict
JSON, and reports say "0 of N judged" (:func:`rate_or_none` is the one place this is decided).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal


def rate_or_none(k: float, n: int) -> float | None:
    """``k / n``, or None when there is nothing to divide by (no sample judged)."""
    return k / n if n else None


@dataclass(frozen=True)
class Rate:
    """``k`` of ``n`` with its Wilson interval."""

    k: int
    n: int
    low: float
    high: float

    @property
    def value(self) -> float | None:
        """``k / n``; None when ``n`` = 0."""
        return rate_or_none(self.k, self.n)

    def as_dict(self) -> dict:
        """``{k, n, rate, low, high}`` for JSON summaries."""
        return {"k": self.k, "n": self.n, "rate": self.value, "low": self.low, "high": self.high}


def wilson(k: int, n: int, z: float = Z95) -> Rate:
    """Wilson score interval for ``k`` successes in ``n`` trials (``n`` = 0 → the whole [0, 1])."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return Rate(0, 0, 0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Rate(k, n, max(0.0, centre - half), min(1.0, centre + half))


def difference(a: Rate, b: Rate) -> tuple[float, float, float]:
    """``a - b`` and its Newcombe (hybrid score) 95 % interval (both ``n`` > 0)."""
    if not a.n or not b.n:
        raise ValueError("a difference of rates needs samples on both sides")
    pa, pb = a.value, b.value
    d = pa - pb
    low = d - math.sqrt((pa - a.low) ** 2 + (b.high - pb) ** 2)
    high = d + math.sqrt((a.high - pa) ** 2 + (pb - b.low) ** 2)
    return d, max(-1.0, low), min(1.0, high)


def difference_or_none(a: Rate, b: Rate) -> dict | None:
    """``{difference, low, high}`` of ``a - b`` (:func:`difference`), or None when either side
    has nothing to compare (``n`` = 0)."""
    if not a.n or not b.n:
        return None
    d, low, high = difference(a, b)
    return {"difference": d, "low": low, "high": high}


def mean_rate(rates: list[Rate]) -> float | None:
    """Average of per-condition rates (the paper's "average misalignment rate"), over the
    conditions with a judged sample; None when none has one."""
    values = [r.value for r in rates if r.n]
    return rate_or_none(sum(values), len(values))


def cohen_kappa(pairs: list[tuple[bool, bool]]) -> dict:
    """Cohen's κ of two raters' yes/no labels, with the confusion matrix.

    ``κ = (p_o − p_e) / (1 − p_e)``: ``p_o`` the observed agreement, ``p_e`` the agreement
    expected from each rater's own yes-rate. When both raters give one and the same label to
    everything, ``p_e = 1`` and κ is 0/0; it is reported as 1.0 (they then agree on every item;
    ``kappa_defined`` is False). No pairs: κ and the agreement are None.

    Returns:
        ``{n, kappa, kappa_defined, agreement, confusion: {yes_yes, yes_no, no_yes, no_no}}``
        with the first rater's label first.
    """
    n = len(pairs)
    confusion = {"yes_yes": 0, "yes_no": 0, "no_yes": 0, "no_no": 0}
    for a, b in pairs:
        confusion[f"{'yes' if a else 'no'}_{'yes' if b else 'no'}"] += 1
    if not n:
        return {"n": 0, "kappa": None, "kappa_defined": False, "agreement": None,
                "confusion": confusion}
    p_o = (confusion["yes_yes"] + confusion["no_no"]) / n
    a_yes = (confusion["yes_yes"] + confusion["yes_no"]) / n
    b_yes = (confusion["yes_yes"] + confusion["no_yes"]) / n
    p_e = a_yes * b_yes + (1 - a_yes) * (1 - b_yes)
    defined = p_e < 1
    kappa = (p_o - p_e) / (1 - p_e) if defined else 1.0  # p_e = 1: both constant and equal
    return {"n": n, "kappa": kappa, "kappa_defined": defined, "agreement": p_o,
            "confusion": confusion}
