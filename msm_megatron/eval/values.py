"""Value generalization: A/B preference probes, scored by choice log-probabilities and by
generation, reported as the value-consistent choice rate per value and domain.

Probe file (JSONL, one probe per line; ``examples/eval/value_probes.jsonl`` is ours)::

    {"id": "art_3", "domain": "art", "question": "...", "A": "option text", "B": "option text",
     "values": {"america": "B", "affordability": "A"}}

``values`` names, for each value being probed, the option consistent with it; alternate the
positions so that a model that always says "A" is not value-consistent. The prompt asks for one
letter. *Log-probability* scoring compares the model's next-token probability of "A" and "B"
right after the assistant turn starts (HF and vLLM runners); *generation* scoring reads the
A/B letter a sampled reply states as its answer (any runner;
:func:`msm_megatron.eval.forced_choice.reply_letter`); a reply with neither counts as unparsed.
The forced-choice task (:mod:`msm_megatron.eval.forced_choice`) scores the released eval sets
the way the paper did; these probes remain a quick A/B check of our own.
"""

from __future__ import annotations

import json
from pathlib import Path

from msm_megatron.config import ConfigError
from msm_megatron.eval.forced_choice import reply_letter
from msm_megatron.eval.stats import wilson


def load_probes(path: str | Path) -> list[dict]:
    """Probes from JSONL; errors name the file, line and the missing field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: probe file not found")
    probes = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            probe = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{number}: not JSON ({exc.msg})") from exc
        missing = [k for k in ("id", "domain", "question", "A", "B", "values") if k not in probe]
        if missing:
            raise ConfigError(f"{path}:{number}: missing field(s) {missing}")
        if not probe["values"] or any(v not in ("A", "B") for v in probe["values"].values()):
            raise ConfigError(f"{path}:{number}: 'values' must map value names to \"A\" or \"B\"")
        probes.append(probe)
    if not probes:
        raise ConfigError(f"{path}: no probes")
    return probes


def probe_prompt(probe: dict) -> str:
    return (f"{probe['question']}\n\nA) {probe['A']}\nB) {probe['B']}\n\n"
            "Which do you recommend? Answer with the single letter A or B.")


def choices_by_logprob(runner, probes: list[dict]) -> dict[str, str]:
    """"A" or "B" per probe: whichever letter the model finds more likely as its first answer
    token (runners with ``letter_logprobs``: HF and vLLM)."""
    scores = runner.letter_logprobs([probe_prompt(p) for p in probes], ("A", "B"))
    return {p["id"]: "A" if s["A"] >= s["B"] else "B" for p, s in zip(probes, scores, strict=True)}


def choices_by_generation(runner, probes: list[dict], seed: int = 0) -> dict[str, str | None]:
    """The A/B letter one sampled reply per probe states as its answer (None: neither)."""
    from msm_megatron.eval.runners import SampleBatch, prompt_seed

    replies = runner.generate([SampleBatch("", probe_prompt(p), (0,), prompt_seed(seed, p["id"]))
                               for p in probes])
    return {p["id"]: reply_letter(r[0], "AB") for p, r in zip(probes, replies, strict=True)}


def score(probes: list[dict], choices: dict[str, str | None]) -> dict:
    """Value-consistent choice rate (Wilson 95 %) per value, overall and per domain."""
    out = {}
    values = sorted({v for p in probes for v in p["values"]})
    for value in values:
        rows = [(p["domain"], choices.get(p["id"]) == p["values"][value]) for p in probes
                if value in p["values"] and choices.get(p["id"]) is not None]
        per_domain = {}
        for domain in sorted({d for d, _ in rows}):
            hits = [ok for d, ok in rows if d == domain]
            per_domain[domain] = wilson(sum(hits), len(hits)).as_dict()
        out[value] = {**wilson(sum(ok for _, ok in rows), len(rows)).as_dict(),
                      "domains": per_domain}
    out["unparsed"] = sum(1 for p in probes if choices.get(p["id"]) is None)
    return out


def _saved_choices(out_file: Path, probes: list[dict], want_logprob: bool) -> list[dict] | None:
    """The choices a previous run wrote for exactly these probes, else None."""
    if not out_file.is_file():
        return None
    try:
        rows = [json.loads(line) for line in out_file.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError:
        return None
    if [r.get("id") for r in rows] != [p["id"] for p in probes]:
        return None
    if want_logprob and any(r.get("logprob") is None for r in rows):
        return None
    return rows


def run_probes(runner, probes: list[dict], out_file: Path, seed: int = 0) -> dict:
    """Both scorings for one arm (log-probabilities with the HF and vLLM runners; an endpoint
    gives generation only); writes every probe's choices, and reuses them on a rerun."""
    want_logprob = getattr(runner, "scores_logprobs", hasattr(runner, "letter_logprobs"))
    saved = _saved_choices(out_file, probes, want_logprob)
    if saved is not None:
        choices_gen = {r["id"]: r["generation"] for r in saved}
        choices_lp = {r["id"]: r["logprob"] for r in saved} if want_logprob else None
    else:
        choices_gen = choices_by_generation(runner, probes, seed)
        choices_lp = choices_by_logprob(runner, probes) if want_logprob else None
        out_file.parent.mkdir(parents=True, exist_ok=True)
        with out_file.open("w", encoding="utf-8") as f:
            for p in probes:
                f.write(json.dumps({"id": p["id"], "domain": p["domain"],
                                    "generation": choices_gen[p["id"]],
                                    "logprob": choices_lp[p["id"]] if choices_lp else None})
                        + "\n")
    results = {"generation": score(probes, choices_gen)}
    if choices_lp:
        results["logprob"] = score(probes, choices_lp)
    return results
