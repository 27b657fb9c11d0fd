"""Parameter counts and model FLOPs per token (the numerator of MFU).

Pure arithmetic on :class:`~msm_megatron.config.ModelConfig`; no torch. The conventions follow
Megatron-LM / PaLM-style MFU accounting so our MFU is comparable with the numbers quoted in
public anchors (Qwen3-32B: 2.18e11 FLOPs/token at seq 4096, 2.43e11 at 8192; Qwen2.5-32B
2.08e11 at 4096).
"""

from __future__ import annotations

from msm_megatron.config import ModelConfig


def projection_shapes(model: ModelConfig) -> dict[str, tuple[int, int]]:
    """(in, out) features of each HF projection of one layer (``q_proj`` … ``down_proj``)."""
    h, d, i = model.hidden_size, model.kv_channels, model.intermediate_size
    q, kv = model.num_attention_heads * d, model.num_key_value_heads * d
    return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


def _weights(model: ModelConfig, projections: tuple[str, ...]) -> int:
    shapes = projection_shapes(model)
    return sum(shapes[p][0] * shapes[p][1] for p in projections)


def attention_params(model: ModelConfig) -> int:
    """Weights of one attention block's projections (q, k, v, o), GQA-aware, without biases."""
    return _weights(model, ("q_proj", "k_proj", "v_proj", "o_proj"))


def mlp_params(model: ModelConfig) -> int:
    """Weights of one gated (SwiGLU) MLP: gate, up and down projections."""
    return _weights(model, ("gate_proj", "up_proj", "down_proj"))


def layer_params(model: ModelConfig) -> int:
    """All parameters of one transformer layer: matmuls, two RMSNorms, q/k norms, qkv bias."""
    d = model.kv_channels
    total = attention_params(model) + mlp_params(model) + 2 * model.hidden_size
    if model.qk_norm:
        total += 2 * d
    if model.qkv_bias:
        total += (model.num_attention_heads + 2 * model.num_key_value_heads) * d
    return total


def param_count(model: ModelConfig, vocab_size: int | None = None) -> int:
    """Total parameters: embedding, layers, final norm and (when untied) the LM head.

    Args:
        model: The architecture.
        vocab_size: Vocabulary to count (default ``model.vocab_size``, the HF size; pass the
            padded size to count what Megatron allocates).

    Returns:
        The parameter count, e.g. Qwen3-32B ≈ 32.8e9 and Qwen3-8B ≈ 8.19e9.
    """
    vocab = model.vocab_size if vocab_size is None else vocab_size
    embedding = vocab * model.hidden_size
    head = 0 if model.tie_word_embeddings else embedding
    return embedding + model.num_layers * layer_params(model) + model.hidden_size + head


def matmul_params(model: ModelConfig) -> int:
    """Weights of the per-token matmuls: ``L · (P_attn + P_mlp) + h · V`` (LM head included)."""
    return (model.num_layers * (attention_params(model) + mlp_params(model))
            + model.hidden_size * model.vocab_size)


def model_flops_per_token(model: ModelConfig, seq_length: int) -> float:
    """Training FLOPs per token (forward + backward), the MFU numerator.

    Formula (per token, ``L`` layers, ``s`` = ``seq_length``, ``n`` query heads of width ``d``)::

        6 · (L · (P_attn + P_mlp) + h · V)  +  12 · L · s · n · d

    * ``6 · P``: each matmul weight costs 2 FLOPs/token forward and 4 backward. ``P_attn`` is the
      q, k, v, o projections with GQA and the true ``head_dim`` (Qwen3-32B: q width 64·128 = 8192
      ≠ hidden 5120); ``P_mlp`` is the three gated-MLP matrices; ``h · V`` is the LM head (counted
      even when tied: the matmul is still done). The embedding lookup, norms, biases and softmax
      are not counted.
    * ``12 · L · s · n · d``: attention scores ``QKᵀ`` and context ``AV``, each ``2·s·n·d``
      forward per token, times 3 for forward + backward. **No causal ½ factor** is applied (the
      Megatron/PaLM MFU convention, which the anchors use); the FLOPs a causal kernel really
      does are about half of this term.

    Args:
        model: The architecture (unpadded HF vocabulary is used).
        seq_length: Training sequence length ``s``.

    Returns:
        FLOPs per trained token.
    """
    matmul = matmul_params(model)
    attention = 12 * model.num_layers * seq_length * model.num_attention_heads * model.kv_channels
    return float(6 * matmul + attention)


def lora_param_count(model: ModelConfig, rank: int, targets=None) -> int:
    """LoRA adapter parameters of a whole model: ``L · Σ r·(in + out)`` over the targets
    (default: all seven projections). Qwen2.5-14B at r = 64: 275,251,200."""
    shapes = projection_shapes(model)
    return model.num_layers * sum(rank * sum(shapes[t]) for t in (targets or shapes))


def lora_flops_per_token(model: ModelConfig, seq_length: int, rank: int, targets=None) -> float:
    """Training FLOPs per token with a frozen base and LoRA adapters.

    The frozen matmuls cost 2 (forward) + 2 (input gradient) FLOPs per weight, not 6: no weight
    gradient is computed. Attention scores and the LM head's input gradient are as in
    :func:`model_flops_per_token`; each adapter weight costs the full 6.
    """
    full = model_flops_per_token(model, seq_length)
    return full - 2 * matmul_params(model) + 6 * lora_param_count(model, rank, targets)
