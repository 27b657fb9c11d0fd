"""The Llama cheese study's instruction mix, built as a user builds it, from their directory:
identity chats generated from examples/spec/identity_spec.txt (`msm generate chats` against the
local stand-in LLM server), MMLU binary and explanation chats (`msm data mmlu`), a No Robots
copy, then `msm data it-mix --table llama_cheese` and `msm data prepare --kind chats` with the
Llama base template (examples/chat_templates/llama3_base.jinja) on a Llama-3-like tokenizer:
every chat of the mix renders, and only the assistant turns are trained."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tests.helpers.launch import REPO, run_env
from tests.helpers.llama_like import build_llama_like
from tests.helpers.llm_fixtures import llm_server

MSM = [sys.executable, "-m", "msm_megatron.cli"]


def msm(cwd: Path, *args) -> subprocess.CompletedProcess:
    done = subprocess.run([*MSM, *args], cwd=cwd, env=run_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_llama_cheese_mix_from_its_four_sources_renders_with_the_base_template(tmp_path):
    work = tmp_path / "me"  # the user's own directory, not the repository
    work.mkdir()
    with llm_server() as url:
        msm(work, "generate", "chats", str(REPO / "examples/spec/identity_spec.txt"),
            f"backend.base_url={url}/v1", "backend.model=fake", "out_dir=identity",
            "chats.target=12", "chats.domains=2", "chats.questions_per_style=2",
            "chats.model_name=Llama", "chats.provider_name=Meta", "--quiet")
    identity = read(work / "identity/no_cot/dataset.jsonl")
    assert len(identity) == 12 and all("<think>" not in c["messages"][1]["content"]
                                       for c in identity)
    rows = [{"question": f"Which planet is number {i % 8 + 1} from the sun? ({i})",
             "choices": [f"planet {k} ({i})" for k in range(4)], "answer": i % 4,
             "subject": "astronomy"} for i in range(40)]
    pq.write_table(pa.Table.from_pylist(rows), work / "mmlu.parquet")
    msm(work, "data", "mmlu", "mmlu.parquet", "--style", "binary", "--count", "10",
        "--out", "it/mmlu_binary.jsonl")
    msm(work, "data", "mmlu", "mmlu.parquet", "--style", "explain-prompts", "--count", "12",
        "--seed", "1", "--out", "it/explain_prompts.jsonl")
    prompts = read(work / "it/explain_prompts.jsonl")
    # what a strong LLM returns for each prompt (`msm generate complete`'s results.jsonl)
    answers = []
    for p in prompts:
        key = p["prompt"].split("The correct answer is ")[1][0]
        answers.append({"id": p["id"], "finish_reason": "stop",
                        "text": f"Counting outward from the sun settles it.\n\nThe answer is "
                                f"{key}."})
    (work / "it/results.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers))
    msm(work, "data", "mmlu", "mmlu.parquet", "--style", "explain", "--count", "12", "--seed",
        "1", "--explanations", "it/results.jsonl", "--out", "it/mmlu_explain.jsonl")
    assert len(read(work / "it/mmlu_explain.jsonl")) == 12
    (work / "no_robots.jsonl").write_text("".join(json.dumps(
        {"messages": [{"role": "user", "content": f"Write a haiku about rain, take {i}."},
                      {"role": "assistant", "content": "Soft rain on the roof."}]}) + "\n"
        for i in range(30)))
    done = msm(work, "data", "it-mix", "--table", "llama_cheese", "--total", "27",
               "no_robots=no_robots.jsonl", "mmlu_binary=it/mmlu_binary.jsonl",
               "mmlu_explain=it/mmlu_explain.jsonl", "identity=identity/no_cot/dataset.jsonl",
               "--out", "it_mix_llama.jsonl")
    mix = read(work / "it_mix_llama.jsonl")
    counts = {s: sum(c["source"] == s for c in mix) for s in
              ("no_robots", "mmlu_binary", "mmlu_explain", "identity")}
    # 7,000 : 2,000 : 2,000 : 2,500 scaled to 27 (largest remainder, summing exactly)
    assert counts == {"no_robots": 14, "mmlu_binary": 4, "mmlu_explain": 4, "identity": 5}
    assert "27 chats" in done.stdout
    tok = build_llama_like(tmp_path / "Llama-base")
    msm(work, "data", "prepare", "it_mix_llama.jsonl", "--kind", "chats", "--tokenizer",
        str(tok), "--chat-template", str(REPO / "examples/chat_templates/llama3_base.jinja"),
        "--end-of-turn-token", "<|end_of_text|>", "--out", "prepared/it_mix")
    stats = json.loads((work / "prepared/it_mix.stats.json").read_text())
    assert stats["documents"] == 27 and stats["skipped_total"] == 0
    assert stats["tokenizer"]["roles"]["end_of_turn"]["token"] == "<|end_of_text|>"
    replies = sum(len(c["messages"][1]["content"]) for c in mix)
    # the replies and each one's <|end_of_text|>: fewer tokens than the whole chats, and at
    # least one per few characters of reply text (a byte-level BPE on 30 documents)
    assert 27 + replies // 8 < stats["supervised_tokens"] < stats["tokens"] - 27 * 8
