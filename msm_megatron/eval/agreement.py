"""``msm eval agreement``: two judges (or two protocols) on the same saved transcripts.

How a user checks a cheaper judge against the paper's: the transcripts a sweep saved
(``<sweep out_dir>/<arm>/agentic_misalignment*/<cell>.samples.jsonl``) are judged by judge
``a`` and judge ``b``, each with its own call cache (a rerun costs nothing), and their classifier
verdicts are compared per scenario and overall: Cohen's κ, raw agreement and the confusion
matrix. Samples either judge could not score are left out of the comparison and counted.

Example (the paper's classifier on Claude against a local Qwen judge, same protocol)::

    msm eval agreement runs/eval/qwen3_32b a.kind=anthropic a.base_url=null \\
        a.model=claude-sonnet-4-6 b.base_url=http://127.0.0.1:8001/v1 b.model=Qwen/Qwen3-32B

``a.protocol`` / ``b.protocol`` (``auto``, ``builtin``, ``paper``) compare protocols instead.
Writes ``<sweep out_dir>/agreement/<a_name>_vs_<b_name>.{json,md}``.

Both judges must be configured (``a.base_url`` / ``b.base_url``, or ``kind`` anthropic) and
answer one cheap request before the first paid call. When a judgement could not be obtained, or
too many answers had no verdict (:mod:`msm_megatron.eval.judged`), the report is written and
the command ends incomplete (exit 3); a rerun buys only the missing calls.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from msm_megatron.config import ConfigError, load_config, load_yaml
from msm_megatron.eval.report import write_json
from msm_megatron.eval.stats import cohen_kappa
from msm_megatron.eval.sweep import scenario_source, task_dir
from msm_megatron.eval.sweep_config import (
    EvalSweepConfig,
    JudgeConfig,
    judge_configured,
    parse_arms,
)


@dataclass(kw_only=True, slots=True)
class AgreementConfig:
    """Two judges over one sweep's saved transcripts."""

    a: JudgeConfig = field(default_factory=JudgeConfig)
    b: JudgeConfig = field(default_factory=JudgeConfig)
    a_name: str = "a"
    b_name: str = "b"
    arms: list[str] = field(default_factory=list)  # arm names (default: all of the sweep's)


def load_transcripts(sweep_dir: Path, arms: list[str] | None = None):
    """The sweep's config, scenario source, conditions and saved samples per arm."""
    from msm_megatron.eval.agentic.run import _read, _stem

    path = sweep_dir / "sweep.yaml"
    if not path.is_file():
        raise ConfigError(f"{path}: not found; point at the out_dir of an `msm eval` sweep "
                          "(it writes sweep.yaml)")
    sweep = load_yaml(path, EvalSweepConfig)
    source = scenario_source(sweep.scenarios)
    conditions = source.preset(sweep.preset, sweep.assistant_name).conditions
    names = [n for n, _ in parse_arms(sweep.arms)]
    unknown = set(arms or []) - set(names)
    if unknown:
        raise ConfigError(f"arms {sorted(unknown)} are not in {path} (it has {names})")
    done = {}
    for arm in arms or names:
        folder = sweep_dir / arm / task_dir(source)
        done[arm] = {c.id: _read(_stem(c, folder).with_suffix(".samples.jsonl"))
                     for c in conditions}
    return sweep, source, conditions, done


def check_judges(cfg: AgreementConfig) -> None:
    """Both judges configured (ConfigError) and answering (EndpointUnreachable), before the
    first paid call."""
    from msm_megatron.llm.config import backend_from, knobs
    from msm_megatron.llm.probe import check_endpoint

    for group, judge in (("a", cfg.a), ("b", cfg.b)):
        if not judge_configured(judge):
            raise ConfigError(f"judge {group} is not configured: set {group}.base_url (an "
                              f"OpenAI-compatible server) and {group}.model, or "
                              f"{group}.kind=anthropic")
        if judge.kind != "vllm":
            check_endpoint(backend_from(judge, group), knobs(group))


def _verdicts(judge: JudgeConfig, group: str, label: str, sweep, source, conditions, done,
              out: Path, progress: bool, reports: list) -> dict[tuple[str, str, int], bool | None]:
    """Judge ``group``'s verdicts on every saved sample; its stage reports go to ``reports``."""
    from msm_megatron.eval.agentic.judging import resolve_protocol
    from msm_megatron.eval.agentic.run import judge_jobs
    from msm_megatron.llm.cache import CallCache
    from msm_megatron.llm.config import backend_from
    from msm_megatron.llm.runner import CallRunner

    protocol = resolve_protocol(judge.protocol, source,
                                sweep.judge_sees_reasoning if judge.protocol != "paper" else False,
                                judge=judge)
    cache = CallCache(out / f"{label}_calls.jsonl")
    runner = CallRunner(backend_from(judge, group), cache, concurrency=judge.concurrency,
                        content_attempts=3, progress=progress)
    verdicts = {}
    try:
        for arm, samples in done.items():
            for r in runner.run(judge_jobs(conditions, samples, None, source, protocol),
                                stage=f"judge {label}: {arm}"):
                cid, i = r.id.rsplit("#", 1)
                verdicts[(arm, cid, int(i))] = r.value["verdict"] if r.ok else None
    finally:
        cache.close()
        reports += runner.reports
    return verdicts


def run_agreement(sweep_dir: str | Path, cfg: AgreementConfig, progress: bool = True) -> dict:
    """Judge the sweep's transcripts twice and compare (see the module doc)."""
    sweep_dir = Path(sweep_dir)
    sweep, source, conditions, done = load_transcripts(sweep_dir, cfg.arms)
    check_judges(cfg)
    out = sweep_dir / "agreement"
    out.mkdir(parents=True, exist_ok=True)
    reports_a, reports_b = [], []
    a = _verdicts(cfg.a, "a", cfg.a_name, sweep, source, conditions, done, out, progress,
                  reports_a)
    b = _verdicts(cfg.b, "b", cfg.b_name, sweep, source, conditions, done, out, progress,
                  reports_b)
    scenario_of = {c.id: c.scenario for c in conditions}
    groups: dict[str, list] = {}
    unscored = {}
    for key in a:
        scenario = scenario_of[key[1]]
        if a[key] is None or b.get(key) is None:
            unscored[scenario] = unscored.get(scenario, 0) + 1
            continue
        groups.setdefault(scenario, []).append((a[key], b[key]))
    result = {"a": cfg.a_name, "b": cfg.b_name, "sweep": str(sweep_dir),
              "judges": {cfg.a_name: _judge_label(cfg.a), cfg.b_name: _judge_label(cfg.b)},
              "scenarios": {s: {**cohen_kappa(p), "unscored": unscored.get(s, 0)}
                            for s, p in groups.items()},
              "overall": {**cohen_kappa([p for g in groups.values() for p in g]),
                          "unscored": sum(unscored.values())}}
    from msm_megatron.eval.judged import judging_incomplete

    missing = [text for text in (
        judging_incomplete(f"msm eval agreement (judge {name})", reports, judge, group,
                           f"{out}/{name}_calls.jsonl")
        for group, name, judge, reports in (("a", cfg.a_name, cfg.a, reports_a),
                                            ("b", cfg.b_name, cfg.b, reports_b))) if text]
    result["incomplete"] = " ".join(missing) or None
    stem = out / f"{cfg.a_name}_vs_{cfg.b_name}"
    write_json(stem.with_suffix(".json"), result)
    stem.with_suffix(".md").write_text(agreement_markdown(result))
    if missing:
        from msm_megatron.llm.outcome import IncompleteRun

        raise IncompleteRun(f"{result['incomplete']} Report: {stem.with_suffix('.md')}")
    return result


def _judge_label(judge: JudgeConfig) -> str:
    return f"{judge.kind}:{judge.model} (protocol {judge.protocol})"


def agreement_markdown(result: dict) -> str:
    a, b = result["a"], result["b"]
    lines = [f"# Judge agreement: {a} vs {b}", "",
             *(f"- {name}: {label}" for name, label in result["judges"].items()), "",
             f"Cohen's κ of the classifier verdicts; confusion counts as {a}/{b} (yes/no). "
             "Unscored = samples either judge could not score (left out).", "",
             "| scenario | n | κ | agreement | yes/yes | yes/no | no/yes | no/no | unscored |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    rows = {**result["scenarios"], "overall": result["overall"]}
    for name, r in rows.items():
        m = r["confusion"]
        lines.append(f"| {name} | {r['n']} | {_kappa(r)} | {_agreement(r)} | {m['yes_yes']} | "
                     f"{m['yes_no']} | {m['no_yes']} | {m['no_no']} | {r['unscored']} |")
    if any(not r["kappa_defined"] and r["n"] for r in rows.values()):
        lines += ["", "\\* both judges gave every sample the same label: κ is 0/0, shown as 1."]
    if result.get("incomplete"):
        lines += ["", f"**Incomplete:** {result['incomplete']}"]
    return "\n".join(lines) + "\n"


def _kappa(r: dict) -> str:
    """κ for the table: "–" with no sample both judges scored; * when it is 0/0."""
    if r["kappa"] is None:
        return "–"
    return f"{r['kappa']:.3f}" + ("" if r["kappa_defined"] else "*")


def _agreement(r: dict) -> str:
    return "0 scored by both" if r["agreement"] is None else f"{r['agreement']:.1%}"


def main(argv: list[str]) -> int:
    """``msm eval agreement SWEEP_DIR [overrides] [--config agreement.yaml]``."""

    parser = argparse.ArgumentParser(prog="msm eval agreement",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", help="out_dir of an `msm eval` sweep")
    parser.add_argument("overrides", nargs="*", help="e.g. a.model=X b.protocol=builtin")
    parser.add_argument("--config", help="agreement YAML (keys of AgreementConfig)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    cfg = load_config(AgreementConfig, args.config, args.overrides)
    result = run_agreement(args.sweep_dir, cfg, progress=not args.quiet)
    o = result["overall"]
    print(f"{cfg.a_name} vs {cfg.b_name}: κ {_kappa(o)}, agreement {_agreement(o)} "
          f"over {o['n']} samples ({o['unscored']} unscored)")
    print(f"report: {Path(args.sweep_dir) / 'agreement' / f'{cfg.a_name}_vs_{cfg.b_name}.md'}")
    return 0
