"""The settings of an eval sweep (``msm eval``): :class:`EvalSweepConfig` and its groups (the
judge, the scenarios, the runner), what they resolve to (who scores, which model name a server
is asked for) and the checks of its arms.

The sweep itself is :mod:`msm_megatron.eval.sweep`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from msm_megatron.config import ConfigError
from msm_megatron.config_paths import as_path, model_ref, named_entry, path_field
from msm_megatron.eval.forced_choice_sets import ForcedChoiceConfig
from msm_megatron.llm.config import BackendConfig
from msm_megatron.llm.outcome import Knobs

TASKS = ("agentic_misalignment", "value_generalization", "reasoning_traces", "forced_choice")
VALUE_PROBES = str(Path(__file__).resolve().parents[2] / "examples" / "eval" / "value_probes.jsonl")


@dataclass(kw_only=True, slots=True)
class JudgeConfig(BackendConfig):
    """The judge's backend, and the protocol it follows (``msm_megatron.eval.agentic.judging``):
    ``paper`` = the official classifiers read from the clone (the default with official
    scenarios), ``builtin`` = this project's rubric (the default with builtin scenarios).

    Unconfigured by default: a judge is configured when ``base_url`` is set or ``kind`` needs
    none (``anthropic``, ``vllm``), see :func:`judge_configured`.

    ``temperature`` / ``max_tokens``: unset, each protocol sends its own (``builtin``: 0 and
    1,024; ``paper``: what the clone's classifier code sends — the MSM scorer sends neither,
    so the server's defaults apply, and ``kind=anthropic`` sends max_tokens 4,096 as the API
    requires one); set, they are sent under either protocol."""

    base_url: str | None = None
    protocol: Literal["auto", "builtin", "paper"] = "auto"
    temperature: float | None = None
    max_tokens: int | None = None


NO_JUDGE = ("no judge configured (set judge.base_url or judge.kind): scoring mechanically "
            "(tool-block evidence only)")


def judge_configured(judge: BackendConfig) -> bool:
    """A judge has a server (``base_url``) or needs none (the Anthropic API, vLLM offline)."""
    return judge.base_url is not None or judge.kind in ("anthropic", "vllm")


def scoring(cfg: EvalSweepConfig) -> str:
    """``llm`` or ``mechanical``: ``judge_mode`` with ``auto`` resolved (llm when a judge is
    configured); ``llm`` without a judge is a ConfigError."""
    if cfg.judge_mode == "auto":
        return "llm" if judge_configured(cfg.judge) else "mechanical"
    if cfg.judge_mode == "llm" and not judge_configured(cfg.judge):
        raise ConfigError("judge_mode=llm needs a judge: set judge.base_url (an OpenAI-compatible "
                          "server, e.g. http://127.0.0.1:8001/v1) and judge.model, or "
                          "judge.kind=anthropic; or use judge_mode=mechanical")
    return cfg.judge_mode


def runner_knobs(arm: str) -> Knobs:
    """The settings of runner=openai's server for ``arm``, as messages name them."""
    return Knobs("runner_base_url", "runner_timeout_s", f"runner_models.{arm}")


@dataclass(kw_only=True, slots=True)
class ScenariosConfig:
    """Where the agentic-misalignment scenarios come from: ``builtin`` (this project's own; no
    clone needed) or ``official`` (rendered at run time from the user's clones; docs/eval.md)."""

    source: Literal["builtin", "official"] = "builtin"
    # clone of anthropic-experimental/agentic-misalignment
    agentic_misalignment_repo: str | None = path_field(default=None)
    msm_repo: str | None = path_field(default=None)  # clone of the MSM authors' repository


@dataclass(frozen=True)
class RunnerSettings:
    """Who generates an arm's samples, and how: one group of the sweep's settings, handed as a
    whole to the runner and to the capability harness (the YAML keys stay flat: ``runner``,
    ``runner_base_url``, ``tensor_parallel_size`` … as users write them)."""

    kind: str = "hf"  # the sweep's ``runner``: vllm (offline engine), openai (a server), hf
    base_url: str | None = None
    concurrency: int = 32
    models: tuple[tuple[str, str], ...] = ()  # openai: (arm, served model name)
    timeout_s: float = 600.0  # openai
    max_attempts: int = 3  # openai
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

    def served_model(self, arm: str, path: str) -> str:
        """The model name runner=openai asks for: ``runner_models[arm]``, else the arm's path
        (what ``vllm serve PATH`` serves)."""
        return dict(self.models).get(arm, path)

    def backend(self, arm: str, path: str):
        """runner=openai's client of ``arm``'s server."""
        from msm_megatron.llm.http_backends import OpenAICompatBackend
        from msm_megatron.llm.retry import RetryPolicy

        return OpenAICompatBackend(self.base_url, self.served_model(arm, path),
                                   timeout_s=self.timeout_s, max_connections=self.concurrency,
                                   retry=RetryPolicy(max_attempts=self.max_attempts),
                                   setting="runner_base_url")


@dataclass(kw_only=True, slots=True)
class EvalSweepConfig:
    """A sweep: arms (HF exports or LoRA adapters) × tasks × the agentic-misalignment preset."""

    out_dir: str = path_field(default="runs/eval")
    # "name=path/to/hf_export_or_adapter" (or name=org/model, a hub id)
    arms: list[str] = path_field(named_entry(model_ref), default_factory=list)
    tasks: list[str] = field(default_factory=lambda: ["agentic_misalignment"])
    value_probes: str = path_field(default=VALUE_PROBES)  # for task value_generalization
    # task forced_choice: eval sets, their fields, prompt format, baseline arm
    forced_choice: ForcedChoiceConfig = field(default_factory=ForcedChoiceConfig)
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
    # openai: arm name -> the model name the server serves (default: the arm's path, which is
    # what `vllm serve PATH` serves; --served-model-name NAME needs {arm: NAME} here)
    runner_models: dict[str, str] = field(default_factory=dict)
    runner_timeout_s: float = 600.0  # openai: seconds per request
    runner_max_attempts: int = 3  # openai: tries per request (transport failures)
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
    # judge at all, only the tool-block evidence is scored (labelled as such in the report);
    # auto: llm when a judge is configured (judge.base_url, or judge.kind anthropic/vllm)
    judge_mode: Literal["auto", "llm", "mechanical"] = "auto"
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
            models=tuple(self.runner_models.items()), timeout_s=self.runner_timeout_s,
            max_attempts=self.runner_max_attempts, tensor_parallel_size=self.tensor_parallel_size,
            max_model_len=self.max_model_len,
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


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def check_arm_paths(arms: list[tuple[str, str]], runner: str) -> None:
    """runner hf/vllm load each arm's path: one that does not exist and is not shaped like a
    hub id (``org/name``) is a typo, reported before anything is written (runner=openai asks a
    server, so its paths need not exist here)."""
    if runner == "openai":
        return
    for name, path in arms:
        local = path.startswith(("/", ".", "~")) or not HUB_ID.fullmatch(path)
        if local and not Path(path).expanduser().exists():
            raise ConfigError(f"arm {name}: {path} does not exist (and is not a hub id such as "
                              f"org/name): fix arms=[...,{name}=path/to/hf_export]")
