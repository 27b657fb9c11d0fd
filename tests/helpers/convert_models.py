"""Tiny random HF models built with the real transformers classes, for the conversion tests."""

from __future__ import annotations

from pathlib import Path

import torch

from msm_megatron.convert import arch_spec


def save_random_hf_model(model_type: str, out: Path, tied: bool = False,
                         dtype: torch.dtype = torch.float32, init_std: float = 0.1,
                         seed: int = 0, max_shard_size: str | None = None, **overrides) -> Path:
    """``<model_type>``'s toy config (``ArchSpec.toy_hf_config``) as a random transformers model.

    ``init_std`` is larger than HF's 0.02 so logits are O(1) and attention is far from uniform:
    a permuted head or a swapped gate/up then changes the logits visibly.
    """
    import transformers

    fields = dict(arch_spec(model_type).toy_hf_config, tie_word_embeddings=tied,
                  initializer_range=init_std, **overrides)
    fields.pop("model_type")
    config = transformers.AutoConfig.for_model(model_type, **fields)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).to(dtype)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(out, **kwargs)
    return out
