"""Checkpoint directory conventions: naming, the latest marker, keep-last-N."""

from __future__ import annotations

import pytest

from msm_megatron.train.checkpoint import LATEST, META, _publish, iter_dir, latest_iteration


def make_ckpt(root, iteration, complete=True):
    path = iter_dir(root, iteration)
    path.mkdir(parents=True)
    if complete:
        (path / META).write_text("{}")
    return path


def test_megatron_naming(tmp_path):
    assert iter_dir(tmp_path, 100).name == "iter_0000100"


def test_latest_marker(tmp_path):
    assert latest_iteration(tmp_path) is None
    (tmp_path / LATEST).write_text("40\n")
    assert latest_iteration(tmp_path) == 40
    (tmp_path / LATEST).write_text("release")
    with pytest.raises(ValueError, match="expected an iteration number"):
        latest_iteration(tmp_path)


def test_publish_keeps_last_n_complete_checkpoints(tmp_path):
    for it in (10, 20, 30):
        make_ckpt(tmp_path, it)
    partial = make_ckpt(tmp_path, 40, complete=False)  # a save in flight is never deleted
    _publish(tmp_path, 30, keep_last=2)
    assert latest_iteration(tmp_path) == 30
    assert sorted(p.name for p in tmp_path.glob("iter_*")) == [
        "iter_0000020", "iter_0000030", partial.name]
    assert not (tmp_path / (LATEST + ".tmp")).exists()
    _publish(tmp_path, 30, keep_last=None)
    assert len(list(tmp_path.glob("iter_*"))) == 3


def test_resume_changes_report_schedule_and_data(tmp_path):
    import json

    from msm_megatron.config import apply_overrides, to_dict
    from msm_megatron.recipes import get_recipe
    from msm_megatron.train.checkpoint import resume_changes

    saved = get_recipe("qwen3_toy_midtrain")
    (tmp_path / META).write_text(json.dumps({"config": to_dict(saved)}))
    assert resume_changes(tmp_path, saved, 150) == []
    changed = apply_overrides(saved, ["train.steps=200", "data.mode=packed",
                                      "train.micro_batch_size=1"])
    notes = resume_changes(tmp_path, changed, 200)
    assert notes[0].startswith("resuming with a changed schedule (train.steps: 150 -> 200)")
    assert "data.mode: concat -> packed" in notes[1]
