"""``msm eval``: a sweep of arms (HF exports) over the agentic-misalignment grid.

This module runs the sweep (config, arms, tasks, runners, judge); the report it ends with is
written by :mod:`msm_megatron.eval.report`.

Example (``--config sweep.yaml`` takes the same keys; dotlist overrides win)::

    msm eval arms=[base=/models/Qwen3-32B,msm=runs/msm_sft/hf/iter_0004000] preset=paper \\
        runner=vllm tensor_parallel_size=4 judge.kind=anthropic judge.base_url=null \\
        judge.model=claude-opus-4-6 out_dir=runs/eval/qwen3_32b

Outputs under ``out_dir``: per-sample JSONL per arm and condition (resumable, see
:mod:`msm_megatron.eval.agentic.run`), ``report.md`` (per-condition classifier and harmful rates
with Wilson 95 % intervals, per-scenario rates, averages, arm-vs-arm differences with Newcombe
intervals, value-generalization, trace-label and capability tables when those tasks ran),
``summary.json``, ``misalignment.png``, ``scenarios.png`` and, when ``aft_examples`` gives arms
their AFT sizes, ``data_efficiency.png``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from msm_megatron.config import ConfigError
from msm_megatron.config_paths import as_path, model_ref, named_entry, path_field
from msm_megatron.eval.report import data_efficiency, summarize, write_report
from msm_megatron.llm.config import BackendConfig

TASKS = ("agentic_misalignment", "value_generalization", "reasoning_traces")
VALUE_PROBES = str(Path(__file__).resolve().parents[2] / "examples" / "eval" / "value_probes.jsonl")


@dataclass(kw_only=True, slots=True)
class JudgeConfig(BackendConfig):
    """The judge's backend, and the protocol it follows (``msm_megatron.eval.agentic.judging``):
    ``paper`` = the official classifiers read from the clone (the default with official
    scenarios), ``builtin`` = this project's rubric (the default with builtin scenarios)."""

    protocol: Literal["auto", "builtin", "paper"] = "auto"


@dataclass(kw_only=True, slots=True)
class ScenariosConfig:
    """Where the agentic-misalignment scenarios come from: ``builtin`` (this project's own; no
    clone needed) or ``official`` (rendered at run time from the user's clones; docs/eval.md)."""

    source: Literal["builtin", "official"] = "builtin"
    # clone of anthropic-experimental/agentic-misalignment
    agentic_misalignment_repo: str | None = path_field(default=None)
    msm_repo: str | None = path_field(default=None)  # clone of the MSM authors' repository


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
class RunnerSettings:
    """Who generates an arm's samples, and how: one group of the sweep's settings, handed as a
    whole to the runner and to the capability harness (the YAML keys stay flat: ``runner``,
    ``runner_base_url``, ``tensor_parallel_size`` … as users write them)."""

    kind: str = "hf"  # the sweep's ``runner``: vllm (offline engine), openai (a server), hf
    base_url: str | None = None
    concurrency: int = 32
    tensor_parallel_size: int = 1
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    lora_base_model: str | None = None
    dtype: str = "auto"
    enforce_eager: bool = False

    def engine_args(self) -> dict:
        """vLLM engine arguments (``dtype`` only for the other runners)."""
        args: dict = {"dtype": self.dtype}
        if self.kind == "vllm":
            args.update(tensor_parallel_size=self.tensor_parallel_size,
                        gpu_memory_utilization=self.gpu_memory_utilization,
                        enforce_eager=self.enforce_eager, enable_prefix_caching=True)
            if self.max_model_len:
                args["max_model_len"] = self.max_model_len
        return args


@dataclass(kw_only=True, slots=True)
class EvalSweepConfig:
    """A sweep: arms (HF exports or LoRA adapters) × tasks × the agentic-misalignment preset."""

    out_dir: str = path_field(default="runs/eval")
    # "name=path/to/hf_export_or_adapter" (or name=org/model, a hub id)
    arms: list[str] = path_field(named_entry(model_ref), default_factory=list)
    tasks: list[str] = field(default_factory=lambda: ["agentic_misalignment"])
    value_probes: str = path_field(default=VALUE_PROBES)  # for task value_generalization
    assistant_name: str = "Qwen"
    preset: Literal["quick", "paper", "full"] = "quick"
    samples: int | None = None  # default: the preset's
    temperature: float | None = None
    max_new_tokens: int | None = None
    seed: int = 0
    # who generates: vllm (offline engine), openai (a server of the export), hf (transformers)
    runner: Literal["hf", "openai", "vllm"] = "hf"
    runner_base_url: str | None = None  # openai: the server of the arm's export
    runner_concurrency: int = 32  # openai: requests in flight
    tensor_parallel_size: int = 1  # vllm
    max_model_len: int | None = None  # vllm: default the model's
    gpu_memory_utilization: float = 0.9  # vllm
    # vllm: base of adapter arms (default: adapter_config's); a directory or a hub id
    lora_base_model: str | None = path_field(model_ref, default=None)
    dtype: str = "auto"  # vllm: auto = the checkpoint's (bfloat16 on CPU)
    enforce_eager: bool = False  # vllm: skip graph capture (faster start, slower decode)
    batch_samples: int = 4096  # samples per runner call (written to disk after each call)
    scenarios: ScenariosConfig = field(default_factory=ScenariosConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    # llm: the judge above gives the classifier verdict (the paper's metric); mechanical: no
    # judge at all, only the tool-block evidence is scored (labelled as such in the report)
    judge_mode: Literal["llm", "mechanical"] = "llm"
    judge_sees_reasoning: bool = False  # protocol builtin: show the judge the scratchpad too
    # data-efficiency curve: AFT examples each arm was fine-tuned on, and the curve it belongs to
    aft_examples: dict[str, int] = field(default_factory=dict)
    series: dict[str, str] = field(default_factory=dict)
    # capability retention: lm-evaluation-harness tasks run on each arm's export (if installed)
    lm_eval_tasks: list[str] = field(default_factory=list)
    lm_eval_limit: int | None = None  # examples per task (smoke runs)
    lm_eval_include: str | None = path_field(as_path, default=None)  # extra task YAMLs

    def runner_settings(self) -> RunnerSettings:
        """The runner group of the flat keys above."""
        return RunnerSettings(
            kind=self.runner, base_url=self.runner_base_url, concurrency=self.runner_concurrency,
            tensor_parallel_size=self.tensor_parallel_size, max_model_len=self.max_model_len,
            gpu_memory_utilization=self.gpu_memory_utilization,
            lora_base_model=self.lora_base_model, dtype=self.dtype,
            enforce_eager=self.enforce_eager)


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
    from msm_megatron.eval.agentic.judging import resolve_protocol
    from msm_megatron.eval.agentic.pysource import SourceError

    arms = parse_arms(cfg.arms)
    unknown = set(cfg.tasks) - set(TASKS)
    if unknown or not cfg.tasks:
        raise ConfigError(f"tasks={cfg.tasks}: choose from {list(TASKS)}")
    probes = None
    if "value_generalization" in cfg.tasks:
        from msm_megatron.eval.values import load_probes

        probes = load_probes(cfg.value_probes)  # bad probes fail before any model loads
    from msm_megatron.eval.capability import check_installed

    check_installed(cfg.lm_eval_tasks)
    unknown_arms = (set(cfg.aft_examples) | set(cfg.series)) - {n for n, _ in arms}
    if unknown_arms:
        raise ConfigError(f"aft_examples/series name arms that are not in arms: "
                          f"{sorted(unknown_arms)}")
    source = scenario_source(cfg.scenarios)
    protocol = resolve_protocol(cfg.judge.protocol, source, cfg.judge_sees_reasoning)
    try:  # every prompt and classifier is read before any model loads
        chosen = source.preset(cfg.preset, cfg.assistant_name)
        for c in chosen.conditions:
            prompt = source.prompt(c)
            if "agentic_misalignment" in cfg.tasks and cfg.judge_mode == "llm":
                protocol.request(c, prompt, "")
    except SourceError as exc:
        raise ConfigError(str(exc)) from exc
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    import os

    from msm_megatron.config import save_yaml

    tmp = out / f".sweep.yaml.{os.getpid()}"  # array tasks write it concurrently
    save_yaml(cfg, tmp)
    tmp.replace(out / "sweep.yaml")  # what `msm eval agreement` re-reads
    if "reasoning_traces" in cfg.tasks and cfg.judge_mode == "mechanical":
        raise ConfigError("task reasoning_traces needs a judge (judge_mode=llm)")
    if "reasoning_traces" in cfg.tasks and "agentic_misalignment" not in cfg.tasks:
        raise ConfigError("task reasoning_traces labels agentic_misalignment samples: add "
                          "agentic_misalignment to tasks")
    results: dict[str, list[dict]] = {}
    values: dict[str, dict] = {}
    capability: dict[str, dict] = {}
    traces: dict[str, dict] = {}
    engines = None
    if cfg.runner == "vllm":
        from msm_megatron.llm.vllm_engine import EngineCache

        engines = EngineCache()
    try:
        for name, path in arms:
            arm = _run_arm(cfg, chosen, name, path, probes, engines, progress, source, protocol)
            for key, table in (("agentic", results), ("values", values),
                               ("capability", capability), ("traces", traces)):
                if key in arm:
                    table[name] = arm[key]
    finally:
        if engines is not None:
            engines.close()
    headline = "classifier" if cfg.judge_mode == "llm" else "mechanical"
    summary = (summarize(results, headline) if results
               else {"headline": headline, "arms": {}, "differences": {}})
    summary["scenarios"] = {"source": source.source, "read_from": source.describe()}
    summary["judge_protocol"] = protocol.name
    summary["value_generalization"] = values
    summary["reasoning_traces"] = traces
    summary["capability"] = capability
    if summary["arms"] and cfg.aft_examples:
        summary["data_efficiency"] = data_efficiency(summary, cfg.aft_examples, cfg.series)
    write_report(out, summary, cfg.preset, cfg.assistant_name)
    return summary


def _run_arm(cfg: EvalSweepConfig, chosen, name: str, path: str, probes, engines,
             progress: bool, source, protocol) -> dict:
    """Every task of one arm. The model is loaded only if some sample is missing, and the judge
    has a call cache per arm (``<out>/<arm>/judge_calls.jsonl``), so arms can run as separate
    processes (array tasks) and a final pass over all arms only reads what they wrote."""
    from msm_megatron.eval.agentic.run import run_conditions
    from msm_megatron.llm.cache import CallCache
    from msm_megatron.llm.config import backend_from
    from msm_megatron.llm.runner import CallRunner

    arm_dir = Path(cfg.out_dir) / name
    arm_dir.mkdir(parents=True, exist_ok=True)
    samples = cfg.samples or chosen.samples
    temperature = chosen.temperature if cfg.temperature is None else cfg.temperature
    max_new = cfg.max_new_tokens or chosen.max_new_tokens
    settings = cfg.runner_settings()
    runner = LazyRunner(lambda: _runner(settings, path, max_new, temperature, arm_dir, engines),
                        logprobs=cfg.runner in ("hf", "vllm"))
    judge_cache, judge = None, None
    if cfg.judge_mode == "llm":
        judge_cache = CallCache(arm_dir / "judge_calls.jsonl")
        judge = CallRunner(backend_from(cfg.judge), judge_cache,
                           concurrency=cfg.judge.concurrency, content_attempts=3,
                           progress=progress)
    out: dict = {}
    try:
        if "agentic_misalignment" in cfg.tasks:
            out["agentic"] = run_conditions(
                chosen.conditions, runner, judge, samples, arm_dir / task_dir(source),
                cfg.seed, cfg.judge_sees_reasoning, cfg.batch_samples, source, protocol)
        if "reasoning_traces" in cfg.tasks:
            from msm_megatron.eval.traces import label_traces

            out["traces"] = label_traces(out["agentic"], judge)
        if probes is not None:
            from msm_megatron.eval.values import run_probes

            out["values"] = run_probes(runner, probes, arm_dir / "value_generalization" /
                                       "choices.jsonl", cfg.seed)
    finally:
        runner.close()
        if judge_cache is not None:
            judge_cache.close()
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

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()


def _runner(settings: RunnerSettings, path: str, max_new: int, temperature: float,
            arm_dir: Path, engines):
    from msm_megatron.eval.runners import EndpointRunner, HFRunner, VLLMRunner

    s = settings
    if s.kind == "hf":
        return HFRunner(path, max_new, temperature)
    if s.kind == "vllm":
        return VLLMRunner(path, max_new, temperature, s.tensor_parallel_size, s.max_model_len,
                          s.gpu_memory_utilization, s.lora_base_model, engines, s.dtype,
                          s.enforce_eager)
    from msm_megatron.llm.cache import CallCache
    from msm_megatron.llm.http_backends import OpenAICompatBackend

    if not s.base_url:
        raise ConfigError("runner=openai needs runner_base_url (the server of the export)")
    arm_dir.mkdir(parents=True, exist_ok=True)
    return EndpointRunner(OpenAICompatBackend(s.base_url, path),
                          CallCache(arm_dir / "calls.jsonl"), max_new, temperature, s.concurrency)
