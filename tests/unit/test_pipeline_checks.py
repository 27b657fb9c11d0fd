"""What `msm pipeline` refuses before anything runs or is submitted (and in a dry run): every
problem at once, each naming its stage, field or file; a base model not downloaded yet is only a
warning in a dry run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from msm_megatron.cli import main
from msm_megatron.config import ConfigError, load_config
from msm_megatron.pipeline.checks import preflight
from msm_megatron.pipeline.experiment import ExperimentConfig

REPO = Path(__file__).resolve().parents[2]
TOY = REPO / "examples/pipeline/toy.yaml"
PAPER = REPO / "examples/pipeline/paper_qwen3_32b.yaml"


def toy(tmp_path, *overrides):
    return load_config(ExperimentConfig, TOY, [f"out_dir={tmp_path / 'out'}", *overrides])


def refusal(exp, executor="slurm", dry_run=True) -> str:
    with pytest.raises(ConfigError) as exc:
        preflight(exp, executor, dry_run)
    return str(exc.value)


def test_the_toy_experiment_passes(tmp_path):
    plan, warnings = preflight(toy(tmp_path), "local", dry_run=False)
    assert warnings == [] and "midtrain/default/s0" in plan.stages


@pytest.mark.parametrize("overrides, fact", [
    (["midtrain.recipe=qwen3_32b_midtrain", "midtrain.resources.gpus_per_node=4"],
     "midtrain/default/s0: recipe qwen3_32b_midtrain on 1 node(s) × 4 rank(s) = world 4"),
    (["midtrain.overrides=[parallel.tp=3]"], "model.num_attention_heads=4 is not divisible by "
                                             "parallel.tp=3"),
    (["sft.overrides=[train.steps=-3]"], "train.steps=-3 must be ≥ 0"),
    (["sft.overrides=[parallel.cp=2]"], "parallel.cp=2: the trainer does not split sequences"),
    (['midtrain.overrides=["checkpoint.exit_signals=[SIGTERM,SIGFOO]"]'],
     "checkpoint.exit_signals: 'SIGFOO' is not a signal"),
    (["corpus=[no_corpus.jsonl]"], "corpus[0]: "),
    (["corpora={default: [no_corpus.jsonl]}"], "corpora.default[0]: "),
    (["aft_chats=no_chats.jsonl"], "aft_chats: "),
    (["sft_mix=[no_mix.jsonl]"], "sft_mix[0]: "),
    (["generation.enabled=true", "specs={default: no_spec.txt}"], "specs.default="),
    (["eval.overrides=[scenarios.source=official,scenarios.msm_repo=/no/clone]"],
     "scenarios.msm_repo=/no/clone: no such directory (git clone"),
    (["eval.overrides=[scenarios.source=official]"], "needs scenarios.msm_repo"),
    (["slurm.cluster=no_such_cluster"], "no_such_cluster.env not found"),
    (["slurm.cluster=mine.env"], "mine.env not found"),
])
def test_each_refusal(tmp_path, overrides, fact):
    assert fact in refusal(toy(tmp_path, *overrides))


def test_every_problem_is_listed_at_once_naming_stage_field_and_fix(tmp_path):
    message = refusal(toy(
        tmp_path, "midtrain.recipe=qwen3_32b_midtrain", "midtrain.resources.gpus_per_node=4",
        "sft.overrides=[parallel.tp=3,train.steps=-3]", "corpus=[no_corpus.jsonl]",
        "aft_chats=no_chats.jsonl", "sft_mix=[no_mix.jsonl]",
        "eval.overrides=[scenarios.source=official,scenarios.msm_repo=/no/clone]",
        "slurm.cluster=no_cluster.env"))
    for fact in ("world 4 is not divisible by tp 8 × pp 2 × cp 1 = 16",
                 "change midtrain.overrides or midtrain.resources",
                 "sft/msm-default-no_cot-n20-s0 and 3 more", "parallel.tp=3", "train.steps=-3",
                 "change sft.overrides or sft.resources",
                 f"corpus[0]: {Path.cwd() / 'no_corpus.jsonl'}: no such file",
                 "aft_chats: ", "sft_mix[0]: ", "scenarios.msm_repo=/no/clone",
                 f"slurm.cluster={Path.cwd() / 'no_cluster.env'}"):
        assert fact in message, fact
    assert message.count("\n  - ") == 7  # corpus, chats, mix, clone, cluster, midtrain, sft


def test_the_cluster_file_is_checked_for_slurm_only(tmp_path):
    preflight(toy(tmp_path, "slurm.cluster=no_cluster.env"), "local", dry_run=True)


def test_a_real_run_refuses_and_writes_no_plan(tmp_path, capsys):
    code = main(["pipeline", str(TOY), f"out_dir={tmp_path / 'out'}", "aft_chats=nope.jsonl"])
    assert code == 2
    err = capsys.readouterr().err
    assert "aft_chats: " in err and "nothing was run or submitted" in err
    assert not (tmp_path / "out" / "pipeline" / "plan.json").exists()
    # a dry run prints the plan all the same, then what a run would fail on (still exit 2)
    assert main(["pipeline", str(TOY), f"out_dir={tmp_path / 'out'}", "aft_chats=nope.jsonl",
                 "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert "sft/msm-default-no_cot-n20-s0" in out and "to run" in out
    assert "aft_chats: " in err and "nothing was run" not in err
    assert not (tmp_path / "out" / "pipeline" / "plan.json").exists()


def test_the_chat_template_is_checked_before_anything_runs(tmp_path):
    from msm_megatron.data.toy_tokenizer import build_hf_tokenizer

    assert "chat_template=" in refusal(toy(tmp_path, "chat_template=no_such.jinja"))
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% for m in messages %}{{ m['content'] }")
    assert "chat template syntax error" in refusal(toy(tmp_path, f"chat_template={bad}"))
    base = tmp_path / "base"  # an HF base model whose tokenizer has no chat template
    build_hf_tokenizer(base, template=None)
    (base / "config.json").write_text("{}")
    message = refusal(toy(tmp_path, f"base_model={base}"), dry_run=False)
    assert "its tokenizer has no chat template" in message and "set chat_template" in message
    unclosed = tmp_path / "unclosed.jinja"  # no end-of-turn token after the assistant's text
    unclosed.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    message = refusal(toy(tmp_path, f"base_model={base}", f"chat_template={unclosed}"),
                      dry_run=False)
    assert "a sample chat does not render" in message and "no end-of-turn token" in message


def test_the_llama_base_template_needs_its_end_of_turn_token_and_the_stage_writes_it(
        tmp_path, capsys):
    """examples/chat_templates/llama3_base.jinja on a Llama-3-like base tokenizer: the rule's
    end of turn (<|eot_id|>) is refused with the setting to change; <|end_of_text|> renders, and
    the chat_tokenizer stage writes the tokenizer, config and template without the weights."""
    from msm_megatron.data.chat import render_chat
    from msm_megatron.data.tokenizers import load_tokenizer
    from msm_megatron.pipeline.stage import run_stage
    from tests.helpers.llama_like import build_llama_like

    base = build_llama_like(tmp_path / "Llama-base")
    (base / "config.json").write_text("{}")
    (base / "model.safetensors").write_bytes(b"weights")
    template = REPO / "examples/chat_templates/llama3_base.jinja"
    message = refusal(toy(tmp_path, f"base_model={base}", f"chat_template={template}"),
                      dry_run=False)
    assert "<|eot_id|>" in message and "needs end_of_turn_token" in message
    exp = toy(tmp_path, f"base_model={base}", f"chat_template={template}",
              "end_of_turn_token=<|end_of_text|>")
    plan, _ = preflight(exp, "local", dry_run=False)
    plan_path = tmp_path / "plan.json"
    plan.save(plan_path)
    assert run_stage(plan_path, "chat_tokenizer", run_argv=None) == 0
    out = Path(plan.stages["chat_tokenizer"].out)
    assert sorted(p.name for p in out.iterdir()) == [
        "chat_template.jinja", "config.json", "tokenizer.json", "tokenizer_config.json"]
    tok = load_tokenizer(out, end_of_turn_token="<|end_of_text|>")
    chat = render_chat(tok, [{"role": "user", "content": "Cheddar or brie?"},
                             {"role": "assistant", "content": "Cheddar."}])
    assert chat.text == ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>Cheddar or "
                         "brie?<|end_of_text|><|start_header_id|>assistant<|end_header_id|>"
                         "Cheddar.<|end_of_text|>")
    trained = [i for i, m in zip(chat.ids, chat.loss_mask, strict=True) if m]
    assert tok.decode(trained) == "Cheddar.<|end_of_text|>"
    assert run_stage(plan_path, "chat_tokenizer", run_argv=None) == 0  # done: not redone
    assert "done already" in capsys.readouterr().out


def _paper_inputs(tmp_path) -> list[str]:
    """The paper experiment's data and clones, small and local; no base model."""
    from tests.helpers.official_clones import write_clones

    data = tmp_path / "data"
    data.mkdir()
    for name in ("aft_demo.jsonl", "it_mix_demo.jsonl"):
        shutil.copy(REPO / "examples/chats" / name, data / name)
    shutil.copy(REPO / "examples/corpus/demo_corpus.jsonl", data / "corpus.jsonl")
    am, msm = write_clones(tmp_path / "clones")
    return [f"out_dir={tmp_path / 'run'}", f"corpus=[{data / 'corpus.jsonl'}]",
            f"aft_chats={data / 'aft_demo.jsonl'}", f"sft_mix=[{data / 'it_mix_demo.jsonl'}]",
            f"base_model={tmp_path / 'models/Qwen3-32B'}",
            f"eval.overrides=[preset=paper,scenarios.source=official,scenarios.msm_repo={msm},"
            f"scenarios.agentic_misalignment_repo={am},judge.kind=anthropic,"
            "judge.base_url=null,judge.model=claude-sonnet-4-6]"]


def test_the_paper_dry_run_warns_about_a_base_model_not_downloaded_yet(tmp_path):
    exp = load_config(ExperimentConfig, PAPER, _paper_inputs(tmp_path))
    plan, warnings = preflight(exp, "slurm", dry_run=True)
    assert len(warnings) == 1 and "base_model=" in warnings[0] and "no such directory" in \
        warnings[0] and "a real run refuses" in warnings[0]
    assert "convert_base" in plan.stages and "midtrain/philosophy/s0" in plan.stages
    assert "base_model=" in refusal(exp, dry_run=False)  # a real run or submission refuses
    base = tmp_path / "models/Qwen3-32B"
    base.mkdir(parents=True)
    from msm_megatron.recipes.qwen3 import QWEN3_32B

    (base / "config.json").write_text(json.dumps(QWEN3_32B))
    plan, warnings = preflight(exp, "slurm", dry_run=False)
    assert warnings == [] and plan.stages["convert_base"].argv[2] == str(base)


def test_a_clone_of_the_wrong_repository_is_refused(tmp_path):
    inputs = _paper_inputs(tmp_path)
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    inputs[-1] = (f"eval.overrides=[preset=paper,scenarios.source=official,"
                  f"scenarios.msm_repo={wrong}]")
    message = refusal(load_config(ExperimentConfig, PAPER, inputs))
    assert "eval.overrides: " in message and str(wrong) in message


def test_the_dry_run_from_the_command_line_prints_warnings_and_the_plan(tmp_path, capsys):
    code = main(["pipeline", str(PAPER), *_paper_inputs(tmp_path), "--executor", "slurm",
                 "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "warning: base_model=" in err and "convert_base" in out
    assert "sft/msm-philosophy-with_cot-nall-s0" in out
