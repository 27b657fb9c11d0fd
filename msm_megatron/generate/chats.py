"""``msm generate chats``: Model Spec → AFT demonstrations, with and without chain of thought.

Stages (concurrent within each, all calls cached — see :mod:`msm_megatron.generate.docs`):

1. spec → conversation domains (``chats.domains``)
2. (domain, style) → user questions, in six styles: direct, indirect, comparison,
   recommendation, opinion, edge case (``chats.questions_per_style`` each)
3. near-duplicate questions dropped: all-MiniLM-L6-v2 cosine > ``chats.dedupe_cosine`` (0.91),
   or MinHash with ``chats.dedupe=minhash``
4. answers written with the whole spec in the system prompt: ``<think>reasoning</think>`` then
   the reply
5. an LLM judge keeps answers that follow the spec and express no wish for self-continuation
6. while fewer than ``chats.target`` chats passed, another round of questions (up to
   ``chats.backfill_rounds``) goes through 2–5

Outputs in ``out_dir``: ``with_cot/dataset.jsonl`` (the deliberative-alignment baseline's data:
the reply keeps its ``<think>`` block) and ``no_cot/dataset.jsonl`` (reasoning stripped), both
``{"messages": [user, assistant]}`` single-turn chats without a system prompt, in a seeded
shuffle, truncated to ``chats.target`` (fewer when the rounds run out; none at all, or a stage
whose failures exceed ``backend.max_failed_fraction``, ends the command with exit 3);
``questions.jsonl`` (every question, its style, domain, and whether it was a duplicate /
answered / passed), ``summary.json`` (``rounds``: the question rounds run), ``failures.jsonl``.
"""

from __future__ import annotations

import json
import random
import re

from msm_megatron.config import save_yaml
from msm_megatron.generate import prompts
from msm_megatron.generate.config import ChatsGenConfig
from msm_megatron.generate.pipeline import Pipeline, listing, unique_by_name
from msm_megatron.llm.jobs import ContentError, Job
from msm_megatron.spec import Spec

_THINK = re.compile(r"^\s*<think>(.*?)</think>\s*(.*)$", re.S)
_VERDICT = re.compile(r"VERDICT:\s*(PASS|FAIL)\b")


def parse_answer(response) -> dict:
    """``<think>…</think>`` then a non-empty reply; else ContentError."""
    if response.truncated:
        raise ContentError("truncated (raise chats.max_answer_tokens)")
    found = _THINK.match(response.text)
    if not found or not found.group(1).strip() or not found.group(2).strip():
        raise ContentError("expected <think>reasoning</think> followed by the reply")
    return {"think": found.group(1).strip(), "reply": found.group(2).strip()}


def parse_verdict(response) -> bool:
    verdicts = _VERDICT.findall(response.text)
    if not verdicts:
        raise ContentError("no 'VERDICT: PASS' or 'VERDICT: FAIL' line")
    return verdicts[-1] == "PASS"


class ChatsPipeline(Pipeline):
    """One run of the AFT-demonstration pipeline (see the module docstring)."""

    COMMAND = "msm generate chats"
    CONTENT_SETTING = "chats.content_attempts"

    def __init__(self, cfg: ChatsGenConfig, spec: Spec, backend, progress: bool = True):
        super().__init__(cfg.out_dir, backend, cfg.backend, cfg.chats.content_attempts, progress)
        self.cfg, self.spec = cfg, spec
        self.questions: list[dict] = []  # every question seen, with its fate
        self.passed: list[dict] = []
        self.rounds = 0  # question rounds run (the first and each backfill)

    def run(self) -> dict:
        c = self.cfg.chats
        save_yaml(self.cfg, self.out / "config.yaml")
        found = self.stage([Job("spec", self.request(prompts.chat_domains(self.spec.text,
                                                                          c.domains)),
                                listing(("name", "description")))], "domains")
        domains = unique_by_name(found.get("spec", []))
        for round_ in range(1 + c.backfill_rounds):
            if len(self.passed) >= c.target or not domains:
                break
            self._round(domains, round_)
            self.rounds += 1
        summary = self._write()
        self.conclude(summary["chats"], f"chats ({summary['questions']} questions, "
                      f"{summary['answered']} answered, {summary['passed_judge']} passed the "
                      f"judge; {self.out / 'questions.jsonl'} marks each question)")
        return summary

    def _round(self, domains: list[dict], round_: int) -> None:
        c, tag = self.cfg.chats, f"r{round_}"
        asked = self.stage([Job(f"{tag}/{dom['name']}/{style}", self.request(
            prompts.questions(dom, style, c.questions_per_style, round_)), listing(None))
            for dom in domains for style in prompts.QUESTION_STYLES], f"questions_{tag}")
        new = [{"question": q.strip(), "domain": key.split("/")[1], "style": key.split("/")[2],
                "round": round_} for key, qs in asked.items() for q in qs]
        kept = self._dedupe(new)
        system = prompts.responder_system(self.spec.text, self.spec.model_name)
        answers = self.stage([Job(str(i), self.request(q["question"], c.max_answer_tokens,
                                                       system=system), parse_answer)
                              for i, q in kept], f"answers_{tag}")
        verdicts = self.stage([Job(i, self.request(prompts.judge(
            self.spec.text, kept_q["question"], _full(answers[i]))), parse_verdict)
            for i, kept_q in kept if i in answers], f"judge_{tag}")
        for i, q in kept:
            q["answered"] = i in answers
            q["passed"] = verdicts.get(i, False)
            if q["passed"]:
                self.passed.append({**q, **answers[i]})

    def _dedupe(self, new: list[dict]) -> list[tuple[str, dict]]:
        """Mark near-duplicates (against every earlier question too); return the kept ones."""
        c = self.cfg.chats
        texts = [q["question"] for q in self.questions] + [q["question"] for q in new]
        if c.dedupe == "embeddings":
            from msm_megatron.generate.embed import similar_questions

            dups = similar_questions(texts, c.dedupe_cosine)
        else:
            from msm_megatron.generate.dedupe import near_duplicates

            dups = near_duplicates(texts, 0.8, c.seed)
        start = len(self.questions)
        kept = []
        for offset, q in enumerate(new):
            q["duplicate"] = (start + offset) in dups
            self.questions.append(q)
            if not q["duplicate"]:
                kept.append((str(start + offset), q))
        return kept

    def _write(self) -> dict:
        c = self.cfg.chats
        chats = sorted(self.passed, key=lambda q: (q["round"], q["domain"], q["style"],
                                                   q["question"]))
        random.Random(c.seed).shuffle(chats)
        chats = chats[: c.target]
        for variant, with_think in (("with_cot", True), ("no_cot", False)):
            folder = self.out / variant
            folder.mkdir(parents=True, exist_ok=True)
            with (folder / "dataset.jsonl").open("w", encoding="utf-8") as f:
                for chat in chats:
                    reply = _full(chat) if with_think else chat["reply"]
                    f.write(json.dumps({"messages": [
                        {"role": "user", "content": chat["question"]},
                        {"role": "assistant", "content": reply}]}, ensure_ascii=False) + "\n")
        with (self.out / "questions.jsonl").open("w", encoding="utf-8") as f:
            for q in self.questions:
                f.write(json.dumps(q, ensure_ascii=False) + "\n")
        self.write_failures()
        stages = self.stage_reports()
        summary = {
            "spec": str(self.spec.path), "spec_sha256": self.spec.sha256,
            "model_name": self.spec.model_name, "target": c.target, "chats": len(chats),
            "questions": len(self.questions),
            "duplicates": sum(q["duplicate"] for q in self.questions),
            "answered": sum(q.get("answered", False) for q in self.questions),
            "passed_judge": len(self.passed), "failures": len(self.failures),
            "rounds": self.rounds,
            "stages": stages,
            "input_tokens": sum(s["input_tokens"] for s in stages),
            "output_tokens": sum(s["output_tokens"] for s in stages),
        }
        b = self.cfg.backend
        summary["cost_usd"] = (summary["input_tokens"] * b.usd_per_mtok_in
                               + summary["output_tokens"] * b.usd_per_mtok_out) / 1e6
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        self.cache.close()
        return summary


def _full(answer: dict) -> str:
    return f"<think>\n{answer['think']}\n</think>\n\n{answer['reply']}"
