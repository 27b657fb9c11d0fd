"""The one config tree: dataclasses, YAML in/out, dotlist overrides.

Every run is described by a :class:`Config`. Recipes (``msm_megatron.recipes``) are Python
functions returning one; YAML is how runs are saved and replayed; overrides are dotlists::

    msm train qwen3_toy_midtrain optim.lr=2e-5 parallel.tp=2 --dry-run

Unknown keys are errors that name the key and suggest the closest valid one. Values are parsed
with YAML rules (``1e-4`` → float, ``true`` → bool, ``null`` → None) and then checked against the
field's annotated type. Semantic validation (layouts, FP8, divisibility) lives in
:mod:`msm_megatron.validate`, not here.
"""

from __future__ import annotations

import dataclasses
import difflib
import pkgutil
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from msm_megatron.config_paths import field_named, path_field, resolve_section, resolve_value


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key/file and the fix."""


def architecture_names() -> tuple[str, ...]:
    """The values ``model.arch`` may take: the architecture files of
    :mod:`msm_megatron.architectures` (every module not starting with ``_``), sorted.

    The package's folder is listed, not imported: it builds on this module. The registry's
    :func:`~msm_megatron.architectures.names` is this function.
    """
    folder = Path(__file__).with_name("architectures")
    return tuple(sorted(module.name for module in pkgutil.iter_modules([str(folder)])
                        if not module.name.startswith("_")))


@dataclass(kw_only=True, slots=True)
class ModelConfig:
    """Architecture of a decoder-only transformer, in HF ``config.json`` terms.

    ``arch`` is the HF ``model_type``: one of the architectures, a file each in
    :mod:`msm_megatron.architectures`. ``head_dim`` may differ from
    ``hidden_size / num_attention_heads`` (Qwen3). ``num_key_value_heads`` < heads is GQA.
    ``rope_scaling_factor`` is Llama-3.1's "llama3" RoPE scaling (low/high frequency factors 1 and
    4, original context 8192 — the values Megatron-Core implements); None means plain RoPE.
    """

    # Checked like a Literal, against the names a field's metadata "choices" returns.
    arch: str = field(default="qwen3", metadata={"choices": architecture_names})
    vocab_size: int = 151936
    hidden_size: int = 1024
    intermediate_size: int = 3072
    num_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int | None = None
    max_position_embeddings: int = 40960
    rope_theta: float = 1_000_000.0
    rope_scaling_factor: float | None = None
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    qk_norm: bool = True
    init_method_std: float = 0.02
    make_vocab_size_divisible_by: int = 128
    hf_path: str | None = None

    @property
    def kv_channels(self) -> int:
        """Per-head dimension (HF ``head_dim``), defaulting to hidden/heads."""
        return self.head_dim or self.hidden_size // self.num_attention_heads


@dataclass(kw_only=True, slots=True)
class ParallelConfig:
    """Model/data parallel layout. ``dp`` is derived: world / (tp * pp * cp)."""

    tp: int = 1
    pp: int = 1
    vpp: int | None = None
    cp: int = 1
    sequence_parallel: bool = False
    distributed_optimizer: bool = False
    overlap_grad_reduce: bool = False
    overlap_param_gather: bool = False
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    world_size: int | None = None


@dataclass(kw_only=True, slots=True)
class DataConfig:
    """Training data: ``msm data prepare`` outputs (``prepared`` prefixes, blended by ``weights``)
    turned into samples by ``mode`` (``concat``: Megatron concat-and-split; ``packed``: document-
    aware THD rows packed by ``packing``)."""

    prepared: list[str] = path_field(default_factory=list)
    weights: list[float] | None = None
    mode: Literal["concat", "packed"] = "concat"
    packing: Literal["bfd", "ffd"] = "bfd"
    seq_length: int = 4096
    seed: int = 1234


@dataclass(kw_only=True, slots=True)
class OptimConfig:
    """AdamW with warmup then cosine/linear/constant decay to ``min_lr``."""

    lr: float = 1e-5
    min_lr: float = 1e-6
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    clip_grad: float = 1.0
    warmup_fraction: float = 0.05
    warmup_steps: int | None = None
    decay_style: Literal["cosine", "linear", "constant"] = "cosine"


@dataclass(kw_only=True, slots=True)
class TrainConfig:
    """Batch sizes, duration, precision and memory-saving options.

    Duration: ``steps`` wins if set, else ``tokens`` (a token budget, as midtraining is sized),
    else ``epochs`` of the stage's data (the paper's unit: one epoch of AFT). An epoch is every
    sample of one pass over ``data.prepared``: concat windows, or packed rows in packed mode;
    its steps are ``ceil(epochs × samples / global_batch_size)``, counted from the data.
    """

    micro_batch_size: int = 1
    global_batch_size: int = 64
    steps: int | None = None
    tokens: int | None = None
    epochs: float | None = None
    precision: Literal["fp32", "bf16", "fp16"] = "bf16"
    fp8: Literal["delayed", "tensorwise", "blockwise", "mxfp8"] | None = None
    fp8_first_last_bf16: bool = False
    recompute: Literal["none", "selective", "full"] = "none"
    recompute_num_layers: int = 1
    seed: int = 1234
    run_dir: str = path_field(default="runs/default")
    spec: Literal["auto", "local", "te"] = "auto"
    # Core attention of the local (non-TE) spec; see msm_megatron/models/attention.py.
    attention: Literal["auto", "unfused", "sdpa", "varlen", "flex"] = "auto"
    # Throughput switches (docs/gpu.md#throughput-switches); each equals the reference run.
    # LM head + cross-entropy over `loss_chunk` tokens at a time, each chunk recomputed in the
    # backward pass: fp32 logits over the whole vocabulary never exist for a whole micro-batch.
    loss_chunk: int | None = None
    # Megatron's fused SwiGLU (bias_activation_fusion): one kernel for silu(gate)·up and its grad.
    fused_swiglu: bool = False
    # torch.compile each transformer layer (CUDA only; Inductor fuses RMSNorm, RoPE, residuals).
    compile: bool = False
    # Megatron-Core's local CUDA graphs of each transformer layer (CUDA, fixed shapes: concat).
    cuda_graphs: bool = False


@dataclass(kw_only=True, slots=True)
class CheckpointConfig:
    """Megatron ``dist_checkpointing`` saves under ``<run_dir>/checkpoints``."""

    save_interval: int | None = None
    keep_last: int | None = 3
    async_save: bool = False
    load: str | None = path_field(default=None)
    resume: bool = True
    save_on_exit: bool = True
    # finish the step, save, exit 75: Slurm's --signal/scancel/time limit, and Ctrl-C
    exit_signals: list[str] = field(default_factory=lambda: ["SIGTERM", "SIGUSR1", "SIGINT"])


@dataclass(kw_only=True, slots=True)
class LogConfig:
    """Console cadence, ``metrics.jsonl``, TensorBoard, optional W&B."""

    interval: int = 1
    tensorboard: bool = True
    wandb_project: str | None = None
    progress_bar: bool = True
    peak_tflops: float = 989.0


LORA_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(kw_only=True, slots=True)
class LoRAConfig:
    """LoRA adapters on the frozen base (``rank`` 0 = full-parameter training; docs/lora.md).

    ``targets`` are HF projection names; ``alpha / rank`` scales the update. Adapters train in
    fp32 (fp32 master copies and Adam state; the update computed in fp32); the frozen base keeps
    ``train.precision``.
    """

    rank: int = 0
    alpha: float = 128.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: list(LORA_PROJECTIONS))
    seed: int = 0
    # When checkpoint.load is a LoRA run: keep training its adapter, or merge it into the base
    # and start a new one.
    on_load: Literal["continue", "merge"] = "continue"


@dataclass(kw_only=True, slots=True)
class Config:
    """A whole training run."""

    name: str = "run"
    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)


# ----------------------------------------------------------------------------- conversion


def to_dict(cfg: Any) -> dict:
    """Plain nested dict of a config dataclass (for YAML/JSON)."""
    return dataclasses.asdict(cfg)


def _suggest(key: str, options: list[str]) -> str:
    match = difflib.get_close_matches(key, options, n=1, cutoff=0.5)
    return f" Did you mean '{match[0]}'?" if match else f" Valid keys: {', '.join(options)}."


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert a parsed value to the annotated type ``tp``; error names ``where``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                f"{where}: {value!r} is not one of {list(args)}."
                + _suggest(str(value), list(map(str, args)))
            )
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping like {{key: value}}, got {value!r}")
        return {_coerce(k, args[0], f"{where} key"): _coerce(v, args[1], f"{where}.{k}")
                for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    is_bool_as_int = tp is int and isinstance(value, bool)
    if tp in (int, float, str, bool) and not (isinstance(value, tp) and not is_bool_as_int):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type, data: dict, where: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys with a suggestion."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    names = list(by_name)
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ConfigError(f"unknown config key '{path}'." + _suggest(str(key), names))
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = from_dict(tp, _over_default(by_name[key], value or {}), path)
        else:
            kwargs[key] = _coerce(value, tp, path)
            if "choices" in by_name[key].metadata:
                choices = tuple(by_name[key].metadata["choices"]())
                kwargs[key] = _coerce(kwargs[key], Literal[choices], path)
    return cls(**kwargs)


def _over_default(f: dataclasses.Field, data: Any) -> Any:
    """``data`` laid over the field's own default, which may differ from its class's defaults
    (``eval: {resources: {partition: gpu}}`` keeps the eval's 12-hour ``time``)."""
    if f.default_factory is dataclasses.MISSING or not isinstance(data, dict):
        return data
    return _deep_merge(to_dict(f.default_factory()), data)


def _deep_merge(base: dict, data: dict) -> dict:
    out = dict(base)
    for key, value in data.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _deep_merge(out[key], value) if both else value
    return out


def apply_overrides(cfg: Any, overrides: list[str], relative_to: str | Path | None = None
                    ) -> Any:
    """Return a new config (of ``cfg``'s class) with dotlist overrides (``optim.lr=2e-5``).

    With ``relative_to`` (the current directory, for overrides typed on a command line), the
    path values they set are made absolute against it (see :func:`path_field`).
    """
    base = Path(relative_to).absolute() if relative_to is not None else None
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"override '{item}' must look like section.key=value (e.g. optim.lr=2e-5)")
        dotted, raw = item.split("=", 1)
        parts = dotted.strip().split(".")
        node, cls = data, type(cfg)
        for depth, part in enumerate(parts):
            names = [f.name for f in dataclasses.fields(cls)]
            if part not in names:
                prefix = ".".join(parts[:depth])
                raise ConfigError(
                    f"unknown config key '{dotted}' in override '{item}'"
                    + (f" (section '{prefix}')." if prefix else ".")
                    + _suggest(part, names)
                )
            sub = typing.get_type_hints(cls)[part]
            if depth == len(parts) - 1:
                if dataclasses.is_dataclass(sub):
                    raise ConfigError(
                        f"override '{item}': '{dotted}' is a section; set one of its keys")
                try:
                    value = yaml.safe_load(raw) if raw != "" else None
                except yaml.YAMLError as exc:
                    raise ConfigError(
                        f"override '{item}': the value is not valid YAML "
                        f"({getattr(exc, 'problem', exc)}); quote a list inside a list, e.g. "
                        "'sft.overrides=[\"parallel.tp=2\",\"data.prepared=[a,b]\"]'") from exc
                if base is not None:
                    value = resolve_value(field_named(cls, part), value, base)
                node[part] = value
            else:
                if not dataclasses.is_dataclass(sub):
                    section = ".".join(parts[: depth + 1])
                    raise ConfigError(f"override '{item}': '{section}' is not a section")
                node, cls = node[part], sub
    return from_dict(type(cfg), data)


def load_yaml(path: str | Path, cls: type | None = None) -> Any:
    """Load a config YAML into ``cls`` (default :class:`Config`); errors name the file.

    Its relative paths — those it sets and the defaults of those it leaves out — are made
    absolute against the file's directory (:func:`resolve_paths`).
    """
    cls = cls or Config
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    try:
        cfg = from_dict(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return resolve_paths(cfg, path.absolute().parent)


def load_config(cls: type, source: str | Path | None = None, overrides: list[str] = (),
                named: Callable[[str], Any] | None = None, what: str = "config") -> Any:
    """The one way a config is made: a base, then dotlist overrides.

    The base is a YAML file (``source`` ends in ``.yaml``/``.yml`` or is a file), a named one
    (``named(source)``: a recipe), or ``cls``'s defaults when ``source`` is None. Every command
    loads its config through here (``msm train``: recipes or YAML; ``msm generate``/``eval``:
    defaults or YAML; ``msm pipeline``: an experiment YAML).

    Every path field comes out absolute: a YAML file's relative to the file's directory, the
    overrides' relative to the current directory, and a recipe's or the defaults' relative to
    the current directory too.

    Raises:
        ConfigError: the file does not exist (named ``what`` in the message), is not valid
            YAML, or has an unknown key or a bad value (file and key named).
    """
    cwd = Path.cwd()
    if source is None:
        cfg = resolve_paths(cls(), cwd)
    elif str(source).endswith((".yaml", ".yml")) or Path(source).is_file() or named is None:
        if not Path(source).is_file():
            raise ConfigError(f"{source}: {what} file not found")
        cfg = load_yaml(source, cls)
    else:
        cfg = resolve_paths(named(str(source)), cwd)
    return apply_overrides(cfg, list(overrides), relative_to=cwd)


def save_yaml(cfg: Any, path: str | Path) -> None:
    """Write the resolved config (the exact replayable record of a run)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def resolve_paths(cfg: Any, base: str | Path) -> Any:
    """A copy of ``cfg`` whose path fields (see :func:`path_field`), and the path values inside
    its dotlist-override fields (:func:`overrides_field`), are absolute against ``base``.

    Absolute values are only normalized; URLs (``scheme://``) and empty values stay as they are.
    """
    data = to_dict(cfg)
    resolve_section(type(cfg), data, Path(base).absolute())
    return from_dict(type(cfg), data)
