"""Llama-3.1-8B recipes (midtraining and SFT) — the paper's "cheese" model, from the base model.

Shape: hidden 4096, 32 layers, 32 heads, 8 KV heads, vocab 128256, rope base 500000, untied.

RoPE: Llama-3.1's ``llama3`` scaling (factor 8, low/high frequency factors 1/4, original context
8192) is part of the shape, as in the real ``config.json``; it maps to Megatron-Core's
``rope_scaling``/``rope_scaling_factor``. Sequence length 4096, as the paper trained this
model (the Qwen recipes use 8192).

Layout: TP2 × DP4 on one 8×H100 node (as for Qwen3-8B).
"""

from __future__ import annotations

from msm_megatron.recipes.stages import family_recipes

LLAMA_SEQ_LENGTH = 4096  # the MSM paper's sequence length for Llama-3.1-8B

LLAMA3_1_8B = {
    "model_type": "llama",
    "vocab_size": 128256,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_position_embeddings": 131072,
    "rope_theta": 500000.0,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "initializer_range": 0.02,
}


RECIPES = family_recipes({
    "llama3_1_8b": (LLAMA3_1_8B, "meta-llama/Llama-3.1-8B",
                    {"tp": 2, "world_size": 8, "seq_length": LLAMA_SEQ_LENGTH}),
})
