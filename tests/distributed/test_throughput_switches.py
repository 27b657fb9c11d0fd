"""Each throughput switch (docs/gpu.md#throughput-switches) trains exactly like the reference.

``train.loss_chunk`` (chunked LM head + cross-entropy), ``train.fused_swiglu`` (Megatron's fused
SwiGLU) and ``train.compile`` (``torch.compile`` of every transformer layer) must not change what
is computed: from the same initial weights, the per-step losses and grad norms of a run with the
switch on equal the run without it (fp32, CPU; ``launch.assert_same_trajectory``: loss ≤ 1e-6,
grad norm ≤ 5e-6 relative), on plain concat windows and on packed THD rows, alone and all
together at TP=2 and PP=2. The chunk sizes are chosen so that the last chunk is shorter than the
others. ``train.cuda_graphs`` needs a GPU (refused here; see test_validate/test_build_switches).
"""

from __future__ import annotations

import pytest

from tests.helpers.launch import assert_same_trajectory, metrics, train

pytestmark = pytest.mark.distributed

ALL = ["train.loss_chunk=24", "train.fused_swiglu=true", "train.compile=true"]


def _reference(config, root, extra):
    init = root / "init"
    train(config, [f"train.run_dir={init}", "train.steps=0", *extra], 1, root / "init.log")
    common = [f"checkpoint.load={init / 'checkpoints'}", "train.steps=3",
              "checkpoint.save_interval=null", *extra]
    train(config, [f"train.run_dir={root / 'ref'}", *common], 1, root / "ref.log")
    ref = metrics(root / "ref")
    assert sorted(ref) == [1, 2, 3]
    return common, ref


@pytest.fixture(scope="module")
def concat_reference(toy_config, tmp_path_factory):
    """The toy midtraining config: [2, 64] concat windows per micro-batch."""
    return _reference(toy_config, tmp_path_factory.mktemp("switch-concat"), [])


@pytest.fixture(scope="module")
def packed_reference(sft_config, tmp_path_factory):
    """The toy SFT config: two packed 512-token chat rows per micro-batch (one THD sequence)."""
    return _reference(sft_config, tmp_path_factory.mktemp("switch-packed"),
                      ["train.micro_batch_size=2"])


CASES = [(["train.loss_chunk=24"], 1), (["train.fused_swiglu=true"], 1),
         (["train.compile=true"], 1), ([*ALL, "parallel.tp=2"], 2),
         ([*ALL, "parallel.pp=2"], 2)]
IDS = ["loss_chunk", "fused_swiglu", "compile", "all_tp2", "all_pp2"]


# On concat windows the single-rank loss_chunk / fused_swiglu cases add nothing that the
# all-together cases do not check (the same code; chunks cut [s, b=2] instead of [s, 1]).
@pytest.mark.parametrize("switches,nproc", CASES[2:], ids=IDS[2:])
def test_switch_on_concat_windows_equals_reference(concat_reference, toy_config, tmp_path,
                                                   switches, nproc):
    common, ref = concat_reference
    train(toy_config, [f"train.run_dir={tmp_path / 'run'}", *common, *switches], nproc,
          tmp_path / "run.log")
    assert_same_trajectory(metrics(tmp_path / "run"), ref, switches)


@pytest.mark.parametrize("switches,nproc", CASES, ids=IDS)
def test_switch_on_packed_rows_equals_reference(packed_reference, sft_config, tmp_path,
                                                switches, nproc):
    common, ref = packed_reference
    switches = [s.replace("loss_chunk=24", "loss_chunk=384") for s in switches]
    train(sft_config, [f"train.run_dir={tmp_path / 'run'}", *common, *switches], nproc,
          tmp_path / "run.log")
    assert_same_trajectory(metrics(tmp_path / "run"), ref, switches)
