"""Core attention for Megatron's local (non-TE) layer spec that understands packed sequences.

Megatron-Core's ``DotProductAttention`` refuses THD packed sequences ("use TEDotProductAttention").
:class:`PackedDotProductAttention` accepts them: it turns ``PackedSeqParams.cu_seqlens_q`` into a
block-diagonal causal mask (a token attends only to earlier tokens of its own sequence) and runs
Megatron's own unfused attention on that mask. GPTModel's real THD path (per-sequence rotary
positions from ``cu_seqlens``) runs unchanged, so packed training equals training each sequence on
its own. Without packed params it is exactly Megatron's ``DotProductAttention``.

This is the exact reference path (CPU tests, GPU without TE); it materializes the t×t score matrix.
With Transformer Engine the TE spec's fused attention handles ``cu_seqlens`` natively.
"""

from __future__ import annotations

import torch
from megatron.core.packed_seq_params import PackedSeqParams
from megatron.core.transformer.dot_product_attention import DotProductAttention


def packed_causal_mask(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """``[1, 1, t, t]`` bool mask, True where attention is *not* allowed (Megatron's convention).

    Tokens past ``cu_seqlens[-1]`` (padding) form one more segment of their own.
    """
    cu = cu_seqlens.to(torch.long)
    lengths = torch.diff(cu)
    if int(cu[-1]) < total:
        lengths = torch.cat([lengths, lengths.new_tensor([total - int(cu[-1])])])
    segment = torch.repeat_interleave(torch.arange(len(lengths), device=cu.device), lengths)
    pos = torch.arange(total, device=cu.device)
    blocked = (segment[:, None] != segment[None, :]) | (pos[None, :] > pos[:, None])
    return blocked[None, None]


class PackedDotProductAttention(DotProductAttention):
    """Megatron's unfused attention plus THD packed sequences via a block-diagonal mask."""

    def forward(self, query, key, value, attention_mask, attn_mask_type=None,
                attention_bias=None, packed_seq_params: PackedSeqParams | None = None):
        if packed_seq_params is None:
            return super().forward(query, key, value, attention_mask, attn_mask_type,
                                   attention_bias, None)
        if packed_seq_params.qkv_format != "thd":
            raise ValueError(f"packed_seq_params.qkv_format={packed_seq_params.qkv_format!r}: "
                             "only 'thd' is supported")
        total = query.size(0)  # THD: [t, heads, head_dim] (the batch dim was squeezed)
        cu = packed_seq_params.cu_seqlens_q_padded
        cu = packed_seq_params.cu_seqlens_q if cu is None else cu
        mask = packed_causal_mask(cu, total)
        out = super().forward(query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1), mask,
                              attn_mask_type, attention_bias, None)
        return out.squeeze(1)  # [t, hidden/tp]; Attention reshapes to [t, 1, hidden/tp]
