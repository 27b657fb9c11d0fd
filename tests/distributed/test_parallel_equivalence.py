"""TP / PP / VPP / DP (with and without the distributed optimizer, with overlapped grad reduce and
param gather) and activation recompute equal a single rank without recompute.

Every layout starts from the same initial weights (a `train.steps=0` checkpoint written by one
rank and resharded on load) and trains 4 optimizer steps on the same global batches in fp32.
Losses must match the single-rank run to ≤ 1e-6 and grad norms to ≤ 5e-6 relative (fp32
reduction order; see ``launch.assert_same_trajectory``).
"""

from __future__ import annotations

import pytest

from tests.helpers.launch import assert_same_trajectory, metrics, train

pytestmark = pytest.mark.distributed

LAYOUTS = {
    "tp2": (2, ["parallel.tp=2"]),
    "pp2": (2, ["parallel.pp=2"]),
    "pp2_vpp2": (2, ["parallel.pp=2", "parallel.vpp=2"]),
    "dp2": (2, []),
    "dp2_distopt": (2, ["parallel.distributed_optimizer=true"]),
    "tp2_pp2": (4, ["parallel.tp=2", "parallel.pp=2"]),
    "recompute_full": (1, ["train.recompute=full", "train.recompute_num_layers=2"]),
    "recompute_selective": (1, ["train.recompute=selective"]),
    "dp2_overlap": (2, ["parallel.distributed_optimizer=true", "parallel.overlap_grad_reduce=true",
                        "parallel.overlap_param_gather=true"]),
}


@pytest.fixture(scope="module")
def reference(toy_config, tmp_path_factory):
    """Initial checkpoint (1 rank, 0 steps) and the single-rank 4-step trajectory from it."""
    root = tmp_path_factory.mktemp("equiv")
    init = root / "init"
    train(toy_config, [f"train.run_dir={init}", "train.steps=0"], 1, root / "init.log")
    assert (init / "checkpoints" / "iter_0000000").is_dir()
    ref = root / "ref"
    train(toy_config, [f"train.run_dir={ref}", f"checkpoint.load={init / 'checkpoints'}"], 1,
          root / "ref.log")
    return init / "checkpoints", metrics(ref)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_layout_matches_single_rank(name, toy_config, reference, tmp_path):
    init, ref = reference
    nproc, overrides = LAYOUTS[name]
    run = tmp_path / name
    train(toy_config, [f"train.run_dir={run}", f"checkpoint.load={init}", *overrides], nproc,
          tmp_path / f"{name}.log")
    assert sorted(ref) == [1, 2, 3, 4]
    assert_same_trajectory(metrics(run), ref, name)
    # Training moved the weights: losses after updates differ from the first.
    assert ref[4]["loss"] != ref[1]["loss"]


def test_bf16_mixed_precision_tracks_fp32(toy_config, reference, tmp_path):
    """bf16 weights/activations with fp32 main params stay close to the fp32 trajectory."""
    init, ref = reference
    run = tmp_path / "bf16"
    train(toy_config, [f"train.run_dir={run}", f"checkpoint.load={init}",
                       "train.precision=bf16", "parallel.tp=2"], 2, tmp_path / "bf16.log")
    got = metrics(run)
    for step in ref:
        assert abs(got[step]["loss"] - ref[step]["loss"]) < 0.02, (step, got[step], ref[step])
    assert any(got[s]["loss"] != ref[s]["loss"] for s in ref)  # really ran in lower precision


ARCHS = {  # the toy shape as Qwen2/2.5 (QKV bias, no q/k norm, untied) and Llama
    "qwen2": (["model.arch=qwen2", "model.qkv_bias=true", "model.qk_norm=false",
               "model.tie_word_embeddings=false", "model.head_dim=null"],
              [["parallel.tp=2"], ["parallel.pp=2"]]),
    "llama": (["model.arch=llama", "model.qk_norm=false", "model.tie_word_embeddings=false",
               "model.rope_theta=500000", "model.rope_scaling_factor=8.0"], [["parallel.tp=2"]]),
}


@pytest.mark.parametrize("arch", list(ARCHS))
def test_other_architectures_match_single_rank(arch, toy_config, tmp_path):
    shape, layouts = ARCHS[arch]
    init = tmp_path / "init"
    train(toy_config, [f"train.run_dir={init}", "train.steps=0", *shape], 1, tmp_path / "i.log")
    load = f"checkpoint.load={init / 'checkpoints'}"
    train(toy_config, [f"train.run_dir={tmp_path / 'ref'}", load, *shape], 1, tmp_path / "r.log")
    ref = metrics(tmp_path / "ref")
    for i, layout in enumerate(layouts):
        run = tmp_path / f"run{i}"
        train(toy_config, [f"train.run_dir={run}", load, *shape, *layout], 2, tmp_path / f"{i}.log")
        assert_same_trajectory(metrics(run), ref, (arch, layout))
