"""Packed (THD, cu_seqlens) training equals training each document on its own.

Same initial weights, same (input, label) pairs per step; packed rows at PP=1, PP=2 (every
pipeline stage must get the sequence boundaries) and TP=2 must reproduce the per-step losses and
grad norms of the one-document-per-sample run (fp32, CPU; tolerances in
``launch.assert_same_trajectory``: loss ≤ 1e-6, grad norm ≤ 5e-6 relative).

The reference runs Megatron's unfused attention; the ``sdpa`` cases run the same model with
``train.attention=sdpa`` (packed: masked SDPA; one document per sample: causal SDPA), so the fast
kernels are checked inside the real model too.
"""

from __future__ import annotations

import pytest

from tests.helpers.launch import assert_same_trajectory, metrics, train

pytestmark = pytest.mark.distributed


def packed_train(mode, config, overrides, nproc, log):
    train(config, overrides, nproc, log, entry=("tests.helpers.packed_train", mode))


@pytest.fixture(scope="module")
def separate(toy_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("packed")
    init = root / "init"
    train(toy_config, [f"train.run_dir={init}", "train.steps=0"], 1, root / "init.log")
    load = f"checkpoint.load={init / 'checkpoints'}"
    common = [load, "train.global_batch_size=2", "train.steps=4"]
    packed_train("separate", toy_config, [f"train.run_dir={root / 'sep'}", *common], 1,
                 root / "sep.log")
    return common, metrics(root / "sep")


@pytest.mark.parametrize("layout,nproc", [([], 1), (["parallel.pp=2"], 2),
                                          (["parallel.tp=2"], 2), (["train.attention=sdpa"], 1)],
                         ids=["pp1", "pp2", "tp2", "sdpa"])
def test_packed_rows_match_separate_documents(separate, toy_config, tmp_path, layout, nproc):
    common, ref = separate
    packed_train("packed", toy_config, [f"train.run_dir={tmp_path / 'run'}", *common, *layout],
                 nproc, tmp_path / "run.log")
    got = metrics(tmp_path / "run")
    assert sorted(ref) == [1, 2, 3, 4]
    assert_same_trajectory(got, ref, layout)


def test_sdpa_on_plain_batches_matches_unfused(separate, toy_config, tmp_path):
    common, ref = separate
    packed_train("separate", toy_config, [f"train.run_dir={tmp_path / 'run'}", *common,
                                          "train.attention=sdpa"], 1, tmp_path / "run.log")
    assert_same_trajectory(metrics(tmp_path / "run"), ref, ["train.attention=sdpa"])


@pytest.mark.parametrize("layout,nproc", [([], 1), (["parallel.pp=2"], 2)], ids=["pp1", "pp2"])
def test_several_rows_per_micro_batch_equal_one(sft_config, tmp_path, layout, nproc):
    """train.micro_batch_size=2 on packed rows (two rows as one THD sequence of 2·seq tokens)
    equals one row per micro-batch: same rows per step, per-token loss normalization. At PP=2
    the stages exchange [2·seq, 1, h] activations."""
    init = tmp_path / "init"
    train(sft_config, [f"train.run_dir={init}", "train.steps=0"], 1, tmp_path / "init.log")
    common = [f"checkpoint.load={init / 'checkpoints'}", "train.steps=3",
              "train.global_batch_size=4", "checkpoint.save_interval=null"]
    train(sft_config, [*common, "train.micro_batch_size=1", f"train.run_dir={tmp_path / 'one'}"],
          1, tmp_path / "one.log")
    train(sft_config, [*common, "train.micro_batch_size=2", *layout,
                       f"train.run_dir={tmp_path / 'two'}"], nproc, tmp_path / "two.log")
    ref, got = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert sorted(ref) == [1, 2, 3]
    assert_same_trajectory(got, ref, ["micro_batch_size=2", *layout])
