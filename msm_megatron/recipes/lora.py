"""LoRA recipes with the MSM paper's settings (docs/lora.md).

``<model>_midtrain_lora`` and ``<model>_sft_lora`` for Qwen3-14B/32B, Qwen2.5-14B/32B and
Llama-3.1-8B: rank 64, alpha 128, dropout 0, no bias, all seven projections (q, k, v, o, gate,
up, down); AdamW lr 1e-4, cosine to 0 with 5% warmup, weight decay 0.01; sequence length 8192
(4096 for Llama-3.1-8B); one epoch of the stage's data (as the full-parameter recipes). The
SFT stage continues the midtraining adapter (``lora.on_load=continue``; the paper's AFT did), e.g.::

    msm train qwen3_32b_midtrain_lora checkpoint.load=/models/Qwen3-32B data.prepared=[...]
    msm train qwen3_32b_sft_lora checkpoint.load=runs/qwen3_32b_midtrain_lora/checkpoints ...

Layouts target 4 GPUs (the paper trained 32B adapters on 4 H200s): the base is frozen in bf16
(no gradients or optimizer state), so tp shards only the weights; full activation recompute keeps
8192-token activations small without sequence parallelism (which LoRA does not support yet).
Local spec: adapters wrap Megatron's own linear layers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from msm_megatron.config import Config, LoRAConfig, apply_overrides
from msm_megatron.recipes.llama import LLAMA3_1_8B, LLAMA_SEQ_LENGTH
from msm_megatron.recipes.qwen2 import QWEN2_5_14B, QWEN2_5_32B
from msm_megatron.recipes.qwen3 import QWEN3_14B, QWEN3_32B
from msm_megatron.recipes.stages import build_recipe, layout_text

MODELS = {
    "qwen3_14b": (QWEN3_14B, "Qwen/Qwen3-14B", {"tp": 2, "world_size": 4}),
    "qwen3_32b": (QWEN3_32B, "Qwen/Qwen3-32B", {"tp": 4, "world_size": 4}),
    "qwen2_5_14b": (QWEN2_5_14B, "Qwen/Qwen2.5-14B-Instruct", {"tp": 2, "world_size": 4}),
    "qwen2_5_32b": (QWEN2_5_32B, "Qwen/Qwen2.5-32B-Instruct", {"tp": 4, "world_size": 4}),
    "llama3_1_8b": (LLAMA3_1_8B, "meta-llama/Llama-3.1-8B",
                    {"tp": 1, "world_size": 4, "seq_length": LLAMA_SEQ_LENGTH}),
}


def lora_recipe(name: str, shape: dict, stage: str, *, hf_path: str, tp: int,
                world_size: int, seq_length: int = 8192) -> Config:
    """A full-size stage recipe switched to the paper's LoRA settings."""
    cfg = build_recipe(name, shape, stage, hf_path=hf_path, tp=tp, world_size=world_size,
                       seq_length=seq_length)
    cfg = apply_overrides(cfg, [
        "optim.lr=1e-4", "optim.min_lr=0.0", "optim.weight_decay=0.01",
        "optim.warmup_fraction=0.05", "optim.decay_style=cosine", "train.spec=local",
        "train.recompute=full", "train.recompute_num_layers=1",
        "parallel.sequence_parallel=false", "parallel.overlap_param_gather=false",
        "parallel.distributed_optimizer=false", "parallel.overlap_grad_reduce=false",
    ])
    # the paper's adapter: r=64, alpha=128, no dropout, all seven projections (the default)
    cfg.lora = LoRAConfig(rank=64, alpha=128.0, dropout=0.0, on_load="continue")
    return cfg


def _recipes() -> dict[str, Callable[[], Config]]:
    recipes: dict[str, Callable[[], Config]] = {}
    for model, (shape, hf_path, layout) in MODELS.items():
        for stage in ("midtrain", "sft"):
            name = f"{model}_{stage}_lora"
            recipe = functools.partial(lora_recipe, name, shape, stage, hf_path=hf_path,
                                       **layout)
            recipe.__doc__ = (f"{hf_path} {stage}, LoRA r=64 α=128 on all 7 projections: "
                              f"{layout_text(layout)}.")
            recipes[name] = recipe
    return recipes


RECIPES = _recipes()
