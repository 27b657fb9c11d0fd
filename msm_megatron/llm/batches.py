"""Bulk stages: Anthropic Message Batches (resumable across processes) or an in-process engine.

A stage's uncached calls are submitted as batches (``custom_id`` = the call's cache key); the
batch id and its keys are appended to ``batches.jsonl`` in the run directory *before* polling
starts. If the process dies, the next run finds the open batch there and polls and collects it
instead of submitting (and paying for) the same requests again — even if the batch finished
long after the submitter died. Succeeded results go into the call cache like any other call;
errored / expired / canceled requests are retried once each as ordinary requests. Content
rejections are re-asked in a further batch round (``attempt`` + 1), as in the direct path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from pathlib import Path

from msm_megatron import faults
from msm_megatron.llm.backend import LLMRequest, TransientError
from msm_megatron.llm.http_backends import parse_anthropic_message
from msm_megatron.llm.jobs import ContentError, Job, JobResult, StageReport

MAX_BATCH = 10_000  # requests per batch (the API allows 100,000 / 256 MB)


class BatchLedger:
    """``batches.jsonl``: submitted batches and which of them were collected."""

    def __init__(self, path: Path, poll_s: float = 60.0):
        self.path = Path(path)
        self.poll_s = poll_s

    def _rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # torn last line
        return rows

    def open_batches(self) -> dict[str, set[str]]:
        rows = self._rows()
        collected = {r["batch_id"] for r in rows if r.get("collected")}
        return {r["batch_id"]: set(r["keys"]) for r in rows
                if "keys" in r and r["batch_id"] not in collected}

    def _append(self, row: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def submitted(self, batch_id: str, stage: str, keys: list[str]) -> None:
        self._append({"batch_id": batch_id, "stage": stage, "keys": keys, "time": time.time()})

    def collected(self, batch_id: str) -> None:
        self._append({"batch_id": batch_id, "collected": True, "time": time.time()})


async def _collect(runner, batch_id: str, report: StageReport) -> None:
    backend, ledger = runner.backend, runner.batches
    while True:
        status = await backend.batch_status(batch_id)
        if status.get("processing_status") == "ended":
            break
        await asyncio.sleep(ledger.poll_s)
    for row in await backend.batch_results(status["results_url"]):
        result = row.get("result", {})
        if result.get("type") == "succeeded" and row["custom_id"] not in runner.cache:
            response = parse_anthropic_message(result["message"])
            runner.cache.put(row["custom_id"], response)
            report.count_call(response)
    ledger.collected(batch_id)


async def _fetch(runner, needed: dict[str, LLMRequest], stage: str, report: StageReport) -> None:
    """Get every needed call into the cache: open batches first, then new ones, then direct."""
    if needed:
        runner.ensure_checked()
    for batch_id, keys in runner.batches.open_batches().items():
        if keys & needed.keys():
            await _collect(runner, batch_id, report)
    missing = [(k, r) for k, r in needed.items() if k not in runner.cache]
    for start in range(0, len(missing), MAX_BATCH):
        chunk = missing[start:start + MAX_BATCH]
        batch_id = await runner.backend.submit_batch(chunk)
        runner.batches.submitted(batch_id, stage, [k for k, _ in chunk])
        faults.kill_at(faults.GENERATE, "after_batch_submit")
        await _collect(runner, batch_id, report)
    for key, request in needed.items():  # errored / expired in the batch: one direct try each
        if key not in runner.cache:
            try:
                await runner.call(request, asyncio.Semaphore(runner.concurrency), report)
            except TransientError:
                pass


async def _generate_in_process(runner, needed: dict[str, LLMRequest],
                               report: StageReport) -> None:
    """All needed calls in one engine call (the engine batches and schedules them itself)."""
    if not needed:
        return
    runner.ensure_checked()
    items = list(needed.items())
    responses = await asyncio.to_thread(runner.backend.generate_many, [r for _, r in items])
    for (key, _), response in zip(items, responses, strict=True):
        runner.cache.put(key, response)
        report.count_call(response)


async def run_batched(runner, jobs: list[Job], stage: str) -> list[JobResult]:
    """A stage in rounds: attempt k of every unfinished job goes out as one batch fetch.

    ``runner`` is the :class:`~msm_megatron.llm.runner.CallRunner` that delegates the stage
    here (its backend, cache, ledger, ``content_attempts``, ``reports`` and :meth:`call`).
    """
    report = StageReport(stage=stage, jobs=len(jobs))
    before = dataclasses.replace(runner.backend.usage)
    results = {job.id: JobResult(job.id) for job in jobs}
    pending = list(jobs)
    for attempt in range(runner.content_attempts):
        if not pending:
            break
        requests = {job.id: dataclasses.replace(job.request, attempt=attempt) for job in pending}
        keys = {jid: req.key(runner.backend.backend_id) for jid, req in requests.items()}
        report.cached_calls += sum(k in runner.cache for k in keys.values())
        needed = {keys[j]: requests[j] for j in keys if keys[j] not in runner.cache}
        if hasattr(runner.backend, "generate_many"):  # an in-process engine (vLLM offline)
            await _generate_in_process(runner, needed, report)
        else:
            await _fetch(runner, needed, stage, report)
        still = []
        for job in pending:
            result, response = results[job.id], runner.cache.get(keys[job.id])
            result.attempts = attempt + 1
            if response is None:
                result.error = "transport: no result from the batch or a direct retry"
                continue
            try:
                result.value, result.error = job.parse(response), None
            except ContentError as exc:
                report.content_rejections += 1
                result.error = f"content: {exc}"
                still.append(job)
        pending = still
    ordered = [results[job.id] for job in jobs]
    report.finish(ordered, before, runner.backend.usage)
    runner.reports.append(report)
    return ordered
