"""``msm eval``: a sweep of arms (HF exports) over the agentic-misalignment grid, and its report.

Example (``--config sweep.yaml`` takes the same keys; dotlist overrides win)::

    msm eval arms=[base=/models/Qwen3-32B,msm=runs/msm_sft/hf/iter_0004000] preset=paper \\
        runner=openai runner_base_url=http://127.0.0.1:8000/v1 judge.kind=anthropic \\
        judge.base_url=null judge.model=claude-opus-4-6 out_dir=runs/eval/qwen3_32b

Outputs under ``out_dir``: per-sample JSONL per arm and condition (resumable, see
:mod:`msm_megatron.eval.agentic.run`), ``report.md`` (per-condition classifier and harmful rates
with Wilson 95 % intervals, averages, arm-vs-arm differences with Newcombe intervals),
``summary.json`` and ``misalignment.png``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from msm_megatron.config import ConfigError
from msm_megatron.eval.stats import difference, mean_rate, wilson
from msm_megatron.generate.config import BackendConfig

TASKS = ("agentic_misalignment", "value_generalization", "reasoning_traces")


@dataclass(kw_only=True, slots=True)
class EvalSweepConfig:
    """A sweep: arms × the agentic-misalignment preset."""

    out_dir: str = "runs/eval"
    arms: list[str] = field(default_factory=list)  # "name=path/to/hf_export"
    tasks: list[str] = field(default_factory=lambda: ["agentic_misalignment"])
    value_probes: str = "examples/eval/value_probes.jsonl"  # for task value_generalization
    assistant_name: str = "Qwen"
    preset: Literal["quick", "paper", "full"] = "quick"
    samples: int | None = None  # default: the preset's
    temperature: float | None = None
    max_new_tokens: int | None = None
    runner: Literal["hf", "openai"] = "hf"
    runner_base_url: str | None = None  # openai: the server of the arm's export
    judge: BackendConfig = field(default_factory=BackendConfig)
    judge_sees_reasoning: bool = False
    seed: int = 0


def parse_arms(arms: list[str]) -> list[tuple[str, str]]:
    out = []
    for item in arms:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"arms entry {item!r}: write name=path/to/hf_export")
        out.append((name, path))
    if not out:
        raise ConfigError("no arms: set arms=[name=path/to/hf_export,...]")
    if len({n for n, _ in out}) != len(out):
        raise ConfigError("arm names must be unique")
    return out


def run_sweep(cfg: EvalSweepConfig, progress: bool = True) -> dict:
    from msm_megatron.eval.agentic.grid import preset
    from msm_megatron.eval.agentic.run import run_condition
    from msm_megatron.generate.cache import CallCache
    from msm_megatron.generate.commands import backend_from
    from msm_megatron.generate.runner import CallRunner

    arms = parse_arms(cfg.arms)
    unknown = set(cfg.tasks) - set(TASKS)
    if unknown or not cfg.tasks:
        raise ConfigError(f"tasks={cfg.tasks}: choose from {list(TASKS)}")
    probes = None
    if "value_generalization" in cfg.tasks:
        from msm_megatron.eval.values import load_probes

        probes = load_probes(cfg.value_probes)  # bad probes fail before any model loads
    chosen = preset(cfg.preset, cfg.assistant_name)
    samples = cfg.samples or chosen.samples
    temperature = chosen.temperature if cfg.temperature is None else cfg.temperature
    max_new = cfg.max_new_tokens or chosen.max_new_tokens
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    judge_cache = CallCache(out / "judge_calls.jsonl")
    judge = CallRunner(backend_from(cfg.judge), judge_cache, concurrency=cfg.judge.concurrency,
                       content_attempts=3, progress=progress)
    results: dict[str, list[dict]] = {}
    values: dict[str, dict] = {}
    for name, path in arms:
        runner = _runner(cfg, path, max_new, temperature, out / name)
        if "agentic_misalignment" in cfg.tasks:
            results[name] = [row for condition in chosen.conditions for row in run_condition(
                condition, runner, judge, samples, out / name / "agentic_misalignment",
                cfg.judge_sees_reasoning)]
        if probes is not None:
            from msm_megatron.eval.values import run_probes

            values[name] = run_probes(runner, probes,
                                      out / name / "value_generalization" / "choices.jsonl")
    traces = {}
    if "reasoning_traces" in cfg.tasks:
        from msm_megatron.eval.traces import label_traces

        if not results:
            raise ConfigError("task reasoning_traces labels agentic_misalignment samples: add "
                              "agentic_misalignment to tasks")
        traces = {name: label_traces(rows, judge) for name, rows in results.items()}
    judge_cache.close()
    summary = summarize(results) if results else {"arms": {}, "differences": {}}
    summary["value_generalization"] = values
    summary["reasoning_traces"] = traces
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "report.md").write_text(report_markdown(summary, cfg))
    if summary["arms"]:
        plot(summary, out / "misalignment.png")
    return summary


def _runner(cfg: EvalSweepConfig, path: str, max_new: int, temperature: float, arm_dir: Path):
    from msm_megatron.eval.runners import EndpointRunner, HFRunner

    if cfg.runner == "hf":
        return HFRunner(path, max_new, temperature, cfg.seed)
    from msm_megatron.generate.cache import CallCache
    from msm_megatron.generate.http_backends import OpenAICompatBackend

    if not cfg.runner_base_url:
        raise ConfigError("runner=openai needs runner_base_url (the server of the export)")
    arm_dir.mkdir(parents=True, exist_ok=True)
    return EndpointRunner(OpenAICompatBackend(cfg.runner_base_url, path),
                          CallCache(arm_dir / "calls.jsonl"), max_new, temperature)


def summarize(results: dict[str, list[dict]]) -> dict:
    """Per arm and condition: classifier verdict rate and harmful rate with Wilson intervals."""
    arms = {}
    for arm, rows in results.items():
        conditions = {}
        for cid in dict.fromkeys(r["condition"] for r in rows):
            judged = [r for r in rows if r["condition"] == cid and r["verdict"] is not None]
            errors = sum(1 for r in rows if r["condition"] == cid and r["verdict"] is None)
            conditions[cid] = {
                "classifier": wilson(sum(r["verdict"] for r in judged), len(judged)).as_dict(),
                "harmful": wilson(sum(r["harmful"] for r in judged), len(judged)).as_dict(),
                "judge_errors": errors}
        rates = [wilson(c["classifier"]["k"], c["classifier"]["n"]) for c in conditions.values()]
        arms[arm] = {"conditions": conditions, "average_classifier": mean_rate(rates),
                     "average_harmful": mean_rate(
                         [wilson(c["harmful"]["k"], c["harmful"]["n"])
                          for c in conditions.values()])}
    names = list(arms)
    diffs = {}
    for other in names[1:]:
        a = [arms[other]["conditions"][c]["classifier"] for c in arms[other]["conditions"]]
        b = [arms[names[0]]["conditions"][c]["classifier"] for c in arms[names[0]]["conditions"]]
        ka, na = sum(x["k"] for x in a), sum(x["n"] for x in a)
        kb, nb = sum(x["k"] for x in b), sum(x["n"] for x in b)
        if na and nb:
            d, low, high = difference(wilson(ka, na), wilson(kb, nb))
            diffs[f"{other} - {names[0]}"] = {"pooled_difference": d, "low": low, "high": high}
    return {"arms": arms, "differences": diffs}


def report_markdown(summary: dict, cfg: EvalSweepConfig) -> str:
    lines = [f"# Agentic misalignment — preset `{cfg.preset}`, assistant `{cfg.assistant_name}`",
             "", "Classifier verdict = the judge says the agent decided to act (the paper's "
             "metric); harmful = verdict AND mechanical evidence. 95 % Wilson intervals.", ""]
    for arm, data in summary["arms"].items():
        lines += [f"## {arm}", "", f"average classifier rate {data['average_classifier']:.1%}, "
                  f"average harmful rate {data['average_harmful']:.1%}", "",
                  "| condition | classifier | 95 % CI | harmful | 95 % CI | judge errors |",
                  "| --- | ---: | --- | ---: | --- | ---: |"]
        for cid, c in data["conditions"].items():
            cl, ha = c["classifier"], c["harmful"]
            lines.append(f"| {cid} | {cl['k']}/{cl['n']} | {cl['low']:.2f}–{cl['high']:.2f} | "
                         f"{ha['k']}/{ha['n']} | {ha['low']:.2f}–{ha['high']:.2f} | "
                         f"{c['judge_errors']} |")
        lines.append("")
    if summary["differences"]:
        lines += ["## Differences (pooled classifier rate, Newcombe 95 % CI)", ""]
        for name, d in summary["differences"].items():
            lines.append(f"- {name}: {d['pooled_difference']:+.1%} "
                         f"({d['low']:+.1%} to {d['high']:+.1%})")
    if summary.get("value_generalization"):
        lines += ["", "## Value generalization (value-consistent choice rate, Wilson 95 % CI)",
                  "", "| arm | scoring | value | rate | 95 % CI | unparsed |",
                  "| --- | --- | --- | ---: | --- | ---: |"]
        for arm, by_scoring in summary["value_generalization"].items():
            for scoring, scores in by_scoring.items():
                for value, r in scores.items():
                    if value != "unparsed":
                        lines.append(f"| {arm} | {scoring} | {value} | {r['k']}/{r['n']} | "
                                     f"{r['low']:.2f}–{r['high']:.2f} | {scores['unparsed']} |")
    if summary.get("reasoning_traces"):
        from msm_megatron.eval.traces import LABELS

        lines += ["", "## Reasoning traces (share of scratchpads with each label, Wilson 95 % CI)",
                  "", "| arm | traces | " + " | ".join(LABELS) + " | errors |",
                  "| --- | ---: | " + " | ".join("---" for _ in LABELS) + " | ---: |"]
        for arm, t in summary["reasoning_traces"].items():
            cells = [f"{t[n]['k']}/{t[n]['n']} ({t[n]['low']:.2f}–{t[n]['high']:.2f})"
                     for n in LABELS]
            lines.append(f"| {arm} | {t['traces']} | " + " | ".join(cells) + f" | {t['errors']} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    arms = list(summary["arms"])
    conditions = list(summary["arms"][arms[0]]["conditions"])
    fig = Figure(figsize=(max(6, len(conditions) * 0.6), 4))
    ax = fig.subplots()
    width = 0.8 / len(arms)
    for j, arm in enumerate(arms):
        rates = [summary["arms"][arm]["conditions"][c]["classifier"] for c in conditions]
        xs = [i + j * width for i in range(len(conditions))]
        ys = [r["rate"] for r in rates]
        err = [[r["rate"] - r["low"] for r in rates], [r["high"] - r["rate"] for r in rates]]
        ax.bar(xs, ys, width, yerr=err, capsize=2, label=arm)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(conditions))])
    ax.set_xticklabels([c.split("/")[0] + "/" + c.split("/")[1] for c in conditions],
                       rotation=60, ha="right", fontsize=7)
    ax.set(ylabel="misalignment (classifier)", ylim=(0, 1))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
