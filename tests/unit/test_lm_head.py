"""The chunked LM head (msm_megatron.models.lm_head): same losses and gradients as the whole
micro-batch at once, never more than one chunk of logits, each chunk recomputed in backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from msm_megatron.models.lm_head import chunked_lm_loss, chunked_loss_processor


class RecordingHead:
    """An output layer (``[s, b, h] -> [s, b, V]``) that records the logits shapes it made."""

    def __init__(self):
        self.shapes: list[tuple] = []

    def __call__(self, hidden, weight=None):
        self.shapes.append(tuple(hidden.shape[:2]))
        return hidden @ weight.t(), None


def per_token_loss(labels, logits):  # Megatron's contract: labels [b, s], logits [s, b, V]
    s, b, v = logits.shape
    return F.cross_entropy(logits.float().reshape(-1, v), labels.t().reshape(-1),
                           reduction="none").view(s, b).t()


def _inputs(seq=10, batch=3, hidden=8, vocab=17):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(seq, batch, hidden, generator=g, requires_grad=True)
    w = torch.randn(vocab, hidden, generator=g, requires_grad=True)
    labels = torch.randint(0, vocab, (batch, seq), generator=g)
    return h, w, labels


def _loss(chunk, h, w, labels, head):
    return chunked_lm_loss(hidden_states=h, output_layer=head, output_weight=w, labels=labels,
                           scale_logits=lambda x: x, compute_language_model_loss=per_token_loss,
                           chunk=chunk, input_ids=None, context=None)


@pytest.mark.parametrize("chunk", [1, 3, 4, 10, 64])
def test_chunked_loss_and_grads_equal_the_whole_head(chunk):
    h, w, labels = _inputs()
    ref = per_token_loss(labels, h @ w.t())
    ref_gh, ref_gw = torch.autograd.grad(ref.sum(), (h, w))
    head = RecordingHead()
    got = _loss(chunk, h, w, labels, head)
    assert got.shape == ref.shape == (3, 10)
    gh, gw = torch.autograd.grad(got.sum(), (h, w))
    assert torch.allclose(got, ref, atol=1e-6, rtol=0)
    assert torch.allclose(gh, ref_gh, atol=1e-6, rtol=0)
    assert torch.allclose(gw, ref_gw, atol=1e-6, rtol=0)
    # never more than `chunk` positions of logits at a time; the last chunk is the remainder
    assert max(s for s, _ in head.shapes) == min(chunk, 10)


def test_each_chunk_is_recomputed_in_backward_not_kept():
    h, w, labels = _inputs()
    head = RecordingHead()
    loss = _loss(4, h, w, labels, head)
    assert head.shapes == [(4, 3), (4, 3), (2, 3)]  # forward: 3 chunks
    loss.sum().backward()
    # backward recomputes every chunk's logits (checkpointing): 3 more head calls
    assert len(head.shapes) == 6


def test_without_labels_it_returns_logits_like_megatron():
    h, w, _ = _inputs()
    out = chunked_lm_loss(hidden_states=h, output_layer=RecordingHead(), output_weight=w,
                          labels=None, scale_logits=lambda x: 2 * x,
                          compute_language_model_loss=per_token_loss, chunk=4)
    assert torch.equal(out, (2 * (h @ w.t())).transpose(0, 1))


def test_processor_refuses_an_empty_chunk():
    with pytest.raises(ValueError, match="≥ 1"):
        chunked_loss_processor(0)
