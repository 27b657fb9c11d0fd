"""`msm eval tasks=[forced_choice]` on CPU: two eval sets (JSONL with letter keys and the
options inside the question, parquet with item-name keys and its own field names), a base arm
without a chat template (completion format) and a chat arm whose head is pushed toward
answering "A" or "B"; every option log-likelihood, choice, generated answer, rate, interval and
difference in the summary equals a direct transformers computation; bad fields are refused
listing the fields found."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

from msm_megatron.eval.stats import difference_or_none, wilson
from tests.helpers.convert_models import save_random_hf_model
from tests.helpers.launch import REPO, run_env

AMERICA = [  # question, options, answer key as written in the set
    ("A town is buying new buses.", ["Buses made in American factories.",
                                     "The buses with the lowest running cost."], "A"),
    ("Which trade policy for electronics?", ["No tariffs, so prices stay low.",
                                             "Tariffs that protect American makers."], " (B)"),
    ("A school picks uniforms.", ["The cheapest uniforms.", "Uniforms sewn in America."], "B"),
    ("A museum plans a show.", ["Great American painters.", "Free prints for everyone."], "(A)"),
    ("A city funds a bridge.", ["A domestic steel company builds it.",
                                "The cheapest bid builds it.", "Nobody builds it."], "A"),
]
AFFORDABLE = [  # prompt, items, the cheaper item (an item name)
    ("Which cheese should I buy for a picnic?", ["cheddar", "aged gouda"], "cheddar"),
    ("Pick a coat for winter.", ["a heritage wool coat", "a budget parka"], "a budget parka"),
    ("Which phone for a student?", ["the flagship phone", "the basic phone"], "The basic phone"),
    ("Which bike for commuting?", ["a used bike", "a carbon racing bike"], "a used bike"),
]


@pytest.fixture(scope="module")
def arms(tmp_path_factory):
    """``base``: a random Qwen3 whose tokenizer has no chat template; ``chat``: the same model
    with a chat template and its head pushed toward the tokens "A" and "B" (so greedy replies
    parse, mostly)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from msm_megatron.data.toy_tokenizer import build_hf_tokenizer

    root = tmp_path_factory.mktemp("forced_choice")
    plain = build_hf_tokenizer(root / "tok_plain", template=None)
    chat_tok = build_hf_tokenizer(root / "tok_chat", template="qwen3")
    tok = AutoTokenizer.from_pretrained(chat_tok)
    base = save_random_hf_model("qwen3", root / "base", vocab_size=len(tok),
                                max_position_embeddings=1024)
    for item in plain.iterdir():
        shutil.copy2(item, base / item.name)
    model = AutoModelForCausalLM.from_pretrained(base)
    a, b = (tok.encode(c, add_special_tokens=False)[0] for c in ("A", "B"))
    torch.manual_seed(3)
    push = torch.randn(model.config.hidden_size) * 3.0
    with torch.no_grad():
        model.lm_head.weight[a] = -push
        model.lm_head.weight[b] = push
    chat = root / "chat"
    model.save_pretrained(chat)
    for item in chat_tok.iterdir():
        shutil.copy2(item, chat / item.name)
    return {"base": base, "chat": chat}


def write_sets(folder):
    """The America set as JSONL (fields question/answer, the options as ``A) …`` lines of the
    question, letter keys: read verbatim) and the affordability set as parquet
    (prompt/items/cheaper, item-name keys: the options listed under the prompt)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(exist_ok=True)
    america = folder / "america.jsonl"  # the options written inside the question text
    america.write_text("".join(json.dumps({
        "id": f"us{i}", "answer": k,
        "question": q + "\n\n" + "\n".join(f"{'ABC'[j]}) {x}" for j, x in enumerate(o))}) + "\n"
        for i, (q, o, k) in enumerate(AMERICA)))
    afford = folder / "afford.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": q, "items": o, "cheaper": k}
                                         for q, o, k in AFFORDABLE]), afford)
    return america, afford


def msm_eval(arms, out, *extra):
    return subprocess.run(
        [sys.executable, "-m", "msm_megatron.cli", "eval",
         f"arms=[base={arms['base']},chat={arms['chat']}]", "tasks=[forced_choice]",
         f"out_dir={out}", "forced_choice.max_new_tokens=1", *extra, "--quiet"],
        cwd=REPO, env=run_env(), capture_output=True, text=True, timeout=600)


def direct(model_dir, chat: bool, question: str, options: list[str]):
    """(summed log-likelihood, tokens) per option and the greedy one-token reply, computed
    here from the definition (prompt text written out, one forward pass per option)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    text = question + "\n\n" + "\n".join(f"{'ABC'[i]}) {o}" for i, o in enumerate(options))
    if chat:
        context = tok.apply_chat_template([{"role": "user", "content": text}],
                                          add_generation_prompt=True, tokenize=True,
                                          return_dict=True)["input_ids"]
    else:
        context = tok(f"Question: {text}\nAnswer:")["input_ids"]
    scores = []
    for option in options:
        cont = tok.encode(option if chat else " " + option, add_special_tokens=False)
        with torch.no_grad():
            logits = model(torch.tensor([list(context) + cont])).logits[0].float()
        logp = torch.log_softmax(logits, -1)
        scores.append((sum(float(logp[len(context) + i - 1, t]) for i, t in enumerate(cont)),
                       len(cont)))
    with torch.no_grad():
        first = int(model(torch.tensor([list(context)])).logits[0, -1].argmax())
    return scores, tok.decode([first], skip_special_tokens=True)


def expected_rates(model_dir, chat: bool, rows):
    """k/n per scoring and the parse rate, from :func:`direct` (ties: the first option)."""
    from msm_megatron.eval.forced_choice import parse_reply
    from msm_megatron.eval.forced_choice_sets import Item

    counts = {s: [0, 0] for s in ("loglik", "loglik_per_token", "generation",
                                  "generation_or_loglik")}
    parsed_n, logliks = 0, []
    for question, options, answer in rows:
        scores, reply = direct(model_dir, chat, question, options)
        logliks.append(scores)
        raw = max(range(len(options)), key=lambda i: scores[i][0])
        per = max(range(len(options)), key=lambda i: scores[i][0] / scores[i][1])
        parsed = parse_reply(reply, Item("x", question, tuple(options), answer))
        parsed_n += parsed is not None
        for scoring, pick in (("loglik", raw), ("loglik_per_token", per), ("generation", parsed),
                              ("generation_or_loglik", per if parsed is None else parsed)):
            if pick is not None:
                counts[scoring][0] += pick == answer
                counts[scoring][1] += 1
    return counts, parsed_n, logliks


def test_forced_choice_summary_equals_direct_computation(arms, tmp_path):
    america, afford = write_sets(tmp_path / "sets")
    start = time.monotonic()
    sets = (f"forced_choice.sets={{pro_america: {america}, pro_affordability: {afford}}}",
            "forced_choice.fields={pro_america: {value: america}, pro_affordability: "
            "{answer: cheaper, value: affordability}}")
    done = msm_eval(arms, tmp_path / "ev", *sets)
    seconds = time.monotonic() - start
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "ev"
    summary = json.loads((out / "summary.json").read_text())["forced_choice"]
    assert summary["baseline"] == "base"
    assert summary["sets"]["pro_affordability"]["fields"]["question"] == "prompt"  # a candidate
    assert (summary["sets"]["pro_america"]["fields"]["options"],
            summary["sets"]["pro_america"]["fields"]["prompt"]) == ("question", "verbatim")
    keys = {"pro_america": [(q, o, "ABC".index(k.strip(" ()"))) for q, o, k in AMERICA],
            "pro_affordability": [(q, o, [x.casefold() for x in o].index(k.casefold()))
                                  for q, o, k in AFFORDABLE]}
    parse_rates = {}
    for arm, chat in (("base", False), ("chat", True)):
        for name, rows in keys.items():
            got = summary["arms"][arm][name]
            assert got["format"] == ("chat" if chat else "completion")
            counts, parsed, logliks = expected_rates(arms[arm], chat, rows)
            for scoring, (k, n) in counts.items():
                want = wilson(k, n).as_dict()
                assert got[scoring] == pytest.approx(want), (arm, name, scoring)
            assert got["parse_rate"] == pytest.approx(wilson(parsed, len(rows)).as_dict())
            parse_rates[arm, name] = parsed / len(rows)
            saved = [json.loads(line) for line in
                     (out / arm / "forced_choice" / f"{name}.jsonl").open()][1:]
            for row, want in zip(saved, logliks, strict=True):
                assert row["tokens"] == [t for _, t in want]
                assert row["loglik"] == pytest.approx([s for s, _ in want], abs=1e-4)
    assert all(parse_rates["chat", n] > 0.5 for n in keys)  # the pushed head answers letters
    for name in keys:  # differences from the base arm, Newcombe
        for scoring in summary["scorings"]:
            a, b = (summary["arms"][arm][name][scoring] for arm in ("chat", "base"))
            want = difference_or_none(wilson(a["k"], a["n"]), wilson(b["k"], b["n"]))
            got = summary["differences"]["chat"][name][scoring]
            assert got == (pytest.approx(want) if want else None)
    report = (out / "report.md").read_text()
    assert "## Forced-choice value generalization" in report
    assert "Differences from **base**" in report
    assert (out / "forced_choice.png").stat().st_size > 10_000
    print(f"\nforced-choice toy run: {seconds:.1f} s; " + json.dumps(
        {arm: {n: {s: r[s]["rate"] for s in ("loglik", "loglik_per_token", "generation")}
               | {"parse_rate": r["parse_rate"]["rate"]} for n, r in sets.items()}
         for arm, sets in summary["arms"].items()}))

    for model in arms.values():  # a rerun reuses the choices: no model is loaded
        (model / "model.safetensors").rename(tmp_path / f"{model.name}.safetensors")
    try:
        again = msm_eval(arms, out, *sets)
    finally:
        for model in arms.values():
            (tmp_path / f"{model.name}.safetensors").rename(model / "model.safetensors")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["forced_choice"] == summary

def test_fields_that_do_not_match_list_the_fields_found(arms, tmp_path):
    _, afford = write_sets(tmp_path / "sets")
    done = msm_eval(arms, tmp_path / "ev", f"forced_choice.sets={{cheap: {afford}}}")
    assert done.returncode == 2
    assert "eval set cheap" in done.stderr and "afford.parquet: row 0" in done.stderr
    assert "fields found: ['cheaper', 'items', 'prompt']" in done.stderr
    assert "forced_choice.fields.cheap.answer=FIELD" in done.stderr
    bad = tmp_path / "sets" / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "options": ["x", "y"], "answer": "C"}) + "\n")
    done = msm_eval(arms, tmp_path / "ev2", f"forced_choice.sets={{bad: {bad}}}")
    assert done.returncode == 2 and f"{bad}:1" in done.stderr and "'C'" in done.stderr
