"""Retry timing: exponential backoff with full jitter, capped, and the server's ``Retry-After``.

The delay before retry ``n`` (1-based) is uniform in ``[0, min(cap, base · 2^(n-1))]`` ("full
jitter": many clients that failed together do not retry together). A ``Retry-After`` from the
server is a floor: we never come back sooner than asked.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a transient failure."""

    max_attempts: int = 8
    base_s: float = 1.0
    cap_s: float = 60.0

    def delay(self, retry: int, retry_after: float | None = None,
              rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        rng = rng or random
        backoff = rng.uniform(0.0, min(self.cap_s, self.base_s * 2 ** (retry - 1)))
        return max(backoff, retry_after or 0.0)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date (None when absent/invalid)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        import time

        when = parsedate_to_datetime(value).timestamp()
        return max(0.0, when - (time.time() if now is None else now))
    except (TypeError, ValueError):
        return None
