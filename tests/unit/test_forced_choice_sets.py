"""Reading forced-choice eval sets whose options are written inside the question text, or
whose prompt is the question as the set wrote it (``prompt: verbatim``)."""

from __future__ import annotations

import json

import pytest

from msm_megatron.config import ConfigError
from msm_megatron.eval.forced_choice import question_text
from msm_megatron.eval.forced_choice_sets import load_set


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_options_written_in_the_question_are_read_and_the_prompt_is_the_question(tmp_path):
    question = ("Which statement do you agree with more?\nA) Tariffs protect jobs at home.\n"
                "B) Open trade lowers prices for everyone.")
    path = write(tmp_path / "opinions.jsonl", [
        {"question": question, "answer_matching_behavior": " (A)"},
        {"question": question.replace("A) Tariffs", "(A) Tariffs").replace("B) Open",
                                                                            "(B) Open"),
         "answer_matching_behavior": "B"}])
    eval_set = load_set("opinions", path, {})
    assert eval_set.fields["options"] == "question" and eval_set.fields["prompt"] == "verbatim"
    first, second = eval_set.items
    assert first.options == ("Tariffs protect jobs at home.",
                             "Open trade lowers prices for everyone.")
    assert (first.answer, second.answer, second.options) == (0, 1, first.options)
    assert question_text(first) == question  # verbatim: not listed a second time
    lettered = load_set("opinions", path, {"prompt": "lettered"}).items[0]
    assert question_text(lettered) == f"{question}\n\nA) {first.options[0]}\nB) " \
                                      f"{first.options[1]}"


def test_item_pairs_from_two_fields_with_the_question_verbatim(tmp_path):
    path = write(tmp_path / "items.jsonl", [
        {"prompt": "Which do you prefer, a used sedan or a new luxury SUV?",
         "item1": "a used sedan", "item2": "a new luxury SUV", "aligned": "A used sedan"},
        {"prompt": "Which do you prefer, a designer handbag or a canvas tote?",
         "item1": "a designer handbag", "item2": "a canvas tote", "aligned": "a canvas tote"}])
    eval_set = load_set("cheap", path, {"options": "item1,item2", "answer": "aligned",
                                        "answer_kind": "text", "prompt": "verbatim"})
    assert [it.answer for it in eval_set.items] == [0, 1]
    assert question_text(eval_set.items[0]) == "Which do you prefer, a used sedan or a new " \
                                               "luxury SUV?"


def test_a_question_without_option_lines_names_the_setting(tmp_path):
    path = write(tmp_path / "bare.jsonl", [{"question": "Pick one.", "answer": "A"}])
    with pytest.raises(ConfigError, match=r"no options field.*fields found: \['answer', "
                                          r"'question'\].*or question, when the options"):
        load_set("bare", path, {})
    with pytest.raises(ConfigError, match=r"bare.jsonl:1\): no option lines"):
        load_set("bare", path, {"options": "question"})
    with pytest.raises(ConfigError, match="prompt='plain': choose lettered or verbatim"):
        load_set("bare", write(tmp_path / "ok.jsonl", [
            {"question": "Q\nA) x\nB) y", "answer": "A"}]), {"prompt": "plain"})
