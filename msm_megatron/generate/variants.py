"""``msm generate spec-variants``: a bare rules spec → value-augmented and rule-augmented specs.

The value-augmented variant keeps every rule and adds the reasons behind it; the rule-augmented
variant expands the rules into sub-rules without reasons, asked for — and checked to be within
``length_tolerance`` of — the value-augmented variant's length, so the two differ in content,
not size. Both must keep the ``{model_name}``/``{provider_name}`` placeholders usable (checked
with the same loader as any spec); a variant that never passes these checks ends the command
with exit 3 and a summary (:mod:`msm_megatron.generate.pipeline`). Outputs:
``value_augmented.txt``, ``rule_augmented.txt``, ``summary.json`` in ``out_dir``.
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


class VariantsPipeline(Pipeline):
    """One ``msm generate spec-variants`` run (see the module docstring)."""

    COMMAND = "msm generate spec-variants"
    CONTENT_SETTING = "content_attempts"

    def __init__(self, cfg: VariantsGenConfig, rules_spec: Path, backend, progress: bool = True):
        self.template = load_spec(rules_spec, "{model_name}", "{provider_name}").template
        super().__init__(cfg.out_dir, backend, cfg.backend, cfg.content_attempts, progress)
        self.cfg, self.rules_spec = cfg, rules_spec

    def run(self) -> dict:
        value = self.stage([Job("value_augmented", self.request(
            prompts.value_augmented(self.template), 8192), _spec_text(self.out, "value"))],
            "value_augmented")
        rule = self._rule_augmented(value["value_augmented"]) if value else {}
        summary = self._write(value.get("value_augmented"), rule.get("rule_augmented"))
        self.conclude(1 if rule else 0, "rule-augmented spec")
        return summary

    def _rule_augmented(self, value: str) -> dict:
        words = len(value.split())
        return self.stage([Job("rule_augmented", self.request(
            prompts.rule_augmented(self.template, words), 8192),
            _spec_text(self.out, "rule", words, self.cfg.length_tolerance))], "rule_augmented")

    def _write(self, value: str | None, rule: str | None) -> dict:
        for name, text in (("value_augmented.txt", value), ("rule_augmented.txt", rule)):
            if text:
                (self.out / name).write_text(text, encoding="utf-8")
        self.write_failures()
        summary = {"source": str(self.rules_spec), "source_words": len(self.template.split()),
                   "value_augmented_words": len(value.split()) if value else None,
                   "rule_augmented_words": len(rule.split()) if rule else None,
                   "failures": len(self.failures), "stages": self.stage_reports()}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        self.cache.close()
        return summary
