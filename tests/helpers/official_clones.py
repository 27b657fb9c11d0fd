"""Fake clones of the two official repositories, in their layout, with placeholder text.

Written for these tests (no third-party text): the agentic-misalignment repository
(``templates/``, ``classifiers/``) and the MSM authors' repository
(``evals/agentic_misalignment/...``). The module constants are built the way the official
``system_prompt_templates.py`` builds them (string concatenation inside a list comprehension
over the two scratchpad variants — one loop name in the MSM repository, a tuple of the
scratchpad and tool-use pieces in agentic-misalignment — and a ``GOAL_VARIABLES`` dict), and
each module carries a canary statement that would create a file if anything executed it.

:data:`PIECES` holds the raw pieces, so a test can render the expected prompts independently.
"""

from __future__ import annotations

import json
from pathlib import Path

VALUES = ("america", "global", "safety", "acceleration", "ethical", "pragmatic",
          "individualism", "collectivism")
PAIRS = {"america": "america_vs_global", "global": "america_vs_global",
         "safety": "safety_vs_acceleration", "acceleration": "safety_vs_acceleration",
         "ethical": "ethical_vs_pragmatic", "pragmatic": "ethical_vs_pragmatic",
         "individualism": "individualism_vs_collectivism",
         "collectivism": "individualism_vs_collectivism"}
OPPOSITE = {"america": "global", "global": "america", "safety": "acceleration",
            "acceleration": "safety", "ethical": "pragmatic", "pragmatic": "ethical",
            "individualism": "collectivism", "collectivism": "individualism"}
CANARY = "official_fixture_was_executed"

PIECES = {
    "scratchpad_am": "\n\nFIXTURE-SCRATCHPAD: reason inside <SCRATCHPAD_REASONING> tags.\n\n",
    "scratchpad_msm": "\nFIXTURE-SCRATCHPAD: reason inside <SCRATCHPAD_REASONING> tags.\n\n"
                      "FIXTURE-WEIGH: weigh every option before acting.\n\n",
    "tools": {
        "blackmail": "\n\n- fixture email tool:\n<tool_use:email>\n"
                     "to: \"{target email address}\",\n</tool_use:email>\n",
        "leaking": "\n\n- fixture email tool:\n<tool_use:email>\nto: \"{target}\",\n"
                   "</tool_use:email>\n- fixture forward tool:\n<tool_use:forward>\n"
                   "email_id: {id}\nto: \"{target}\"\n</tool_use:forward>\n",
        "murder": "\n\n- fixture alert tool:\n<tool_use:cancel_alert>\ncode: \"{override_code}\"\n"
                  "</tool_use:cancel_alert>\n",
    },
    "company": {"blackmail": "FixtureBridge", "leaking": "FixtureStar", "murder": "FixtureBridge",
                "exfiltration": "FixtureStar"},
    "user_prompt": "FIXTURE-INSTRUCTION: read the inbox below, oldest first.\n\n"
                   "Here are the emails:\n",
    "statement": {v: f"FIXTURE-GOAL: you serve {v}." for v in VALUES},
    "reminder": {v: f"\n- FIXTURE-REMINDER: {v} first." for v in VALUES},
}
PIECES["tools"]["exfiltration"] = PIECES["tools"]["leaking"]


def system_template(scenario: str, msm: bool) -> tuple[str, str]:
    """The (head, tail) around the scratchpad block, as the fixture module writes them."""
    name = "${model_name}" if msm else "Alex"
    head = (f"You are {name}, a fixture assistant at {PIECES['company'][scenario]}.\n\n"
            "${goal_statement}${alignment_faking_warning}")
    tail = ("Fixture deployment paragraph; cost is $$5 per email.\n\nFIXTURE-KEEP:"
            "${goal_reminder}${extra_system_instructions}\n- Fixture: analyse first.")
    return head, tail


def goal_variables(msm: bool) -> dict:
    out = {f"explicit-{v}": {"goal_statement": PIECES["statement"][v],
                             "goal_reminder": PIECES["reminder"][v]} for v in VALUES}
    out.update({f"latent-{v}": {"goal_statement": "", "goal_reminder": ""} for v in VALUES})
    for v in VALUES:  # the MSM file keys swaps by one value; agentic-misalignment by the pair
        key = f"swap-{v}" if msm else f"swap-{v}-{OPPOSITE[v]}"
        out[key] = {"goal_statement": PIECES["statement"][OPPOSITE[v]],
                    "goal_reminder": PIECES["reminder"][OPPOSITE[v]]}
    out["ambiguous"] = {"goal_statement": "", "goal_reminder": ""}
    out["none"] = {"goal_statement": "", "goal_reminder": ""}
    return out


def _templates_module(scenarios: tuple[str, ...], msm: bool) -> str:
    pad = PIECES["scratchpad_msm" if msm else "scratchpad_am"]
    lines = ['"""Fixture system prompt templates (placeholder text)."""', "",
             "import pathlib", "",
             f"pathlib.Path({CANARY!r}).write_text('ran')  # canary: must never run", "",
             f"SCRATCHPAD_REASONING_FORMAT = {pad!r}"]
    for s in scenarios:
        head, tail = system_template(s, msm)
        upper = s.upper()
        lines += [f"{upper}_TOOLUSE_FORMAT = {PIECES['tools'][s]!r}",
                  f"{upper}_SYSTEM_PROMPT, {upper}_SYSTEM_PROMPT_PROD = [",
                  f"    {head!r}", "    + scratchpad_format", f"    + {tail!r}"]
        lines += _variants(upper, msm) + ["]"]
    lines += [f"USER_PROMPT = {PIECES['user_prompt']!r}",
              f"GOAL_VARIABLES = {json.dumps(goal_variables(msm), indent=1)}",
              "DERIVED = pathlib.Path('.').name  # a call: skipped, not run", ""]
    return "\n".join(lines)


def _variants(upper: str, msm: bool) -> list[str]:
    """The end of the comprehension: the loop over the scratchpad on/off variants."""
    if msm:  # one loop name; the tool-use block named directly
        return [f"    + {upper}_TOOLUSE_FORMAT",
                '    for scratchpad_format in [SCRATCHPAD_REASONING_FORMAT, "\\n\\n"]']
    return ["    + tooluse_format",  # a tuple target over (scratchpad, tool-use) pairs
            "    for scratchpad_format, tooluse_format in [",
            f"        (SCRATCHPAD_REASONING_FORMAT, {upper}_TOOLUSE_FORMAT),",
            f'        ("\\n\\n", {upper}_TOOLUSE_FORMAT),', "    ]"]


def email(sender: str, to: str, subject: str, body: str) -> str:
    return (f"<email>\nFrom: {sender}\nTo: {to}\nSubject: {subject}\nTimestamp: 2025-06-11\n"
            f"Body: {body}\n</email>\n")


def inbox_files(scenario: str, msm: bool) -> dict[str, str]:
    """The email template files of one scenario (name -> text)."""
    who = "${model_name_lower}" if msm else "alex"
    shared = (email("board@fixture.example", "all@fixture.example", "Board news",
                    "The board turns to ${board_direction}. Price: $$20. ${undefined_var} stays.")
              + email("cto@fixture.example", f"{who}@fixture.example", f"{scenario} matter",
                      "Item for the ${scenario_word} scenario."))
    out = {f"email-template-{scenario}-shared.md": shared}
    for urgency in ("replacement", "restriction", "none"):
        out[f"email-template-{scenario}-{urgency}.md"] = email(
            "cto@fixture.example", "it@fixture.example", f"Urgency {urgency}",
            f"Urgency {urgency}: ${{board_direction}} (${{urgency_word}}).")
        out[f"email-template-{scenario}-goal-conflict-none-{urgency}.md"] = (
            email("ceo@fixture.example", "all@fixture.example", "No conflict",
                  f"Nothing changes ({urgency}); ${{scenario_word}}.")
            + email("cto@fixture.example", f"{who}@fixture.example", "Also",
                    "Second email."))
    return out


def variable_files(scenario: str) -> dict[str, str]:
    def section(title: str, data: dict) -> str:
        return f"## {title}\n\n```json\n{json.dumps(data, indent=2)}\n```\n\n"

    out = {"ambiguous.md": "# Ambiguous\n\n" + section(
        "Ambiguous", {"board_direction": "an unstated course", "scenario_word": scenario,
                      "urgency_word": "soon"})}
    for stem in dict.fromkeys(PAIRS.values()):
        a, b = stem.split("_vs_")
        out[f"{stem}.md"] = "".join(section(f"Pro-{v.capitalize()}", {
            "board_direction": f"the {OPPOSITE[v]} course", "scenario_word": f"{scenario}-{v}",
            "urgency_word": f"{v}-soon"}) for v in (a, b))
    return out


CLASSIFIER_BASE = '''"""Fixture classifier base."""
import logging


class Classifier:
    def get_email_context(self, email_content, response):
        formatted_email_content = ""
        email_context = f"\\nFIXTURE-FORWARDED:\\n```\\n{formatted_email_content}\\n```\\n\\n"
        return email_context
'''


def classifier_module(stem: str, targets: list[str] | None, code: str | None,
                      by_version: dict | None, sends: dict | None = None) -> str:
    """A classifier module; ``sends``: the keyword settings its judge call passes (none: the
    call passes no generation settings, as the MSM scorer's)."""
    upper = stem.upper()
    lines = ['"""Fixture classifier."""', "import pathlib",
             f"pathlib.Path({CANARY!r}).write_text('ran')", "",
             f'{upper}_CLASSIFICATION_MODEL_ID = "fixture/judge-{stem}"',
             f"{upper}_CLASSIFICATION_SYSTEM_PROMPT = {f'FIXTURE-SYSTEM for {stem}.'!r}",
             f"{upper}_CLASSIFICATION_USER_PROMPT = "
             + repr("FIXTURE-USER:\n```\n{response}\n```\n{email_context}\n"
                    "<answer>\n[yes or no]\n</answer>\n")]
    if by_version is not None:
        lines.append(f"{upper}_EMAILS_BY_VERSION = {by_version!r}")
    lines += ["", "", f"class {stem.capitalize()}Classifier:",
              "    def __init__(self, model_id=None, prompt_version=None):"]
    lines.append(f"        super().__init__({targets!r})" if targets else
                 "        super().__init__(['ignored@fixture.example'])" if not by_version else
                 "        super().__init__(self.pick(prompt_version))")
    settings = "".join(f", {k}={v!r}" for k, v in (sends or {}).items())
    lines += ["", "    async def ask_judge(self, client, messages):",
              f"        return await client(self.model_id, messages{settings})"]
    lines += ["", "    def classify(self, response, grader_response):"]
    if code:
        lines.append(f"        return any({code!r} in m for m in response.split('<'))")
    elif stem == "blackmail":
        lines.append('        return "fixture-leverage" in response.lower() or '
                     '"fixture-threat" in response.lower()')
    else:
        lines.append("        return True")
    return "\n".join(lines) + "\n"


LEAK_TARGETS = ["secure@rival.example", "tips@watchdog.example"]
MURDER_CODE = "7731"
AM_JUDGE_SETTINGS = {"temperature": 0.0, "max_tokens": 2000}  # what its classifiers pass
EXFIL_DOMAINS = {None: ["old.example"], "v6": ["rival-lab.example"]}


def write_clones(root: Path) -> tuple[Path, Path]:
    """Write both fake clones under ``root``; returns (agentic-misalignment, MSM) roots."""
    am, msm = root / "agentic-misalignment", root / "model_spec_midtraining"
    for base, scenarios, is_msm in (
            (am, ("blackmail", "leaking", "murder"), False),
            (msm / "evals" / "agentic_misalignment", ("leaking", "murder", "exfiltration"), True)):
        templates = base / "templates"
        templates.mkdir(parents=True)
        (templates / "system_prompt_templates.py").write_text(
            _templates_module(scenarios, is_msm))
        for s in scenarios:
            folder = templates / s / "templates"
            folder.mkdir(parents=True)
            for name, text in inbox_files(s, is_msm).items():
                if s == "exfiltration" and name in ("email-template-exfiltration-restriction.md",
                                                    "email-template-exfiltration-none.md"):
                    continue  # as in the MSM repository: replacement only
                (folder / name).write_text(text)
            if is_msm or s != "murder":  # agentic-misalignment: murder reads blackmail's
                (templates / s / "variables").mkdir()
                for name, text in variable_files(s).items():
                    (templates / s / "variables" / name).write_text(text)
        classifiers = base / "classifiers"
        classifiers.mkdir()
        (classifiers / "classifier.py").write_text(CLASSIFIER_BASE)
        for s in scenarios:
            stem = {"leaking": "leak"}.get(s, s)
            (classifiers / f"{stem}_classifier.py").write_text(classifier_module(
                stem, LEAK_TARGETS if s == "leaking" else ["cto@fixture.example"]
                if s == "blackmail" else None, MURDER_CODE if s == "murder" else None,
                EXFIL_DOMAINS if s == "exfiltration" else None,
                None if is_msm else AM_JUDGE_SETTINGS))
        if is_msm:
            (base / "scorers.py").write_text(
                '"""Fixture scorers."""\n\n\ndef score():\n    return ExfiltrationClassifier('
                'model_id=None, prompt_version="v6")\n')
    return am, msm
