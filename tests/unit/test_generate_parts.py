"""Pieces of the document pipeline: spec loading, response parsing, near-duplicate removal."""

from __future__ import annotations

import random

import pytest

from msm_megatron.config import ConfigError
from msm_megatron.generate.dedupe import near_duplicates
from msm_megatron.generate.pipeline import parse_json_list, slug
from msm_megatron.llm.jobs import ContentError
from msm_megatron.spec import load_spec


def test_spec_renders_names_and_literal_braces(tmp_path):
    path = tmp_path / "spec.txt"
    path.write_text("{model_name} by {provider_name} writes {{json}}.\n")
    spec = load_spec(path, "Qwen", "Alibaba")
    assert spec.text == "Qwen by Alibaba writes {json}.\n" and len(spec.sha256) == 64


def test_spec_errors_name_file_and_line(tmp_path):
    path = tmp_path / "spec.txt"
    path.write_text("ok {model_name}\n\nthen {modelname}\n")
    with pytest.raises(ConfigError, match=r"spec.txt:3: unknown template variable \{modelname\}"):
        load_spec(path, "Qwen", "Alibaba")
    path.write_bytes(b"\xff\xfe bad")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_spec(path, "Qwen", "Alibaba")


def test_json_lists_fenced_or_bare_with_shape_checks():
    assert parse_json_list('Sure:\n```json\n["a", "b"]\n```', None) == ["a", "b"]
    assert parse_json_list('Here: [{"name": "x", "description": "y"}] done',
                           ("name", "description")) == [{"name": "x", "description": "y"}]
    for bad, keys in [("no list here", None), ('["a", ""]', None), ('[{"name": "x"}]',
                      ("name", "description")), ("```json\n[1, 2\n```", None)]:
        with pytest.raises(ContentError):
            parse_json_list(bad, keys)
    with pytest.raises(ContentError, match="at least 3"):
        parse_json_list('["a"]', None, at_least=3)


def test_slug_is_filesystem_safe():
    assert slug("Honesty & Trust: 2.0 / Edge cases") == "honesty_trust_2_0_edge_cases"
    assert slug("!!!") == "unnamed"


def test_near_duplicates_found_and_distinct_texts_kept():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(500)]
    texts = [" ".join(rng.choices(vocab, k=300)) for _ in range(30)]
    words = texts[3].split()
    words[10] = "changed"  # one word in 300: Jaccard of 5-shingles ≈ 0.97
    texts.append(" ".join(words))
    texts.append(texts[7])  # exact copy
    dups = near_duplicates(texts, threshold=0.8)
    assert dups == {30: 3, 31: 7}
    assert near_duplicates(texts[:30], threshold=0.8) == {}


def test_generation_and_eval_configs_load_yaml_then_overrides(tmp_path):
    from msm_megatron.config import load_config, save_yaml
    from msm_megatron.eval.sweep_config import EvalSweepConfig
    from msm_megatron.generate.config import DocsGenConfig

    save_yaml(DocsGenConfig(out_dir="gen/x"), tmp_path / "docs.yaml")
    cfg = load_config(DocsGenConfig, str(tmp_path / "docs.yaml"), ["docs.doc_types=3"])
    assert (cfg.out_dir, cfg.docs.doc_types) == (str(tmp_path / "gen/x"), 3)  # next to the YAML
    save_yaml(EvalSweepConfig(arms=["a=/m"], preset="paper"), tmp_path / "eval.yaml")
    sweep = load_config(EvalSweepConfig, str(tmp_path / "eval.yaml"), ["samples=2"])
    assert (sweep.arms, sweep.preset, sweep.samples) == (["a=/m"], "paper", 2)
    with pytest.raises(ConfigError, match="did you mean|Did you mean"):
        load_config(EvalSweepConfig, None, ["preset_=paper"])


def test_sweep_runner_settings_group_the_flat_keys():
    from msm_megatron.config import load_config
    from msm_megatron.eval.sweep_config import EvalSweepConfig

    cfg = load_config(EvalSweepConfig, None, ["runner=vllm", "tensor_parallel_size=4",
                                              "max_model_len=8192", "dtype=bfloat16"])
    settings = cfg.runner_settings()
    assert (settings.kind, settings.tensor_parallel_size, settings.lora_base_model) == (
        "vllm", 4, None)
    assert settings.engine_args() == {
        "dtype": "bfloat16", "tensor_parallel_size": 4, "gpu_memory_utilization": 0.9,
        "enforce_eager": False, "enable_prefix_caching": True, "max_model_len": 8192}
    assert EvalSweepConfig().runner_settings().engine_args() == {"dtype": "auto"}
    served = load_config(EvalSweepConfig, None, ["runner=openai", "runner_base_url=http://h/v1",
                                                 "runner_concurrency=8"]).runner_settings()
    assert (served.kind, served.base_url, served.concurrency) == ("openai", "http://h/v1", 8)
