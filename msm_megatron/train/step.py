"""What one micro-batch does: fetch samples, run the model, compute the LM loss.

Data order: sample ``k`` of a run is fully determined by ``(data.seed, k)`` (see
:mod:`msm_megatron.data.datasets`), so the only data position a checkpoint needs
is ``consumed_samples``. Within a global batch, micro-batch ``j`` on data-parallel rank ``r``
holds samples ``consumed + j·mbs·dp + r·mbs + [0, mbs)`` — Megatron's pretraining sampler order.
Every pipeline stage reads the same micro-batch from the (memory-mapped) dataset, so no batch
broadcast is needed.

Loss normalisation: the loss function returns ``(sum of per-token losses, number of loss tokens)``
with Megatron's ``calculate_per_token_loss=True``; ``finalize_model_grads`` divides gradients by
the token count summed over all micro-batches *and* data-parallel ranks. So every supervised token
of a global batch weighs the same, whatever the micro-batch/DP split — the property that makes a
DP/TP/PP run equal to a single-rank run, and the right normalisation for masked SFT losses.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import torch


def microbatch_indices(consumed: int, micro: int, mbs: int, dp: int, dp_rank: int) -> list[int]:
    """Global sample indices of micro-batch ``micro`` for one data-parallel rank."""
    start = consumed + micro * mbs * dp + dp_rank * mbs
    return list(range(start, start + mbs))


def batch_iterator(dataset, consumed: int, num_micro: int, mbs: int, dp: int, dp_rank: int
                   ) -> Iterator[dict]:
    """Yield this rank's micro-batches of one global batch as tensors on the current device.

    ``cu_seqlens`` stays on the host: :func:`packed_seq_params` reads it there (no device sync).
    """
    device = torch.cuda.current_device() if torch.cuda.is_available() else "cpu"
    for micro in range(num_micro):
        batch = dataset.batch(microbatch_indices(consumed, micro, mbs, dp, dp_rank))
        yield {k: v if k == "cu_seqlens" else v.to(device, non_blocking=True)
               for k, v in batch.items()}


def loss_func(loss_mask: torch.Tensor, output_tensor: torch.Tensor):
    """Masked sum of per-token losses, the number of loss tokens, and values to report."""
    losses = output_tensor.float()
    mask = loss_mask.view(-1).float()
    loss_sum = torch.sum(losses.view(-1) * mask)
    num_tokens = mask.sum().to(torch.int)
    report = torch.stack([loss_sum.detach().clone(), mask.sum().detach()])
    return loss_sum, num_tokens, {"lm loss": report}


def packed_seq_params(batch: dict):
    """THD ``PackedSeqParams`` for a packed micro-batch (one row with ``cu_seqlens``), else None.

    Every pipeline stage builds them from its own copy of the micro-batch, so the sequence
    boundaries reach all stages (the bug class behind Megatron-Bridge #2952 cannot occur).
    Positions past the last boundary (padding) become one more sequence of their own. The
    boundaries are read on the host and then copied to the tokens' device, so building the
    params never waits for the GPU.
    """
    if "cu_seqlens" not in batch:
        return None
    from megatron.core.packed_seq_params import PackedSeqParams

    tokens = batch["tokens"]
    if tokens.shape[0] != 1:
        raise ValueError("packed (THD) micro-batches are one row: the dataset concatenates a "
                         "micro-batch's rows (msm_megatron.data.datasets.concat_rows)")
    cu = batch["cu_seqlens"].reshape(-1).to("cpu", torch.int32)
    if int(cu[-1]) < tokens.shape[1]:
        cu = torch.cat([cu, cu.new_tensor([tokens.shape[1]])])
    longest = int(torch.diff(cu).max())
    cu = cu.to(tokens.device, non_blocking=True)
    return PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu,
                           max_seqlen_q=longest, max_seqlen_kv=longest)


def forward_step(data_iterator, model, output_processor=None):
    """Megatron ``forward_step_func``: one micro-batch through one model chunk.

    ``output_processor``: GPTModel's post-process hook, e.g. the chunked LM head of
    ``train.loss_chunk`` (:mod:`msm_megatron.models.lm_head`); ``None`` is Megatron's own. Bind it
    with ``functools.partial`` (Megatron calls ``forward_step_func(data_iterator, model)``).
    """
    batch = next(data_iterator)
    tokens = batch["tokens"]
    position_ids = batch.get("position_ids")
    if position_ids is None:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        position_ids = positions.unsqueeze(0).expand_as(tokens)
    extra = {"output_processor": output_processor} if output_processor is not None else {}
    output = model(tokens, position_ids, None, labels=batch["labels"],
                   packed_seq_params=packed_seq_params(batch), **extra)
    return output, partial(loss_func, batch["loss_mask"])
