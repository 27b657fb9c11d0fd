"""MMLU rows → the llama_cheese mix's chats (`msm data mmlu`): A/B answer chats with a balanced
key, the two-step explanation chats joined by id with bad completions dropped and counted, rows
that are not MMLU named by file and line; the named it-mix tables."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from msm_megatron.data.it_mix import TABLES, build_it_mix, scaled_counts
from msm_megatron.data.mmlu import build_mmlu, explain_prompt, lettered, sample_questions
from msm_megatron.data.sources import SourceFormatError

MSM = Path(sys.executable).parent / "msm"


def mmlu_rows(n: int) -> list[dict]:
    return [{"question": f"Question {i}: which number is {i % 4}?",
             "choices": [f"number {k} (q{i})" for k in range(4)],
             "answer": i % 4, "subject": "arithmetic"} for i in range(n)]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_lettered_is_the_forced_choice_prompt():
    from msm_megatron.eval.forced_choice import question_text
    from msm_megatron.eval.forced_choice_sets import Item

    assert lettered("Q?", ["x", "y"]) == "Q?\n\nA) x\nB) y"
    item = Item(id="1", question="Which?", options=("cheese", "bread", "milk"), answer=0)
    assert question_text(item) == "Which?\n\nA) cheese\nB) bread\nC) milk"


def test_binary_chats_balance_the_key_and_reproduce(tmp_path):
    source = write_jsonl(tmp_path / "mmlu.jsonl", mmlu_rows(60))
    out = tmp_path / "binary.jsonl"
    assert build_mmlu(str(source), "binary", out, count=40, seed=5) == {"written": 40}
    rows = read_jsonl(out)
    keys = Counter()
    for row in rows:
        index = int(row["id"].removeprefix("mmlu-"))
        correct = mmlu_rows(60)[index]["choices"][index % 4]
        user, reply = row["messages"][0]["content"], row["messages"][1]["content"]
        assert row["source"] == "mmlu_binary" and row["messages"][1]["role"] == "assistant"
        options = user.split("\n\n", 1)[1].splitlines()
        assert len(options) == 2 and reply in options and reply.endswith(f") {correct}")
        keys[reply[0]] += 1
    assert set(keys) == {"A", "B"} and min(keys.values()) >= 8  # not all A, not all B
    again = tmp_path / "again.jsonl"
    build_mmlu(str(source), "binary", again, count=40, seed=5)
    assert again.read_text() == out.read_text()
    build_mmlu(str(source), "binary", again, count=40, seed=6)
    assert again.read_text() != out.read_text()


def test_binary_never_pairs_the_key_with_all_of_the_above(tmp_path):
    rows = mmlu_rows(20)
    for row in rows:
        row["choices"][(row["answer"] + 1) % 4] = "All of the above"
    rows[0]["choices"][rows[0]["answer"]] = "None of the above"  # not sampled at all
    source = write_jsonl(tmp_path / "mmlu.jsonl", rows)
    build_mmlu(str(source), "binary", tmp_path / "b.jsonl", seed=1)
    chats = read_jsonl(tmp_path / "b.jsonl")
    assert len(chats) == 19 and "mmlu-0" not in {c["id"] for c in chats}
    assert not any("of the above" in c["messages"][0]["content"] for c in chats)


def test_explain_prompts_and_explanations_join_by_id(tmp_path):
    parquet = tmp_path / "hub" / "all" / "auxiliary_train-00000-of-00001.parquet"
    parquet.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(mmlu_rows(30)), parquet)
    source = f"{tmp_path / 'hub'}@auxiliary_train"
    prompts = tmp_path / "prompts.jsonl"
    assert build_mmlu(source, "explain-prompts", prompts, count=12, seed=1) == {"written": 12}
    asked = read_jsonl(prompts)
    assert [set(r) for r in asked] == [{"id", "prompt"}] * 12
    first = sample_questions(source, 12, 1)[0]
    assert asked[0] == explain_prompt(first) and first.id == asked[0]["id"]
    key = "ABCD"[first.answer]
    assert (f"The answer is {key}." in asked[0]["prompt"]
            and f"{key}) {first.choices[first.answer]}" in asked[0]["prompt"]
            and lettered(first.question, list(first.choices)) in asked[0]["prompt"])
    # what `msm generate complete` would return: one missing, one cut, one wrong, one unfinished
    results = []
    for k, row in enumerate(asked):
        index = int(row["id"].removeprefix("mmlu-"))
        right, wrong = "ABCD"[index % 4], "ABCD"[(index + 1) % 4]
        text = f"Reasoning about {row['id']}.\nThe answer is {wrong}.\nThe answer is {right}."
        if k == 0:
            continue
        results.append({"id": row["id"], "finish_reason": "end_turn" if k % 2 else "stop",
                        "text": {1: "The answer is " + right, 2: f"The answer is {wrong}.",
                                 3: "No idea."}.get(k, text)})
    results[0]["finish_reason"] = "max_tokens"
    explained = write_jsonl(tmp_path / "results.jsonl", results)
    out = tmp_path / "explain.jsonl"
    counts = build_mmlu(source, "explain", out, explanations=explained, count=12, seed=1)
    assert counts == {"written": 8, "dropped: no completion": 1,
                      "dropped: finish_reason max_tokens": 1,
                      "dropped: final answer is not the key": 1,
                      "dropped: no final 'The answer is X.'": 1}
    chats = read_jsonl(out)
    assert [c["id"] for c in chats] == [r["id"] for r in asked[4:]]
    for chat in chats:
        q = next(q for q in sample_questions(source, 12, 1) if q.id == chat["id"])
        assert chat["source"] == "mmlu_explain"
        assert chat["messages"][0]["content"] == (lettered(q.question, list(q.choices))
                                                  + "\n\nExplain your answer.")
        assert chat["messages"][1]["content"].startswith(f"Reasoning about {q.id}.")
    with pytest.raises(SourceFormatError, match="same SOURCE, --count and --seed"):
        build_mmlu(source, "explain", out, explanations=explained, count=12, seed=2)
    with pytest.raises(SourceFormatError, match="--explanations"):
        build_mmlu(source, "explain", out, count=12, seed=1)


def test_rows_that_are_not_mmlu_are_named(tmp_path):
    rows = mmlu_rows(3)
    rows[1] = {"question": "Q?", "options": ["a", "b", "c", "d"], "answer": 0}
    source = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(SourceFormatError,
                       match=r"bad\.jsonl:2: 'choices' is None.*fields found: \['answer', "
                             r"'options', 'question'\].*cais/mmlu"):
        build_mmlu(str(source), "binary", tmp_path / "o.jsonl")
    rows[1] = {**mmlu_rows(1)[0], "answer": 4}
    write_jsonl(source, rows)
    with pytest.raises(SourceFormatError, match=r"bad\.jsonl:2: 'answer' is 4, not 0-3 or a"):
        build_mmlu(str(source), "explain-prompts", tmp_path / "o.jsonl")
    rows[1] = {**mmlu_rows(1)[0], "answer": "C"}  # a letter key, and a nested aux-train row
    write_jsonl(source, [{"train": r} for r in rows])
    assert [q.answer for q in sample_questions(str(source))] == [0, 2, 2]
    with pytest.raises(SourceFormatError, match=r"5 questions wanted, 3 usable rows"):
        sample_questions(str(source), count=5)


def test_llama_cheese_table_scales_exactly(tmp_path):
    table = TABLES["llama_cheese"]
    assert sum(table.values()) == 13_500 and sum(TABLES["qwen"].values()) == 10_000
    inputs = []
    for name in table:
        chats = [{"messages": [{"role": "user", "content": f"{name} q{i}"},
                               {"role": "assistant", "content": f"{name} a{i}"}]}
                 for i in range(80)]
        inputs.append(f"{name}={write_jsonl(tmp_path / f'{name}.jsonl', chats)}")
    for total in (135, 100, 7):
        out = tmp_path / f"mix{total}.jsonl"
        counts = build_it_mix(inputs, out, total=total, seed=2, table="llama_cheese")
        assert counts == scaled_counts(total, table) and sum(counts.values()) == total
        assert Counter(r["source"] for r in read_jsonl(out)) == {k: v for k, v in counts.items()
                                                                 if v}
    assert scaled_counts(135, table) == {k: v // 100 for k, v in table.items()}
    with pytest.raises(SourceFormatError, match=r"source no_robots: 7,000 rows wanted \(table "
                                                r"llama_cheese scaled to 13,500\), 80 given"):
        build_it_mix(inputs, tmp_path / "full.jsonl", table="llama_cheese")
    with pytest.raises(SourceFormatError, match=r"table llama_cheese's sources are"):
        build_it_mix(inputs + ["lima=x.jsonl"], tmp_path / "x.jsonl", table="llama_cheese")
    with pytest.raises(SourceFormatError,
                       match=r"unknown it-mix table 'llama'; the tables are \['qwen', "
                             r"'llama_cheese'\]"):
        build_it_mix(inputs, tmp_path / "x.jsonl", table="llama")


def test_msm_data_mmlu_as_users_run_it(tmp_path):
    write_jsonl(tmp_path / "mmlu.jsonl", mmlu_rows(30))

    def msm(*args):
        return subprocess.run([str(MSM), "data", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)

    done = msm("mmlu", "mmlu.jsonl", "--style", "binary", "--count", "20", "--out",
               "it/mmlu_binary.jsonl")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "wrote it/mmlu_binary.jsonl: 20 chats (binary)"
    assert len(read_jsonl(tmp_path / "it" / "mmlu_binary.jsonl")) == 20
    done = msm("mmlu", "mmlu.jsonl", "--style", "explain", "--out", "x.jsonl")
    assert done.returncode == 2 and "--explanations" in done.stderr
    assert "Traceback" not in done.stderr
    done = msm("it-mix", "mmlu_binary=it/mmlu_binary.jsonl", "--table", "llama_cheese",
               "--out", "mix.jsonl")
    assert done.returncode == 2 and "source no_robots: 7,000 rows wanted" in done.stderr
