"""Forced-choice value generalization (``tasks=[forced_choice]``): which option a model picks
on held-out questions whose answer key stands for one value (the eval sets,
:mod:`msm_megatron.eval.forced_choice_sets`), scored two ways side by side.

The prompt lists the options under the question (``A) …``, ``B) …``), or is the question alone
where the set writes its options in it (``prompt: verbatim``). It is the chat template
applied to that text (``prompt_format=chat``), or ``Question: <text>\\nAnswer:`` for base models
(``completion``); ``auto`` takes the chat template when the arm's tokenizer has one.

- **Option log-likelihood**: the log-probability of each option's text as the continuation of
  the prompt (after ``" "`` in the completion format), summed over its tokens (``loglik``) and
  per token (``loglik_per_token``); the option with the highest score is the choice.
  Context and continuation are tokenized apart and joined as token ids, so the HF and vLLM
  runners score identical sequences (``continuation_logprobs``).
- **Generation**: one greedy reply to the same prompt, parsed (:func:`parse_reply`): the first
  standalone option letter, else the one option whose text the reply contains; anything else
  is unparsed and left out of the rate, which comes with the parse rate.
  ``generation_or_loglik`` is the parsed reply with the per-token log-likelihood choice where
  the reply did not parse (forced choice with a log-likelihood fallback). The same letter
  reading serves the A/B probes of :mod:`msm_megatron.eval.values`.

A rate is the share of choices that are the answer key (the value-consistent choice), with its
Wilson 95 % interval; each arm's difference from the baseline arm has a Newcombe interval.
Per arm and set the choices are written to ``<arm>/forced_choice/<set>.jsonl`` and reused on a
rerun of the same items and format (the model is then not loaded).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from msm_megatron.config import ConfigError
from msm_megatron.data.mmlu import lettered
from msm_megatron.eval.forced_choice_sets import EvalSet, ForcedChoiceConfig, Item
from msm_megatron.eval.stats import difference_or_none, wilson

# each scoring and its label in the report and the plot
SCORINGS = {"loglik": "log-likelihood", "loglik_per_token": "per token",
            "generation": "generation", "generation_or_loglik": "generation, else per token"}


def question_text(item: Item) -> str:
    """The user turn, or the completion's question: the question with its lettered options
    (:func:`~msm_megatron.data.mmlu.lettered`, as in the MMLU instruction-tuning chats), or the
    question alone for a set whose prompt is ``verbatim`` (its options are written in it)."""
    if item.verbatim:
        return item.question
    return lettered(item.question, list(item.options))  # item.letters are A, B, … in order


def resolve_format(setting: str, tokenizer) -> str:
    """``chat`` or ``completion``: the setting, with ``auto`` decided by the tokenizer."""
    if setting == "auto":
        return "chat" if tokenizer.chat_template is not None else "completion"
    return setting


def context_ids(tokenizer, item: Item, fmt: str) -> list[int]:
    """The prompt's token ids (special tokens included: the template's, or the BOS)."""
    if fmt == "chat":
        from msm_megatron.eval.runners import chat_prompt_ids

        return chat_prompt_ids(tokenizer, "", question_text(item))
    return list(tokenizer(f"Question: {question_text(item)}\nAnswer:")["input_ids"])


def option_ids(tokenizer, text: str, fmt: str) -> list[int]:
    """An option's continuation tokens (after a space in the completion format)."""
    return tokenizer.encode(text if fmt == "chat" else " " + text, add_special_tokens=False)


def reply_letter(reply: str, letters: str) -> str | None:
    """The earliest option letter a reply states as an answer: the whole reply (``B``, ``(B).``),
    ``(B)``, ``B)`` ``B.`` ``B:``, or after answer/option/choice (``the answer is B``); a capital
    that starts a sentence (``A warm coat``) is not a letter answer. None when there is none."""
    forms = (rf"^\W*([{letters}])\W*$", rf"\(([{letters}])\)",
             rf"(?<![\w'])([{letters}])[).:](?!\w)",
             rf"(?i:answer|option|choice)(?:\s+is)?\s*:?\s*\(?([{letters}])(?![\w'])")
    found = [m for form in forms for m in [re.search(form, reply.strip())] if m]
    return min(found, key=lambda m: m.start(1)).group(1) if found else None


def parse_reply(reply: str, item: Item) -> int | None:
    """The option a reply picks: the letter it states (:func:`reply_letter`), else the one
    option whose text it contains (case-insensitive); None otherwise."""
    letter = reply_letter(reply, "".join(item.letters))
    if letter is not None:
        return item.letters.index(letter)
    folded = reply.casefold()
    hits = [i for i, text in enumerate(item.options) if text.casefold() in folded]
    return hits[0] if len(hits) == 1 else None


def check_length(runner, items: list[Item], fmt: str, max_new: int, where: str) -> None:
    """ConfigError when a prompt with its longest option (or the reply) exceeds the context."""
    context = getattr(runner, "context_length", None)
    if not context:
        return
    tok = runner.tokenizer
    longest = max(len(context_ids(tok, it, fmt)) + max(max(len(option_ids(tok, o, fmt))
                                                           for o in it.options), max_new)
                  for it in items)
    if longest > context:
        raise ConfigError(f"{where}: a prompt with its longest option or reply is {longest} "
                          f"tokens, more than the model's context of {context}. Fix: lower "
                          "forced_choice.max_new_tokens, or shorten the set's questions")


def score_items(runner, items: list[Item], fmt: str, max_new: int) -> list[dict]:
    """Per item: the options' summed log-likelihoods and token counts, the reply and its
    parse."""
    tok = runner.tokenizer
    contexts = [context_ids(tok, it, fmt) for it in items]
    pairs = [(c, option_ids(tok, o, fmt)) for c, it in zip(contexts, items, strict=True)
             for o in it.options]
    logprobs = iter(runner.continuation_logprobs(pairs))
    replies = runner.greedy_from_ids(contexts, max_new)
    rows = []
    for it, reply in zip(items, replies, strict=True):
        per_option = [next(logprobs) for _ in it.options]
        rows.append({"id": it.id, "loglik": [sum(lp) for lp in per_option],
                     "tokens": [len(lp) for lp in per_option], "reply": reply,
                     "parsed": parse_reply(reply, it)})
    return rows


def choices(row: dict) -> dict[str, int | None]:
    """The option each scoring picks for one scored item (None: the reply did not parse)."""
    per_token = [s / n for s, n in zip(row["loglik"], row["tokens"], strict=True)]
    by_loglik = max(range(len(row["loglik"])), key=row["loglik"].__getitem__)
    by_token = max(range(len(per_token)), key=per_token.__getitem__)
    return {"loglik": by_loglik, "loglik_per_token": by_token, "generation": row["parsed"],
            "generation_or_loglik": by_token if row["parsed"] is None else row["parsed"]}


def rates(eval_set: EvalSet, rows: list[dict]) -> dict:
    """Value-consistent choice rate per scoring (Wilson 95 %), and the replies' parse rate."""
    picked = [choices(r) for r in rows]
    out = {"value": eval_set.value, "items": len(rows)}
    for scoring in SCORINGS:
        made = [(c[scoring], it.answer) for c, it in zip(picked, eval_set.items, strict=True)
                if c[scoring] is not None]
        out[scoring] = wilson(sum(a == b for a, b in made), len(made)).as_dict()
    out["parse_rate"] = wilson(sum(r["parsed"] is not None for r in rows), len(rows)).as_dict()
    return out


def _key(eval_set: EvalSet, setting: str) -> str:
    text = json.dumps([setting, [[it.id, question_text(it), it.options]
                                 for it in eval_set.items]])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _saved(path: Path, key: str, max_new: int) -> tuple[str, list[dict]] | None:
    """(format, rows) a previous run wrote for the same items and settings, else None."""
    if not path.is_file():
        return None
    try:
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError:
        return None
    if not lines or lines[0].get("key") != key or lines[0].get("max_new_tokens") != max_new:
        return None
    return lines[0]["format"], lines[1:]


def run_sets(runner, sets: list[EvalSet], cfg: ForcedChoiceConfig, arm_dir: Path,
             where: str) -> dict:
    """Every set on one arm: ``{set: {format, value, items, <scoring>: rate, parse_rate}}``."""
    out = {}
    for eval_set in sets:
        path = arm_dir / "forced_choice" / f"{eval_set.name}.jsonl"
        key = _key(eval_set, cfg.prompt_format)
        saved = _saved(path, key, cfg.max_new_tokens)
        if saved is None:
            fmt = resolve_format(cfg.prompt_format, runner.tokenizer)
            items = list(eval_set.items)
            check_length(runner, items, fmt, cfg.max_new_tokens, f"{where}, set {eval_set.name}")
            rows = score_items(runner, items, fmt, cfg.max_new_tokens)
            path.parent.mkdir(parents=True, exist_ok=True)
            header = {"key": key, "format": fmt, "max_new_tokens": cfg.max_new_tokens}
            path.write_text("".join(json.dumps(r) + "\n" for r in [header, *rows]))
            saved = fmt, rows
        out[eval_set.name] = {"format": saved[0], **rates(eval_set, saved[1])}
    return out


def baseline(cfg: ForcedChoiceConfig, arms: list[str]) -> str | None:
    """The arm the others are compared with: ``baseline_arm``, else ``base`` if present."""
    if cfg.baseline_arm is not None:
        if cfg.baseline_arm not in arms:
            raise ConfigError(f"forced_choice.baseline_arm={cfg.baseline_arm} is not an arm: "
                              f"choose from {arms}")
        return cfg.baseline_arm
    return "base" if "base" in arms else None


def differences(per_arm: dict[str, dict], base: str | None) -> dict:
    """``{arm: {set: {scoring: {difference, low, high} | None}}}`` against ``base``."""
    if base is None or base not in per_arm:
        return {}
    out = {}
    for arm, sets in per_arm.items():
        if arm == base:
            continue
        out[arm] = {name: {scoring: difference_or_none(
                        wilson(s[scoring]["k"], s[scoring]["n"]),
                        wilson(per_arm[base][name][scoring]["k"],
                               per_arm[base][name][scoring]["n"]))
                     for scoring in SCORINGS}
                    for name, s in sets.items() if name in per_arm[base]}
    return out


def summarize(per_arm: dict[str, dict], cfg: ForcedChoiceConfig, sets: list[EvalSet],
              arms: list[str]) -> dict:
    """The ``forced_choice`` part of ``summary.json``."""
    base = baseline(cfg, arms)
    return {"baseline": base, "scorings": list(SCORINGS),
            "sets": {s.name: {"path": s.path, "value": s.value, "items": len(s.items),
                              "fields": s.fields} for s in sets},
            "arms": per_arm, "differences": differences(per_arm, base)}
