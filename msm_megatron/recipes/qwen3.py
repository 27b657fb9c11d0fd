"""Qwen3 recipes (8B, 14B, 32B; midtraining and SFT) — the paper's headline family.

Shapes are the HF ``config.json`` values of the post-trained ``Qwen/Qwen3-*`` checkpoints (all
three are untied; q/k RMSNorm; ``head_dim`` 128 ≠ hidden/heads for 14B and 32B). Layouts target
8×H100 80 GB nodes; ``msm train <recipe> --dry-run`` prints the memory estimate:

* 8B: TP2 × DP4 on one node. TP1 would hold ≈57 GiB of weights, grads and sharded optimizer state
  and cannot sequence-parallelize the 8192-token activations; TP2 with sequence parallel leaves
  ample headroom and keeps TP inside NVLink.
* 14B: TP4 × DP2 on one node (40 heads and 8 KV heads divide by 4).
* 32B: TP8 × PP2 on two nodes (DP1): TP stays within a node, PP2 splits the 64 layers 32/32.
"""

from __future__ import annotations

from msm_megatron.recipes.stages import family_recipes

_COMMON = {
    "model_type": "qwen3",
    "vocab_size": 151936,
    "head_dim": 128,
    "max_position_embeddings": 40960,
    "rope_theta": 1000000,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "initializer_range": 0.02,
}
QWEN3_8B = {
    **_COMMON,
    "hidden_size": 4096,
    "intermediate_size": 12288,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
}
QWEN3_14B = {
    **_COMMON,
    "hidden_size": 5120,
    "intermediate_size": 17408,
    "num_hidden_layers": 40,
    "num_attention_heads": 40,
    "num_key_value_heads": 8,
}
QWEN3_32B = {
    **_COMMON,
    "hidden_size": 5120,
    "intermediate_size": 25600,
    "num_hidden_layers": 64,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
}


RECIPES = family_recipes({
    "qwen3_8b": (QWEN3_8B, "Qwen/Qwen3-8B", {"tp": 2, "world_size": 8}),
    "qwen3_14b": (QWEN3_14B, "Qwen/Qwen3-14B", {"tp": 4, "world_size": 8}),
    "qwen3_32b": (QWEN3_32B, "Qwen/Qwen3-32B", {"tp": 8, "pp": 2, "world_size": 16}),
})
