"""Build Megatron-Core ``GPTModel``s from our small :class:`ModelConfig`.

This is the only module that talks to Megatron's ``TransformerConfig``. Qwen3, Qwen2/2.5 and Llama
are all pre-norm RMSNorm decoders with SwiGLU MLPs and RoPE; they differ in q/k RMSNorm (Qwen3),
QKV bias (Qwen2), head_dim ≠ hidden/heads (Qwen3) and tied embeddings (small models) — all of
which are fields of ``ModelConfig``.

Layer spec: Transformer Engine when importable and ``train.spec`` is ``auto``/``te``; Megatron's
local spec otherwise. FP8 needs TE: asking for it without TE is an error, never a silent bf16 run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from msm_megatron._compat.te import te_available
from msm_megatron.config import Config, ConfigError
from msm_megatron.models.vocab import padded_vocab_size

PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Megatron's fp8 format per recipe: "hybrid" = e4m3 forward, e5m2 backward.
FP8_FORMAT = {"delayed": "hybrid", "tensorwise": "hybrid", "blockwise": "e4m3", "mxfp8": "e4m3"}


def use_te_spec(cfg: Config) -> bool:
    """Whether to build with Transformer Engine layers."""
    if cfg.train.spec == "te" and not te_available():
        raise ConfigError(
            "train.spec=te but Transformer Engine is not importable; use train.spec=auto")
    return cfg.train.spec != "local" and te_available()


def fp8_fields(cfg: Config) -> dict:
    """Megatron ``TransformerConfig`` FP8 fields for ``train.fp8`` (empty when FP8 is off)."""
    recipe = cfg.train.fp8
    if recipe is None:
        return {}
    if not te_available():
        raise ConfigError(
            f"train.fp8={recipe} needs Transformer Engine, which is not importable here. "
            "Without TE Megatron would silently train in full precision. Use the NGC PyTorch "
            "container (docs/install.md) or set train.fp8=null."
        )
    fields = {"fp8": FP8_FORMAT[recipe], "fp8_recipe": recipe}
    if cfg.train.fp8_first_last_bf16:
        fields.update(first_last_layers_bf16=True, num_layers_at_start_in_bf16=1,
                      num_layers_at_end_in_bf16=1)
    return fields


def _recompute_fields(cfg: Config) -> dict:
    mode = cfg.train.recompute
    if mode == "none":
        return {}
    if mode == "selective":
        return {"recompute_granularity": "selective"}
    return {"recompute_granularity": "full", "recompute_method": "uniform",
            "recompute_num_layers": cfg.train.recompute_num_layers}


def transformer_config(cfg: Config):
    """Megatron ``TransformerConfig`` for this run's model, layout and precision."""
    from megatron.core.transformer.transformer_config import TransformerConfig

    m, p, t = cfg.model, cfg.parallel, cfg.train
    dtype = PRECISION_DTYPES[t.precision]
    on_cpu = not torch.cuda.is_available()
    return TransformerConfig(
        num_layers=m.num_layers, hidden_size=m.hidden_size, ffn_hidden_size=m.intermediate_size,
        num_attention_heads=m.num_attention_heads, num_query_groups=m.num_key_value_heads,
        kv_channels=m.kv_channels, normalization="RMSNorm", layernorm_epsilon=m.rms_norm_eps,
        gated_linear_unit=True, activation_func=F.silu, add_bias_linear=False,
        add_qkv_bias=m.qkv_bias, qk_layernorm=m.qk_norm, hidden_dropout=0.0,
        attention_dropout=0.0, init_method_std=m.init_method_std,
        tensor_model_parallel_size=p.tp, pipeline_model_parallel_size=p.pp,
        virtual_pipeline_model_parallel_size=p.vpp, context_parallel_size=p.cp,
        sequence_parallel=p.sequence_parallel, params_dtype=dtype, pipeline_dtype=dtype,
        bf16=t.precision == "bf16", fp16=t.precision == "fp16", use_cpu_initialization=on_cpu,
        bias_dropout_fusion=False, apply_rope_fusion=False,
        # train.fused_swiglu: Megatron's fused silu(gate)·up (and its backward) in one kernel
        bias_activation_fusion=t.fused_swiglu,
        # Megatron's fused softmax needs Megatron-LM's compiled `scaled_*_softmax_cuda` kernels
        # (not in megatron-core) and, for causal masks, ignores the attention mask — which would
        # let packed documents attend to each other. Fast attention is CoreAttention's job.
        masked_softmax_fusion=False,
        gradient_accumulation_fusion=False, persist_layer_norm=False,
        cross_entropy_loss_fusion=False, calculate_per_token_loss=True,
        # gloo matches same-peer messages in posting order, so Megatron's batched P2P (which posts
        # recv_prev before recv_next) swaps activations and gradients when prev == next (pp=2,
        # interleaved). The unbatched path uses distinct groups per direction: exact on gloo.
        batch_p2p_comm=not on_cpu, deallocate_pipeline_outputs=True,
        **_recompute_fields(cfg), **fp8_fields(cfg), **cuda_graph_fields(cfg),
    )


def cuda_graph_fields(cfg: Config) -> dict:
    """Megatron ``TransformerConfig`` fields for ``train.cuda_graphs``: Megatron-Core's own
    ("local") CUDA graphs, one per transformer layer, captured after the first steps."""
    if not cfg.train.cuda_graphs:
        return {}
    if not torch.cuda.is_available():
        raise ConfigError("train.cuda_graphs=true needs a CUDA device (CUDA graphs replay GPU "
                          "kernels); set train.cuda_graphs=false on this machine")
    return {"cuda_graph_impl": "local"}


def compile_layers(cfg: Config, model) -> None:
    """``train.compile``: ``torch.compile`` each transformer layer in place (``Module.compile``,
    so parameter names and checkpoints are unchanged). Inductor fuses the layer's elementwise
    work (RMSNorm, RoPE, SwiGLU, residual adds) around the matmuls and the attention kernel."""
    if not cfg.train.compile or model.decoder is None:
        return
    layers = list(model.decoder.layers)
    # Dynamo may specialize per layer (each layer's own attributes, e.g. layer_number); past
    # recompile_limit it would silently run the remaining layers eagerly.
    limit = 4 * cfg.model.num_layers + 8
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, limit)
    for layer in layers:
        layer.compile()


def layer_spec(cfg: Config):
    """The transformer-layer spec: TE when available (and allowed), local otherwise.

    The local spec's core attention is :class:`~msm_megatron.models.attention.CoreAttention`
    running ``train.attention`` (unfused reference, SDPA-flash, varlen or flex; packed-aware).
    TE's own fused attention serves the TE spec.
    """
    from megatron.core.models.gpt import gpt_layer_specs as specs

    if use_te_spec(cfg):
        if cfg.train.attention != "auto":
            raise ConfigError(
                f"train.attention={cfg.train.attention} selects the local spec's kernel, but "
                "this run uses Transformer Engine's fused attention (train.spec="
                f"{cfg.train.spec}); set train.attention=auto or train.spec=local")
        return specs.get_gpt_layer_with_transformer_engine_spec(qk_layernorm=cfg.model.qk_norm)
    from msm_megatron.models.attention import core_attention_builder

    spec = specs.get_gpt_layer_local_spec(qk_layernorm=cfg.model.qk_norm, normalization="RMSNorm")
    spec.submodules.self_attention.submodules.core_attention = core_attention_builder(
        cfg.train.attention, rope_settings(cfg))
    if cfg.lora.rank:
        _add_lora(spec, cfg)
    return spec


def rope_settings(cfg: Config):
    """The model's RoPE (:class:`~msm_megatron.models.attention.Rope`): what CoreAttention applies
    on the local spec and what GPTModel's own rotary gets on the TE spec."""
    from msm_megatron.models.attention import Rope

    m = cfg.model
    return Rope(kv_channels=m.kv_channels, base=m.rope_theta,
                max_positions=m.max_position_embeddings,
                scaling=m.rope_scaling_factor is not None,
                scaling_factor=m.rope_scaling_factor or 8.0)


def _add_lora(spec, cfg: Config) -> None:
    """Swap the four linears of the local spec for their LoRA versions (models/lora.py)."""
    import functools

    from msm_megatron.flops import projection_shapes
    from msm_megatron.models import lora

    shapes = tuple((p, i, o) for p, (i, o) in projection_shapes(cfg.model).items())
    settings = lora.LoRASettings(rank=cfg.lora.rank, alpha=cfg.lora.alpha, shapes=shapes,
                                 targets=tuple(cfg.lora.targets), seed=cfg.lora.seed)
    attn, mlp = spec.submodules.self_attention.submodules, spec.submodules.mlp
    # megatron-core 0.19 wraps the MLP as partial(MLP.as_mlp_submodule, submodules=...)
    mlp = mlp.keywords["submodules"] if isinstance(mlp, functools.partial) else mlp.submodules
    for holder, name, cls in ((attn, "linear_qkv", lora.LoRAColumnParallelLinear),
                              (attn, "linear_proj", lora.LoRARowParallelLinear),
                              (mlp, "linear_fc1", lora.LoRAColumnParallelLinear),
                              (mlp, "linear_fc2", lora.LoRARowParallelLinear)):
        setattr(holder, name, functools.partial(cls, lora=settings, fused_name=name))


def build_model_chunks(cfg: Config) -> list:
    """This rank's model chunks (one per virtual pipeline stage), unwrapped, on the device.

    Must be called after :func:`msm_megatron.distributed.init_distributed`.
    """
    from megatron.core import parallel_state as ps
    from megatron.core.models.gpt import GPTModel

    tconf = transformer_config(cfg)
    spec = layer_spec(cfg)
    # Local spec: RoPE is applied inside CoreAttention (per-token positions, no host syncs);
    # TE spec: Megatron's rotary (TE's fused kernels, THD included).
    rope_type = "rope" if use_te_spec(cfg) else "none"
    rope = rope_settings(cfg)
    vocab = padded_vocab_size(cfg.model, cfg.parallel.tp)
    chunks = []
    for vp_stage in range(cfg.parallel.vpp or 1):
        vp = vp_stage if cfg.parallel.vpp else None
        model = GPTModel(
            config=tconf, transformer_layer_spec=spec, vocab_size=vocab,
            max_sequence_length=cfg.model.max_position_embeddings,
            pre_process=ps.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp),
            post_process=ps.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp),
            share_embeddings_and_output_weights=cfg.model.tie_word_embeddings,
            position_embedding_type=rope_type, rotary_base=int(rope.base),
            rope_scaling=rope.scaling, rope_scaling_factor=rope.scaling_factor,
            parallel_output=True, vp_stage=vp,
        )
        if cfg.lora.rank:
            from msm_megatron.models.lora import prepare_lora_model

            prepare_lora_model(model)
        if torch.cuda.is_available():
            model.cuda(torch.cuda.current_device())
        compile_layers(cfg, model)
        chunks.append(model)
    return chunks
