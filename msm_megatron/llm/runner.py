"""Run many LLM calls concurrently, through the cache, judging each response's content.

Each :class:`~msm_megatron.llm.jobs.Job` is a request plus a ``parse`` function that turns the
response into the value the caller wants or raises :class:`~msm_megatron.llm.jobs.ContentError`
(no JSON, missing content tags, truncated…). A rejected response is re-asked
(``LLMRequest.attempt`` + 1, a new cache entry) up to ``content_attempts`` times; then the job is
recorded as a failure and its siblings carry on. Transport failures are retried inside the
backend; one that exhausts its retries fails only its job. A
:class:`~msm_megatron.llm.backend.PermanentError` (bad key, bad request) stops the run: every
other call would fail the same way.

An optional ``check`` (an endpoint check, :func:`~msm_megatron.llm.probe.check_endpoint`) runs
once, before the first call that is not in the cache: a run whose calls are all cached needs no
server, and one whose server is down fails before anything is sent.

Example::

    runner = CallRunner(backend, CallCache("gen/x/calls.jsonl"), concurrency=64)
    results = runner.run([Job("q1", LLMRequest.user("..."), parse_json)], stage="domains")
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

from msm_megatron import faults
from msm_megatron.llm.backend import LLMRequest, LLMResponse, PermanentError, TransientError
from msm_megatron.llm.cache import CallCache
from msm_megatron.llm.jobs import ContentError, Job, JobResult, StageReport


class CallRunner:
    """Bounded-concurrency execution of jobs against one backend and one cache."""

    def __init__(self, backend, cache: CallCache, concurrency: int = 32,
                 content_attempts: int = 3, progress: bool = True, batches=None,
                 check: Callable[[], object] | None = None):
        """``batches``: a :class:`~msm_megatron.llm.batches.BatchLedger` to run stages
        through the backend's batch API (Anthropic) instead of one request per call;
        ``check``: called once before the first paid call (see the module docstring)."""
        self.backend = backend
        self.batches = batches
        self.cache = cache
        self.concurrency = concurrency
        self.content_attempts = content_attempts
        self.progress = progress
        self.reports: list[StageReport] = []
        self._calls_this_process = 0
        self.check = check
        self._checked = False
        self._check_error: BaseException | None = None

    def ensure_checked(self) -> None:
        """Run ``check`` once, before the first paid call; after a failed check every later
        paid call fails the same way."""
        if self._check_error is not None:
            raise self._check_error
        if self._checked or self.check is None:
            return
        try:
            self.check()
        except Exception as exc:
            self._check_error = exc
            raise
        self._checked = True

    def run(self, jobs: list[Job], stage: str) -> list[JobResult]:
        """Run ``jobs`` (results in job order); the stage's report is appended to ``reports``."""
        return asyncio.run(self.run_async(jobs, stage))

    async def run_async(self, jobs: list[Job], stage: str) -> list[JobResult]:
        from tqdm import tqdm

        if self.batches is not None or hasattr(self.backend, "generate_many"):
            from msm_megatron.llm.batches import run_batched

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

        tasks = [asyncio.ensure_future(one(job)) for job in jobs]
        try:
            results = await asyncio.gather(*tasks)
        except Exception:  # a failed check or a permanent error: stop the siblings first
            await _cancel(tasks)
            raise
        finally:
            bar.close()
            if hasattr(self.backend, "aclose"):
                await self.backend.aclose()
        report.finish(results, before, self.backend.usage)
        self.reports.append(report)
        return list(results)

    async def call(self, request: LLMRequest, semaphore: asyncio.Semaphore,
                   report: StageReport) -> LLMResponse:
        """One request through the cache: the cached response, or a new call (under
        ``semaphore``) recorded in the cache and counted in ``report``."""
        key = request.key(self.backend.backend_id)
        cached = self.cache.get(key)
        if cached is not None:
            report.cached_calls += 1
            return cached
        self.ensure_checked()
        async with semaphore:
            response = await self.backend.complete(request)
        self.cache.put(key, response)
        report.count_call(response)
        self._calls_this_process += 1
        faults.kill_at(faults.GENERATE, f"after_calls:{self._calls_this_process}")
        return response

    async def _job(self, job: Job, semaphore: asyncio.Semaphore,
                   report: StageReport) -> JobResult:
        result = JobResult(job.id)
        for attempt in range(self.content_attempts):
            result.attempts = attempt + 1
            request = dataclasses.replace(job.request, attempt=attempt)
            try:
                response = await self.call(request, semaphore, report)
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


async def _cancel(tasks: list[asyncio.Future]) -> None:
    """Cancel ``tasks`` and wait until they have stopped (nothing left to send or print)."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
