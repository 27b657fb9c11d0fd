"""What the generation pipelines share: the run directory, the cache, staged fan-out, parsing.

A stage is a list of :class:`~msm_megatron.llm.jobs.Job` run concurrently through the
cache; successes come back keyed by job id, failures are collected for ``failures.jsonl``.

Before the first paid call the endpoint is checked once (one cheap request: a server that is
down fails at once with exit 4, a model it does not serve with exit 2). Once every output is
written, a run that fell short ends in :class:`~msm_megatron.llm.outcome.IncompleteRun` (exit 3):
a stage whose failed jobs exceed ``backend.max_failed_fraction``, or a dataset left empty.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from msm_megatron.generate import prompts
from msm_megatron.llm.backend import LLMRequest
from msm_megatron.llm.cache import CallCache
from msm_megatron.llm.jobs import ContentError, Job
from msm_megatron.llm.outcome import IncompleteRun, Knobs, incomplete_message
from msm_megatron.llm.runner import CallRunner

_JSON_BLOCK = re.compile(r"```(?:json)?\s*(.*?)```", re.S)
_CONTENT = re.compile(r"<content>(.*?)</content>", re.S)


def slug(name: str) -> str:
    """A filesystem- and source-safe name."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:60] or "unnamed"


def parse_json_list(text: str, keys: tuple[str, ...] | None, at_least: int = 1) -> list:
    """The JSON list in a response (fenced or bare), checked for shape; else ContentError."""
    fenced = _JSON_BLOCK.search(text)
    candidate = fenced.group(1) if fenced else text[text.find("["): text.rfind("]") + 1]
    try:
        items = json.loads(candidate)
    except json.JSONDecodeError as exc:
        raise ContentError(f"no JSON list ({exc.msg})") from exc
    if not isinstance(items, list) or len(items) < at_least:
        raise ContentError(f"expected a JSON list of at least {at_least} items")
    for item in items:
        if keys is None and not (isinstance(item, str) and item.strip()):
            raise ContentError("expected non-empty strings")
        if keys is not None and not (isinstance(item, dict) and all(
                isinstance(item.get(k), str) and item[k].strip() for k in keys)):
            raise ContentError(f"expected objects with string keys {', '.join(keys)}")
    return items


def tagged_content(response, truncated_hint: str = "") -> str:
    """The text inside ``<content>…</content>`` of a complete response; else ContentError.

    Nothing outside the tags (a scratchpad, a preamble) is ever returned.
    """
    if response.truncated:
        raise ContentError("truncated" + truncated_hint)
    found = _CONTENT.search(response.text)
    if not found or not found.group(1).strip():
        raise ContentError("no <content>…</content> (text outside the tags is never used)")
    return found.group(1).strip()


def listing(keys: tuple[str, ...] | None, at_least: int = 1):
    """A parser for a JSON-list response (rejects truncated ones)."""
    def parse(response):
        if response.truncated:
            raise ContentError("truncated")
        return parse_json_list(response.text, keys, at_least)
    return parse


def unique_by_name(items: list[dict]) -> list[dict]:
    """Drop items whose name repeats an earlier one (it would collide in the tree)."""
    seen, out = set(), []
    for item in items:
        if slug(item["name"]) not in seen:
            seen.add(slug(item["name"]))
            out.append(item)
    return out


def endpoint_of(backend) -> str:
    """Where a backend's calls go, for messages: its base URL (HTTP; the message names the
    setting beside it), or the model of an in-process engine."""
    return getattr(backend, "base_url", None) or f"in-process engine {backend.backend_id}"


def raise_if_incomplete(command: str, reports, backend, knobs: Knobs, max_failed_fraction: float,
                        failures: Path, tolerance_setting: str) -> None:
    """:class:`IncompleteRun` with the summary paragraph when a stage of ``reports`` fell short
    (:func:`~msm_megatron.llm.outcome.incomplete_message`); ``failures`` lists each failure."""
    message = incomplete_message(command, reports, endpoint_of(backend), knobs,
                                 max_failed_fraction, details=str(failures),
                                 tolerance_setting=tolerance_setting)
    if message is not None:
        raise IncompleteRun(message)


class Pipeline:
    """A run directory with its call cache, a runner, and the failures of every stage.

    Subclasses name their command (``COMMAND``) and the setting of their content re-asks
    (``CONTENT_SETTING``), both for messages.
    """

    COMMAND = "msm generate"
    CONTENT_SETTING: str | None = None

    def __init__(self, out_dir: str, backend, backend_cfg, content_attempts: int,
                 progress: bool = True):
        from msm_megatron.llm.config import knobs
        from msm_megatron.llm.probe import check_endpoint

        self.knobs = knobs("backend", content=self.CONTENT_SETTING)
        self.max_failed_fraction = backend_cfg.max_failed_fraction
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.backend = backend
        self.temperature = backend_cfg.temperature
        self.cache = CallCache(self.out / "calls.jsonl")
        batches = None
        if backend_cfg.batch:
            from msm_megatron.config import ConfigError
            from msm_megatron.llm.batches import BatchLedger

            if backend_cfg.kind != "anthropic":
                raise ConfigError("backend.batch=true needs backend.kind=anthropic (the Message "
                                  "Batches API)")
            batches = BatchLedger(self.out / "batches.jsonl", backend_cfg.batch_poll_s)
        self.runner = CallRunner(backend, self.cache, concurrency=backend_cfg.concurrency,
                                 content_attempts=content_attempts, progress=progress,
                                 batches=batches,
                                 check=lambda: check_endpoint(backend, self.knobs))
        self.failures: list[dict] = []

    def request(self, text: str, max_tokens: int = 4096,
                system: str | None = prompts.SYSTEM) -> LLMRequest:
        return LLMRequest.user(text, system=system, max_tokens=max_tokens,
                               temperature=self.temperature)

    def stage(self, jobs: list[Job], name: str) -> dict[str, object]:
        results = self.runner.run(jobs, stage=name)
        self.failures += [{"stage": name, "id": r.id, "error": r.error} for r in results
                          if not r.ok]
        return {r.id: r.value for r in results if r.ok}

    def write_failures(self) -> None:
        with (self.out / "failures.jsonl").open("w", encoding="utf-8") as f:
            for failure in self.failures:
                f.write(json.dumps(failure) + "\n")

    def conclude(self, produced: int, what: str) -> None:
        """End a run whose outputs are all written: :class:`IncompleteRun` when a stage fell
        short, or when it ``produced`` nothing (``what`` says what was expected and why)."""
        raise_if_incomplete(self.COMMAND, self.runner.reports, self.backend, self.knobs,
                            self.max_failed_fraction, self.out / "failures.jsonl",
                            "backend.max_failed_fraction")
        if produced == 0:
            raise IncompleteRun(f"{self.COMMAND} produced no {what}; every stage is in "
                                f"{self.out / 'summary.json'}")

    def stage_reports(self) -> list[dict]:
        from dataclasses import asdict

        stages = [asdict(r) for r in self.runner.reports]
        for stage in stages:
            stage["failures"] = len(stage["failures"])
        return stages
