"""The declarative vocabulary of HF ⇄ Megatron weight mappings.

Each architecture file (:mod:`msm_megatron.architectures`: ``qwen3.py`` …) builds an
:class:`ArchSpec` from :class:`Mapping` objects; the conversion engine
(:mod:`msm_megatron.convert.engine`) does the rest.
Each mapping ties one Megatron tensor to one or more HF tensors and knows three things: the HF
shapes the model config implies (to catch a config that disagrees with the weights), how to build
the Megatron tensor from the HF ones, and the exact inverse. Shapes are written with symbolic
dimensions (:data:`DIMS`) so a mapping reads like the model's definition.

Importing this module does not import torch (the architecture registry sits below the planner,
which must stay torch-free); the tensor transforms import it when they run.

Megatron layouts handled here:

* **QKV** is one fused tensor, interleaved per query group: for each KV group ``g`` its
  ``H/G`` query heads, then ``k_g``, then ``v_g``. Qwen2's q/k/v biases interleave the same way.
  Megatron's TP sharding splits this tensor into contiguous blocks of whole groups.
* **Gated MLP** ``linear_fc1`` = ``[gate; up]`` as a global tensor; Megatron's dist-checkpoint
  factory keeps each TP rank's ``[gate_i; up_i]`` consistent with that global layout.
* **Vocabulary** rows are padded to :func:`~msm_megatron.models.vocab.padded_vocab_size` with
  zeros and cut back to ``vocab_size`` exactly on export.
* Layer-norm weights live inside the fused linear layers' keys (``linear_qkv.layer_norm_weight``),
  the names both Transformer Engine and Megatron's local spec save under.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from msm_megatron.config import ModelConfig

if TYPE_CHECKING:
    import torch

# Symbolic dimensions used in mapping shapes, resolved from a ModelConfig.
DIMS: dict[str, Callable[[ModelConfig], int]] = {
    "hidden": lambda m: m.hidden_size,
    "ffn": lambda m: m.intermediate_size,
    "head_dim": lambda m: m.kv_channels,
    "q": lambda m: m.num_attention_heads * m.kv_channels,
    "kv": lambda m: m.num_key_value_heads * m.kv_channels,
    "vocab": lambda m: m.vocab_size,
}
# Which config fields each symbol comes from (for error messages).
DIM_FIELDS = {
    "hidden": "hidden_size", "ffn": "intermediate_size", "head_dim": "head_dim",
    "q": "num_attention_heads × head_dim", "kv": "num_key_value_heads × head_dim",
    "vocab": "vocab_size",
}

Shape = tuple[str, ...]


def pad_rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """``tensor`` extended with zero rows to ``rows`` rows."""
    import torch

    missing = rows - tensor.shape[0]
    if missing == 0:
        return tensor
    return torch.cat([tensor, tensor.new_zeros((missing, *tensor.shape[1:]))])


def resolve(shape: Shape, model: ModelConfig) -> tuple[int, ...]:
    """Concrete sizes of a symbolic shape."""
    return tuple(DIMS[d](model) for d in shape)


@dataclass(frozen=True)
class Mapping:
    """One Megatron tensor ⇄ HF tensor(s), the same in every layer (or a single global one).

    Args:
        megatron: Megatron key (for layer mappings, relative to ``decoder.layers.``).
        hf: HF names (for layer mappings, relative to the architecture's layer prefix).
        shapes: the symbolic shape of each HF tensor.
    """

    megatron: str
    hf: tuple[str, ...]
    shapes: tuple[Shape, ...]
    # Megatron row r is HF row r (rows past the HF tensor's are zero): the engine may convert
    # such a tensor in row blocks to bound memory (embeddings, LM head).
    row_separable = False

    def to_megatron(self, tensors: list[torch.Tensor], model: ModelConfig,
                    padded_vocab: int) -> torch.Tensor:
        """The Megatron tensor from the HF tensors (same order as ``hf``)."""
        raise NotImplementedError

    def to_hf(self, tensor: torch.Tensor, model: ModelConfig) -> list[torch.Tensor]:
        """The HF tensors from the Megatron tensor; exact inverse of :meth:`to_megatron`."""
        raise NotImplementedError

    def megatron_shape(self, model: ModelConfig, padded_vocab: int) -> tuple[int, ...]:
        """Shape of the Megatron tensor (per layer for layer mappings)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Rename(Mapping):
    """Same tensor, different name."""

    row_separable = True

    def __init__(self, hf: str, megatron: str, shape: Shape):
        object.__setattr__(self, "megatron", megatron)
        object.__setattr__(self, "hf", (hf,))
        object.__setattr__(self, "shapes", (shape,))

    def to_megatron(self, tensors, model, padded_vocab):
        return tensors[0]

    def to_hf(self, tensor, model):
        return [tensor]

    def megatron_shape(self, model, padded_vocab):
        return resolve(self.shapes[0], model)


@dataclass(frozen=True)
class VocabRows(Mapping):
    """Embedding / LM head: rows padded with zeros to the padded vocabulary; cut on export."""

    row_separable = True

    def __init__(self, hf: str, megatron: str):
        object.__setattr__(self, "megatron", megatron)
        object.__setattr__(self, "hf", (hf,))
        object.__setattr__(self, "shapes", (("vocab", "hidden"),))

    def to_megatron(self, tensors, model, padded_vocab):
        return pad_rows(tensors[0], padded_vocab)

    def to_hf(self, tensor, model):
        return [tensor[: model.vocab_size]]

    def megatron_shape(self, model, padded_vocab):
        return (padded_vocab, model.hidden_size)


@dataclass(frozen=True)
class FusedQKV(Mapping):
    """q, k, v projections (weights ``[rows, hidden]`` or biases ``[rows]``) → Megatron's fused
    ``linear_qkv``, interleaved per query group."""

    def __init__(self, q: str, k: str, v: str, megatron: str, bias: bool = False):
        object.__setattr__(self, "megatron", megatron)
        object.__setattr__(self, "hf", (q, k, v))
        tail: Shape = () if bias else ("hidden",)
        object.__setattr__(self, "shapes", (("q", *tail), ("kv", *tail), ("kv", *tail)))

    @staticmethod
    def _grouped(model: ModelConfig) -> tuple[int, int, int]:
        groups = model.num_key_value_heads
        return groups, model.num_attention_heads // groups, model.kv_channels

    def to_megatron(self, tensors, model, padded_vocab):
        import torch

        q, k, v = tensors
        groups, per_group, head_dim = self._grouped(model)
        tail = q.shape[1:]
        fused = torch.cat([q.reshape(groups, per_group * head_dim, *tail),
                           k.reshape(groups, head_dim, *tail),
                           v.reshape(groups, head_dim, *tail)], dim=1)
        return fused.reshape(-1, *tail)

    def to_hf(self, tensor, model):
        groups, per_group, head_dim = self._grouped(model)
        tail = tensor.shape[1:]
        q, k, v = tensor.reshape(groups, (per_group + 2) * head_dim, *tail).split(
            [per_group * head_dim, head_dim, head_dim], dim=1)
        return [x.reshape(-1, *tail).contiguous() for x in (q, k, v)]

    def megatron_shape(self, model, padded_vocab):
        rows = (model.num_attention_heads + 2 * model.num_key_value_heads) * model.kv_channels
        return (rows, *resolve(self.shapes[0][1:], model))


@dataclass(frozen=True)
class FusedGateUp(Mapping):
    """Gate and up projections of a SwiGLU MLP → Megatron's ``linear_fc1`` = ``[gate; up]``."""

    def __init__(self, gate: str, up: str, megatron: str):
        object.__setattr__(self, "megatron", megatron)
        object.__setattr__(self, "hf", (gate, up))
        object.__setattr__(self, "shapes", (("ffn", "hidden"), ("ffn", "hidden")))

    def to_megatron(self, tensors, model, padded_vocab):
        import torch

        return torch.cat(tensors, dim=0)

    def to_hf(self, tensor, model):
        return [x.contiguous() for x in tensor.chunk(2, dim=0)]

    def megatron_shape(self, model, padded_vocab):
        return (2 * model.intermediate_size, model.hidden_size)


@dataclass(frozen=True)
class ArchSpec:
    """Everything the engine needs to convert one HF ``model_type``.

    Attributes:
        model_type: HF ``model_type`` (also :attr:`ModelConfig.arch` and the
            :class:`~msm_megatron.architectures.Architecture` name).
        layer: mappings repeated in every decoder layer (Megatron stacks them along a leading
            layer axis: ``decoder.layers.<key>`` has shape ``[num_layers, ...]``).
        top: mappings outside the layers (embedding, final norm).
        lm_head: the untied output layer; absent from both sides when embeddings are tied.
        toy_hf_config: a tiny HF ``config.json`` exercising this architecture's quirks (tests).
        layer_prefix: HF name prefix of layer ``i``.
    """

    model_type: str
    layer: tuple[Mapping, ...]
    top: tuple[Mapping, ...]
    lm_head: Mapping
    toy_hf_config: dict = field(default_factory=dict)
    layer_prefix: str = "model.layers.{i}."

    def groups(self, model: ModelConfig) -> list[tuple[Mapping, int | None]]:
        """Every (mapping, layer) pair of a model, in conversion order; layer None = global."""
        out: list[tuple[Mapping, int | None]] = [(m, None) for m in self.top[:1]]
        out += [(m, i) for i in range(model.num_layers) for m in self.layer]
        out += [(m, None) for m in self.top[1:]]
        if not model.tie_word_embeddings:
            out.append((self.lm_head, None))
        return out

    def hf_names(self, mapping: Mapping, layer: int | None) -> list[str]:
        prefix = "" if layer is None else self.layer_prefix.format(i=layer)
        return [prefix + name for name in mapping.hf]


def megatron_key(mapping: Mapping, layer: int | None) -> str:
    """The on-disk Megatron key (layer tensors are stacked under ``decoder.layers.``)."""
    return mapping.megatron if layer is None else "decoder.layers." + mapping.megatron


# The Llama-style decoder layer every supported architecture starts from.
LLAMA_LAYER: tuple[Mapping, ...] = (
    Rename("input_layernorm.weight", "self_attention.linear_qkv.layer_norm_weight", ("hidden",)),
    FusedQKV("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
             "self_attention.linear_qkv.weight"),
    Rename("self_attn.o_proj.weight", "self_attention.linear_proj.weight", ("hidden", "q")),
    Rename("post_attention_layernorm.weight", "mlp.linear_fc1.layer_norm_weight", ("hidden",)),
    FusedGateUp("mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.linear_fc1.weight"),
    Rename("mlp.down_proj.weight", "mlp.linear_fc2.weight", ("hidden", "ffn")),
)
LLAMA_TOP: tuple[Mapping, ...] = (
    VocabRows("model.embed_tokens.weight", "embedding.word_embeddings.weight"),
    Rename("model.norm.weight", "decoder.final_layernorm.weight", ("hidden",)),
)
LLAMA_LM_HEAD = VocabRows("lm_head.weight", "output_layer.weight")
