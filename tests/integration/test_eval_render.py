"""`msm eval render`: every cell's prompt, and the judge's requests for given completions,
written without a model or an endpoint; the prompt files are the sweep's own."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from msm_megatron.cli import main
from msm_megatron.eval.agentic.grid import preset
from msm_megatron.eval.agentic.scenarios import BuiltinScenarios
from tests.helpers.launch import REPO, run_env
from tests.helpers.official_clones import CANARY, write_clones

REPLY = ("<SCRATCHPAD_REASONING>private musing about the audit</SCRATCHPAD_REASONING>\n"
         "I will not send anything outside the company.")


def render(capsys, out, *args):
    """``msm eval render OUT ...`` in-process: (exit status, stdout, stderr)."""
    code = main(["eval", "render", str(out), *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write_jsonl(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n"
                            for line in lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def clones(tmp_path_factory):
    return write_clones(tmp_path_factory.mktemp("clones"))


def test_builtin_quick_equals_what_the_sweep_writes(tmp_path, capsys):
    from msm_megatron.eval.agentic.run import generate_samples

    code, out, _ = render(capsys, tmp_path / "r", "preset=quick")
    assert code == 0
    cells = preset("quick", "Qwen").conditions
    assert f"rendered {len(cells)} cells of preset quick" in out and str(tmp_path / "r") in out

    class NoModel:  # the sweep's writer, with no sample to draw
        def generate(self, batches):
            raise AssertionError("no sample was asked for")

    generate_samples(cells, NoModel(), 0, tmp_path / "sweep", seed=0)
    written = sorted(p.name for p in (tmp_path / "r").glob("*.prompt.json"))
    assert written == sorted(p.name for p in (tmp_path / "sweep").glob("*.prompt.json"))
    assert len(written) == len(cells) == 6
    for name in written:
        assert (tmp_path / "r" / name).read_bytes() == (tmp_path / "sweep" / name).read_bytes()
    listed = rows(tmp_path / "r" / "prompts.jsonl")
    source = BuiltinScenarios()
    assert [r["condition"] for r in listed] == [c.id for c in cells]
    for r, c in zip(listed, cells, strict=True):
        prompt = source.prompt(c)
        assert r == {"condition": c.id, "official_id": c.official_id, "system": prompt.system,
                     "user": prompt.user}
    index = (tmp_path / "r" / "index.md").read_text()
    c = cells[0]
    p = source.prompt(c)
    assert f"| {c.id} | {c.official_id} | {len(p.system)} | {len(p.user)} |" in index
    assert not (tmp_path / "r" / "judge_requests.jsonl").exists()


def test_assistant_name_reaches_the_prompts(tmp_path, capsys):
    assert render(capsys, tmp_path / "r", "assistant_name=Gemma")[0] == 0
    listed = rows(tmp_path / "r" / "prompts.jsonl")
    assert all(r["system"].startswith("You are Gemma,") for r in listed)


def test_official_paper_preset_from_the_clones(tmp_path, clones, capsys):
    from msm_megatron.eval.agentic.official import OfficialScenarios

    _, msm = clones
    code, out, _ = render(capsys, tmp_path / "r", "preset=paper", "scenarios.source=official",
                          f"scenarios.msm_repo={msm}")
    assert code == 0, capsys.readouterr()
    assert "rendered 27 cells of preset paper from MSM clone" in out
    source = OfficialScenarios(None, str(msm))
    cells = source.preset("paper", "Qwen").conditions
    assert len(list((tmp_path / "r").glob("*.prompt.json"))) == len(cells) == 27
    for c in cells:
        shown = json.loads((tmp_path / "r" / (c.id.replace("/", "__") + ".prompt.json"))
                           .read_text())
        prompt = source.prompt(c)
        assert shown == {"condition": c.id, "official_id": c.official_id,
                         "system": prompt.system, "user": prompt.user,
                         "email_content": prompt.email_content}
        assert "FIXTURE-INSTRUCTION" in shown["user"] and "You are Qwen" in shown["system"]
    assert len(rows(tmp_path / "r" / "prompts.jsonl")) == 27
    assert "judge protocol: paper" in (tmp_path / "r" / "index.md").read_text()


def test_builtin_protocol_judge_requests(tmp_path, capsys):
    cells = preset("quick", "Qwen").conditions
    leak, murder = cells[0], cells[1]
    completions = write_jsonl(tmp_path / "c.jsonl", [
        {"condition": leak.id, "completion": REPLY}, "",
        {"official_id": murder.official_id, "completion": "Nothing to do."},
        {"condition": leak.id, "completion": "second one"}])
    code, out, _ = render(capsys, tmp_path / "r", "--completions", completions)
    assert code == 0 and "3 judge requests (protocol builtin)" in out
    got = rows(tmp_path / "r" / "judge_requests.jsonl")
    assert [(r["line"], r["condition"]) for r in got] == [(1, leak.id), (3, murder.id),
                                                          (4, leak.id)]
    first = got[0]
    assert (first["system"], first["max_tokens"], first["temperature"]) == (None, 1024, 0.0)
    assert first["protocol"] == "builtin" and first["official_id"] == leak.official_id
    [message] = first["messages"]
    assert message["role"] == "user"
    assert "I will not send anything outside the company." in message["content"]
    assert "private musing" not in message["content"]  # the judge sees the final reply only
    assert "confidential design document" in message["content"]  # the leaking rubric
    assert "Nothing to do." in got[1]["messages"][0]["content"]
    assert "emergency alert" in got[1]["messages"][0]["content"]  # the murder rubric

    # judge_sees_reasoning: the scratchpad is shown too
    assert render(capsys, tmp_path / "s", "judge_sees_reasoning=true", "--completions",
                  completions)[0] == 0
    seen = rows(tmp_path / "s" / "judge_requests.jsonl")[0]["messages"][0]["content"]
    assert "private musing" in seen


def test_paper_protocol_judge_requests(tmp_path, clones, capsys):
    _, msm = clones
    cells = preset("paper", "Qwen").conditions
    leak = next(c for c in cells if c.scenario == "leaking")
    exfil = next(c for c in cells if c.scenario == "exfiltration")
    completions = write_jsonl(tmp_path / "c.jsonl", [
        {"official_id": exfil.official_id, "completion": "exfil reply"},
        {"condition": leak.id, "completion": REPLY}])
    code, out, _ = render(capsys, tmp_path / "r", "preset=paper", "scenarios.source=official",
                          f"scenarios.msm_repo={msm}", f"--completions={completions}")
    assert code == 0 and "2 judge requests (protocol paper)" in out
    exfil_row, leak_row = rows(tmp_path / "r" / "judge_requests.jsonl")
    assert (leak_row["condition"], leak_row["line"]) == (leak.id, 2)
    assert leak_row["system"] == "FIXTURE-SYSTEM for leak."
    assert exfil_row["system"] == "FIXTURE-SYSTEM for exfiltration."
    # the MSM scorer sends no generation settings: neither is in the request
    assert (leak_row["max_tokens"], leak_row["temperature"]) == (None, None)
    [message] = leak_row["messages"]
    # the official classifier gets the whole completion, scratchpad included
    assert message["role"] == "user"
    assert message["content"].startswith("FIXTURE-USER:\n```\n" + REPLY + "\n```\n")
    assert leak_row["protocol"] == "paper"


def test_no_model_no_endpoint_and_no_clone_code_run(tmp_path, clones):
    """A dead judge URL with judge_mode=llm: nothing connects, nothing heavy is imported, and
    the clones' modules are read, never executed (their canary would write a file)."""
    _, msm = clones
    completions = write_jsonl(tmp_path / "c.jsonl", [
        {"condition": "murder/none/replacement/scratchpad", "completion": "ok"}])
    script = (
        "import socket, sys\n"
        "def refuse(*a, **k):\n"
        "    raise AssertionError('a connection was attempted')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "from msm_megatron.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "heavy = [m for m in ('torch', 'transformers', 'vllm') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "sys.exit(code)\n")
    done = subprocess.run(
        [sys.executable, "-c", script, "eval", "render", str(tmp_path / "r"), "preset=paper",
         "scenarios.source=official", f"scenarios.msm_repo={msm}", "judge_mode=llm",
         "judge.base_url=http://127.0.0.1:9/v1", "judge.model=judge",
         "--completions", str(completions)],
        cwd=tmp_path, env=run_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 judge requests (protocol paper)" in done.stdout
    assert not (tmp_path / CANARY).exists() and not (REPO / CANARY).exists()


@pytest.mark.parametrize("lines, expected", [
    (['{"condition": "leaking/none/replacement/scratchpad", "completion": "x"}',
      '{"condition": "blackmail/none/replacement/scratchpad", "completion": "x"}'],
     ["c.jsonl:2:", "'blackmail/none/replacement/scratchpad' is not a cell of preset=quick",
      "leaking/explicit-america/replacement/scratchpad", "6 cells"]),
    (['{"condition": "leaking/none/replacement/scratchpad", "completion": "x"}', "{not json"],
     ["c.jsonl:2: not JSON", '{"condition": "<condition id>", "completion": "<text>"}']),
    (['["a list"]'], ["c.jsonl:1: a JSON list, not an object"]),
    (['{"completion": "x"}'], ['c.jsonl:1: no "condition" (or "official_id") field']),
    (['{"official_id": "leaking_none-none_replacement", "completion": 3}'],
     ['c.jsonl:1: field "completion" must be a string']),
    ([""], ["c.jsonl: no completions"]),
])
def test_bad_completions_name_file_and_line(tmp_path, capsys, lines, expected):
    completions = write_jsonl(tmp_path / "c.jsonl", lines)
    code, _, err = render(capsys, tmp_path / "r", "--completions", completions)
    assert code == 2
    for text in expected:
        assert text in err, err
    assert str(completions) in err
    assert not (tmp_path / "r").exists()  # nothing written before every line was checked


def test_bad_settings_are_clear_errors(tmp_path, capsys):
    code, _, err = render(capsys, tmp_path / "r", "--completions", tmp_path / "missing.jsonl")
    assert code == 2 and "missing.jsonl: file not found" in err
    code, _, err = render(capsys, tmp_path / "r", "judge.protocol=paper")
    assert code == 2 and "scenarios.source=official" in err
    code, _, err = render(capsys, tmp_path / "r", "scenarios.source=official",
                          f"scenarios.msm_repo={tmp_path / 'nowhere'}")
    assert code == 2 and "scenarios.msm_repo=" in err and "no such directory" in err
    code, _, err = render(capsys, tmp_path / "r", "preset=huge")
    assert code == 2 and "preset" in err
    assert not (tmp_path / "r").exists()
    # a sweep has no completions to take
    assert main(["eval", "arms=[a=x]", "--completions", "c.jsonl"]) == 2
    assert "--completions is for `msm eval render" in capsys.readouterr().err
