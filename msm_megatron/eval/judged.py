"""Whether a command's judging is complete, and the paragraph it ends with when it is not.

A sample the judge could not score is never a result. Two causes are kept apart:

- *unreachable* — a transport failure (no answer after the judge's retries): the judgement
  could not be obtained. Any one makes the command incomplete (exit 3); a rerun buys only the
  missing calls, the others come from the judge's call cache.
- *no verdict* — the judge answered, three times, without a usable verdict. These come back
  from the cache on a rerun; more than ``max_failed_fraction`` of a stage's judgements makes the
  command incomplete.

``msm eval`` (the agentic verdicts and the reasoning-trace labels) and ``msm eval agreement``
write their reports first, then raise :class:`~msm_megatron.llm.outcome.IncompleteRun` with
:func:`judging_incomplete`'s paragraph.
"""

from __future__ import annotations

from msm_megatron.llm.outcome import failure_kind


def _counts(report) -> tuple[int, int]:
    """(unreachable, no verdict) failures of one stage report."""
    kinds = [failure_kind(f["error"]) for f in report.failures]
    return kinds.count("transport"), kinds.count("content")


def _too_many_without_verdict(report, max_failed_fraction: float) -> bool:
    return report.jobs > 0 and _counts(report)[1] > max_failed_fraction * report.jobs


def judging_incomplete(command: str, reports, judge, group: str,
                       cache_note: str) -> str | None:
    """One paragraph when some judgement could not be obtained, or some stage has more answers
    without a verdict than ``judge.max_failed_fraction`` allows; None when judging is complete.

    ``reports``: the judge's stage reports; ``judge``: its config; ``group``: the config key it
    sits under (``judge``, ``a``…); ``cache_note``: where its calls are cached.
    """
    reports = [r for r in reports if r.jobs]
    unreachable = sum(_counts(r)[0] for r in reports)
    over = [r for r in reports if _too_many_without_verdict(r, judge.max_failed_fraction)]
    if not unreachable and not over:
        return None
    total = sum(r.jobs for r in reports)
    stages = "; ".join(f"stage '{r.stage}' {r.succeeded} of {r.jobs} scored "
                       f"({_counts(r)[0]} unreachable, {_counts(r)[1]} no verdict)"
                       for r in reports if r.failures)
    endpoint = judge.base_url or f"the {judge.kind} API"
    text = (f"{command} is incomplete: {total - sum(r.succeeded for r in reports)} of {total} "
            f"judgements are missing ({stages}). The report is written; those samples are "
            "left out of its rates and counted as 'judge unreachable' / 'no verdict'.")
    if unreachable:
        example = next(f["error"] for r in reports for f in r.failures
                       if failure_kind(f["error"]) == "transport")
        text += (f" {unreachable} judgement(s) could not be obtained from {endpoint} "
                 f"({group}.base_url), e.g. {example[:160]}. A rerun resumes: judge calls are "
                 f"cached ({cache_note}), so the same command buys only the missing ones; if "
                 f"the failures persist, check that the judge answers, or raise "
                 f"{group}.timeout_s / {group}.max_attempts.")
    if over:
        text += (f" Answers without a verdict exceed {group}.max_failed_fraction="
                 f"{judge.max_failed_fraction:g} in {', '.join(repr(r.stage) for r in over)}; "
                 "they come back from the cache on a rerun and fail the same way: use a "
                 f"stronger {group}.model, or raise {group}.max_failed_fraction to accept them.")
    return text
