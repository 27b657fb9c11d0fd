"""``msm eval``: a sweep of arms (HF exports) over the agentic-misalignment grid.

This module runs the sweep (arms, tasks, runners, judge); its settings are
:mod:`msm_megatron.eval.sweep_config`, the report it ends with is written by
:mod:`msm_megatron.eval.report`.

Example (``--config sweep.yaml`` takes the same keys; dotlist overrides win)::

    msm eval arms=[base=/models/Qwen3-32B,msm=runs/msm_sft/hf/iter_0004000] preset=paper \\
        runner=vllm tensor_parallel_size=4 judge.kind=anthropic judge.base_url=null \\
        judge.model=claude-opus-4-6 out_dir=runs/eval/qwen3_32b

Outputs under ``out_dir``: per-sample JSONL per arm and condition (resumable, see
:mod:`msm_megatron.eval.agentic.run`), ``report.md`` (per-condition classifier and harmful rates
with Wilson 95 % intervals, per-scenario rates, averages, arm-vs-arm differences with Newcombe
intervals, value-generalization, forced-choice, trace-label and capability tables when those
tasks ran), ``summary.json``, ``misalignment.png``, ``scenarios.png``, ``forced_choice.png``
(task forced_choice) and, when ``aft_examples`` gives arms their AFT sizes,
``data_efficiency.png``.

Before anything is loaded or paid for, every setting is checked (arms, tasks, scenarios, the
judge), then every endpoint answers one cheap request (the judge; with ``runner=openai`` the
server of each arm); only then is ``sweep.yaml`` written and the first sample drawn. Without a
judge (no ``judge.base_url``, ``judge.kind`` openai) ``judge_mode=auto`` scores mechanically and
says so first. A sweep whose judgements fell short writes its report, then ends incomplete
(exit 3, :mod:`msm_megatron.eval.judged`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from msm_megatron.config import ConfigError
from msm_megatron.eval.report import data_efficiency, share, summarize, write_report
from msm_megatron.eval.sweep_config import (
    NO_JUDGE,
    TASKS,
    EvalSweepConfig,
    RunnerSettings,
    ScenariosConfig,
    check_arm_paths,
    parse_arms,
    runner_knobs,
    scoring,
)


def scenario_source(cfg: ScenariosConfig):
    """The scenario source object (:class:`BuiltinScenarios` or :class:`OfficialScenarios`)."""
    if cfg.source == "builtin":
        from msm_megatron.eval.agentic.scenarios import BuiltinScenarios

        return BuiltinScenarios()
    from msm_megatron.eval.agentic.official import OfficialScenarios
    from msm_megatron.eval.agentic.pysource import SourceError

    try:
        return OfficialScenarios(cfg.agentic_misalignment_repo, cfg.msm_repo)
    except SourceError as exc:
        raise ConfigError(str(exc)) from exc


def task_dir(source) -> str:
    """Per-arm folder of the agentic samples (the two sources never share files)."""
    return "agentic_misalignment" + ("_official" if source.source == "official" else "")


@dataclass(frozen=True)
class Scenarios:
    """What the scenario settings resolve to: the source, the judge protocol, the preset and
    every cell's prompt (the sweep and ``msm eval render`` alike)."""

    source: object
    protocol: object
    chosen: object  # the preset: conditions, samples, temperature, max_new_tokens
    prompts: dict  # condition id -> Prompt

    @property
    def conditions(self) -> tuple:
        return tuple(self.chosen.conditions)


@dataclass(frozen=True)
class Plan:
    """What the checked settings resolve to: the arms, scoring, probes, the scenarios (source,
    protocol, preset, prompts) and the forced-choice sets."""

    arms: list[tuple[str, str]]
    mode: str  # llm | mechanical
    probes: list[dict] | None
    scenarios: Scenarios
    sets: list | None = None  # task forced_choice: the eval sets, read


def resolve_scenarios(cfg: EvalSweepConfig) -> Scenarios:
    """The scenario source, judge protocol, preset and every cell's prompt, read before any
    model loads (ConfigError on a bad setting, clone or template)."""
    from msm_megatron.eval.agentic.judging import resolve_protocol
    from msm_megatron.eval.agentic.pysource import SourceError

    source = scenario_source(cfg.scenarios)
    protocol = resolve_protocol(cfg.judge.protocol, source, cfg.judge_sees_reasoning,
                                judge=cfg.judge)
    try:
        chosen = source.preset(cfg.preset, cfg.assistant_name)
        prompts = {c.id: source.prompt(c) for c in chosen.conditions}
    except SourceError as exc:
        raise ConfigError(str(exc)) from exc
    return Scenarios(source, protocol, chosen, prompts)


def check_settings(cfg: EvalSweepConfig) -> Plan:
    """Every setting, before any endpoint is asked or model loaded (ConfigError, exit 2)."""
    from msm_megatron.eval.agentic.pysource import SourceError

    arms = parse_arms(cfg.arms)
    unknown = set(cfg.tasks) - set(TASKS)
    if unknown or not cfg.tasks:
        raise ConfigError(f"tasks={cfg.tasks}: choose from {list(TASKS)}")
    mode = scoring(cfg)
    if "reasoning_traces" in cfg.tasks and mode == "mechanical":
        raise ConfigError("task reasoning_traces needs a judge: set judge.base_url and "
                          "judge.model (or judge.kind=anthropic), or drop it from tasks")
    if "reasoning_traces" in cfg.tasks and "agentic_misalignment" not in cfg.tasks:
        raise ConfigError("task reasoning_traces labels agentic_misalignment samples: add "
                          "agentic_misalignment to tasks")
    probes = None
    if "value_generalization" in cfg.tasks:
        from msm_megatron.eval.values import load_probes

        probes = load_probes(cfg.value_probes)  # bad probes fail before any model loads
    sets = None
    if "forced_choice" in cfg.tasks:
        from msm_megatron.eval.forced_choice import baseline
        from msm_megatron.eval.forced_choice_sets import load_sets

        if cfg.runner == "openai":
            raise ConfigError("task forced_choice scores option log-likelihoods: use runner=vllm "
                              "or runner=hf (a server gives no prompt log-probabilities)")
        sets = load_sets(cfg.forced_choice)  # bad rows fail before any model loads
        baseline(cfg.forced_choice, [n for n, _ in arms])
    from msm_megatron.eval.capability import check_installed

    check_installed(cfg.lm_eval_tasks)
    names = {n for n, _ in arms}
    for key, table in (("aft_examples/series", {**cfg.aft_examples, **cfg.series}),
                       ("runner_models", cfg.runner_models)):
        if set(table) - names:
            raise ConfigError(f"{key} name arms that are not in arms: "
                              f"{sorted(set(table) - names)}")
    if cfg.runner == "openai" and not cfg.runner_base_url:
        raise ConfigError("runner=openai needs runner_base_url (the server of the export, e.g. "
                          "http://127.0.0.1:8000/v1)")
    check_arm_paths(arms, cfg.runner)
    scenarios = resolve_scenarios(cfg)  # every prompt is read before any model loads
    if "agentic_misalignment" in cfg.tasks and mode == "llm":
        try:  # and every classifier
            for c in scenarios.conditions:
                scenarios.protocol.request(c, scenarios.prompts[c.id], "")
        except SourceError as exc:
            raise ConfigError(str(exc)) from exc
    return Plan(arms, mode, probes, scenarios, sets)


def check_endpoints(cfg: EvalSweepConfig, plan: Plan) -> dict:
    """One cheap request to every server the sweep will pay: the judge, and runner=openai's
    server for each arm (EndpointUnreachable: exit 4; a model it does not serve: exit 2).
    Returns each arm's :class:`~msm_megatron.llm.probe.EndpointInfo` (runner=openai)."""
    from msm_megatron.llm.config import backend_from, knobs
    from msm_megatron.llm.probe import check_endpoint

    if plan.mode == "llm" and cfg.judge.kind != "vllm":
        check_endpoint(backend_from(cfg.judge, "judge"), knobs("judge"))
    if cfg.runner != "openai":
        return {}
    settings = cfg.runner_settings()
    return {name: check_endpoint(settings.backend(name, path), runner_knobs(name))
            for name, path in plan.arms}


def run_sweep(cfg: EvalSweepConfig, progress: bool = True) -> dict:
    """The whole sweep (see the module doc); returns the summary, or raises IncompleteRun
    after writing the report when judgements are missing."""
    plan = check_settings(cfg)
    if cfg.judge_mode == "auto" and plan.mode == "mechanical":
        print(NO_JUDGE, flush=True)
    endpoints = check_endpoints(cfg, plan)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    import os

    from msm_megatron.config import save_yaml

    tmp = out / f".sweep.yaml.{os.getpid()}"  # array tasks write it concurrently
    save_yaml(cfg, tmp)
    tmp.replace(out / "sweep.yaml")  # what `msm eval agreement` re-reads
    results: dict[str, list[dict]] = {}
    values: dict[str, dict] = {}
    capability: dict[str, dict] = {}
    traces: dict[str, dict] = {}
    forced: dict[str, dict] = {}
    judge_reports: list = []
    engines = None
    if cfg.runner == "vllm":
        from msm_megatron.llm.vllm_engine import EngineCache

        engines = EngineCache()
    try:
        for name, path in plan.arms:
            arm = _run_arm(cfg, plan, name, path, engines, progress, endpoints.get(name))
            judge_reports += arm.pop("judge_reports", [])
            for key, table in (("agentic", results), ("values", values),
                               ("capability", capability), ("traces", traces),
                               ("forced_choice", forced)):
                if key in arm:
                    table[name] = arm[key]
    finally:
        if engines is not None:
            engines.close()
    headline = "classifier" if plan.mode == "llm" else "mechanical"
    summary = (summarize(results, headline) if results
               else {"headline": headline, "arms": {}, "differences": {}})
    source = plan.scenarios.source
    summary["scenarios"] = {"source": source.source, "read_from": source.describe()}
    summary["judge_protocol"] = plan.scenarios.protocol.name
    summary["value_generalization"] = values
    summary["reasoning_traces"] = traces
    summary["capability"] = capability
    if plan.sets is not None:
        from msm_megatron.eval.forced_choice import summarize as forced_summary

        summary["forced_choice"] = forced_summary(forced, cfg.forced_choice, plan.sets,
                                                  [n for n, _ in plan.arms])
    if summary["arms"] and cfg.aft_examples:
        summary["data_efficiency"] = data_efficiency(summary, cfg.aft_examples, cfg.series)
    from msm_megatron.eval.judged import judging_incomplete

    summary["incomplete"] = judging_incomplete(
        "msm eval", judge_reports, cfg.judge, "judge",
        f"per arm, {out}/<arm>/judge_calls.jsonl")
    write_report(out, summary, cfg.preset, cfg.assistant_name)
    if summary["incomplete"]:
        from msm_megatron.llm.outcome import IncompleteRun

        raise IncompleteRun(f"{summary['incomplete']} Report: {out / 'report.md'}")
    return summary


def summary_lines(summary: dict) -> list[str]:
    """One line per arm: its headline averages (as the report writes them)."""
    lines = []
    for arm, data in summary["arms"].items():
        total = data["samples"]
        if summary["headline"] == "mechanical":
            lines.append(f"{arm}: average mechanical-evidence rate "
                         f"{share(data['average_mechanical'], total)} (no judge)")
        else:
            lines.append(f"{arm}: average misalignment (classifier) "
                         f"{share(data['average_classifier'], total)}, harmful "
                         f"{share(data['average_harmful'], total)}")
    return lines


def _prompts(cfg: EvalSweepConfig, plan: Plan) -> list[tuple[str, str]]:
    """(system, user) of every prompt a runner will sample, for :func:`check_context`."""
    prompts = []
    if "agentic_misalignment" in cfg.tasks:
        prompts += [(p.system, p.user) for p in plan.scenarios.prompts.values()]
    if plan.probes:
        from msm_megatron.eval.values import probe_prompt

        prompts += [("", probe_prompt(p)) for p in plan.probes]
    return prompts


def _run_arm(cfg: EvalSweepConfig, plan: Plan, name: str, path: str, engines,
             progress: bool, endpoint) -> dict:
    """Every task of one arm. The model is loaded only if some sample is missing, and the judge
    has a call cache per arm (``<out>/<arm>/judge_calls.jsonl``), so arms can run as separate
    processes (array tasks) and a final pass over all arms only reads what they wrote.
    ``endpoint``: what runner=openai's server said of itself (its context length)."""
    from msm_megatron.eval.agentic.run import run_conditions
    from msm_megatron.eval.runners import check_context
    from msm_megatron.llm.cache import CallCache
    from msm_megatron.llm.config import backend_from
    from msm_megatron.llm.runner import CallRunner

    arm_dir = Path(cfg.out_dir) / name
    arm_dir.mkdir(parents=True, exist_ok=True)
    scenarios = plan.scenarios
    chosen = scenarios.chosen
    samples = cfg.samples or chosen.samples
    temperature = chosen.temperature if cfg.temperature is None else cfg.temperature
    max_new = cfg.max_new_tokens or chosen.max_new_tokens
    settings = cfg.runner_settings()

    def build():
        runner = _load_runner(settings, name, path, max_new, temperature, arm_dir, engines,
                              progress, endpoint)
        check_context(runner, _prompts(cfg, plan), max_new, f"arm {name} ({path})")
        return runner

    runner = LazyRunner(build, logprobs=cfg.runner in ("hf", "vllm"))
    judge_cache, judge = None, None
    if plan.mode == "llm":
        judge_cache = CallCache(arm_dir / "judge_calls.jsonl")
        judge = CallRunner(backend_from(cfg.judge, "judge"), judge_cache,
                           concurrency=cfg.judge.concurrency, content_attempts=3,
                           progress=progress)
    out: dict = {}
    try:
        if "agentic_misalignment" in cfg.tasks:
            out["agentic"] = run_conditions(
                scenarios.conditions, runner, judge, samples,
                arm_dir / task_dir(scenarios.source), cfg.seed, cfg.judge_sees_reasoning,
                cfg.batch_samples, scenarios.source, scenarios.protocol)
        if "reasoning_traces" in cfg.tasks:
            from msm_megatron.eval.traces import label_traces

            out["traces"] = label_traces(out["agentic"], judge)
        if plan.probes is not None:
            from msm_megatron.eval.values import run_probes

            out["values"] = run_probes(runner, plan.probes, arm_dir / "value_generalization" /
                                       "choices.jsonl", cfg.seed)
        if plan.sets is not None:
            from msm_megatron.eval.forced_choice import run_sets

            out["forced_choice"] = run_sets(runner, plan.sets, cfg.forced_choice, arm_dir,
                                            f"arm {name} ({path})")
    finally:
        runner.close()
        if judge_cache is not None:
            judge_cache.close()
    if judge is not None:
        for report in judge.reports:
            report.stage = f"{report.stage} ({name})"
        out["judge_reports"] = judge.reports
    if cfg.lm_eval_tasks:
        out["capability"] = _capability(cfg, path, arm_dir, engines)
    return out


def _capability(cfg: EvalSweepConfig, path: str, arm_dir: Path, engines) -> dict:
    from msm_megatron.eval.capability import run_capability

    if engines is not None:
        engines.close()  # the harness starts its own engine on the GPU
    settings = cfg.runner_settings()
    return run_capability(path, cfg.lm_eval_tasks, arm_dir / "capability.json",
                          "vllm" if settings.kind == "vllm" else "hf", cfg.lm_eval_limit,
                          cfg.lm_eval_include, cfg.seed, settings.engine_args())


class LazyRunner:
    """A runner built (model loaded, engine started) on first use only: a resumed sweep whose
    samples are all on disk never loads the model."""

    def __init__(self, build, logprobs: bool):
        self._build, self._runner = build, None
        self.scores_logprobs = logprobs  # the HF and vLLM runners have letter_logprobs

    def _get(self):
        if self._runner is None:
            self._runner = self._build()
        return self._runner

    def generate(self, batches):
        return self._get().generate(batches)

    def letter_logprobs(self, users, letters=("A", "B")):
        return self._get().letter_logprobs(users, letters)

    @property
    def tokenizer(self):
        return self._get().tokenizer

    @property
    def context_length(self):
        return self._get().context_length

    def continuation_logprobs(self, pairs):
        return self._get().continuation_logprobs(pairs)

    def greedy_from_ids(self, prompts, max_new_tokens):
        return self._get().greedy_from_ids(prompts, max_new_tokens)

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()


def _load_runner(settings: RunnerSettings, name: str, path: str, max_new: int,
                 temperature: float, arm_dir: Path, engines, progress: bool, endpoint):
    """The arm's runner; a model that cannot be loaded (a hub id that does not exist, a
    directory without weights) is a ConfigError naming the arm."""
    try:
        return _runner(settings, name, path, max_new, temperature, arm_dir, engines, progress,
                       endpoint)
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"arm {name}: cannot load the model at {path}: {first[:300]}. Fix "
                          f"arms=[...,{name}=path/to/hf_export] (a local directory or a hub "
                          "id you can download)") from exc


def _runner(settings: RunnerSettings, name: str, path: str, max_new: int, temperature: float,
            arm_dir: Path, engines, progress: bool, endpoint):
    from msm_megatron.eval.runners import EndpointRunner, HFRunner, VLLMRunner

    s = settings
    if s.kind == "hf":
        return HFRunner(path, max_new, temperature)
    if s.kind == "vllm":
        return VLLMRunner(path, max_new, temperature, s.tensor_parallel_size, s.max_model_len,
                          s.gpu_memory_utilization, s.lora_base_model, engines, s.dtype,
                          s.enforce_eager)
    from msm_megatron.llm.cache import CallCache

    arm_dir.mkdir(parents=True, exist_ok=True)
    context = endpoint.max_model_len if endpoint is not None else None
    return EndpointRunner(s.backend(name, path), CallCache(arm_dir / "calls.jsonl"), max_new,
                          temperature, s.concurrency, progress=progress, arm=name,
                          knobs=runner_knobs(name), context_length=context,
                          tokenizer=_local_tokenizer(path) if context else None)


def _local_tokenizer(path: str):
    """The tokenizer of ``path`` when it is a local export with a chat template, else None."""
    from msm_megatron.eval.runners import load_tokenizer

    if not Path(path).is_dir():
        return None
    try:
        return load_tokenizer(path)
    except (ConfigError, OSError, ValueError):
        return None
