"""Where a LoRA run's base weights come from, and how stages chain (docs/lora.md).

A LoRA run's checkpoints hold adapters (and their optimizer state) only. What they sit on is its
**base chain**, written once per run to ``<run_dir>/checkpoints/lora_base.json``::

    {"base": "<checkpoint the base weights came from, or null = seeded random init>",
     "merged": ["<adapter checkpoints merged into the base, in order>"]}

Resuming rebuilds the base from the chain, then loads the run's own adapters. A new stage with
``checkpoint.load=<a LoRA run>`` takes that run's chain and either continues its adapter
(``lora.on_load=continue``, the paper's AFT-after-midtraining) or merges it into the base and
starts a new adapter at B = 0 (``lora.on_load=merge``, the chain grows by one).
"""

from __future__ import annotations

from pathlib import Path

import torch.distributed as dist

from msm_megatron.config import Config
from msm_megatron.models.weights import load_adapter_weights, load_model_weights
from msm_megatron.run_files import is_adapter_checkpoint, read_chain, write_chain_file


def write_chain(ckpt_root: Path, chain: dict) -> None:
    """Rank 0 writes the run's ``lora_base.json`` (:mod:`msm_megatron.run_files`)."""
    if dist.get_rank() == 0:
        write_chain_file(ckpt_root, chain)


def restore_base(chunks, chain: dict) -> None:
    """Base weights, then every merged adapter folded in (the adapters end at B = 0)."""
    from megatron.core.utils import unwrap_model

    from msm_megatron.models.lora import merge_adapters

    if chain["base"]:
        load_model_weights(chunks, Path(chain["base"]))
    for adapter in chain["merged"]:
        load_adapter_weights(chunks, Path(adapter))
        for model in unwrap_model(chunks):
            merge_adapters(model)


def start(cfg: Config, chunks, source: Path) -> tuple[dict, str]:
    """Initialise a new LoRA run from ``checkpoint.load``; returns its chain and a note."""
    from megatron.core.utils import unwrap_model

    from msm_megatron.models.lora import merge_adapters, reset_adapters

    if not is_adapter_checkpoint(source):
        load_model_weights(chunks, source)
        return {"base": str(Path(source).resolve()), "merged": []}, f"base weights from {source}"
    parent = read_chain(source)
    restore_base(chunks, parent)
    load_adapter_weights(chunks, source)
    if cfg.lora.on_load == "continue":
        return parent, f"continuing the LoRA adapter of {source}"
    for model in unwrap_model(chunks):
        merge_adapters(model)
        reset_adapters(model)
    return ({"base": parent["base"], "merged": [*parent["merged"], str(Path(source).resolve())]},
            f"merged the LoRA adapter of {source} into the base; training a new adapter")
