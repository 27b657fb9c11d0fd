"""Megatron-Core 0.19 distributed-optimizer quirks on the torch (no TE/apex) AdamW path.

Two bugs hit a fresh process that loads a distributed-optimizer checkpoint without TE/apex:

1. ``DistributedOptimizer.state_dict()`` reads the Adam ``step`` from the inner optimizer state
   and asserts there is exactly one value; before the first step the torch AdamW state is empty.
   Fix: prime the state with zeros and ``step = 0`` (what torch creates on its first step); every
   primed value is then overwritten by the checkpoint.
2. The ``fully_reshardable`` loader copies every tensor of the inner state from the checkpoint,
   but torch AdamW's tensor ``step`` is (correctly) not among the per-parameter shards, so it
   raises ``KeyError: 'step'``. Megatron restores ``step`` separately, so skipping it is right.

3. On load, Megatron gives every parameter the *same* ``step`` tensor; torch AdamW increments
   each parameter's ``step`` in place, so a shared tensor advances once per parameter per step
   and corrupts Adam's bias correction from the first resumed step on.
   Fix: give each parameter its own copy after loading (:func:`finish_loading`).

All are no-ops when TE/apex optimizers are in use. Version-checked with the CPU adaptations.
"""

from __future__ import annotations

import functools

import torch


def _inner_optimizers(optimizer) -> list:
    chained = getattr(optimizer, "chained_optimizers", None)
    return list(chained) if chained is not None else [optimizer]


@functools.cache
def _patch_step_copy() -> None:
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    original = DistributedOptimizer._set_main_param_and_optimizer_states

    def set_states_skipping_step(self, model_param, tensors):
        tensors = dict(tensors)
        tensors.setdefault("step", None)  # non-tensor entries are skipped by Megatron's copy loop
        return original(self, model_param, tensors)

    DistributedOptimizer._set_main_param_and_optimizer_states = set_states_skipping_step


def _torch_adam_inners(optimizer) -> list:
    from megatron.core.optimizer import distrib_optimizer

    if distrib_optimizer.HAVE_APEX_OR_TE:
        return []
    return [
        opt.optimizer for opt in _inner_optimizers(optimizer)
        if isinstance(opt, distrib_optimizer.DistributedOptimizer)
        and isinstance(opt.optimizer, (torch.optim.Adam, torch.optim.AdamW))
    ]


def finish_loading(optimizer) -> None:
    """Give every parameter its own Adam ``step`` tensor after a distributed-optimizer load."""
    for inner in _torch_adam_inners(optimizer):
        for state in inner.state.values():
            if isinstance(state.get("step"), torch.Tensor):
                state["step"] = state["step"].clone()


def prepare_for_loading(optimizer) -> None:
    """Make a fresh torch-AdamW distributed optimizer loadable from a checkpoint."""
    inners = _torch_adam_inners(optimizer)
    if inners:
        _patch_step_copy()
    for inner in inners:
        for group in inner.param_groups:
            for param in group["params"]:
                state = inner.state[param]
                if not state:
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)
