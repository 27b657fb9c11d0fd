"""A chunked LM head: logits and cross-entropy over a few thousand tokens at a time.

Megatron's own post-process turns the last hidden states ``[s, b, h]`` into fp32-upcast logits
``[s, b, V/tp]`` and keeps them (and the softmax's saved tensors) alive until the backward pass: at
seq 4096 and Qwen3's 151,936-id vocabulary that is ≈ 7.5 GB for one micro-batch of four rows. With
``train.loss_chunk=N`` the model's output layer and Megatron's vocab-parallel cross-entropy run on
``N`` tokens at a time, each chunk under :func:`torch.utils.checkpoint.checkpoint`, so only one
chunk's logits exist at once; the backward pass recomputes each chunk's logits (one more
``[N, h] × [h, V/tp]`` matmul per chunk). The result is the same per-token loss tensor
``[b, s]``, computed by the same functions on the same values: equal to the unchunked loss.

It plugs into ``GPTModel.forward(output_processor=...)``, Megatron-Core's hook for a custom
post-process; the tied-embedding weight (``output_weight``) is passed through as Megatron does.
"""

from __future__ import annotations

from functools import partial

import torch
from torch.utils.checkpoint import checkpoint


def _chunk_loss(output_layer, output_weight, scale_logits, compute_loss, hidden, labels):
    logits, _ = output_layer(hidden, weight=output_weight)
    return compute_loss(labels, scale_logits(logits))


def chunked_lm_loss(*, hidden_states, output_layer, output_weight, labels, scale_logits,
                    compute_language_model_loss, chunk: int, **_unused) -> torch.Tensor:
    """Per-token LM losses ``[b, s]`` from ``hidden_states [s, b, h]``, ``chunk`` positions at a
    time (the ``output_processor`` signature of ``GPTModel``).

    Without labels (inference) this returns the logits ``[b, s, V/tp]`` like Megatron does.
    """
    if labels is None:
        logits, _ = output_layer(hidden_states, weight=output_weight)
        return scale_logits(logits).transpose(0, 1).contiguous()
    step = partial(_chunk_loss, output_layer, output_weight, scale_logits,
                   compute_language_model_loss)
    seq = hidden_states.size(0)
    losses = []
    for start in range(0, seq, chunk):
        stop = min(start + chunk, seq)
        part = hidden_states[start:stop]
        part_labels = labels[:, start:stop]
        if torch.is_grad_enabled() and seq > chunk:
            losses.append(checkpoint(step, part, part_labels, use_reentrant=False))
        else:
            losses.append(step(part, part_labels))
    return torch.cat(losses, dim=1)


def chunked_loss_processor(chunk: int):
    """The ``output_processor`` for ``GPTModel.forward`` computing the loss ``chunk`` tokens at a
    time."""
    if chunk < 1:
        raise ValueError(f"loss chunk must be ≥ 1 token, got {chunk}")
    return partial(chunked_lm_loss, chunk=chunk)
