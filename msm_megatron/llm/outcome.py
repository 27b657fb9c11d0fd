"""How a command that calls LLMs ends: its exit code, and what it tells the user when it falls
short.

Every command that calls an LLM (``msm generate docs|chats|complete|spec-variants``, ``msm eval``,
``msm eval agreement``) ends with one of these codes (docs/llm-failures.md lists each failure):

====  =====================================================================================
code  meaning
====  =====================================================================================
0     complete: every stage produced its output, failures within the tolerance
2     a setting or input is wrong (a bad config; an endpoint that answers 400/401/403/404, e.g.
      a model name the server does not serve): a rerun fails the same way until the setting
      the message names is fixed
3     incomplete: a stage produced nothing, or more of its jobs failed than
      ``max_failed_fraction`` allows, or judgements could not be obtained; completed calls are
      cached, and the message says whether a rerun can help (transport failures: yes; unusable
      answers: no, they are re-read from the cache)
4     an endpoint did not answer its check before the first paid call (nothing was sent)
130   interrupted (Ctrl-C): completed calls are cached; the same command resumes
====  =====================================================================================
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from msm_megatron.llm.backend import LLMError

EXIT_OK = 0
EXIT_BAD_SETTING = 2
EXIT_INCOMPLETE = 3
EXIT_UNREACHABLE = 4
EXIT_INTERRUPTED = 130

DEFAULT_MAX_FAILED_FRACTION = 0.1


class EndpointUnreachable(LLMError):
    """An endpoint that did not answer its check; nothing was sent to it (exit 4)."""


class IncompleteRun(LLMError):
    """A run that fell short; the message is the summary paragraph (exit 3)."""


@dataclass(frozen=True)
class Knobs:
    """The settings a user changes about one endpoint, as they are written for this command
    (``backend.base_url`` in a generation config, ``judge.base_url`` in a sweep, ``--base-url``
    for ``msm generate complete``)."""

    url: str
    timeout: str
    model: str
    content: str | None = None  # re-asks of unusable answers (None: the command has none)


def failure_kind(error: str | None) -> str:
    """``transport`` or ``content`` for a job error written by the call runner."""
    return "content" if (error or "").startswith("content:") else "transport"


_PREFIX = re.compile(r"^(transport|content): (gave up after \d+ attempts: )?")


def _cause(error: str) -> str:
    """A short name of a failure's cause for counting: ``timeout``, ``connection refused``,
    ``HTTP 500``, ``no <content>…</content>``…"""
    text = _PREFIX.sub("", error)
    return re.split(r" at https?://| \(| after \d", text, maxsplit=1)[0].strip()[:60] or "unknown"


def shortfall(report, max_failed_fraction: float) -> bool:
    """True when a stage produced nothing or failed more jobs than allowed."""
    failed = report.jobs - report.succeeded
    return report.jobs > 0 and (report.succeeded == 0
                                or failed > max_failed_fraction * report.jobs)


def incomplete_message(command: str, reports, endpoint: str, knobs: Knobs,
                       max_failed_fraction: float, details: str | None = None,
                       tolerance_setting: str | None = None) -> str | None:
    """One paragraph on every stage that fell short (None when none did): counts per failure
    kind, the endpoint, the settings to change and whether a rerun can help."""
    short = [r for r in reports if shortfall(r, max_failed_fraction)]
    if not short:
        return None
    parts, kinds = [], set()
    for r in short:
        causes = Counter()
        for failure in r.failures:
            kind = failure_kind(failure["error"])
            kinds.add(kind)
            causes[f"{kind}: {_cause(failure['error'])}"] += 1
        listed = ", ".join(f"{n} {cause}" for cause, n in causes.most_common())
        parts.append(f"stage '{r.stage}' produced {r.succeeded} of {r.jobs} ({listed})")
    text = (f"{command} is incomplete: " + "; ".join(parts)
            + f". Endpoint: {endpoint} ({knobs.url}).")
    if "transport" in kinds:
        text += (" Transport failures are worth a rerun: completed calls are cached and the same "
                 "command buys only the missing ones; if they persist, check that the server "
                 f"answers at {knobs.url}, or raise {knobs.timeout} for a slow one.")
    if "content" in kinds:
        fix = f"use a stronger {knobs.model}"
        if knobs.content:
            fix += f" or raise {knobs.content} (new calls)"
        text += (" Unusable answers (the endpoint answered; the text could not be used) come back "
                 f"from the cache on a rerun and fail the same way: {fix}.")
    allowed = f"{tolerance_setting}={max_failed_fraction:g}" if tolerance_setting else (
        f"{max_failed_fraction:.0%}")
    text += f" At most {allowed} of a stage's jobs may fail."
    if details:
        text += f" Each failure: {details}."
    return text
