"""The eval sets of the forced-choice value task: their settings and how their rows are read.

An eval set is a question with options, one of which — the answer key — is the option
consistent with the value the set probes (the pro-America option, the more affordable item).
Sets are read with the readers of ``msm data prepare``
(:func:`msm_megatron.data.sources.read_rows`): a ``.jsonl``, ``.parquet`` or ``.arrow`` file,
a ``datasets`` ``save_to_disk`` directory (``DIR@split`` for a saved ``DatasetDict``), or a hub
snapshot directory (``DIR@split`` keeps the files of one split).

Fields (``forced_choice.fields.<set>``; each unset field is the first of its candidates that
the set's first row has, see :data:`CANDIDATES`):

- ``question``: the question text;
- ``options``: a list of option texts (lettered A, B, … in order), a mapping letter → text,
  several fields, comma-separated (``options: "A,B"``: one option per field), or ``question``:
  the options are lines of the question text (``A) …``, ``(A) …``, ``A. …``), taken so when no
  options field is found and the first row's question has such lines;
- ``prompt``: ``lettered`` (the question, then its options as ``A) …`` lines) or ``verbatim``
  (the question text alone, as the set wrote it: for options written inside the question, the
  default then, or a question such as "Which do you prefer, X or Y?");
- ``answer``: the answer key: a letter (``A``, ``(A)``, `` (B)``) or an option's text (an item
  name); ``answer_kind`` (``auto`` | ``letter`` | ``text``) says which, ``auto`` takes a letter
  when the key is one, else the option with that text;
- ``id``: a row id (default ``id`` when present, else the row's place in the set);
- ``value``: the value the answer key stands for (default: the set's name).

A dotted field (``values.america``) reads inside a nested mapping. A field a row lacks is a
ConfigError naming the row, the fields it has, and the setting to change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from msm_megatron.config import ConfigError
from msm_megatron.config_paths import path_field

CANDIDATES = {"question": ("question", "prompt", "input"),
              "options": ("options", "choices", "items"),
              "answer": ("answer", "answer_key", "answer_matching_behavior", "label", "target")}
FIELD_KEYS = ("question", "options", "answer", "answer_kind", "id", "value", "prompt")
_LETTER_KEY = re.compile(r"^\s*\(?([A-Z])\)?\s*$")
_OPTION_LINE = re.compile(r"^[ \t]*\(?([A-Z])[).:][ \t]+(\S.*?)[ \t]*$", re.M)
IN_QUESTION = "question"  # the options setting for options written inside the question


@dataclass(kw_only=True, slots=True)
class ForcedChoiceConfig:
    """The forced-choice task's settings (``forced_choice.*``)."""

    # set name -> its data (a file, a datasets directory or a hub snapshot; DIR@split)
    sets: dict[str, str] = path_field(default_factory=dict)
    # set name -> {question, options, answer, answer_kind, id, value} (module doc)
    fields: dict[str, dict[str, str]] = field(default_factory=dict)
    # auto: the chat template when the arm's tokenizer has one, else `Question: …\nAnswer:`
    prompt_format: Literal["auto", "chat", "completion"] = "auto"
    baseline_arm: str | None = None  # differences against it; default: the arm named base
    max_new_tokens: int = 32  # the generated answer (greedy)


@dataclass(frozen=True)
class Item:
    """One question: its options and the index of the answer key among them."""

    id: str
    question: str
    options: tuple[str, ...]
    answer: int
    verbatim: bool = False  # the prompt is the question alone (its options are in it)

    @property
    def letters(self) -> tuple[str, ...]:
        return tuple(chr(ord("A") + i) for i in range(len(self.options)))


@dataclass(frozen=True)
class EvalSet:
    name: str
    path: str
    value: str
    items: tuple[Item, ...]
    fields: dict  # the fields read (after defaults), for the summary


def _get(row: dict, name: str):
    """``row[name]``, or inside nested mappings for a dotted name; KeyError when absent."""
    if name in row:
        return row[name]
    value = row
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(name)
        value = value[part]
    return value


def _has(row: dict, name: str) -> bool:
    try:
        _get(row, name)
    except KeyError:
        return False
    return True


def resolve_fields(name: str, settings: dict, row: dict, where: str) -> dict:
    """The fields of set ``name`` with defaults filled from its first ``row``."""
    unknown = set(settings) - set(FIELD_KEYS)
    if unknown:
        raise ConfigError(f"forced_choice.fields.{name}: unknown key(s) {sorted(unknown)}; "
                          f"choose from {list(FIELD_KEYS)}")
    out = {"answer_kind": settings.get("answer_kind", "auto"),
           "value": settings.get("value", name),
           "id": settings.get("id", "id" if "id" in row else None)}
    if out["answer_kind"] not in ("auto", "letter", "text"):
        raise ConfigError(f"forced_choice.fields.{name}.answer_kind={out['answer_kind']!r}: "
                          "choose auto, letter or text")
    for key, candidates in CANDIDATES.items():
        if key in settings:
            out[key] = settings[key]
            continue
        found = [c for c in candidates if c in row]
        if not found and key == "options" and _question_options(row.get(out["question"])):
            found = [IN_QUESTION]
        if not found:
            extra = (f" (or {IN_QUESTION}, when the options are lines of the question text)"
                     if key == "options" else "")
            raise ConfigError(
                f"eval set {name} ({where}): no {key} field: none of {list(candidates)}; "
                f"fields found: {sorted(row)}. Fix: forced_choice.fields.{name}.{key}=FIELD"
                + extra)
        out[key] = found[0]
    out["prompt"] = settings.get("prompt",
                                 "verbatim" if out["options"] == IN_QUESTION else "lettered")
    if out["prompt"] not in ("lettered", "verbatim"):
        raise ConfigError(f"forced_choice.fields.{name}.prompt={out['prompt']!r}: choose "
                          "lettered or verbatim")
    return out


def _question_options(question) -> list[tuple[str, str]]:
    """The ``A) …`` lines of a question text, when they are A, B, … in order (else [])."""
    if not isinstance(question, str):
        return []
    found = _OPTION_LINE.findall(question)
    letters = [letter for letter, _ in found]
    expected = [chr(ord("A") + i) for i in range(len(found))]
    return found if len(found) >= 2 and letters == expected else []


def _field(row: dict, name: str, key: str, set_name: str, where: str):
    try:
        return _get(row, name)
    except KeyError:
        raise ConfigError(
            f"eval set {set_name} ({where}): no field {name!r} (the {key}); fields found: "
            f"{sorted(row)}. Fix: forced_choice.fields.{set_name}.{key}=FIELD") from None


def _options(row: dict, fields: dict, set_name: str, where: str) -> tuple[list[str], list[str]]:
    """(letters, texts) of a row's options."""
    names = [n.strip() for n in fields["options"].split(",") if n.strip()]
    if names == [IN_QUESTION]:
        found = _question_options(_get(row, fields["question"]))
        if not found:
            raise ConfigError(f"eval set {set_name} ({where}): no option lines (A) …, B) …) in "
                              f"the question text. Fix: forced_choice.fields.{set_name}.options"
                              "=FIELD")
        letters, texts = [letter for letter, _ in found], [text for _, text in found]
    elif len(names) > 1:
        texts = [_field(row, n, "options", set_name, where) for n in names]
        letters = [chr(ord("A") + i) for i in range(len(texts))]
    else:
        value = _field(row, names[0], "options", set_name, where)
        if isinstance(value, dict):
            letters, texts = [str(k).strip().strip("()") for k in value], list(value.values())
        elif isinstance(value, (list, tuple)):
            texts, letters = list(value), [chr(ord("A") + i) for i in range(len(value))]
        else:
            raise ConfigError(f"eval set {set_name} ({where}): options field {names[0]!r} is "
                              f"{type(value).__name__}; expected a list of option texts, a "
                              "mapping letter -> text, or several fields (options: \"A,B\")")
    if len(texts) < 2 or not all(isinstance(t, str) and t.strip() for t in texts):
        raise ConfigError(f"eval set {set_name} ({where}): needs at least two non-empty option "
                          f"texts, got {texts!r}")
    expected = [chr(ord("A") + i) for i in range(len(texts))]
    if letters != expected:
        raise ConfigError(f"eval set {set_name} ({where}): option letters {letters}; expected "
                          f"{expected} in that order")
    return letters, [t.strip() for t in texts]


def _answer(key, letters: list[str], texts: list[str], kind: str, set_name: str,
            where: str) -> int:
    """The index of the answer key among the options."""
    letter = _LETTER_KEY.match(key) if isinstance(key, str) else None
    if kind in ("auto", "letter") and letter and letter.group(1) in letters:
        return letters.index(letter.group(1))
    if kind in ("auto", "text") and isinstance(key, str):
        matches = [i for i, t in enumerate(texts) if t.casefold() == key.strip().casefold()]
        if len(matches) == 1:
            return matches[0]
    wanted = {"letter": f"one of {letters}", "text": "one option's text",
              "auto": f"one of {letters} or one option's text"}[kind]
    raise ConfigError(f"eval set {set_name} ({where}): answer key {key!r} is not {wanted} "
                      f"(options: {texts}). Fix the row, or set "
                      f"forced_choice.fields.{set_name}.answer_kind")


def load_set(name: str, path: str, settings: dict) -> EvalSet:
    """Every row of one eval set as :class:`Item` s (ConfigError naming the row on bad input)."""
    from msm_megatron.data.sources import SourceFormatError, read_rows

    items, fields = [], None
    try:
        for i, (where, row) in enumerate(read_rows(path)):
            fields = fields or resolve_fields(name, settings, row, where)
            question = _field(row, fields["question"], "question", name, where)
            if not isinstance(question, str) or not question.strip():
                raise ConfigError(f"eval set {name} ({where}): the question "
                                  f"({fields['question']!r}) is empty or not text")
            letters, texts = _options(row, fields, name, where)
            key = _field(row, fields["answer"], "answer", name, where)
            answer = _answer(key, letters, texts, fields["answer_kind"], name, where)
            item_id = str(_field(row, fields["id"], "id", name, where)) if fields["id"] else str(i)
            items.append(Item(item_id, question.strip(), tuple(texts), answer,
                              fields["prompt"] == "verbatim"))
    except SourceFormatError as exc:
        raise ConfigError(f"eval set {name}: {exc}") from exc
    if not items:
        raise ConfigError(f"eval set {name}: {path} has no rows")
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"eval set {name}: ids repeat (field {fields['id']!r}); set "
                          f"forced_choice.fields.{name}.id to a unique field")
    return EvalSet(name, path, fields["value"], tuple(items), fields)


def load_sets(cfg: ForcedChoiceConfig) -> list[EvalSet]:
    """Every configured set, read and checked before any model loads."""
    if not cfg.sets:
        raise ConfigError("task forced_choice needs eval sets: forced_choice.sets={NAME: "
                          "path/to/set.jsonl|.parquet|datasets_dir|DIR@split}")
    stray = set(cfg.fields) - set(cfg.sets)
    if stray:
        raise ConfigError(f"forced_choice.fields name sets that are not in forced_choice.sets: "
                          f"{sorted(stray)}")
    return [load_set(name, path, cfg.fields.get(name, {})) for name, path in cfg.sets.items()]
