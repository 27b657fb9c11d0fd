"""The experiment file of ``msm pipeline``: specs, data, base model, training stages, arms, eval.

One YAML describes a whole MSM study; the sweep axes are spec variant × AFT size × CoT/no-CoT ×
seed, and each combination is fine-tuned twice: from the midtrained model (the MSM arm) and,
with ``baseline: true``, from the base model (the AFT-only arm; with CoT that is deliberative
alignment). Example (``examples/pipeline/toy.yaml`` is the CPU demo's)::

    name: qwen3_32b_msm
    out_dir: /scratch/runs/qwen3_32b
    specs: {values: specs/qwen_spec.txt, rules: specs/rules_spec.txt}
    generation: {enabled: true, backend: {kind: anthropic, model: claude-opus-4-6, base_url: null}}
    base_model: /models/Qwen3-32B
    midtrain: {recipe: qwen3_32b_midtrain, nodes: 8}
    sft: {recipe: qwen3_32b_sft, nodes: 2}
    aft_sizes: [1000, 10000]
    cot: [no_cot, with_cot]
    seeds: [0, 1]
    eval: {overrides: [preset=paper, runner=vllm, tensor_parallel_size=4]}

Unknown keys are errors with a suggestion; every list/dict field takes dotlist overrides too
(``msm pipeline exp.yaml seeds=[0,1,2]``).

Paths (every input, ``out_dir``, ``base_model``, the clones in ``eval.overrides``, a
``slurm.cluster`` .env file, and the paths in the stages' overrides) are relative to the
experiment file's directory; overrides typed on the command line are relative to the current
directory. Loading makes them absolute, so the plan and every job see absolute paths only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from msm_megatron.config_paths import as_path, env_file, keeping, overrides_field, path_field
from msm_megatron.llm.config import BackendConfig

# the defaults point at the repository's examples, wherever the command runs
REPO_EXAMPLES = str(Path(__file__).resolve().parents[2] / "examples")


def _train_config() -> type:
    from msm_megatron.config import Config

    return Config


def _docs_config() -> type:
    from msm_megatron.generate.config import DocsGenConfig

    return DocsGenConfig


def _chats_config() -> type:
    from msm_megatron.generate.config import ChatsGenConfig

    return ChatsGenConfig


def _sweep_config() -> type:
    from msm_megatron.eval.sweep_config import EvalSweepConfig

    return EvalSweepConfig


def command_path(value: str, base: Path) -> str:
    """A program: a path when it contains ``/`` (made absolute), else a name looked up on the
    job's ``PATH`` (``python3``)."""
    return as_path(value, base) if "/" in value else value


@dataclass(kw_only=True, slots=True)
class Resources:
    """What one job of a stage asks the scheduler for, and the environment it runs in.

    The local executor ignores all of it except ``gpus_per_node`` × ``nodes`` ranks for
    training (torchrun when > 1). On Slurm, ``partition`` and ``sbatch_args`` come after the
    cluster file's ``SBATCH_*`` settings, so they win; ``python`` / ``container`` replace the
    cluster file's ``MSM_PYTHON`` / ``CONTAINER_IMAGE`` for this stage's jobs (slurm/common.sh).
    """

    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int | None = None  # training ranks per node; default gpus_per_node (or 1)
    cpus_per_task: int = 2
    time: str = "04:00:00"
    mem: str | None = None  # e.g. "64G"; None = the partition's default
    partition: str | None = None  # None = the cluster file's SBATCH_PARTITION
    sbatch_args: list[str] = field(default_factory=list)  # e.g. ["--qos=high", "--exclusive"]
    # the Python with msm-megatron installed (e.g. <envs>/vllm/bin/python for the eval)
    python: str | None = path_field(command_path, default=None)
    # a pyxis image (srun --container-image; its `python` unless python is set); "none" = no
    # container, even if the cluster file names one
    container: str | None = None


@dataclass(kw_only=True, slots=True)
class TrainStage:
    """A training stage: a named recipe plus dotlist overrides and the job's resources."""

    recipe: str
    overrides: list[str] = overrides_field(_train_config)
    resources: Resources = field(default_factory=Resources)


@dataclass(kw_only=True, slots=True)
class GenerationStage:
    """Corpus and AFT-chat generation from each spec (``enabled: false`` uses the files below)."""

    enabled: bool = False
    backend: BackendConfig = field(default_factory=BackendConfig)
    docs: list[str] = overrides_field(_docs_config)  # DocsGenConfig overrides
    chats: list[str] = overrides_field(_chats_config)  # ChatsGenConfig overrides
    resources: Resources = field(default_factory=lambda: Resources(time="24:00:00"))


@dataclass(kw_only=True, slots=True)
class EvalStage:
    """The eval sweep over every fine-tuned arm: ``overrides`` of :class:`EvalSweepConfig`
    (``arms``, ``out_dir`` and ``aft_examples``/``series`` are filled in by the pipeline)."""

    enabled: bool = True
    overrides: list[str] = overrides_field(_sweep_config)
    # also evaluate the untouched base model (arm "base_model"; not for the toy base)
    include_base: bool = True
    resources: Resources = field(default_factory=lambda: Resources(time="12:00:00"))
    array_throttle: int = 4  # at most this many array tasks at once


@dataclass(kw_only=True, slots=True)
class CpuStages:
    """The stages that need no GPU — tokenizer, ``convert_base``, ``prepare_corpus``,
    ``prepare_sft``, ``export`` and ``report`` — share these resources (e.g. a CPU partition)."""

    resources: Resources = field(default_factory=Resources)


@dataclass(kw_only=True, slots=True)
class SlurmSettings:
    """Where and how jobs go on Slurm; cluster specifics live in ``slurm/clusters/<name>.env``."""

    # slurm/clusters/<cluster>.env, or a path to an .env file (one with a suffix)
    cluster: str = path_field(env_file, default="example")
    job_prefix: str = "msm"
    signal_seconds: int = 300  # training gets USR1 this long before its time limit


@dataclass(kw_only=True, slots=True)
class ExperimentConfig:
    """A whole MSM study (see the module docstring)."""

    name: str = "msm_toy"
    out_dir: str = path_field(default="runs/pipeline/msm_toy")
    specs: dict[str, str] = path_field(
        default_factory=lambda: {"default": f"{REPO_EXAMPLES}/spec/qwen_spec.txt"})
    generation: GenerationStage = field(default_factory=GenerationStage)
    # without generation: the corpus documents and the AFT chats (with <think>; the no-CoT
    # arms strip it when the data is prepared)
    corpus: list[str] = path_field(
        default_factory=lambda: [f"{REPO_EXAMPLES}/corpus/demo_corpus.jsonl"])
    # without generation, several specs: each one's corpus ({spec name: [files]}, e.g. the
    # released corpora of a spec comparison); a spec not named here trains on ``corpus``
    corpora: dict[str, list[str]] = path_field(default_factory=dict)
    aft_chats: str = path_field(default=f"{REPO_EXAMPLES}/chats/aft_demo.jsonl")
    # instruction-tuning chats mixed into every SFT arm (keeps the model a chat model)
    sft_mix: list[str] = path_field(
        default_factory=lambda: [f"{REPO_EXAMPLES}/chats/it_mix_demo.jsonl"])
    # "toy": the recipe's model from random init with a toy tokenizer; else an HF directory
    base_model: str = path_field(keeping("toy"), default="toy")
    # a .jinja chat template for the SFT data, the exports and the eval's chat prompts, in
    # place of the base tokenizer's own (a base model may have none); null = the tokenizer's
    chat_template: str | None = path_field(default=None)
    # the token that closes an assistant turn in that template, when it is not the tokenizer's
    # rule (<|im_end|>, <|eot_id|>, else eos_token; see docs/data.md), e.g. "<|end_of_text|>"
    end_of_turn_token: str | None = None
    midtrain: TrainStage = field(default_factory=lambda: TrainStage(recipe="qwen3_toy_midtrain"))
    sft: TrainStage = field(default_factory=lambda: TrainStage(recipe="qwen3_toy_sft"))
    aft_sizes: list[int] = field(default_factory=lambda: [0])  # chats per arm; 0 = all
    cot: list[str] = field(default_factory=lambda: ["no_cot"])  # no_cot and/or with_cot
    seeds: list[int] = field(default_factory=lambda: [0])
    baseline: bool = True  # also fine-tune the base model (the AFT-only arm)
    eval: EvalStage = field(default_factory=EvalStage)
    # tokenizer, chat_tokenizer, base-model conversion, data preparation, export, report: CPU
    cpu_stages: CpuStages = field(default_factory=CpuStages)
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
