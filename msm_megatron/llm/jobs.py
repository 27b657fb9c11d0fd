"""The units of work of the call runner and of batch stages, and what comes back from them.

A :class:`Job` is a request plus a ``parse`` function that turns the response into the value the
caller wants or raises :class:`ContentError`; a :class:`JobResult` is its value or its error; a
:class:`StageReport` is what one stage of jobs cost and what it could not produce — the same
report whether the stage ran one request per call (:mod:`msm_megatron.llm.runner`) or in batches
(:mod:`msm_megatron.llm.batches`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from msm_megatron.llm.backend import LLMRequest, LLMResponse, Usage


class ContentError(ValueError):
    """A completed response whose content cannot be used (re-asked, then a failure)."""


@dataclass(frozen=True)
class Job:
    """One unit of work: an id (for results and reports), a request, a content parser."""

    id: str
    request: LLMRequest
    parse: Callable[[LLMResponse], Any] = lambda response: response.text


@dataclass
class JobResult:
    id: str
    value: Any = None
    error: str | None = None
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class StageReport:
    """What one stage cost and what it could not produce."""

    stage: str
    jobs: int = 0
    succeeded: int = 0
    calls: int = 0
    cached_calls: int = 0
    content_rejections: int = 0
    failures: list[dict] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    http_requests: int = 0
    retries: int = 0

    def count_call(self, response: LLMResponse) -> None:
        """A call that was sent (not found in the cache) and completed."""
        self.calls += 1
        self.input_tokens += response.input_tokens
        self.output_tokens += response.output_tokens

    def finish(self, results: list[JobResult], before: Usage, after: Usage) -> None:
        """Close the stage: the backend's requests and retries between its usage ``before`` and
        ``after`` the stage, the jobs that succeeded, and each failure."""
        self.http_requests = after.http_requests - before.http_requests
        self.retries = after.retries - before.retries
        self.succeeded = sum(r.ok for r in results)
        self.failures = [{"id": r.id, "error": r.error, "attempts": r.attempts}
                         for r in results if not r.ok]
