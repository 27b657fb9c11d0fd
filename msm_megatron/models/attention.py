"""Core attention for Megatron's local (non-TE) layer spec: exact, packed-aware, and fast on GPU.

Megatron-Core's ``DotProductAttention`` materializes the full score matrix and refuses THD packed
sequences ("use TEDotProductAttention"). :class:`CoreAttention` replaces it in the local spec and
runs one of these kernels (``train.attention``):

============  ===============================================  =================================
kernel        plain causal batches (``sbhd``)                   packed sequences (``thd``)
============  ===============================================  =================================
``unfused``   Megatron's own (the exact reference)              the same on a block-diagonal mask
``sdpa``      ``scaled_dot_product_attention(is_causal)`` —     SDPA with a block-diagonal mask
              the flash kernel on GPU                           (efficient-attention kernel)
``varlen``    each row as one sequence of ``varlen_attn``       ``torch.nn.attention.varlen``:
                                                                flash attention over
                                                                ``cu_seqlens`` (CUDA only)
``flex``      ``flex_attention`` with a causal block mask       ``flex_attention`` with a
                                                                document block mask (compiled on
                                                                GPU; forward-only on CPU)
============  ===============================================  =================================

``auto`` (the default) picks per input form: on CUDA, SDPA-flash for plain batches and
``varlen`` for packed ones (``flex`` where this torch has no ``varlen_attn``, masked SDPA where it
has neither); on CPU the unfused reference, which the equivalence tests are built on. See
:func:`resolve_kernel`. Every kernel computes the same function
(``tests/integration/test_attention_kernels.py`` compares each with the unfused reference), and
packed training equals training each sequence on its own.

**Rotary embeddings live here too** (local spec only: GPTModel is built with
``position_embedding_type="none"``). Megatron's THD rotary path applies RoPE one packed sequence at
a time, with ``.tolist()``/``.item()`` host syncs — about 36 kernel launches per sequence per layer,
which on an H100 made a 0.6B model CPU-bound (GPU busy ≈ 40% of the step). Here the per-token
position (restarting at each ``cu_seqlens`` boundary) indexes Megatron's own frequency table
(``RotaryEmbedding.get_emb``, so Llama-3 scaling and the base are Megatron's), cos/sin are built
once per micro-batch, and every layer applies Megatron's formula
(``x·cos + rotate_half(x)·sin``) in one shot, without host syncs.

With Transformer Engine the TE spec's fused attention (and TE's fused THD RoPE) handle
``cu_seqlens`` themselves and this module is not used.
"""

from __future__ import annotations

import functools
import inspect
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from megatron.core.packed_seq_params import PackedSeqParams
from megatron.core.transformer.dot_product_attention import DotProductAttention

KERNELS = ("auto", "unfused", "sdpa", "varlen", "flex")


# ----------------------------------------------------------------------------- kernel choice


@functools.cache
def varlen_attn_fn():
    """PyTorch's ``varlen_attn`` (torch ≥ 2.10), or None when this torch lacks it."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


@functools.cache
def flex_attention_fn(device_type: str):
    """``flex_attention`` for a device: compiled on CUDA (its fast form), eager on CPU."""
    try:
        from torch.nn.attention.flex_attention import flex_attention
    except ImportError:
        return None
    return torch.compile(flex_attention, dynamic=False) if device_type == "cuda" else flex_attention


def resolve_kernel(requested: str, device_type: str, packed: bool) -> str:
    """The kernel that runs for one input form.

    Args:
        requested: ``train.attention`` (one of :data:`KERNELS`).
        device_type: ``"cuda"`` or ``"cpu"``.
        packed: whether the micro-batch is THD packed (``cu_seqlens``).

    Returns:
        ``"unfused"``, ``"sdpa"``, ``"varlen"`` or ``"flex"``.

    Raises:
        ValueError: a kernel that cannot run here (``varlen`` off CUDA or on a torch without
            ``varlen_attn``; ``flex`` on a torch without ``flex_attention``).
    """
    if requested not in KERNELS:
        raise ValueError(f"train.attention={requested!r}: expected one of {KERNELS}")
    if requested == "varlen" and (device_type != "cuda" or varlen_attn_fn() is None):
        raise ValueError(
            "train.attention=varlen needs a CUDA GPU and torch>=2.10 (torch.nn.attention.varlen);"
            f" this process has device {device_type!r}, torch {torch.__version__}. "
            "Use train.attention=auto.")
    if requested == "flex" and flex_attention_fn(device_type) is None:
        raise ValueError(f"train.attention=flex: torch {torch.__version__} has no "
                         "flex_attention; use train.attention=auto")
    if requested != "auto":
        return requested
    if device_type != "cuda":
        return "unfused"
    if not packed:
        return "sdpa"
    if varlen_attn_fn() is not None:
        return "varlen"
    return "flex" if flex_attention_fn(device_type) is not None else "sdpa"


# ----------------------------------------------------------------------------- masks


def document_ids(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """Sequence index of each of ``total`` tokens; tokens past ``cu_seqlens[-1]`` form one more.

    ``searchsorted`` on the device: no host sync (``repeat_interleave`` would need one).
    """
    cu = cu_seqlens.to(torch.long)
    return torch.searchsorted(cu, torch.arange(total, device=cu.device), right=True) - 1


def packed_positions(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """Position of each token within its own sequence (restarting at every boundary)."""
    cu = cu_seqlens.to(torch.long)
    return torch.arange(total, device=cu.device) - cu[document_ids(cu, total)]


def packed_causal_mask(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """``[1, 1, t, t]`` bool mask, True where attention is *not* allowed (Megatron's convention).

    A token attends only to earlier tokens of its own sequence.
    """
    segment = document_ids(cu_seqlens, total)
    pos = torch.arange(total, device=segment.device)
    blocked = (segment[:, None] != segment[None, :]) | (pos[None, :] > pos[:, None])
    return blocked[None, None]


class _PerBatchCache:
    """Objects derived from one micro-batch's ``PackedSeqParams``, shared by all its layers.

    Keyed by object identity (a weak reference), so a new micro-batch never sees stale values.
    """

    def __init__(self):
        self._key = None
        self._values: dict = {}

    # Never traced by torch.compile (train.compile): a compiled layer would capture the first
    # micro-batch's cached mask / RoPE tables as constants and reuse them for the next batches.
    # Called eagerly, the lookup hands each micro-batch's tensors to the compiled graph as inputs.
    @torch.compiler.disable
    def get(self, owner, tag, build):
        key = self._key() if self._key is not None else None
        if key is not owner:
            self._key, self._values = weakref.ref(owner), {}
        if tag not in self._values:
            self._values[tag] = build()
        return self._values[tag]


_CACHE = _PerBatchCache()


def _device_cu(params: PackedSeqParams, device) -> torch.Tensor:
    cu = params.cu_seqlens_q_padded
    cu = params.cu_seqlens_q if cu is None else cu
    return cu.to(device=device, dtype=torch.int32, non_blocking=True)


def _flex_block_mask(cu: torch.Tensor | None, total: int, device) -> object:
    from torch.nn.attention.flex_attention import create_block_mask

    if cu is None:
        def causal(b, h, q, k):
            return q >= k
        return create_block_mask(causal, None, None, total, total, device=device)
    doc = document_ids(cu, total)

    def same_document_causal(b, h, q, k):
        return (doc[q] == doc[k]) & (q >= k)
    return create_block_mask(same_document_causal, None, None, total, total, device=device)


@functools.cache
def _flex_causal_mask(total: int, device: str):
    return _flex_block_mask(None, total, device)


# ----------------------------------------------------------------------------- rotary


@dataclass(frozen=True)
class Rope:
    """RoPE settings of a model (what GPTModel's ``RotaryEmbedding`` would get)."""

    kv_channels: int
    base: float
    max_positions: int
    scaling: bool = False
    scaling_factor: float = 8.0


@functools.lru_cache(maxsize=8)
def rope_freqs(rope: Rope, device: str) -> torch.Tensor:
    """``[max_positions, head_dim]`` fp32 angles from Megatron's ``RotaryEmbedding``."""
    from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding

    table = RotaryEmbedding(kv_channels=rope.kv_channels, rotary_percent=1.0,
                            rotary_base=rope.base, rope_scaling=rope.scaling,
                            rope_scaling_factor=rope.scaling_factor,
                            use_cpu_initialization=True).get_emb(rope.max_positions)
    return table.view(rope.max_positions, -1).to(device)


def _cos_sin(freqs: torch.Tensor, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cos(freqs).to(dtype), torch.sin(freqs).to(dtype)


@functools.lru_cache(maxsize=16)
def _plain_cos_sin(rope: Rope, length: int, device: str, dtype) -> tuple:
    """cos/sin ``[s, 1, 1, d]`` for positions ``0..s-1`` (plain batches)."""
    return _cos_sin(rope_freqs(rope, device)[:length, None, None, :], dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Megatron's non-interleaved RoPE: ``x·cos + rotate_half(x)·sin``."""
    x1, x2 = torch.chunk(x, 2, dim=-1)
    return (x * cos) + (torch.cat((-x2, x1), dim=-1) * sin)


# ----------------------------------------------------------------------------- the module


def _expand_kv(x: torch.Tensor, groups: int, heads_dim: int) -> torch.Tensor:
    """Repeat each KV head for its ``groups`` query heads (kernels without GQA support)."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=heads_dim)


class CoreAttention(DotProductAttention):
    """Megatron's ``DotProductAttention`` interface with selectable fast kernels (module doc)."""

    def __init__(self, *args, kernel: str = "auto", rope: Rope | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.rope = rope
        if kernel not in KERNELS:
            raise ValueError(f"train.attention={kernel!r}: expected one of {KERNELS}")
        self.kernel = kernel
        if self.config.attention_dropout:
            raise ValueError("CoreAttention runs without attention dropout "
                             f"(attention_dropout={self.config.attention_dropout})")

    @property
    def _groups(self) -> int:
        return self.num_attention_heads_per_partition // self.num_query_groups_per_partition

    def forward(self, query, key, value, attention_mask, attn_mask_type=None,
                attention_bias=None, packed_seq_params: PackedSeqParams | None = None):
        if attention_bias is not None:
            raise ValueError("attention_bias is not supported by CoreAttention")
        packed = packed_seq_params is not None
        if packed and packed_seq_params.qkv_format != "thd":
            raise ValueError(f"packed_seq_params.qkv_format={packed_seq_params.qkv_format!r}: "
                             "only 'thd' is supported")
        kernel = resolve_kernel(self.kernel, query.device.type, packed)
        cu = None
        if packed:  # one device copy of the boundaries per micro-batch, shared by all layers
            cu = _CACHE.get(packed_seq_params, "cu", lambda: _device_cu(packed_seq_params,
                                                                        query.device))
        if self.rope is not None:
            query, key = self._rotate(query, key, cu, packed_seq_params)
        if kernel == "unfused":
            return self._unfused(query, key, value, attention_mask, attn_mask_type, cu,
                                 packed_seq_params)
        if packed:
            run = {"sdpa": self._sdpa_packed, "varlen": self._varlen, "flex": self._flex}[kernel]
            return run(query, key, value, cu, packed_seq_params.max_seqlen_q, packed_seq_params)
        return self._plain(kernel, query, key, value, attention_mask)

    def _rotate(self, query, key, cu, batch):
        """RoPE on q and k: positions 0..s-1 (plain) or restarting per sequence (packed)."""
        device = str(query.device)
        if cu is None:
            cos, sin = _plain_cos_sin(self.rope, query.size(0), device, query.dtype)
        else:
            total = query.size(0)

            def build():
                positions = packed_positions(cu, total)
                return _cos_sin(rope_freqs(self.rope, device)[positions, None, :], query.dtype)
            cos, sin = _CACHE.get(batch, ("rope", query.dtype), build)
        return apply_rope(query, cos, sin), apply_rope(key, cos, sin)

    # -- reference ---------------------------------------------------------------------------

    # The exact reference, not a fast path: left to eager under train.compile (Megatron's
    # DotProductAttention does not trace with the dynamic shapes of packed rows).
    @torch.compiler.disable
    def _unfused(self, query, key, value, attention_mask, attn_mask_type, cu, batch):
        if cu is None:
            return super().forward(query, key, value, attention_mask, attn_mask_type, None, None)
        total = query.size(0)  # THD: [t, heads, head_dim] (the batch dim was squeezed)
        mask = _CACHE.get(batch, "mask", lambda: packed_causal_mask(cu, total))
        out = super().forward(query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1), mask,
                              attn_mask_type, None, None)
        return out.squeeze(1)  # [t, hidden/tp]; Attention reshapes to [t, 1, hidden/tp]

    # -- plain [s, b, h, d] batches ------------------------------------------------------------

    def _plain(self, kernel, query, key, value, attention_mask):
        sq, b = query.shape[:2]
        if kernel == "varlen":
            # each row is one sequence: [s, b, h, d] -> [b*s, h, d]
            def rows(x):
                return x.transpose(0, 1).reshape(b * x.shape[0], x.shape[2], x.shape[3])
            cu = torch.arange(0, (b + 1) * sq, sq, device=query.device, dtype=torch.int32)
            out = self._varlen(rows(query), rows(key), rows(value), cu, sq)
            return out.view(b, sq, -1).transpose(0, 1).contiguous()
        # [s, b, h, d] -> [b, h, s, d]
        q, k, v = (x.permute(1, 2, 0, 3) for x in (query, key, value))
        if kernel == "flex":
            if attention_mask is not None:
                raise ValueError("train.attention=flex takes no explicit attention mask")
            block = _flex_causal_mask(sq, str(query.device))
            out = flex_attention_fn(query.device.type)(q, k, v, block_mask=block,
                                                       scale=self.softmax_scale,
                                                       enable_gqa=self._groups > 1)
        elif attention_mask is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                 scale=self.softmax_scale,
                                                 enable_gqa=self._groups > 1)
        else:
            k, v = _expand_kv(k, self._groups, 1), _expand_kv(v, self._groups, 1)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=~attention_mask,
                                                 scale=self.softmax_scale)
        # [b, h, s, d] -> [s, b, h*d]
        return out.permute(2, 0, 1, 3).reshape(sq, b, -1)

    # -- packed [t, h, d] sequences --------------------------------------------------------------

    def _sdpa_packed(self, query, key, value, cu, max_seqlen, batch):
        total = query.size(0)
        allowed = _CACHE.get(batch, "allowed", lambda: ~packed_causal_mask(cu, total))
        # [t, h, d] -> [1, h, t, d]; the efficient kernel takes a mask but not GQA: expand k/v
        q, k, v = (x.transpose(0, 1).unsqueeze(0) for x in (query, key, value))
        k, v = _expand_kv(k, self._groups, 1), _expand_kv(v, self._groups, 1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=self.softmax_scale)
        return out.squeeze(0).transpose(0, 1).reshape(total, -1)

    def _flex(self, query, key, value, cu, max_seqlen, batch):
        total = query.size(0)
        block = _CACHE.get(batch, "flex", lambda: _flex_block_mask(cu, total, query.device))
        q, k, v = (x.transpose(0, 1).unsqueeze(0) for x in (query, key, value))
        out = flex_attention_fn(query.device.type)(q, k, v, block_mask=block,
                                                   scale=self.softmax_scale,
                                                   enable_gqa=self._groups > 1)
        return out.squeeze(0).transpose(0, 1).reshape(total, -1)

    def _varlen(self, query, key, value, cu, max_seqlen, batch=None):
        fn = varlen_attn_fn()
        params = _varlen_params()
        kwargs = {"scale": self.softmax_scale}
        if "window_size" in params:
            kwargs["window_size"] = (-1, 0)  # causal (torch >= 2.11)
        else:
            kwargs["is_causal"] = True  # torch 2.10
        if self._groups > 1:
            if "enable_gqa" in params:
                kwargs["enable_gqa"] = True
            else:
                key, value = _expand_kv(key, self._groups, 1), _expand_kv(value, self._groups, 1)
        query, key, value = query.contiguous(), key.contiguous(), value.contiguous()
        out = fn(query, key, value, cu, cu, int(max_seqlen), int(max_seqlen), **kwargs)
        return out.reshape(query.size(0), -1)


@functools.cache
def _varlen_params() -> frozenset:
    return frozenset(inspect.signature(varlen_attn_fn()).parameters)


def core_attention_builder(kernel: str, rope: Rope | None = None):
    """What the layer spec's ``core_attention`` slot takes: :class:`CoreAttention` with a kernel
    (and the model's RoPE, applied here instead of in Megatron's attention)."""
    return functools.partial(CoreAttention, kernel=kernel, rope=rope)
