"""Qwen2.5 recipes (7B, 14B, 32B; midtraining and SFT), ``model_type`` ``qwen2``.

As in the paper, runs start from the post-trained ``Qwen/Qwen2.5-*-Instruct`` checkpoints (same
shapes as the base models). Qwen2.5 has qkv bias and no q/k norm; head_dim = hidden/heads = 128,
so the field is absent from its ``config.json``. All three are untied with vocab 152064. Layouts
target 8×H100 80 GB nodes:

* 7B: TP2 × DP4 on one node (28 heads and 4 KV heads allow TP 1, 2 or 4).
* 14B: TP4 × DP2 on one node.
* 32B: TP8 × PP2 on two nodes (DP1), as for Qwen3-32B.
"""

from __future__ import annotations

from msm_megatron.recipes.stages import family_recipes

_COMMON = {
    "model_type": "qwen2",
    "vocab_size": 152064,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": False,
    "initializer_range": 0.02,
}
QWEN2_5_7B = {
    **_COMMON,
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-6,
}
QWEN2_5_14B = {
    **_COMMON,
    "hidden_size": 5120,
    "intermediate_size": 13824,
    "num_hidden_layers": 48,
    "num_attention_heads": 40,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-5,
}
QWEN2_5_32B = {
    **_COMMON,
    "hidden_size": 5120,
    "intermediate_size": 27648,
    "num_hidden_layers": 64,
    "num_attention_heads": 40,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-5,
}


RECIPES = family_recipes({
    "qwen2_5_7b": (QWEN2_5_7B, "Qwen/Qwen2.5-7B-Instruct", {"tp": 2, "world_size": 8}),
    "qwen2_5_14b": (QWEN2_5_14B, "Qwen/Qwen2.5-14B-Instruct", {"tp": 4, "world_size": 8}),
    "qwen2_5_32b": (QWEN2_5_32B, "Qwen/Qwen2.5-32B-Instruct",
                    {"tp": 8, "pp": 2, "world_size": 16}),
})
