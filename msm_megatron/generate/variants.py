"""``msm generate spec-variants``: a bare rules spec → value-augmented and rule-augmented specs.

The value-augmented variant keeps every rule and adds the reasons behind it; the rule-augmented
variant expands the rules into sub-rules without reasons, asked for — and checked to be within
``length_tolerance`` of — the value-augmented variant's length, so the two differ in content,
not size. Both must keep the ``{model_name}``/``{provider_name}`` placeholders usable (checked
with the same loader as any spec). Outputs: ``value_augmented.txt``, ``rule_augmented.txt``,
``summary.json`` in ``out_dir``.
"""

from __future__ import annotations

import json
from pathlib import Path

from msm_megatron.config import ConfigError
from msm_megatron.generate import prompts
from msm_megatron.generate.config import VariantsGenConfig
from msm_megatron.generate.pipeline import Pipeline, tagged_content
from msm_megatron.llm.jobs import ContentError, Job
from msm_megatron.spec import load_spec


def _spec_text(out: Path, name: str, words: int | None = None, tolerance: float = 0.0):
    def parse(response):
        text = tagged_content(response) + "\n"
        scratch = out / f".{name}.check.txt"
        scratch.write_text(text, encoding="utf-8")
        try:
            load_spec(scratch, "M", "P")  # placeholders must still be the two known ones
        except ConfigError as exc:
            raise ContentError(f"not a usable spec: {exc}") from exc
        finally:
            scratch.unlink()
        if words and abs(len(text.split()) - words) > tolerance * words:
            raise ContentError(f"{len(text.split())} words, wanted about {words}")
        return text
    return parse


def spec_variants(cfg: VariantsGenConfig, rules_spec: Path, backend,
                  progress: bool = True) -> dict:
    template = load_spec(rules_spec, "{model_name}", "{provider_name}").template
    run = Pipeline(cfg.out_dir, backend, cfg.backend, cfg.content_attempts, progress)
    out = run.out
    value = run.stage([Job("value_augmented", run.request(prompts.value_augmented(template), 8192),
                           _spec_text(out, "value"))], "value_augmented")
    if "value_augmented" not in value:
        run.write_failures()
        raise ConfigError(f"no usable value-augmented spec (see {out}/failures.jsonl)")
    words = len(value["value_augmented"].split())
    rule = run.stage([Job("rule_augmented", run.request(prompts.rule_augmented(template, words),
                                                        8192),
                          _spec_text(out, "rule", words, cfg.length_tolerance))],
                     "rule_augmented")
    (out / "value_augmented.txt").write_text(value["value_augmented"], encoding="utf-8")
    if "rule_augmented" in rule:
        (out / "rule_augmented.txt").write_text(rule["rule_augmented"], encoding="utf-8")
    run.write_failures()
    summary = {"source": str(rules_spec), "source_words": len(template.split()),
               "value_augmented_words": words,
               "rule_augmented_words": len(rule.get("rule_augmented", "").split()) or None,
               "failures": len(run.failures), "stages": run.stage_reports()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    run.cache.close()
    return summary
