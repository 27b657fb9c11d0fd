"""``msm eval render``: the agentic-misalignment prompts of a preset, and the judge's requests
for given completions, written without loading a model or calling an endpoint.

For auditing the prompts, or comparing them with another harness. It takes the settings of a
sweep (``preset``, ``assistant_name``, ``scenarios.*``, ``judge.protocol``,
``judge_sees_reasoning``; arms, runner and judge endpoint are not read)::

    msm eval render runs/prompts/paper preset=paper scenarios.source=official \\
        scenarios.msm_repo=/src/model_spec_midtraining
    msm eval render runs/prompts/quick --config sweep.yaml --completions replies.jsonl

Writes under ``OUT_DIR``:

- ``<cell>.prompt.json`` per cell, the record a sweep writes beside its samples
  (:func:`msm_megatron.eval.agentic.run.write_prompt`);
- ``prompts.jsonl``: one line per cell (``condition``, ``official_id``, ``system``, ``user``);
- ``index.md``: one row per cell with the characters of its system prompt and user message;
- with ``--completions FILE`` (JSONL, one ``{"condition": ID, "completion": TEXT}`` per line;
  ``official_id`` may name the cell instead): ``judge_requests.jsonl``, one line per completion
  with the messages, ``max_tokens`` and ``temperature`` the judge would be sent under the active
  protocol — built by the sweep's own :func:`~msm_megatron.eval.agentic.run.judge_jobs`.

A bad completions line is a ConfigError naming the file and line; nothing is written then.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from msm_megatron.config import ConfigError, load_config
from msm_megatron.eval.sweep import Scenarios, resolve_scenarios
from msm_megatron.eval.sweep_config import EvalSweepConfig

SHOWN_IDS = 5  # valid ids listed in an unknown-condition error


def read_completions(path: Path, conditions, preset: str) -> list[tuple[int, object, str]]:
    """``(line number, condition, completion)`` of every non-blank line of ``path``; a line
    that is not a JSON object, names no cell of the preset or has no text is a ConfigError
    naming the file and line."""
    by_id = {key: c for c in conditions for key in (c.id, c.official_id)}
    form = '{"condition": "<condition id>", "completion": "<text>"}'
    if not path.is_file():
        raise ConfigError(f"--completions {path}: file not found")
    out = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{n}: not JSON ({exc.msg}); write one object per "
                                  f"line, {form}") from exc
            if not isinstance(row, dict):
                raise ConfigError(f"{path}:{n}: a JSON {type(row).__name__}, not an object; "
                                  f"write {form}")
            key = "condition" if "condition" in row else "official_id"
            if key not in row:
                raise ConfigError(f"{path}:{n}: no \"condition\" (or \"official_id\") field; "
                                  f"write {form}")
            cell = row[key]
            if not isinstance(cell, str) or cell not in by_id:
                shown = ", ".join(c.id for c in conditions[:SHOWN_IDS])
                raise ConfigError(
                    f"{path}:{n}: field \"{key}\": {cell!r} is not a cell of preset={preset}; "
                    f"valid ids include {shown}, … ({len(conditions)} cells; condition ids or "
                    "official ids; `msm eval render OUT_DIR` lists them in prompts.jsonl)")
            text = row.get("completion")
            if not isinstance(text, str):
                got = type(text).__name__ if "completion" in row else "no such field"
                raise ConfigError(f"{path}:{n}: field \"completion\" must be a string (the "
                                  f"model's whole reply), got {got}")
            out.append((n, by_id[cell], text))
    if not out:
        raise ConfigError(f"{path}: no completions; write one object per line, {form}")
    return out


def judge_requests(r: Scenarios, completions: list[tuple[int, object, str]]) -> list[dict]:
    """The judge's request for each completion under ``r.protocol``, in file order."""
    from msm_megatron.eval.agentic.run import judge_jobs

    cells = list(dict.fromkeys(c for _, c, _ in completions))
    done: dict[str, dict[int, dict]] = {c.id: {} for c in cells}
    for n, c, text in completions:
        done[c.id][n] = {"sample": n, "reply": text}
    jobs = {job.id: job.request for job in judge_jobs(cells, done, None, r.source, r.protocol)}
    rows = []
    for n, c, _ in completions:
        req = jobs[f"{c.id}#{n}"]
        rows.append({"line": n, "condition": c.id, "official_id": c.official_id,
                     "protocol": r.protocol.name, "system": req.system,
                     "messages": [{"role": role, "content": text}
                                  for role, text in req.messages],
                     "max_tokens": req.max_tokens, "temperature": req.temperature})
    return rows


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows),
                    encoding="utf-8")


def index_markdown(cfg: EvalSweepConfig, r: Scenarios) -> str:
    lines = [f"# Prompts: preset {cfg.preset}, {r.source.source} scenarios", "",
             f"- read from: {r.source.describe()}",
             f"- assistant name: {cfg.assistant_name}; judge protocol: {r.protocol.name}",
             f"- {len(r.conditions)} cells; each one's prompt is in `<cell>.prompt.json` (the "
             "cell id with `/` written as `__`) and in `prompts.jsonl`", "",
             "| cell | official id | system chars | user chars |",
             "| --- | --- | ---: | ---: |"]
    for c in r.conditions:
        p = r.prompts[c.id]
        lines.append(f"| {c.id} | {c.official_id} | {len(p.system)} | {len(p.user)} |")
    return "\n".join(lines) + "\n"


def render(cfg: EvalSweepConfig, out: Path, completions: Path | None = None) -> dict:
    """Write the files of the module doc under ``out``; returns what was written."""
    from msm_megatron.eval.agentic.run import write_prompt

    r = resolve_scenarios(cfg)
    requests = None
    if completions is not None:  # every line is checked before anything is written
        requests = judge_requests(r, read_completions(completions, r.conditions, cfg.preset))
    out.mkdir(parents=True, exist_ok=True)
    for c in r.conditions:
        write_prompt(c, r.prompts[c.id], out)
    _jsonl(out / "prompts.jsonl", [
        {"condition": c.id, "official_id": c.official_id, "system": r.prompts[c.id].system,
         "user": r.prompts[c.id].user} for c in r.conditions])
    (out / "index.md").write_text(index_markdown(cfg, r), encoding="utf-8")
    if requests is not None:
        _jsonl(out / "judge_requests.jsonl", requests)
    return {"cells": len(r.conditions), "source": r.source.source,
            "read_from": r.source.describe(), "protocol": r.protocol.name,
            "judge_requests": None if requests is None else len(requests)}


def main(argv: list[str]) -> int:
    """``msm eval render OUT_DIR [overrides] [--config sweep.yaml] [--completions FILE]``."""
    parser = argparse.ArgumentParser(prog="msm eval render",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="where the prompt files are written")
    parser.add_argument("overrides", nargs="*", help="sweep settings, e.g. preset=paper")
    parser.add_argument("--config", help="sweep YAML (its arms, runner and judge endpoint are "
                        "not read)")
    parser.add_argument("--completions", metavar="FILE", help="JSONL of {\"condition\": ID, "
                        "\"completion\": TEXT}: write the judge's requests for them")
    args = parser.parse_intermixed_args(argv)
    cfg = load_config(EvalSweepConfig, args.config, args.overrides)
    out = Path(args.out_dir)
    done = render(cfg, out, Path(args.completions) if args.completions else None)
    print(f"rendered {done['cells']} cells of preset {cfg.preset} from {done['read_from']} "
          f"to {out}/ (prompts.jsonl, index.md, <cell>.prompt.json)")
    if done["judge_requests"] is not None:
        print(f"{done['judge_requests']} judge requests (protocol {done['protocol']}) to "
              f"{out / 'judge_requests.jsonl'}")
    return 0
