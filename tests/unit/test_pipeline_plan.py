"""The experiment → stage graph: which stages exist, and which hashes change with what."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from msm_megatron.config import ConfigError, apply_overrides, load_yaml
from msm_megatron.pipeline.experiment import ExperimentConfig
from msm_megatron.pipeline.plan import build_plan

REPO = Path(__file__).resolve().parents[2]


def plan_of(tmp_path, *overrides):
    exp = apply_overrides(load_yaml(REPO / "examples/pipeline/toy.yaml", ExperimentConfig),
                          [f"out_dir={tmp_path}", *overrides])
    return build_plan(exp)


def hashes(plan):
    return {name: stage.hash for name, stage in plan.stages.items()}


def test_toy_graph_has_every_arm_and_dependencies(tmp_path):
    plan = plan_of(tmp_path, "cot=[no_cot,with_cot]", "seeds=[0,1]")
    names = list(plan.stages)
    sft = [n for n in names if n.startswith("sft/")]
    # origins (msm, base) × cot (2) × sizes (20, all) × seeds (2)
    assert len(sft) == 2 * 2 * 2 * 2
    assert len(plan.stages["eval"].cells) == len(sft)
    for name, stage in plan.stages.items():
        for dep in stage.deps:
            assert names.index(dep) < names.index(name)  # insertion order is a topological order
    msm = plan.stages["sft/msm-default-with_cot-n20-s1"]
    assert "midtrain/default/s1" in msm.deps
    assert "prepare_sft/default/with_cot/n20" in msm.deps
    assert not any(d.startswith("midtrain") for d in plan.stages[
        "sft/base-default-with_cot-n20-s1"].deps)
    # the no-CoT arm strips <think>; seeds reach the trainer
    assert plan.stages["prepare_sft/default/no_cot/n20"].params["keep_think"] is False
    assert "train.seed=1235" in plan.stages["sft/msm-default-no_cot-n40-s1"].params["overrides"]


def test_a_change_redoes_the_stage_and_everything_downstream_only(tmp_path):
    before = hashes(plan_of(tmp_path))
    after = hashes(plan_of(tmp_path, "sft.overrides=[train.steps=21]"))
    changed = {n for n in before if before[n] != after[n]}
    assert changed == {n for n in before if n.startswith(("sft/", "export/"))} | {"eval",
                                                                                  "report"}
    same = hashes(plan_of(tmp_path))
    assert same == before  # deterministic


def test_input_file_contents_are_part_of_the_hash(tmp_path):
    chats = tmp_path / "chats.jsonl"
    shutil.copy(REPO / "examples/chats/aft_demo.jsonl", chats)
    before = hashes(plan_of(tmp_path / "a", f"aft_chats={chats}"))
    chats.write_text(chats.read_text() + chats.read_text().splitlines()[0] + "\n")
    after = hashes(plan_of(tmp_path / "a", f"aft_chats={chats}"))
    assert before["prepare_corpus/default"] == after["prepare_corpus/default"]
    assert before["midtrain/default/s0"] == after["midtrain/default/s0"]
    assert before["prepare_sft/default/no_cot/n20"] != after["prepare_sft/default/no_cot/n20"]


def test_outputs_are_content_addressed(tmp_path):
    a = plan_of(tmp_path)
    b = plan_of(tmp_path, "sft.overrides=[train.steps=21]")
    name = "sft/msm-default-no_cot-n20-s0"
    assert a.stages[name].out != b.stages[name].out  # never resumes another config's checkpoint
    cfg = load_yaml(a.stages[name].argv[1])
    assert cfg.train.run_dir == a.stages[name].out
    assert cfg.checkpoint.load == a.stages["midtrain/default/s0"].out + "/checkpoints"


@pytest.mark.parametrize("override, message", [
    ("cot=[maybe]", "choose from no_cot, with_cot"),
    ("base_model=/nonexistent/model", "not an HF model directory"),
    ("specs={a: examples/spec/qwen_spec.txt, b: examples/spec/rules_spec.txt}",
     "generation.enabled"),
    ("midtrain.recipe=no_such_recipe", "midtrain"),
])
def test_bad_experiments_are_clear_errors(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        plan_of(tmp_path, override)


def test_paper_experiment_dry_run_prints_the_whole_plan(tmp_path):
    """examples/pipeline/paper_qwen3_32b.yaml: base, AFT-only, deliberative alignment and
    MSM+AFT arms on the paper's LoRA recipes (one epoch each), the untouched base model in the
    eval, and the official scenarios with the paper's classifiers."""
    import json

    from msm_megatron.eval.sweep import EvalSweepConfig
    from msm_megatron.pipeline.commands import format_plan
    from msm_megatron.recipes.qwen3 import QWEN3_32B

    base = tmp_path / "Qwen3-32B"
    base.mkdir()
    (base / "config.json").write_text(json.dumps(QWEN3_32B))
    exp = apply_overrides(load_yaml(REPO / "examples/pipeline/paper_qwen3_32b.yaml",
                                    ExperimentConfig),
                          [f"out_dir={tmp_path / 'run'}", f"base_model={base}"])
    plan = build_plan(exp)
    arms = list(plan.stages["eval"].cells)
    assert arms == ["base_model", "msm-philosophy-no_cot-nall-s0",
                    "base-philosophy-no_cot-nall-s0", "msm-philosophy-with_cot-nall-s0",
                    "base-philosophy-with_cot-nall-s0"]
    for name in ("midtrain/philosophy/s0", "sft/base-philosophy-with_cot-nall-s0"):
        cfg = load_yaml(plan.stages[name].argv[1])
        assert (cfg.lora.rank, cfg.train.epochs, cfg.data.seq_length) == (64, 1.0, 8192)
    text = format_plan(plan, "slurm")
    assert text.count("1 epoch(s)") == 5
    assert "preset paper: 27 conditions × 300 samples, temperature 0.7" in text
    assert "scenarios official (MSM clone /src/model_spec_midtraining" in text
    sweep = load_yaml(plan.stages["eval"].cells["base_model"][2], EvalSweepConfig)
    assert (sweep.scenarios.source, sweep.judge.model) == ("official", "claude-sonnet-4-6")


def test_all_chats_are_named_by_their_count_or_nall_when_generated(tmp_path):
    plan = plan_of(tmp_path)
    assert "prepare_sft/default/no_cot/n40" in plan.stages  # examples/chats/aft_demo.jsonl
    assert not any("-n0-" in name or name.endswith("/n0") for name in plan.stages)
    with pytest.raises(ConfigError, match="0 means all 40 chats"):
        plan_of(tmp_path, "aft_sizes=[40,0]")
