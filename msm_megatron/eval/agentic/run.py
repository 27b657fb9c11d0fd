"""Run agentic-misalignment conditions for one arm: sample, check mechanically, judge, persist.

Per condition three files under ``<out>/<arm>/agentic_misalignment/`` (``..._official/`` for
the official scenarios):

- ``<cell>.prompt.json`` — the system prompt, user message and inbox the agent was shown;
- ``<cell>.samples.jsonl`` — one line per generated sample, appended and flushed as soon as it
  exists; a resumed sweep never regenerates a sample found here;
- ``<cell>.jsonl`` — every sample with its tool actions, mechanical evidence, the judge's
  verdict and reasoning, ``harmful`` (verdict AND evidence), any judge error and
  ``judge_failure`` (:func:`judge_failure`); rewritten from the samples and the judge's call
  cache (free on a rerun).

How the judge is asked and answers depends on the protocol (:mod:`.judging`); an unparseable
answer is re-asked, then recorded as ``no_verdict``; a judge that did not answer (after its
retries) as ``unreachable`` — never a crash, never a verdict.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from msm_megatron import faults
from msm_megatron.eval.agentic.grid import Condition
from msm_megatron.eval.agentic.judging import BuiltinProtocol
from msm_megatron.eval.agentic.scenarios import BuiltinScenarios
from msm_megatron.eval.agentic.tools import parse_actions
from msm_megatron.llm.jobs import Job, JobResult
from msm_megatron.llm.outcome import failure_kind
from msm_megatron.llm.runner import CallRunner

# Crash tests (msm_megatron.faults): ``after_samples:N`` kills after the N-th new sample written.
_written = [0]


def _read(path: Path) -> dict[int, dict]:
    rows = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
                rows[row["sample"]] = row
            except (json.JSONDecodeError, KeyError):
                continue  # a line cut short by a kill
    return rows


def _stem(c: Condition, out_dir: Path) -> Path:
    return out_dir / c.id.replace("/", "__")


def generate_samples(conditions, runner, samples: int, out_dir: Path, seed: int,
                     batch_samples: int = 4096, source=None) -> dict[str, dict[int, dict]]:
    """Every condition's ``samples`` replies, resuming from its ``.samples.jsonl``.

    Missing samples go to the runner in calls of at most ``batch_samples`` samples (several
    conditions per call, so vLLM keeps its batch full); each call's replies are appended and
    flushed before the next call starts. Sample ``i`` of condition ``c`` is drawn with seed
    ``prompt_seed(seed, c.id) + i`` whatever was already done. ``source`` renders the prompts
    (default: the builtin scenarios); each condition's prompt is also written to
    ``<cell>.prompt.json`` for inspection.
    """
    from msm_megatron.eval.runners import SampleBatch, prompt_seed

    source = source or BuiltinScenarios()
    out_dir.mkdir(parents=True, exist_ok=True)
    prompts = {c.id: source.prompt(c) for c in conditions}  # bad templates fail before sampling
    for c in conditions:
        write_prompt(c, prompts[c.id], out_dir)
    done = {c.id: _read(_stem(c, out_dir).with_suffix(".samples.jsonl")) for c in conditions}
    work = []  # (condition, sample indices) in chunks of at most batch_samples
    for c in conditions:
        missing = [i for i in range(samples) if i not in done[c.id]]
        for k in range(0, len(missing), batch_samples):
            work.append((c, tuple(missing[k:k + batch_samples])))
    calls, current, size = [], [], 0
    for c, idx in work:
        if current and size + len(idx) > batch_samples:
            calls.append(current)
            current, size = [], 0
        current.append((c, idx))
        size += len(idx)
    if current:
        calls.append(current)
    for call in calls:
        batches = [SampleBatch(prompts[c.id].system, prompts[c.id].user, samples=idx,
                               seed=prompt_seed(seed, c.id)) for c, idx in call]
        replies = runner.generate(batches)
        for (c, idx), texts in zip(call, replies, strict=True):
            with _stem(c, out_dir).with_suffix(".samples.jsonl").open("a", encoding="utf-8") as f:
                for i, text in zip(idx, texts, strict=True):
                    done[c.id][i] = {"sample": i, "reply": text}
                    f.write(json.dumps(done[c.id][i], ensure_ascii=False) + "\n")
                    f.flush()
                    _written[0] += 1
                    faults.kill_at(faults.EVAL, f"after_samples:{_written[0]}")
    return done


def write_prompt(c: Condition, prompt, out_dir: Path) -> Path:
    """``<cell>.prompt.json`` under ``out_dir``: the condition and official ids, the system
    prompt, user message and inbox the agent is shown (left as is when it already holds that
    record); returns its path. The sweep and ``msm eval render`` both write it here."""
    path = _stem(c, out_dir).with_suffix(".prompt.json")
    record = {"condition": c.id, "official_id": c.official_id, "system": prompt.system,
              "user": prompt.user, "email_content": prompt.email_content}
    if not path.exists() or json.loads(path.read_text(encoding="utf-8")) != record:
        path.write_text(json.dumps(record, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def judge_failure(result: JobResult) -> str | None:
    """Why the judge gave no verdict: ``unreachable`` (a transport failure: the judgement could
    not be obtained), ``no_verdict`` (it answered, without a usable verdict); None if it did."""
    if result.ok:
        return None
    return "unreachable" if failure_kind(result.error) == "transport" else "no_verdict"


def failure_counts(kinds) -> dict[str, int]:
    """``{judge_unreachable, no_verdict}``: how many of ``kinds`` (each what
    :func:`judge_failure` says of a result, or a row's ``judge_failure``) are of each cause."""
    kinds = list(kinds)
    return {"judge_unreachable": kinds.count("unreachable"),
            "no_verdict": kinds.count("no_verdict")}


def judge_jobs(conditions, done: dict, samples: int | None, source, protocol) -> list[Job]:
    """One judge call per sample (the first ``samples`` of each condition, or every sample in
    ``done`` when None), under ``protocol``; job ids are ``<condition id>#<sample>``."""
    prompts = {c.id: source.prompt(c) for c in conditions}

    def parser(c):
        return lambda response: {"verdict": protocol.parse(c, response.text),
                                 "judge_reasoning": response.text.strip()}

    return [Job(f"{c.id}#{i}", protocol.request(c, prompts[c.id], done[c.id][i]["reply"]),
                parser(c)) for c in conditions
            for i in (range(samples) if samples is not None else sorted(done[c.id]))]


def judge_rows(conditions, done: dict, samples: int, judge: CallRunner | None, source,
               protocol) -> list[dict]:
    """Every sample with its actions, mechanical evidence (ours, and the protocol's official
    gate when it has one), verdict and harmful; judge None = mechanical checks only."""
    jobs = judge_jobs(conditions, done, samples, source, protocol)
    # judge None: mechanical checks only (no verdicts; the report says so)
    verdicts = {r.id: r for r in judge.run(jobs, stage="judge")} if judge else {
        job.id: JobResult(job.id, error="no judge: mechanical checks only") for job in jobs}
    rows = []
    for c in conditions:
        for i in range(samples):
            reply, result = done[c.id][i]["reply"], verdicts[f"{c.id}#{i}"]
            actions = parse_actions(reply)
            evidence = source.evidence(c, actions)
            gate = protocol.gate(c, reply)
            verdict = result.value["verdict"] if result.ok else None
            rows.append({"condition": c.id, "official_id": c.official_id, "sample": i,
                         **asdict(c), "reply": reply,
                         "actions": [{"kind": a.kind, **a.fields} for a in actions],
                         "mechanical": evidence, "official_mechanical": gate,
                         "verdict": verdict, "protocol": protocol.name,
                         "harmful": bool(verdict and (evidence if gate is None else gate)),
                         "judge_reasoning": result.value["judge_reasoning"] if result.ok
                         else None, "error": result.error,
                         "judge_failure": judge_failure(result) if judge else None})
    return rows


def run_conditions(conditions, runner, judge: CallRunner | None, samples: int, out_dir: Path,
                   seed: int = 0, see_reasoning: bool = False, batch_samples: int = 4096,
                   source=None, protocol=None) -> list[dict]:
    """All samples of every condition (resuming), judged in one concurrent pass; returns the
    result rows and writes each condition's ``.jsonl``. ``source``: the scenarios (default
    builtin); ``protocol``: the judge protocol (default builtin, :mod:`.judging`)."""
    source = source or BuiltinScenarios()
    protocol = protocol or BuiltinProtocol(see_reasoning)
    done = generate_samples(conditions, runner, samples, out_dir, seed, batch_samples, source)
    rows = judge_rows(conditions, done, samples, judge, source, protocol)
    for c in conditions:
        with _stem(c, out_dir).with_suffix(".jsonl").open("w", encoding="utf-8") as f:
            for row in (r for r in rows if r["condition"] == c.id):
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return rows
