"""Qwen2 / Qwen2.5: the Llama layer plus q/k/v biases (interleaved per query group like the
weights); no q/k norm.

RMSNorm eps 1e-6 (1e-5 for 32B, read from config.json). Models up to 3B tie embeddings.
"""

from msm_megatron.architectures._base import Architecture
from msm_megatron.weight_mapping import (
    LLAMA_LAYER,
    LLAMA_LM_HEAD,
    LLAMA_TOP,
    ArchSpec,
    FusedQKV,
)

ARCH = Architecture(
    name="qwen2",
    hf_class="Qwen2ForCausalLM",
    qkv_bias=True,
    qk_norm=False,
    hf_off_flags={"use_sliding_window": "sliding-window attention is not modelled"},
    weights=ArchSpec(
        model_type="qwen2",
        layer=LLAMA_LAYER + (
            FusedQKV("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias",
                     "self_attention.linear_qkv.bias", bias=True),
        ),
        top=LLAMA_TOP,
        lm_head=LLAMA_LM_HEAD,
        # GQA 4:1, biases, vocab not a multiple of 128
        toy_hf_config={
            "model_type": "qwen2", "vocab_size": 333, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1,
            "max_position_embeddings": 128, "rope_theta": 1000000.0, "rms_norm_eps": 1e-5,
            "tie_word_embeddings": False,
        },
    ),
)
