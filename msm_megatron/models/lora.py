"""LoRA adapters on Megatron-Core's fused, tensor-parallel linear layers, named like HF's.

Megatron fuses q/k/v into ``linear_qkv`` (interleaved per query group: the group's query heads,
then its key head, then its value head) and gate/up into ``linear_fc1`` (``[gate; up]`` per TP
rank). Each adapter here belongs to one **HF projection** (``q_proj`` … ``down_proj``), so an
adapter maps one-to-one onto PEFT's modules, and its update is scattered into the fused output in
Megatron's layout::

    y = W x + (alpha / r) · B (A x)            (per HF projection, dropout 0, no bias)

Tensor parallelism (Megatron's conventions for the base layer):

* **column-parallel** base (``linear_qkv``, ``linear_fc1``; input replicated, output sharded):
  ``A`` [r, in] is replicated, ``B`` [out/tp, r] holds this rank's output rows (its heads or
  its slice of gate/up). ``A x`` passes through ``copy_to_tensor_model_parallel_region`` so its
  gradient is summed over TP ranks (each rank's ``B`` sees only its own rows).
* **row-parallel** base (``linear_proj``, ``linear_fc2``; input sharded, output reduced):
  ``A`` [r, in/tp] holds this rank's input columns, ``A x`` is all-reduced
  (``reduce_from_tensor_model_parallel_region``), ``B`` [out, r] is replicated.

Adapters train in fp32: with ``train.precision=bf16`` they are, like every Megatron parameter,
a bf16 model copy plus an fp32 master copy and fp32 Adam state in the optimizer (Megatron's
``Float16OptimizerWithFloat16Params`` cannot checkpoint fp32 parameters of a bf16 model), and
their update ``B (A x)`` is computed in fp32. The frozen base has no master copy, gradient or
optimizer state; the optimizer sees only the adapters.

``A`` starts as PEFT's (Kaiming-uniform, bound 1/sqrt(in)), drawn for the *whole* matrix from a
seed of (``lora.seed``, layer, projection) and then sliced, so every TP/PP layout starts from the
same adapters; ``B`` starts at zero, so a fresh LoRA model computes exactly the base model.

Checkpoint keys are the base layer's plus ``lora_<proj>_A`` / ``lora_<proj>_B`` (e.g.
``decoder.layers.self_attention.linear_qkv.lora_q_proj_A``), sharded along the TP axes above, so
adapter checkpoints reshard like any Megatron checkpoint.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from megatron.core.tensor_parallel import mappings
from megatron.core.tensor_parallel.layers import (
    ColumnParallelLinear,
    RowParallelLinear,
    set_tensor_model_parallel_attributes,
)
from megatron.core.transformer.utils import make_sharded_tensors_for_checkpoint
from megatron.core.utils import get_pg_rank, get_pg_size

from msm_megatron.config import LORA_PROJECTIONS

# Megatron linear → the HF projections it fuses, in fused order.
FUSED = {"linear_qkv": ("q_proj", "k_proj", "v_proj"), "linear_proj": ("o_proj",),
         "linear_fc1": ("gate_proj", "up_proj"), "linear_fc2": ("down_proj",)}
HF_MODULE = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn",
             "o_proj": "self_attn", "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
PREFIX = "lora_"


@dataclass(frozen=True)
class LoRASettings:
    """What every adapted layer needs to know (from the ``lora`` config section)."""

    rank: int
    alpha: float
    # (projection, in, out) of the whole model's layers: msm_megatron.flops.projection_shapes
    shapes: tuple[tuple[str, int, int], ...]
    targets: tuple[str, ...] = tuple(LORA_PROJECTIONS)
    seed: int = 0

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def initial_a(settings: LoRASettings, layer_number: int, projection: str, in_features: int
              ) -> torch.Tensor:
    """The full ``A`` [r, in] of one adapter: Kaiming-uniform (PEFT's default), seeded."""
    digest = hashlib.sha256(f"{settings.seed}:{layer_number}:{projection}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    bound = 1.0 / in_features**0.5
    return (torch.rand(settings.rank, in_features, generator=gen, dtype=torch.float64) * 2 - 1
            ).mul_(bound).float()


class _LoRAMixin:
    """Adapter parameters, their sharded checkpoint entries and initialisation."""

    fused_name: str
    column: bool

    def __init__(self, *args, lora: LoRASettings, fused_name: str, **kwargs):
        super().__init__(*args, **kwargs)  # Megatron's Column/RowParallelLinear
        self.fused_name = fused_name
        self._setup_lora(lora)

    def _setup_lora(self, settings: LoRASettings) -> None:
        self.lora = settings
        self.lora_targets = tuple(p for p in FUSED[self.fused_name] if p in settings.targets)
        tp = get_pg_size(self.tp_group)
        shapes = {proj: (full_in, full_out) for proj, full_in, full_out in settings.shapes}
        self.lora_in_full = {}
        device = self.weight.device
        for proj in self.lora_targets:
            full_in, full_out = shapes[proj]
            self.lora_in_full[proj] = full_in
            if self.column:
                a_shape, b_shape = (settings.rank, full_in), (full_out // tp, settings.rank)
            else:
                a_shape, b_shape = (settings.rank, full_in // tp), (full_out, settings.rank)
            for part, shape in (("A", a_shape), ("B", b_shape)):
                param = torch.nn.Parameter(torch.zeros(shape, dtype=torch.float32, device=device))
                self.register_parameter(f"{PREFIX}{proj}_{part}", param)
        # Sharded adapters are marked like Megatron's own TP weights, so the grad norm counts
        # every rank's shard (replicated ones count once, on TP rank 0).
        for name, axis in self._lora_axes().items():
            set_tensor_model_parallel_attributes(getattr(self, name), True, axis, 1)

    def lora_parameters(self) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self.named_parameters(recurse=False) if n.startswith(PREFIX)}

    def init_lora(self, layer_number: int) -> None:
        """A from the seeded full matrix (this rank's slice), B = 0."""
        tp, rank = get_pg_size(self.tp_group), get_pg_rank(self.tp_group)
        with torch.no_grad():
            for proj in self.lora_targets:
                a = initial_a(self.lora, layer_number, proj, self.lora_in_full[proj])
                if not self.column:
                    a = a.chunk(tp, dim=1)[rank]
                getattr(self, f"{PREFIX}{proj}_A").copy_(a)
                getattr(self, f"{PREFIX}{proj}_B").zero_()

    def _lora_axes(self) -> dict[str, int]:
        """TP axis of each sharded adapter tensor (the others are replicated)."""
        if self.column:
            return {f"{PREFIX}{p}_B": 0 for p in self.lora_targets}
        return {f"{PREFIX}{p}_A": 1 for p in self.lora_targets}

    def sharded_state_dict(self, prefix="", sharded_offsets=(), metadata=None):
        sd = super().sharded_state_dict(prefix, sharded_offsets, metadata)
        adapters = {k: v for k, v in self.state_dict(prefix="", keep_vars=True).items()
                    if k.startswith(PREFIX)}
        sd.update(make_sharded_tensors_for_checkpoint(
            adapters, prefix, self._lora_axes(), sharded_offsets, tp_group=self.tp_group,
            dp_cp_group=metadata["dp_cp_group"]))
        return sd

    def _projection_updates(self, x: torch.Tensor) -> list[torch.Tensor]:
        xf = x.float()
        out = []
        for proj in self.lora_targets:
            a = getattr(self, f"{PREFIX}{proj}_A").float()
            b = getattr(self, f"{PREFIX}{proj}_B").float()
            h = xf @ a.t()
            if self.column:
                h = mappings.copy_to_tensor_model_parallel_region(h, group=self.tp_group)
            else:
                h = mappings.reduce_from_tensor_model_parallel_region(h, group=self.tp_group)
            out.append((h @ b.t()) * self.lora.scale)
        return out


class LoRAColumnParallelLinear(_LoRAMixin, ColumnParallelLinear):
    """Megatron's ``ColumnParallelLinear`` (``linear_qkv`` / ``linear_fc1``) plus adapters."""

    column = True

    def forward(self, input_, weight=None, runtime_gather_output=None):
        out, bias = super().forward(input_, weight, runtime_gather_output)
        if not self.lora_targets:
            return out, bias
        return out + self._fused_update(input_).to(out.dtype), bias

    def _fused_update(self, x: torch.Tensor) -> torch.Tensor:
        """Per-projection updates laid out like this rank's fused output rows."""
        updates = dict(zip(self.lora_targets, self._projection_updates(x), strict=True))
        return self._assemble(updates, x.shape[:-1], x.device)

    def merge_(self) -> None:
        """Fold ``scale · B A`` into the (frozen) fused weight; the adapter restarts at B = 0."""
        with torch.no_grad():
            deltas = {p: (getattr(self, f"{PREFIX}{p}_B").float()
                          @ getattr(self, f"{PREFIX}{p}_A").float() * self.lora.scale).t()
                      for p in self.lora_targets}
            fused = self._assemble(deltas, (self.weight.shape[1],), self.weight.device).t()
            self.weight.add_(fused.to(self.weight.dtype))
            for p in self.lora_targets:
                getattr(self, f"{PREFIX}{p}_B").zero_()

    def _assemble(self, updates: dict, lead: tuple, device) -> torch.Tensor:
        """Per-projection tensors [*lead, width] → this rank's fused layout [*lead, out/tp]."""
        cfg, tp = self.config, get_pg_size(self.tp_group)

        def part(proj: str, width: int) -> torch.Tensor:
            got = updates.get(proj)
            return got if got is not None else torch.zeros(*lead, width, device=device)
        if self.fused_name == "linear_fc1":
            width = cfg.ffn_hidden_size // tp
            return torch.cat([part("gate_proj", width), part("up_proj", width)], dim=-1)
        groups, d = cfg.num_query_groups // tp, cfg.kv_channels
        per_group = cfg.num_attention_heads // cfg.num_query_groups
        q = part("q_proj", groups * per_group * d).reshape(*lead, groups, per_group * d)
        k = part("k_proj", groups * d).reshape(*lead, groups, d)
        v = part("v_proj", groups * d).reshape(*lead, groups, d)
        return torch.cat([q, k, v], dim=-1).reshape(*lead, -1)


class LoRARowParallelLinear(_LoRAMixin, RowParallelLinear):
    """Megatron's ``RowParallelLinear`` (``linear_proj`` / ``linear_fc2``) plus an adapter."""

    column = False

    def forward(self, input_):
        out, bias = super().forward(input_)
        if not self.lora_targets:
            return out, bias
        (update,) = self._projection_updates(input_)
        return out + update.to(out.dtype), bias

    def merge_(self) -> None:
        """Fold ``scale · B A_local`` into this rank's weight columns; B restarts at 0."""
        with torch.no_grad():
            for p in self.lora_targets:
                b, a = getattr(self, f"{PREFIX}{p}_B"), getattr(self, f"{PREFIX}{p}_A")
                self.weight.add_((b.float() @ a.float() * self.lora.scale).to(self.weight.dtype))
                b.zero_()


def lora_layers(model) -> list[tuple[int, str, _LoRAMixin]]:
    """(global layer number, Megatron linear name, module) of every adapted linear."""
    found = []
    for layer in model.decoder.layers:
        for name, module in layer.named_modules():
            if isinstance(module, _LoRAMixin):
                found.append((layer.layer_number, name.rsplit(".", 1)[-1], module))
    return found


def reset_adapters(model) -> None:
    """Fresh adapters everywhere: seeded A, B = 0 (the model then computes its base)."""
    for layer_number, _, module in lora_layers(model):
        module.init_lora(layer_number)


def prepare_lora_model(model) -> None:
    """Freeze everything but the adapters and initialise them (before mixed-precision wraps)."""
    for param in model.parameters():
        param.requires_grad_(False)
    reset_adapters(model)
    for _, _, module in lora_layers(model):
        for param in module.lora_parameters().values():
            param.requires_grad_(True)


def merge_adapters(model) -> None:
    """Merge every adapter into its base weight (exactly what the forward added)."""
    for _, _, module in lora_layers(model):
        module.merge_()


def is_adapter_key(key: str) -> bool:
    """Whether a (sharded) state-dict key names an adapter tensor."""
    return f".{PREFIX}" in key or key.startswith(PREFIX)
