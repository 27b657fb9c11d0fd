"""Qwen3 (dense): the Llama layer plus q/k RMSNorm; no QKV bias.

``head_dim`` may differ from hidden/heads (Qwen3-32B: 64 heads × 128 = 8192 ≠ 5120) and defaults
to 128 when ``config.json`` omits it (``Qwen3Config``). Models up to 4B tie embeddings.
"""

from msm_megatron.architectures._base import Architecture
from msm_megatron.weight_mapping import (
    LLAMA_LAYER,
    LLAMA_LM_HEAD,
    LLAMA_TOP,
    ArchSpec,
    Rename,
)

ARCH = Architecture(
    name="qwen3",
    hf_class="Qwen3ForCausalLM",
    qkv_bias=False,
    qk_norm=True,
    hf_defaults={"head_dim": 128},
    hf_off_flags={"attention_bias": "it would add biases to q/k/v and o projections"},
    weights=ArchSpec(
        model_type="qwen3",
        layer=LLAMA_LAYER + (
            Rename("self_attn.q_norm.weight", "self_attention.q_layernorm.weight", ("head_dim",)),
            Rename("self_attn.k_norm.weight", "self_attention.k_layernorm.weight", ("head_dim",)),
        ),
        top=LLAMA_TOP,
        lm_head=LLAMA_LM_HEAD,
        # head_dim 32 ≠ 64/4, GQA 4:2 (tied and untied variants are made by the tests)
        toy_hf_config={
            "model_type": "qwen3", "vocab_size": 300, "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 32, "max_position_embeddings": 128, "rope_theta": 1000000.0,
            "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
        },
    ),
)
