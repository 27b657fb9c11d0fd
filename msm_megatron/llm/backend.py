"""The backend contract: what every LLM backend takes and returns, how its failures are
classified, and its usage counters.

A backend is anything with ``async complete(request) -> LLMResponse``. Backends raise
:class:`TransientError` for what is worth retrying (429, 5xx, timeouts, dropped connections,
unparseable HTTP bodies) and :class:`PermanentError` for what is not (401, 400, a missing key).
Content problems (no JSON in the text, missing tags, truncation) are the caller's to judge: see
:mod:`msm_megatron.llm.jobs` and :mod:`msm_megatron.llm.runner`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

OMITTED_WHEN_UNSET = ("max_tokens", "temperature", "seed")  # LLMRequest fields, None = not sent


@dataclass(frozen=True)
class LLMRequest:
    """One chat completion. ``attempt`` distinguishes deliberate re-asks of the same prompt (a
    response rejected for its content), so each re-ask has its own cache entry.

    ``max_tokens``, ``temperature`` and ``seed`` set to None are left out of the request body:
    the server's defaults apply (an Anthropic body must name max_tokens, see
    :data:`~msm_megatron.llm.http_backends.ANTHROPIC_DEFAULT_MAX_TOKENS`)."""

    messages: tuple[tuple[str, str], ...]  # (role, content), roles "user"/"assistant"
    system: str | None = None
    max_tokens: int | None = 1024
    temperature: float | None = 1.0
    attempt: int = 0
    seed: int | None = None  # sampling seed, for backends that take one (OpenAI-compatible)

    @staticmethod
    def user(text: str, system: str | None = None, **kwargs) -> LLMRequest:
        return LLMRequest(messages=(("user", text),), system=system, **kwargs)

    def sampling(self) -> dict:
        """The generation settings to send: ``max_tokens``, ``temperature``, ``seed``, those
        that are set."""
        return {k: getattr(self, k) for k in OMITTED_WHEN_UNSET if getattr(self, k) is not None}

    def key(self, backend_id: str) -> str:
        """Content address of this call on a given backend/model (sha256 of canonical JSON);
        unset settings are left out, so the key of a request that sets them all is unchanged."""
        fields = {k: v for k, v in asdict(self).items()
                  if not (k in OMITTED_WHEN_UNSET and v is None)}
        payload = json.dumps({"backend": backend_id, **fields}, sort_keys=True,
                             ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class LLMResponse:
    """The text of one completion, why it stopped, and its token usage."""

    text: str
    finish_reason: str  # "stop" or "length" (truncated), as reported by the backend
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def truncated(self) -> bool:
        return self.finish_reason in ("length", "max_tokens")


class LLMError(Exception):
    """A call that failed."""


class TransientError(LLMError):
    """Worth retrying: rate limits, server errors, timeouts, dropped connections, bad bodies.

    ``kind`` names the cause for accounting (``http_429``, ``http_500``, ``timeout``,
    ``connection``, ``bad_body``); ``retry_after`` is the server's ``Retry-After`` in seconds.
    """

    def __init__(self, message: str, kind: str = "other", retry_after: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


class PermanentError(LLMError):
    """Not worth retrying (authentication, a malformed request, an unknown model)."""


@dataclass
class Usage:
    """Token and cost accounting of one stage (or a whole run)."""

    calls: int = 0
    cached_calls: int = 0
    http_requests: int = 0
    retries: int = 0
    failures: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    by_error: dict[str, int] = field(default_factory=dict)

    def cost(self, usd_per_mtok_in: float, usd_per_mtok_out: float) -> float:
        return (self.input_tokens * usd_per_mtok_in + self.output_tokens * usd_per_mtok_out) / 1e6

    def count_error(self, kind: str) -> None:
        self.by_error[kind] = self.by_error.get(kind, 0) + 1
