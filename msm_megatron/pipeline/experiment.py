"""The experiment file of ``msm pipeline``: specs, data, base model, training stages, arms, eval.

One YAML describes a whole MSM study; the sweep axes are spec variant × AFT size × CoT/no-CoT ×
seed, and each combination is fine-tuned twice: from the midtrained model (the MSM arm) and,
with ``baseline: true``, from the base model (the AFT-only arm; with CoT that is deliberative
alignment). Example (``examples/pipeline/toy.yaml`` is the CPU demo's)::

    name: qwen3_32b_msm
    out_dir: runs/pipeline/qwen3_32b
    specs: {values: examples/spec/qwen_spec.txt, rules: examples/spec/rules_spec.txt}
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
"""

from __future__ import annotations

from dataclasses import dataclass, field

from msm_megatron.llm.config import BackendConfig

REPO_EXAMPLES = "examples"


@dataclass(kw_only=True, slots=True)
class Resources:
    """What one job of a stage asks the scheduler for (ignored by the local executor, except
    ``gpus_per_node`` × ``nodes`` ranks for training via torchrun when > 1)."""

    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int | None = None  # training ranks per node; default gpus_per_node (or 1)
    cpus_per_task: int = 2
    time: str = "04:00:00"
    mem: str | None = None  # e.g. "64G"; None = the partition's default


@dataclass(kw_only=True, slots=True)
class TrainStage:
    """A training stage: a named recipe plus dotlist overrides and the job's resources."""

    recipe: str
    overrides: list[str] = field(default_factory=list)
    resources: Resources = field(default_factory=Resources)


@dataclass(kw_only=True, slots=True)
class GenerationStage:
    """Corpus and AFT-chat generation from each spec (``enabled: false`` uses the files below)."""

    enabled: bool = False
    backend: BackendConfig = field(default_factory=BackendConfig)
    docs: list[str] = field(default_factory=list)  # DocsGenConfig overrides
    chats: list[str] = field(default_factory=list)  # ChatsGenConfig overrides
    resources: Resources = field(default_factory=lambda: Resources(time="24:00:00"))


@dataclass(kw_only=True, slots=True)
class EvalStage:
    """The eval sweep over every fine-tuned arm: ``overrides`` of :class:`EvalSweepConfig`
    (``arms``, ``out_dir`` and ``aft_examples``/``series`` are filled in by the pipeline)."""

    enabled: bool = True
    overrides: list[str] = field(default_factory=list)
    # also evaluate the untouched base model (arm "base_model"; not for the toy base)
    include_base: bool = True
    resources: Resources = field(default_factory=lambda: Resources(time="12:00:00"))
    array_throttle: int = 4  # at most this many array tasks at once


@dataclass(kw_only=True, slots=True)
class SlurmSettings:
    """Where and how jobs go on Slurm; cluster specifics live in ``slurm/clusters/<name>.env``."""

    cluster: str = "example"  # slurm/clusters/<cluster>.env, or a path to an .env file
    job_prefix: str = "msm"
    signal_seconds: int = 300  # training gets USR1 this long before its time limit


@dataclass(kw_only=True, slots=True)
class ExperimentConfig:
    """A whole MSM study (see the module docstring)."""

    name: str = "msm_toy"
    out_dir: str = "runs/pipeline/msm_toy"
    specs: dict[str, str] = field(
        default_factory=lambda: {"default": f"{REPO_EXAMPLES}/spec/qwen_spec.txt"})
    generation: GenerationStage = field(default_factory=GenerationStage)
    # without generation: the corpus documents and the AFT chats (with <think>; the no-CoT
    # arms strip it when the data is prepared)
    corpus: list[str] = field(
        default_factory=lambda: [f"{REPO_EXAMPLES}/corpus/demo_corpus.jsonl"])
    aft_chats: str = f"{REPO_EXAMPLES}/chats/aft_demo.jsonl"
    # instruction-tuning chats mixed into every SFT arm (keeps the model a chat model)
    sft_mix: list[str] = field(
        default_factory=lambda: [f"{REPO_EXAMPLES}/chats/it_mix_demo.jsonl"])
    # "toy": the recipe's model from random init with a toy tokenizer; else an HF directory
    base_model: str = "toy"
    midtrain: TrainStage = field(default_factory=lambda: TrainStage(recipe="qwen3_toy_midtrain"))
    sft: TrainStage = field(default_factory=lambda: TrainStage(recipe="qwen3_toy_sft"))
    aft_sizes: list[int] = field(default_factory=lambda: [0])  # chats per arm; 0 = all
    cot: list[str] = field(default_factory=lambda: ["no_cot"])  # no_cot and/or with_cot
    seeds: list[int] = field(default_factory=lambda: [0])
    baseline: bool = True  # also fine-tune the base model (the AFT-only arm)
    eval: EvalStage = field(default_factory=EvalStage)
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
