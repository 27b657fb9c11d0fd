"""The one recipe builder: an HF-style shape dict + a training stage -> a :class:`Config`.

Every full-size recipe (``qwen3``, ``qwen2``, ``llama``) is a one-line call to
:func:`build_recipe`; the stage defaults live here, once.

Stage defaults (full-parameter training on H100s):

* ``midtrain`` — continued pre-training on the synthetic MSM corpus: plain LM loss, sequence
  length 8192, bf16, AdamW lr 1e-5 → 1e-6 cosine with 5% warmup, weight decay 0.1, global batch
  64 sequences (64 × 8192 ≈ 0.52M tokens/step), **one epoch** of ``data.prepared``
  (``train.epochs=1``, as in the MSM paper; the ≈41M-token philosophy-spec corpus is ≈79 steps).
* ``sft`` — AFT / instruction tuning on packed chats: sequence length 8192 (packed), lr 1e-5 →
  1e-6, global batch 32 (≈0.26M tokens/step), **one epoch** of the AFT set and the
  instruction-tuning mix (the paper's AFT budget; ≈5M no-CoT or ≈8M with-CoT tokens + ≈2M mix
  tokens, so the with-CoT deliberative-alignment arm sees all its data too);
  ``data.mode=packed`` (THD rows, assistant-only loss from ``msm data prepare --kind chats``).

The steps of an epoch are counted from the prepared data (packed rows or concat windows) when
the run starts; ``--dry-run`` prints them once the data exists. ``train.tokens=N`` or
``train.steps=N`` replace the epoch budget.

Both use the distributed optimizer (optimizer state sharded over data parallel ranks) with
overlapped grad reduce and param gather, selective activation recompute (core attention), and
sequence parallelism whenever ``tp > 1`` (needs Transformer Engine, as on the NGC container).
Micro batch is 1 sequence of 8192 tokens: at this length a larger micro batch buys little
efficiency and costs activation memory linearly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

from msm_megatron.config import (
    CheckpointConfig,
    Config,
    DataConfig,
    OptimConfig,
    ParallelConfig,
    TrainConfig,
)
from msm_megatron.models.hf_config import model_config_from_hf

Stage = Literal["midtrain", "sft"]

_STAGES: dict[str, dict] = {
    "midtrain": {"global_batch_size": 64, "epochs": 1.0, "save_interval": 20},
    "sft": {"global_batch_size": 32, "epochs": 1.0, "save_interval": 10},
}


def build_recipe(
    name: str,
    shape: dict,
    stage: Stage,
    *,
    hf_path: str,
    tp: int,
    world_size: int,
    pp: int = 1,
    seq_length: int = 8192,
) -> Config:
    """Build a full-size recipe from an HF ``config.json``-style shape dict.

    Args:
        name: Recipe name; also the run name and ``runs/<name>`` run directory.
        shape: HF config dict (``model_type``, ``hidden_size``, …), mapped by
            :func:`~msm_megatron.models.hf_config.model_config_from_hf`.
        stage: ``"midtrain"`` or ``"sft"`` (see the module docstring for what each sets).
        hf_path: HF repo id of the starting checkpoint.
        tp: Tensor parallel size (sequence parallel is switched on when > 1).
        world_size: The GPU count the layout is designed for (dp = world / (tp·pp)).
        pp: Pipeline parallel size.
        seq_length: Training sequence length.

    Returns:
        A fresh :class:`Config`; ``data.prepared`` is left empty (pass ``data.prepared=[…]``).
    """
    if stage not in _STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {sorted(_STAGES)}")
    st = _STAGES[stage]
    return Config(
        name=name,
        model=model_config_from_hf(shape, hf_path=hf_path),
        parallel=ParallelConfig(
            tp=tp,
            pp=pp,
            sequence_parallel=tp > 1,
            distributed_optimizer=True,
            overlap_grad_reduce=True,
            overlap_param_gather=True,
            world_size=world_size,
        ),
        data=DataConfig(seq_length=seq_length, mode="packed" if stage == "sft" else "concat"),
        optim=OptimConfig(
            lr=1e-5, min_lr=1e-6, weight_decay=0.1, warmup_fraction=0.05, decay_style="cosine"
        ),
        train=TrainConfig(
            micro_batch_size=1,
            global_batch_size=st["global_batch_size"],
            epochs=st["epochs"],
            precision="bf16",
            recompute="selective",
            run_dir=f"runs/{name}",
        ),
        checkpoint=CheckpointConfig(save_interval=st["save_interval"], keep_last=2),
    )


def family_recipes(models: dict[str, tuple[dict, str, dict]]) -> dict[str, Callable[[], Config]]:
    """``<model>_midtrain`` and ``<model>_sft`` recipe functions for each model of a family.

    Args:
        models: ``{model name: (shape dict, HF repo id, layout kwargs for build_recipe)}``, e.g.
            ``{"qwen3_8b": (QWEN3_8B, "Qwen/Qwen3-8B", {"tp": 2, "world_size": 8})}``.
    """
    recipes: dict[str, Callable[[], Config]] = {}
    for model, (shape, hf_path, layout) in models.items():
        for stage in ("midtrain", "sft"):
            name = f"{model}_{stage}"
            recipe = functools.partial(build_recipe, name, shape, stage, hf_path=hf_path, **layout)
            recipe.__doc__ = f"{hf_path} {stage}: {layout_text(layout)}."
            recipes[name] = recipe
    return recipes


def layout_text(layout: dict) -> str:
    """``tp 8 × pp 2 × dp 1 on 16 GPUs`` for a layout dict."""
    tp, pp, world = layout["tp"], layout.get("pp", 1), layout["world_size"]
    return f"tp {tp} × pp {pp} × dp {world // (tp * pp)} on {world} GPUs"
