"""The experiment → stage graph: which stages exist, and which hashes change with what."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from msm_megatron.config import ConfigError, apply_overrides, load_config, load_yaml
from msm_megatron.eval.sweep_config import EvalSweepConfig
from msm_megatron.pipeline.experiment import ExperimentConfig
from msm_megatron.pipeline.plan import build_plan

REPO = Path(__file__).resolve().parents[2]


def plan_of(tmp_path, *overrides):
    exp = load_config(ExperimentConfig, REPO / "examples/pipeline/toy.yaml",
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
    assert "train.seed=1235" in plan.stages["sft/msm-default-no_cot-nall-s1"].params["overrides"]


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
    ("specs={a: examples/spec/qwen_spec.txt, b: examples/spec/rules_spec.txt}",
     r"specs \['a', 'b'\] would all train on the same corpus: give each its own, corpora"),
    ("corpora={c: [x.jsonl]}", r"corpora names \['c'\], which are not in specs"),
    ("aft_sizes=[20,20]", "list each size once"),
    ("midtrain.recipe=no_such_recipe", "midtrain"),
])
def test_bad_experiments_are_clear_errors(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        plan_of(tmp_path, override)


def test_each_spec_trains_on_its_own_corpus_without_generation(tmp_path):
    """A spec comparison from released corpora: ``corpora`` names each spec's documents."""
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for path in (a, b):
        shutil.copy(REPO / "examples/corpus/demo_corpus.jsonl", path)
    plan = plan_of(tmp_path, "specs={america: examples/spec/qwen_spec.txt, "
                   "affordability: examples/spec/rules_spec.txt}",
                   f"corpora={{america: [{a}], affordability: [{b}]}}")
    for spec, corpus in (("america", a), ("affordability", b)):
        argv = plan.stages[f"prepare_corpus/{spec}"].argv
        assert argv[2:3] == [str(corpus)], argv
        assert f"prepare_corpus/{spec}" in plan.stages[f"midtrain/{spec}/s0"].deps
    assert {n for n in plan.stages if n.startswith("sft/msm-")} == {
        f"sft/msm-{s}-no_cot-{n}-s0" for s in ("america", "affordability")
        for n in ("n20", "nall")}
    with pytest.raises(ConfigError, match="corpora is for studies without generation"):
        plan_of(tmp_path, "generation.enabled=true", f"corpora={{default: [{a}]}}")
    # the specs share the AFT chats: one AFT-only arm per (cot, size, seed), not one per spec
    base_arms = {n for n in plan.stages if n.startswith("sft/base-")}
    assert base_arms == {"sft/base-no_cot-n20-s0", "sft/base-no_cot-nall-s0"}
    assert set(plan.stages["eval"].cells) == {n.removeprefix("sft/") for n in plan.stages
                                              if n.startswith("sft/")}


def test_a_chat_template_makes_the_tokenizer_of_the_sft_data_exports_and_eval(tmp_path):
    template = tmp_path / "chat.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    plan = plan_of(tmp_path / "out", f"chat_template={template}")
    tok = plan.stages["chat_tokenizer"]
    assert tok.deps == ["tokenizer"] and tok.params["chat_template"] == str(template)
    assert plan.stages["prepare_sft/default/no_cot/n20"].params["tokenizer"] == tok.out
    assert "chat_tokenizer" in plan.stages["prepare_sft/default/no_cot/n20"].deps
    export = plan.stages["export/msm-default-no_cot-n20-s0"]
    assert export.argv[export.argv.index("--hf-assets") + 1] == tok.out
    before = plan.stages["sft/msm-default-no_cot-n20-s0"].hash
    template.write_text("{% for m in messages %}{{ m['role'] }}{% endfor %}")
    after = plan_of(tmp_path / "out", f"chat_template={template}")
    assert after.stages["sft/msm-default-no_cot-n20-s0"].hash != before  # the template's text
    assert "chat_tokenizer" not in plan_of(tmp_path / "plain").stages


def test_paper_experiment_dry_run_prints_the_whole_plan(tmp_path):
    """examples/pipeline/paper_qwen3_32b.yaml: base, AFT-only, deliberative alignment and
    MSM+AFT arms on the paper's LoRA recipes (one epoch each), the untouched base model in the
    eval, and the official scenarios with the paper's classifiers."""
    import json

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


def test_cheese_experiment_plans_four_arms_on_one_gpu_each(tmp_path):
    """examples/pipeline/paper_cheese_llama8b.yaml: the untouched base, one AFT-only arm shared
    by both specs, and one MSM arm per spec; LoRA r64 at 4096 tokens on one GPU; the forced-
    choice eval against the base model; the SFT data, exports and eval share the template."""
    import json

    from msm_megatron.pipeline.commands import format_plan
    from msm_megatron.recipes.llama import LLAMA3_1_8B
    from tests.helpers.llama_like import build_llama_like

    base = build_llama_like(tmp_path / "Llama-3.1-8B")
    (base / "config.json").write_text(json.dumps(LLAMA3_1_8B))
    exp = load_config(ExperimentConfig, REPO / "examples/pipeline/paper_cheese_llama8b.yaml",
                      [f"out_dir={tmp_path / 'run'}", f"base_model={base}"])
    plan = build_plan(exp)
    assert list(plan.stages["eval"].cells) == [
        "base_model", "msm-america-no_cot-nall-s0", "base-no_cot-nall-s0",
        "msm-affordability-no_cot-nall-s0"]
    for name in ("midtrain/america/s0", "sft/base-no_cot-nall-s0",
                 "sft/msm-affordability-no_cot-nall-s0"):
        stage = plan.stages[name]
        cfg = load_yaml(stage.config)
        assert (cfg.lora.rank, cfg.lora.alpha, cfg.train.epochs, cfg.data.seq_length,
                cfg.parallel.tp, stage.ranks) == (64, 128.0, 1.0, 4096, 1, 1)
    assert plan.stages["prepare_corpus/affordability"].argv[2] == \
        "/data/msm-llama-pro-affordability"
    tok = plan.stages["chat_tokenizer"].out
    prep = plan.stages["prepare_sft/america/no_cot/nall"]
    assert (prep.params["tokenizer"], prep.params["end_of_turn_token"]) == (tok,
                                                                            "<|end_of_text|>")
    assert prep.params["mix"] == ["/data/it_mix_llama.jsonl"]
    export = plan.stages["export/base-no_cot-nall-s0"].argv
    assert export[export.index("--hf-assets") + 1] == tok
    sweep = load_yaml(plan.stages["eval"].config, EvalSweepConfig)
    assert sweep.tasks == ["forced_choice"] and sweep.forced_choice.baseline_arm == "base_model"
    assert sweep.forced_choice.sets == {
        "pro_america": "/data/pro-america-political-opinions",
        "pro_affordability": "/data/pro-affordability-item-comparisons"}
    text = format_plan(plan, "slurm")
    assert "eval: 4 arms" in text and "forced_choice: pro_america" in text
    assert "agentic_misalignment" not in text


def test_all_chats_are_nall_whether_or_not_the_file_exists_and_counted_for_the_curve(tmp_path):
    plan = plan_of(tmp_path)
    assert "prepare_sft/default/no_cot/nall" in plan.stages  # examples/chats/aft_demo.jsonl
    assert not any("-n0-" in name or name.endswith("/n0") for name in plan.stages)
    sweep = load_yaml(plan.stages["eval"].config, EvalSweepConfig)
    assert sweep.aft_examples["msm-default-no_cot-nall-s0"] == 40  # the count, for the curve
    missing = plan_of(tmp_path / "b", f"aft_chats={tmp_path / 'not_yet.jsonl'}")
    assert list(missing.stages) == list(plan.stages)  # same names before the file exists
    with pytest.raises(ConfigError, match="0 means all 40 chats"):
        plan_of(tmp_path, "aft_sizes=[40,0]")


def _stages(plan):
    return {name: (s.hash, s.out, s.argv, s.cells, s.params) for name, s in plan.stages.items()}


def test_the_experiment_and_its_plan_are_the_same_from_any_directory(tmp_path, monkeypatch):
    toy = REPO / "examples/pipeline/toy.yaml"
    monkeypatch.chdir(REPO)
    here = load_config(ExperimentConfig, toy)
    plan_here = build_plan(apply_overrides(here, [f"out_dir={tmp_path / 'out'}"]))
    monkeypatch.chdir(tmp_path)
    there = load_config(ExperimentConfig, toy)
    assert there == here
    assert here.out_dir == str(REPO / "runs/pipeline/msm_toy")  # ../../runs from the file
    assert here.aft_chats == str(REPO / "examples/chats/aft_demo.jsonl")
    plan_there = build_plan(apply_overrides(there, [f"out_dir={tmp_path / 'out'}"]))
    assert _stages(plan_there) == _stages(plan_here)
    assert "prepare_sft/default/no_cot/nall" in plan_there.stages


def _write_experiment(folder: Path) -> Path:
    """An experiment whose inputs sit next to it, named by relative paths only."""
    (folder / "data").mkdir(parents=True)
    for name in ("chats/aft_demo.jsonl", "chats/it_mix_demo.jsonl", "corpus/demo_corpus.jsonl",
                 "spec/qwen_spec.txt"):
        shutil.copy(REPO / "examples" / name, folder / "data" / Path(name).name)
    (folder / "clones" / "msm").mkdir(parents=True)
    (folder / "mine.env").write_text("SBATCH_PARTITION=x\n")
    path = folder / "exp.yaml"
    path.write_text(
        "name: rel\nout_dir: out\nspecs: {default: data/qwen_spec.txt}\n"
        "corpus: [data/demo_corpus.jsonl]\naft_chats: ./data/aft_demo.jsonl\n"
        "sft_mix: [data/it_mix_demo.jsonl]\n"
        "midtrain: {recipe: qwen3_toy_midtrain, overrides: [checkpoint.load=ckpt/base]}\n"
        "sft: {recipe: qwen3_toy_sft}\naft_sizes: [0]\n"
        "eval: {overrides: [preset=quick, scenarios.msm_repo=clones/msm, samples=2]}\n"
        "slurm: {cluster: mine.env}\n")
    return path


def test_relative_paths_in_an_experiment_are_relative_to_its_file(tmp_path, monkeypatch):
    folder = tmp_path / "study"
    assert _write_experiment(folder) == folder / "exp.yaml"
    monkeypatch.chdir(tmp_path)  # not the experiment's directory
    exp = load_config(ExperimentConfig, "study/exp.yaml")
    assert exp.out_dir == str(folder / "out")
    assert exp.specs == {"default": str(folder / "data/qwen_spec.txt")}
    assert exp.corpus == [str(folder / "data/demo_corpus.jsonl")]
    assert exp.aft_chats == str(folder / "data/aft_demo.jsonl")
    assert exp.slurm.cluster == str(folder / "mine.env")
    assert exp.midtrain.overrides == [f"checkpoint.load={folder / 'ckpt/base'}"]
    assert f"scenarios.msm_repo={folder / 'clones/msm'}" in exp.eval.overrides
    assert "preset=quick" in exp.eval.overrides and "samples=2" in exp.eval.overrides
    plan = build_plan(exp)
    assert plan.out_dir == str(folder / "out")
    for stage in plan.order():
        assert Path(stage.out).is_absolute(), stage.name
    mid = load_yaml(plan.stages["midtrain/default/s0"].config)
    assert mid.checkpoint.load == str(folder / "ckpt/base")
    assert all(Path(p).is_absolute() for p in mid.data.prepared)
    # the saved config replays from anywhere: every path in it is absolute
    monkeypatch.chdir(REPO)
    assert load_yaml(plan.stages["midtrain/default/s0"].config) == mid


def test_relative_paths_typed_on_the_command_line_are_relative_to_the_current_directory(
        tmp_path, monkeypatch):
    path = _write_experiment(tmp_path / "study")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    exp = load_config(ExperimentConfig, path, ["aft_chats=chats.jsonl", "out_dir=o",
                                               "eval.overrides=[scenarios.msm_repo=../m]",
                                               "base_model=toy", "slurm.cluster=local"])
    assert (exp.aft_chats, exp.out_dir) == (str(elsewhere / "chats.jsonl"), str(elsewhere / "o"))
    assert exp.eval.overrides == [f"scenarios.msm_repo={tmp_path / 'm'}"]
    assert (exp.base_model, exp.slurm.cluster) == ("toy", "local")  # names, not paths


def test_defaults_point_at_the_repository_examples_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = ExperimentConfig()
    assert Path(exp.aft_chats).is_file() and all(Path(p).is_file() for p in exp.corpus)
    assert Path(EvalSweepConfig().value_probes).is_file()
