"""The Megatron-on-CPU adaptations (run in a subprocess: they patch the process for good)."""

from __future__ import annotations

import textwrap

from tests.helpers.launch import assert_script_prints_ok

SCRIPT = textwrap.dedent("""
    import torch
    from msm_megatron._compat import megatron_cpu
    from megatron.core import package_info

    assert megatron_cpu.enable() is True and megatron_cpu.is_enabled()
    assert megatron_cpu.enable() is True  # idempotent
    # device="cuda", .cuda(), .to("cuda") land on the CPU
    assert torch.empty(3, device="cuda").device.type == "cpu"
    assert torch.ones(2).cuda().device.type == "cpu"
    assert torch.ones(2).to("cuda").device.type == "cpu"
    assert torch.zeros(2, device=torch.cuda.current_device()).device.type == "cpu"
    assert torch.ones(2).to(0).device.type == "cpu"  # an int passed to .to() is a device
    # ... but the ints of new_zeros/new_empty are sizes (found converting HF weights in a rank)
    assert torch.ones(1).new_zeros(2, 3).shape == (2, 3)
    assert torch.ones(1).new_empty(4, 5, device="cuda").shape == (4, 5)
    # Megatron classifies parameters by CUDA type strings
    assert torch.ones(1).type() == "torch.cuda.FloatTensor"
    assert torch.ones(1, dtype=torch.bfloat16).type() == "torch.cuda.BFloat16Tensor"
    assert torch.ones(1).type(torch.float64).dtype == torch.float64  # conversions unaffected
    torch.cuda.synchronize(); torch.cuda.current_stream().wait_stream(None)
    # The RNG tracker forks CPU generator states, reproducibly
    from megatron.core import tensor_parallel
    from megatron.core.tensor_parallel import random as mrandom
    tracker = mrandom.get_cuda_rng_tracker()
    tracker.add("a", 7)
    with tracker.fork("a"):
        first = torch.rand(4)
    outside = torch.rand(4)
    tracker2 = mrandom.CudaRNGStatesTracker(); tracker2.add("a", 7)
    with tracker2.fork("a"):
        again = torch.rand(4)
    assert torch.equal(first, again) and not torch.equal(first, outside)
    # Refuses a megatron-core version it was not written for
    package_info.__version__ = "0.99.0"
    try:
        megatron_cpu.check_version()
    except RuntimeError as exc:
        assert "0.19" in str(exc)
    else:
        raise AssertionError("version check did not fire")
    print("OK")
""")


def test_cpu_adaptations():
    assert_script_prints_ok(SCRIPT, timeout=120)
