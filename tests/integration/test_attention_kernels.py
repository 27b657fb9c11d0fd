"""The core-attention kernels: which one runs for each input form, and that each equals the unfused
reference (fp32, CPU). ``varlen`` is CUDA-only: ``bench/gpu/train_throughput.py`` checks it on GPU.

The numerics run in a subprocess (the Megatron-on-CPU adaptations patch the process for good).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from msm_megatron.models import attention
from tests.helpers.launch import REPO, run_env

SCRIPT = textwrap.dedent("""
    import json, torch, torch.distributed as dist
    from msm_megatron._compat import megatron_cpu
    from msm_megatron.distributed import free_port
    megatron_cpu.enable()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0,
                            world_size=1)
    from megatron.core import parallel_state
    parallel_state.initialize_model_parallel()
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed
    model_parallel_cuda_manual_seed(0)
    from megatron.core.packed_seq_params import PackedSeqParams
    from megatron.core.transformer.enums import AttnMaskType
    from megatron.core.transformer.transformer_config import TransformerConfig
    from msm_megatron.models.attention import CoreAttention

    cfg = TransformerConfig(num_layers=1, hidden_size=64, num_attention_heads=4,
                            num_query_groups=2, kv_channels=16, use_cpu_initialization=True,
                            masked_softmax_fusion=False, attention_dropout=0.0)
    def module(kernel):
        return CoreAttention(config=cfg, layer_number=1, attn_mask_type=AttnMaskType.causal,
                             attention_type="self", kernel=kernel)
    g = torch.Generator().manual_seed(0)
    def qkv(shape_q, shape_kv):
        return [torch.randn(s, generator=g, requires_grad=True)
                for s in (shape_q, shape_kv, shape_kv)]
    cu = torch.tensor([0, 7, 30, 44], dtype=torch.int32)  # tokens 44..49 are padding
    packed = PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu,
                             max_seqlen_q=23, max_seqlen_kv=23)
    forms = {"plain": (qkv((40, 2, 4, 16), (40, 2, 2, 16)), None),
             "packed": (qkv((50, 4, 16), (50, 2, 16)), packed)}
    out = {}
    for form, (inputs, params) in forms.items():
        def run(kernel, grad):
            for x in inputs:
                x.grad = None
            args = inputs if grad else [x.detach() for x in inputs]
            with torch.set_grad_enabled(grad):
                y = module(kernel)(*args, None, packed_seq_params=params)
            if grad:
                (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
            return y.detach(), [x.grad.clone() if grad else None for x in inputs]
        ref, ref_grads = run("unfused", True)
        out[form] = {"shape": list(ref.shape)}
        for kernel, grad in (("sdpa", True), ("flex", False)):  # flex: no backward on CPU
            y, grads = run(kernel, grad)
            out[form][kernel] = {
                "out": (y - ref).abs().max().item(),
                "grad": max((a - b).abs().max().item() for a, b in zip(grads, ref_grads))
                if grad else None}
        # The block-diagonal reference itself: packed equals each sequence alone (plain path)
        if form == "packed":
            q, k, v = inputs
            bounds = [0, 7, 30, 44, 50]
            pieces = [module("unfused")(q[a:b, None], k[a:b, None], v[a:b, None], None)[:, 0]
                      for a, b in zip(bounds, bounds[1:])]
            out[form]["separate"] = (torch.cat(pieces) - ref).abs().max().item()
    print("RESULT " + json.dumps(out))
""")


@pytest.fixture(scope="module")
def diffs() -> dict:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=run_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.mark.parametrize("form", ["plain", "packed"])
@pytest.mark.parametrize("kernel", ["sdpa", "flex"])
def test_kernel_equals_unfused_reference(diffs, form, kernel):
    got = diffs[form][kernel]
    assert got["out"] < 1e-5, got
    if got["grad"] is not None:
        assert got["grad"] < 1e-5, got


def test_output_shapes_follow_megatron(diffs):
    assert diffs["plain"]["shape"] == [40, 2, 64]  # [s, b, heads*head_dim]
    assert diffs["packed"]["shape"] == [50, 64]  # [t, heads*head_dim]


def test_packed_reference_equals_each_sequence_alone(diffs):
    assert diffs["packed"]["separate"] < 1e-6


@pytest.mark.parametrize("requested,device,packed,has_varlen,expected", [
    ("auto", "cpu", False, True, "unfused"),
    ("auto", "cpu", True, True, "unfused"),
    ("auto", "cuda", False, True, "sdpa"),
    ("auto", "cuda", True, True, "varlen"),
    ("auto", "cuda", True, False, "flex"),
    ("sdpa", "cpu", True, True, "sdpa"),
    ("flex", "cuda", False, True, "flex"),
    ("unfused", "cuda", True, True, "unfused"),
    ("varlen", "cuda", False, True, "varlen"),
])
def test_kernel_choice_per_input_form(monkeypatch, requested, device, packed, has_varlen,
                                      expected):
    monkeypatch.setattr(attention, "varlen_attn_fn", lambda: object() if has_varlen else None)
    assert attention.resolve_kernel(requested, device, packed) == expected


def test_auto_without_varlen_or_flex_falls_back_to_masked_sdpa(monkeypatch):
    monkeypatch.setattr(attention, "varlen_attn_fn", lambda: None)
    monkeypatch.setattr(attention, "flex_attention_fn", lambda device: None)
    assert attention.resolve_kernel("auto", "cuda", True) == "sdpa"


@pytest.mark.parametrize("requested,device,message", [
    ("varlen", "cpu", "needs a CUDA GPU"),
    ("fast", "cuda", "expected one of"),
])
def test_impossible_kernels_are_refused(requested, device, message):
    with pytest.raises(ValueError, match=message):
        attention.resolve_kernel(requested, device, True)
