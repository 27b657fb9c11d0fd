"""``msm generate complete``: a JSONL of prompts → completions, concurrent, cached, resumable.

With ``--batch`` (Anthropic), the prompts go out as Message Batches that a later run resumes.

The building block of the generation pipelines, usable on its own (like an offline batch job
against any OpenAI-compatible server or the Anthropic API)::

    msm generate complete prompts.jsonl gen/run1 --backend openai \\
        --base-url http://127.0.0.1:8000/v1 --model Qwen/Qwen3-32B --concurrency 128

Input lines: ``{"id": ..., "prompt": "..."}`` (or ``"messages": [{"role", "content"}, ...]``,
optional ``"system"``). Output in the directory: ``results.jsonl`` (``id``, ``text``,
``finish_reason``) in input order, ``failures.jsonl``, ``report.json`` (calls, cached calls,
retries, tokens, failures by cause) and ``calls.jsonl`` (the call cache). Re-running the same
command after an interruption re-sends only calls that never completed. The server is checked
once before the first paid call (a fully cached run needs none); more failed prompts than
``--max-failed-fraction`` end the command with exit 3 and a summary, once the outputs are
written.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from msm_megatron.config import ConfigError
from msm_megatron.llm.backend import LLMRequest
from msm_megatron.llm.cache import CallCache
from msm_megatron.llm.jobs import Job, StageReport
from msm_megatron.llm.runner import CallRunner


def read_prompts(path: Path, max_tokens: int, temperature: float) -> list[Job]:
    """Jobs from a prompts JSONL; errors name the file, line and the fix."""
    if not path.is_file():
        raise ConfigError(f"{path}: prompts file not found")
    jobs, seen = [], set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not JSON ({exc.msg})") from exc
        if not isinstance(row, dict) or ("prompt" in row) == ("messages" in row):
            raise ConfigError(f"{where}: expected an object with either 'prompt' (text) or "
                              "'messages' (a list of {role, content})")
        job_id = str(row.get("id", number))
        if job_id in seen:
            raise ConfigError(f"{where}: duplicate id {job_id!r}; ids must be unique")
        seen.add(job_id)
        if "prompt" in row:
            messages = (("user", str(row["prompt"])),)
        else:
            try:
                messages = tuple((m["role"], m["content"]) for m in row["messages"])
            except (KeyError, TypeError) as exc:
                raise ConfigError(f"{where}: each message needs 'role' and 'content'") from exc
        request = LLMRequest(messages=messages, system=row.get("system"),
                             max_tokens=int(row.get("max_tokens", max_tokens)),
                             temperature=float(row.get("temperature", temperature)))
        jobs.append(Job(job_id, request, _keep_complete))
    if not jobs:
        raise ConfigError(f"{path}: no prompts")
    return jobs


def _keep_complete(response):
    return {"text": response.text, "finish_reason": response.finish_reason}


def complete_file(prompts: Path, out_dir: Path, backend, concurrency: int = 32,
                  max_tokens: int = 1024, temperature: float = 1.0,
                  progress: bool = True, batch_poll_s: float | None = None,
                  check=None) -> tuple[dict, StageReport]:
    """Run every prompt; write results, failures and the report; return the report and the
    stage's :class:`StageReport`. ``check``: the endpoint check, run before the first paid
    call (:class:`~msm_megatron.llm.runner.CallRunner`)."""
    jobs = read_prompts(Path(prompts), max_tokens, temperature)
    out_dir = Path(out_dir)
    cache = CallCache(out_dir / "calls.jsonl")
    batches = None
    if batch_poll_s is not None:
        from msm_megatron.llm.batches import BatchLedger

        batches = BatchLedger(out_dir / "batches.jsonl", poll_s=batch_poll_s)
    runner = CallRunner(backend, cache, concurrency=concurrency, content_attempts=1,
                        progress=progress, batches=batches, check=check)
    try:
        results = runner.run(jobs, stage="complete")
    finally:
        cache.close()
    with (out_dir / "results.jsonl").open("w", encoding="utf-8") as f:
        for result in results:
            if result.ok:
                f.write(json.dumps({"id": result.id, **result.value}, ensure_ascii=False) + "\n")
    report = asdict(runner.reports[-1])
    with (out_dir / "failures.jsonl").open("w", encoding="utf-8") as f:
        for failure in report["failures"]:
            f.write(json.dumps(failure) + "\n")
    report["by_error"] = dict(backend.usage.by_error)
    report.pop("failures")
    report["failed"] = len(jobs) - report["succeeded"]
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    return report, runner.reports[-1]
