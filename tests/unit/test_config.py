"""The config tree: YAML round trip, dotlist overrides, unknown keys, type errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from msm_megatron.config import (
    Config,
    ConfigError,
    apply_overrides,
    load_yaml,
    resolve_paths,
    save_yaml,
    to_dict,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_yaml_round_trip(tmp_path):
    cfg = apply_overrides(Config(), ["optim.lr=2e-5", "train.fp8=mxfp8", "model.arch=llama"])
    cfg = resolve_paths(cfg, tmp_path)  # what is saved has absolute paths
    path = tmp_path / "run" / "config.yaml"
    save_yaml(cfg, path)
    assert load_yaml(path) == cfg
    assert to_dict(load_yaml(path)) == to_dict(cfg)


def test_empty_yaml_is_defaults_with_paths_next_to_the_file(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    cfg = load_yaml(path)
    assert cfg == resolve_paths(Config(), tmp_path)
    assert cfg.train.run_dir == str(tmp_path / "runs/default")


def test_overrides_parse_with_yaml_rules():
    cfg = apply_overrides(
        Config(),
        [
            "optim.lr=2e-5",
            "parallel.tp=4",
            "parallel.sequence_parallel=true",
            "train.fp8=delayed",
            "model.head_dim=128",
            "checkpoint.save_interval=null",
            "name=my run",
            "checkpoint.exit_signals=[SIGTERM]",
        ],
    )
    assert cfg.optim.lr == 2e-5 and isinstance(cfg.optim.lr, float)
    assert cfg.parallel.tp == 4 and cfg.parallel.sequence_parallel is True
    assert cfg.train.fp8 == "delayed"
    assert cfg.model.head_dim == 128
    assert cfg.checkpoint.save_interval is None
    assert cfg.name == "my run"
    assert cfg.checkpoint.exit_signals == ["SIGTERM"]


def test_override_int_for_float_field_becomes_float():
    cfg = apply_overrides(Config(), ["optim.lr=1"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)


def test_overrides_do_not_mutate_the_input():
    base = Config()
    apply_overrides(base, ["parallel.tp=8"])
    assert base.parallel.tp == 1


def test_unknown_key_in_yaml_names_file_and_suggests(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lrr: 1.0e-5\n")
    with pytest.raises(ConfigError) as exc:
        load_yaml(path)
    msg = str(exc.value)
    assert str(path) in msg and "optim.lrr" in msg and "Did you mean 'lr'" in msg


def test_unknown_section_in_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("trian:\n  steps: 3\n")
    with pytest.raises(ConfigError, match="Did you mean 'train'"):
        load_yaml(path)


def test_invalid_yaml_names_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(path)


def test_unknown_key_in_override_suggests():
    with pytest.raises(ConfigError) as exc:
        apply_overrides(Config(), ["optim.lrr=2e-5"])
    assert "optim.lrr" in str(exc.value) and "Did you mean 'lr'" in str(exc.value)


def test_unknown_section_in_override_suggests():
    with pytest.raises(ConfigError, match="Did you mean 'parallel'"):
        apply_overrides(Config(), ["paralel.tp=2"])


@pytest.mark.parametrize(
    ("override", "fact"),
    [
        ("parallel.tp=two", "expected int"),
        ("parallel.tp=2.5", "expected int"),
        ("parallel.tp=true", "expected int"),
        ("optim.lr=fast", "expected float"),
        ("parallel.sequence_parallel=maybe", "expected bool"),
        ("train.precision=bf61", "bf16"),
        ("checkpoint.exit_signals=SIGTERM", "expected a list"),
    ],
)
def test_type_errors_name_the_key(override, fact):
    with pytest.raises(ConfigError) as exc:
        apply_overrides(Config(), [override])
    key = override.split("=")[0]
    assert key in str(exc.value) and fact in str(exc.value)


def test_type_error_in_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  micro_batch_size: one\n")
    with pytest.raises(ConfigError, match="train.micro_batch_size: expected int"):
        load_yaml(path)


@pytest.mark.parametrize(
    ("override", "fact"),
    [("optim", "must look like"), ("optim=1", "is a section"), ("name.x=1", "not a section")],
)
def test_malformed_overrides(override, fact):
    with pytest.raises(ConfigError, match=fact):
        apply_overrides(Config(), [override])


def test_load_config_is_defaults_or_a_named_base_or_yaml_then_overrides(tmp_path):
    from msm_megatron.config import Config, load_config, save_yaml
    from msm_megatron.recipes import get_recipe

    assert load_config(Config) == resolve_paths(Config(), Path.cwd())
    named = load_config(Config, "qwen3_toy_midtrain", ["train.steps=7"], named=get_recipe)
    assert named.name == "qwen3_toy_midtrain" and named.train.steps == 7
    save_yaml(named, tmp_path / "run.yaml")
    again = load_config(Config, str(tmp_path / "run.yaml"), ["optim.lr=0.5"], named=get_recipe)
    assert again.train.steps == 7 and again.optim.lr == 0.5
    with pytest.raises(ConfigError, match="missing.yaml: experiment file not found"):
        load_config(Config, str(tmp_path / "missing.yaml"), what="experiment")
    with pytest.raises(ConfigError, match="no_such: config file not found"):
        load_config(Config, "no_such")  # no named bases: a path


def test_paths_in_a_training_yaml_are_relative_to_it_and_overrides_to_the_cwd(tmp_path,
                                                                               monkeypatch):
    from msm_megatron.config import load_config

    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / "run.yaml").write_text(
        "data: {prepared: [data/a, /abs/b]}\ncheckpoint: {load: ../ckpt}\n"
        "train: {run_dir: out, steps: 3}\nmodel: {hf_path: Qwen/Qwen3-8B}\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(Config, "exp/run.yaml", ["checkpoint.load=here/ckpt"])
    assert cfg.data.prepared == [str(folder / "data/a"), "/abs/b"]
    assert cfg.train.run_dir == str(folder / "out")
    assert cfg.checkpoint.load == str(tmp_path / "here/ckpt")  # typed here: the cwd
    assert cfg.model.hf_path == "Qwen/Qwen3-8B"  # a hub id, not a path field
    monkeypatch.chdir(folder)
    assert load_config(Config, folder / "run.yaml").train.run_dir == str(folder / "out")


def test_paths_in_a_sweep_yaml_are_relative_to_it_and_hub_ids_stay(tmp_path, monkeypatch):
    from msm_megatron.config import load_config
    from msm_megatron.eval.sweep_config import EvalSweepConfig

    (tmp_path / "exports" / "msm").mkdir(parents=True)
    (tmp_path / "sweep.yaml").write_text(
        "arms: [msm=exports/msm, base=Qwen/Qwen3-8B, later=./exports/later]\n"
        "scenarios: {source: official, msm_repo: ../clones/msm}\nout_dir: out\n"
        "runner: openai\nrunner_base_url: http://127.0.0.1:8000/v1\n")
    monkeypatch.chdir(REPO_ROOT)
    cfg = load_config(EvalSweepConfig, tmp_path / "sweep.yaml")
    assert cfg.arms == [f"msm={tmp_path / 'exports/msm'}", "base=Qwen/Qwen3-8B",
                        f"later={tmp_path / 'exports/later'}"]
    assert cfg.scenarios.msm_repo == str(tmp_path.parent / "clones/msm")
    assert cfg.out_dir == str(tmp_path / "out")
    assert cfg.runner_base_url == "http://127.0.0.1:8000/v1"


def test_resolved_overrides_parse_back_to_the_same_values(tmp_path):
    from msm_megatron.config import apply_overrides
    from msm_megatron.config_paths import resolve_override

    odd = tmp_path / "a, b [x]"
    item = resolve_override(Config, "data.prepared=[rel/one, 'a, b [x]/two']", tmp_path)
    cfg = apply_overrides(Config(), [item])
    assert cfg.data.prepared == [str(tmp_path / "rel/one"), str(odd / "two")]
    assert resolve_override(Config, "optim.lr=2e-5", tmp_path) == "optim.lr=2e-5"
    assert resolve_override(Config, "no.such=key", tmp_path) == "no.such=key"  # errors later
    assert resolve_override(Config, "checkpoint.load=null", tmp_path) == "checkpoint.load=null"
