"""Run many LLM calls concurrently, through the cache, judging each response's content.

Each :class:`Job` is a request plus a ``parse`` function that turns the response into the value
the pipeline wants or raises :class:`ContentError` (no JSON, missing content tags, truncated…).
A rejected response is re-asked (``LLMRequest.attempt`` + 1, a new cache entry) up to
``content_attempts`` times; then the job is recorded as a failure and its siblings carry on.
Transport failures are retried inside the backend; one that exhausts its retries fails only its
job. A :class:`~msm_megatron.generate.llm.PermanentError` (bad key, bad request) stops the run:
every other call would fail the same way.

Example::

    runner = CallRunner(backend, CallCache("gen/x/calls.jsonl"), concurrency=64)
    results = runner.run([Job("q1", LLMRequest.user("..."), parse_json)], stage="domains")
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from msm_megatron.generate.cache import CallCache
from msm_megatron.generate.llm import LLMRequest, LLMResponse, PermanentError, TransientError

# Crash tests: ``after_calls:N`` SIGKILLs the process right after the N-th call of this process
# was recorded in the cache (tests/integration/test_generate_resume.py).
FAULT_ENV = "MSM_GEN_FAULT_KILL"


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


class CallRunner:
    """Bounded-concurrency execution of jobs against one backend and one cache."""

    def __init__(self, backend, cache: CallCache, concurrency: int = 32,
                 content_attempts: int = 3, progress: bool = True, batches=None):
        """``batches``: a :class:`~msm_megatron.generate.batches.BatchLedger` to run stages
        through the backend's batch API (Anthropic) instead of one request per call."""
        self.backend = backend
        self.batches = batches
        self.cache = cache
        self.concurrency = concurrency
        self.content_attempts = content_attempts
        self.progress = progress
        self.reports: list[StageReport] = []
        self._calls_this_process = 0

    def run(self, jobs: list[Job], stage: str) -> list[JobResult]:
        """Run ``jobs`` (results in job order); the stage's report is appended to ``reports``."""
        return asyncio.run(self.run_async(jobs, stage))

    async def run_async(self, jobs: list[Job], stage: str) -> list[JobResult]:
        from tqdm import tqdm

        if self.batches is not None or hasattr(self.backend, "generate_many"):
            from msm_megatron.generate.batches import run_batched

            try:
                return await run_batched(self, jobs, stage)
            finally:
                await self.backend.aclose()

        report = StageReport(stage=stage, jobs=len(jobs))
        before = dataclasses.replace(self.backend.usage)
        semaphore = asyncio.Semaphore(self.concurrency)
        bar = tqdm(total=len(jobs), desc=stage, unit="call", disable=not self.progress,
                   leave=False)

        async def one(job: Job) -> JobResult:
            result = await self._job(job, semaphore, report)
            bar.update()
            return result

        try:
            results = await asyncio.gather(*(one(job) for job in jobs))
        finally:
            bar.close()
            if hasattr(self.backend, "aclose"):
                await self.backend.aclose()
        after = self.backend.usage
        report.http_requests = after.http_requests - before.http_requests
        report.retries = after.retries - before.retries
        report.succeeded = sum(r.ok for r in results)
        report.failures = [{"id": r.id, "error": r.error, "attempts": r.attempts}
                           for r in results if not r.ok]
        self.reports.append(report)
        return list(results)

    async def _call(self, request: LLMRequest, semaphore: asyncio.Semaphore,
                    report: StageReport) -> LLMResponse:
        key = request.key(self.backend.backend_id)
        cached = self.cache.get(key)
        if cached is not None:
            report.cached_calls += 1
            return cached
        async with semaphore:
            response = await self.backend.complete(request)
        self.cache.put(key, response)
        report.calls += 1
        report.input_tokens += response.input_tokens
        report.output_tokens += response.output_tokens
        self._calls_this_process += 1
        if os.environ.get(FAULT_ENV) == f"after_calls:{self._calls_this_process}":
            os.kill(os.getpid(), signal.SIGKILL)
        return response

    async def _job(self, job: Job, semaphore: asyncio.Semaphore,
                   report: StageReport) -> JobResult:
        result = JobResult(job.id)
        for attempt in range(self.content_attempts):
            result.attempts = attempt + 1
            request = dataclasses.replace(job.request, attempt=attempt)
            try:
                response = await self._call(request, semaphore, report)
            except PermanentError:
                raise
            except TransientError as exc:
                result.error = f"transport: {exc}"
                return result
            try:
                result.value = job.parse(response)
                result.error = None
                return result
            except ContentError as exc:
                report.content_rejections += 1
                result.error = f"content: {exc}"
        return result
