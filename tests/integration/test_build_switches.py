"""What the throughput switches build (docs/gpu.md#throughput-switches), checked on the model
itself; that each one trains like the reference is tests/distributed/test_throughput_switches.py.

Runs in a subprocess: building a model enables the Megatron-on-CPU adaptations for good.
"""

from __future__ import annotations

import textwrap

from tests.helpers.launch import assert_script_prints_ok

SCRIPT = textwrap.dedent("""
    import torch
    from msm_megatron.config import ConfigError, apply_overrides
    from msm_megatron.distributed import init_distributed
    from msm_megatron.models.build import build_model_chunks, transformer_config
    from msm_megatron.recipes import get_recipe

    def cfg(*overrides):
        return apply_overrides(get_recipe("qwen3_toy_midtrain"), ["train.precision=fp32",
                                                                  *overrides])

    plain = cfg()
    init_distributed(plain.parallel, 0)
    (model,) = build_model_chunks(plain)
    assert all(layer._compiled_call_impl is None for layer in model.decoder.layers)
    assert transformer_config(plain).bias_activation_fusion is False
    assert transformer_config(plain).cuda_graph_impl == "none"

    fast = cfg("train.compile=true", "train.fused_swiglu=true")
    assert transformer_config(fast).bias_activation_fusion is True
    (compiled,) = build_model_chunks(fast)
    layers = list(compiled.decoder.layers)
    assert len(layers) == 4 and all(l._compiled_call_impl is not None for l in layers)
    # Module.compile keeps the parameter names: checkpoints and converters see the same model
    assert list(compiled.state_dict()) == list(model.state_dict())
    try:
        transformer_config(cfg("train.cuda_graphs=true"))
    except ConfigError as exc:
        assert "needs a CUDA device" in str(exc), exc
    else:
        raise AssertionError("cuda_graphs built without CUDA")
    print("OK")
""")


def test_switches_reach_the_built_model():
    assert_script_prints_ok(SCRIPT, timeout=300)
