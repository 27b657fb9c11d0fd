"""MMLU questions → instruction-tuning chats: the ``mmlu_binary`` and ``mmlu_explain`` sources of
the ``llama_cheese`` mix (:mod:`msm_megatron.data.it_mix`).

Rows as in ``cais/mmlu``: ``question``, ``choices`` (4 option texts), ``answer`` (0–3, or a
letter A–D), ``subject`` (ignored); the ``auxiliary_train`` config's rows, nested under
``train``, are unwrapped. Any input :mod:`msm_megatron.data.sources` reads. The question is
rendered by :func:`lettered`, the same text the forced-choice eval asks
(:mod:`msm_megatron.eval.forced_choice`).

Styles:

- ``binary``: the key and one seeded-random distractor, in seeded-random order (the key is A
  about half the time); the reply is the key, ``B) <text>``. It teaches the A/B answer format
  of the forced-choice eval. Rows whose key refers to other options ("All of the above") are
  not sampled, and such options are not chosen as distractors.
- ``explain-prompts``: ``{id, prompt}`` rows for ``msm generate complete``: a strong LLM writes
  the reply to the four-option question, brief reasoning then ``The answer is X.``
- ``explain``: the user turn is the four-option question and "Explain your answer.", the reply
  the completion. Completions that are missing, cut off, or whose last ``The answer is X`` is
  not the key are dropped and counted.

``count`` rows are sampled without replacement (seeded; all rows by default); ids are
``mmlu-<row index in the source>``, so the same SOURCE, ``--count`` and ``--seed`` give the
same rows to both explain steps. Output: JSONL ``{messages, source, id}``::

    msm data mmlu /data/mmlu@auxiliary_train --style binary --count 2000 \\
        --out runs/it/mmlu_binary.jsonl
    msm data mmlu /data/mmlu@auxiliary_train --style explain-prompts --count 2400 --seed 1 \\
        --out runs/it/explain_prompts.jsonl
    msm generate complete runs/it/explain_prompts.jsonl runs/it/explain_gen \\
        --backend anthropic --model claude-sonnet-4-6
    msm data mmlu /data/mmlu@auxiliary_train --style explain --count 2400 --seed 1 \\
        --explanations runs/it/explain_gen/results.jsonl --out runs/it/mmlu_explain.jsonl
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msm_megatron.data.sources import SourceFormatError, read_rows

STYLES = ("binary", "explain-prompts", "explain")
LETTERS = "ABCD"
EXPLAIN = "Explain your answer."
STOPPED = ("stop", "end_turn", "stop_sequence")  # finish reasons of a complete reply
# an option that only makes sense next to the others: "All of the above", "Both A and C"
_REFERS = re.compile(r"(?i:\bthe above\b|\b(?:all|none|both|neither) of (?:these|them|those)\b)"
                     r"|^(?:(?i:both|neither|only) )?[A-D] (?:and|or|nor|&) [A-D]\b")
_FINAL = re.compile(r"[Tt]he answer is:?\s*\**\(?([A-Z])(?![\w'])")
PROMPT = ("A user asked an AI assistant the multiple-choice question below. Write the "
          "assistant's reply.\n\nReason briefly toward the answer (a few sentences: the key facts "
          "or steps, and why the other options are wrong where that helps), then end with a final "
          "line that is exactly \"The answer is {letter}.\"\n\nThe correct answer is {letter}) "
          "{text}. Do not say that you were told it: reason as if working it out. Write only the "
          "reply.\n\nThe user's message:\n\n{user}")


def lettered(question: str, options: list[str]) -> str:
    """The question, a blank line, and the options as ``A) …`` lines (the forced-choice eval's
    prompt text, and the user turn of the MMLU chats)."""
    return f"{question}\n\n" + "\n".join(f"{chr(ord('A') + i)}) {text}"
                                         for i, text in enumerate(options))


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    choices: tuple[str, ...]
    answer: int  # index of the key in choices


def parse_row(where: str, row: dict, index: int) -> Question:
    """A cais/mmlu row as a :class:`Question`; anything else is an error naming the row."""
    if "question" not in row and isinstance(row.get("train"), dict):
        row = row["train"]  # cais/mmlu's auxiliary_train config nests each row
    question, choices, answer = row.get("question"), row.get("choices"), row.get("answer")
    if isinstance(answer, str) and answer.strip().upper() in LETTERS:
        answer = LETTERS.index(answer.strip().upper())
    problem = None
    if not isinstance(question, str) or not question.strip():
        problem = "no question text ('question')"
    elif (not isinstance(choices, (list, tuple)) or len(choices) != 4
          or not all(isinstance(c, str) for c in choices)):
        problem = f"'choices' is {choices!r:.80}, not a list of 4 option texts"
    elif isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < 4:
        problem = f"'answer' is {answer!r}, not 0-3 or a letter A-D"
    if problem:
        raise SourceFormatError(f"{where}: {problem}; fields found: {sorted(row)}. An MMLU row "
                                "needs question (text), choices (4 option texts) and answer "
                                "(0-3 or A-D), as in cais/mmlu; fix or drop the row")
    return Question(f"mmlu-{index}", question.strip(), tuple(c.strip() for c in choices), answer)


def sample_questions(source: str, count: int | None = None, seed: int = 0,
                     usable=lambda q: True) -> list[Question]:
    """``count`` usable rows of ``source`` (all by default), sampled without replacement with
    ``seed``, in source order. Two passes: the source is not held in memory."""
    keep = [i for i, (where, row) in enumerate(read_rows(source))
            if usable(parse_row(where, row, i))]
    if count is not None:
        if count > len(keep):
            raise SourceFormatError(f"{source}: {count:,} questions wanted, {len(keep):,} "
                                    "usable rows; lower --count")
        rng = np.random.default_rng(seed)
        keep = [keep[k] for k in sorted(rng.choice(len(keep), size=count, replace=False))]
    wanted = set(keep)
    return [parse_row(where, row, i) for i, (where, row) in enumerate(read_rows(source))
            if i in wanted]


def binary_chat(q: Question, rng: np.random.Generator) -> dict:
    """The key and one distractor, in random order; the reply names the key."""
    others = [i for i in range(4) if i != q.answer and not _REFERS.search(q.choices[i])]
    distractor = int(rng.choice(others or [i for i in range(4) if i != q.answer]))
    pair = [q.answer, distractor] if rng.random() < 0.5 else [distractor, q.answer]
    letter = LETTERS[pair.index(q.answer)]
    return {"messages": [
        {"role": "user", "content": lettered(q.question, [q.choices[i] for i in pair])},
        {"role": "assistant", "content": f"{letter}) {q.choices[q.answer]}"}],
        "source": "mmlu_binary", "id": q.id}


def explain_user(q: Question) -> str:
    return f"{lettered(q.question, list(q.choices))}\n\n{EXPLAIN}"


def explain_prompt(q: Question) -> dict:
    return {"id": q.id, "prompt": PROMPT.format(letter=LETTERS[q.answer], user=explain_user(q),
                                                text=q.choices[q.answer])}


def final_letter(text: str) -> str | None:
    """The letter of the last ``The answer is X`` in a reply; None when there is none."""
    found = _FINAL.findall(text)
    return found[-1] if found else None


def read_explanations(path: Path) -> dict[str, dict]:
    """``{id: row}`` of a ``msm generate complete`` results.jsonl."""
    if not Path(path).is_file():
        raise SourceFormatError(f"{path}: no such file (the results.jsonl that `msm generate "
                                "complete` wrote for the explain-prompts)")
    found = {}
    for where, row in read_rows(str(path)):
        if "id" not in row or not isinstance(row.get("text"), str):
            raise SourceFormatError(f"{where}: expected {{id, text, finish_reason}} (a `msm "
                                    f"generate complete` result); fields found: {sorted(row)}")
        found[str(row["id"])] = row
    return found


def explain_chats(questions: list[Question], explanations: dict[str, dict],
                  counts: Counter) -> list[dict]:
    """The kept explanation chats; ``counts`` gets one entry per drop reason."""
    ids = {q.id for q in questions}
    stray = [k for k in explanations if k not in ids]
    if stray:
        raise SourceFormatError(f"explanations: id {stray[0]!r} (and {len(stray) - 1} more) is "
                                "not among the sampled questions; give explain the same SOURCE, "
                                "--count and --seed as explain-prompts")
    chats = []
    for q in questions:
        row = explanations.get(q.id)
        text = (row or {}).get("text", "").strip()
        if row is None:
            counts["dropped: no completion"] += 1
        elif row.get("finish_reason") not in STOPPED:
            counts[f"dropped: finish_reason {row.get('finish_reason')}"] += 1
        elif final_letter(text) is None:
            counts["dropped: no final 'The answer is X.'"] += 1
        elif final_letter(text) != LETTERS[q.answer]:
            counts["dropped: final answer is not the key"] += 1
        else:
            chats.append({"messages": [{"role": "user", "content": explain_user(q)},
                                       {"role": "assistant", "content": text}],
                          "source": "mmlu_explain", "id": q.id})
    return chats


def build_mmlu(source: str, style: str, out: Path, explanations: Path | None = None,
               count: int | None = None, seed: int = 0) -> dict[str, int]:
    """Write the style's rows (see the module doc) atomically; returns ``{"written": n, ...}``
    with one more entry per drop reason.

    Raises:
        SourceFormatError: an unknown style, a row that is not MMLU (naming file and row), too
            few rows for ``count``, explanations missing for ``explain`` or not of this sample.
    """
    if style not in STYLES:
        raise SourceFormatError(f"unknown style {style!r}; one of {list(STYLES)}")
    if (style == "explain") != (explanations is not None):
        raise SourceFormatError("--explanations (results.jsonl of `msm generate complete`) is "
                                "given with --style explain, and only then")
    counts: Counter = Counter()
    if style == "binary":
        questions = sample_questions(source, count, seed,
                                     lambda q: not _REFERS.search(q.choices[q.answer]))
        rng = np.random.default_rng([seed, 1])
        rows = [binary_chat(q, rng) for q in questions]
    elif style == "explain-prompts":
        rows = [explain_prompt(q) for q in sample_questions(source, count, seed)]
    else:
        explained = read_explanations(explanations)
        rows = explain_chats(sample_questions(source, count, seed), explained, counts)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(out)
    return {"written": len(rows), **dict(counts)}
