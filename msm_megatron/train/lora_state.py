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

import json
from pathlib import Path

import torch.distributed as dist

from msm_megatron.config import Config
from msm_megatron.train import checkpoint as ckpt

BASE_FILE = "lora_base.json"


def chain_file(path: Path) -> Path:
    """``lora_base.json`` of a checkpoints root or of one of its ``iter_*`` directories."""
    path = Path(path)
    return path.parent / BASE_FILE if path.name.startswith("iter_") else path / BASE_FILE


def is_adapter_checkpoint(path: Path) -> bool:
    return chain_file(path).exists()


def read_chain(path: Path) -> dict:
    return json.loads(chain_file(path).read_text())


def write_chain(ckpt_root: Path, chain: dict) -> None:
    if dist.get_rank() == 0:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        tmp = ckpt_root / (BASE_FILE + ".tmp")
        tmp.write_text(json.dumps(chain, indent=2))
        tmp.replace(ckpt_root / BASE_FILE)


def restore_base(chunks, chain: dict) -> None:
    """Base weights, then every merged adapter folded in (the adapters end at B = 0)."""
    from megatron.core.utils import unwrap_model

    from msm_megatron.models.lora import merge_adapters

    if chain["base"]:
        ckpt.load_model_weights(chunks, Path(chain["base"]))
    for adapter in chain["merged"]:
        ckpt.load_adapter_weights(chunks, Path(adapter))
        for model in unwrap_model(chunks):
            merge_adapters(model)


def start(cfg: Config, chunks, source: Path) -> tuple[dict, str]:
    """Initialise a new LoRA run from ``checkpoint.load``; returns its chain and a note."""
    from megatron.core.utils import unwrap_model

    from msm_megatron.models.lora import merge_adapters, reset_adapters

    if not is_adapter_checkpoint(source):
        ckpt.load_model_weights(chunks, source)
        return {"base": str(Path(source).resolve()), "merged": []}, f"base weights from {source}"
    parent = read_chain(source)
    restore_base(chunks, parent)
    ckpt.load_adapter_weights(chunks, source)
    if cfg.lora.on_load == "continue":
        return parent, f"continuing the LoRA adapter of {source}"
    for model in unwrap_model(chunks):
        merge_adapters(model)
        reset_adapters(model)
    return ({"base": parent["base"], "merged": [*parent["merged"], str(Path(source).resolve())]},
            f"merged the LoRA adapter of {source} into the base; training a new adapter")
