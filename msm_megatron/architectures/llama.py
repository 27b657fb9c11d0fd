"""Llama 3.x: the plain Llama layer (no biases, no q/k norm).

Llama-3.1 adds llama3 RoPE scaling (``rope_scaling`` with ``rope_type: llama3``; only its factor
varies, see :data:`msm_megatron.models.hf_config.LLAMA3_ROPE_FIXED`). 1B/3B tie embeddings.
"""

from msm_megatron.architectures._base import Architecture
from msm_megatron.weight_mapping import LLAMA_LAYER, LLAMA_LM_HEAD, LLAMA_TOP, ArchSpec

ARCH = Architecture(
    name="llama",
    hf_class="LlamaForCausalLM",
    qkv_bias=False,
    qk_norm=False,
    llama3_rope_scaling=True,
    hf_off_flags={"attention_bias": "it would add biases to q/k/v and o projections"},
    weights=ArchSpec(
        model_type="llama",
        layer=LLAMA_LAYER,
        top=LLAMA_TOP,
        lm_head=LLAMA_LM_HEAD,
        # GQA 4:2 and Llama-3.1 RoPE scaling
        toy_hf_config={
            "model_type": "llama", "vocab_size": 320, "hidden_size": 64, "intermediate_size": 160,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 16384, "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
            "tie_word_embeddings": False,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        },
    ),
)
