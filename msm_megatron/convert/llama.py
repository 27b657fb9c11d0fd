"""Llama 3.x: the plain Llama layer (no biases, no q/k norm); Llama-3.1 adds llama3 RoPE scaling
(a config matter, see :mod:`msm_megatron.models.hf_config`). 1B/3B tie embeddings."""

from msm_megatron.convert.spec import LLAMA_LAYER, LLAMA_LM_HEAD, LLAMA_TOP, ArchSpec

ARCH = ArchSpec(
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
)
