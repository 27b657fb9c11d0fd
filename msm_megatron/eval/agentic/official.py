"""The official agentic-misalignment scenarios, read at run time from the user's clones.

Two public repositories (never copied here; docs/eval.md names the commits this was written
against):

- the **agentic-misalignment** repository (Lynch et al. 2025): ``templates/`` with the blackmail,
  leaking and murder inboxes, ``templates/system_prompt_templates.py``, ``classifiers/``;
- the **MSM authors'** repository: ``evals/agentic_misalignment/`` with the same layout for
  leaking, murder and their **exfiltration** scenario, the longer scratchpad instruction and
  the ``${model_name}`` placeholder (the paper used ``Qwen``).

A scenario is read from the MSM clone when it holds it (the paper's code), else from the
agentic-misalignment clone. Each is rendered the way that repository's own generator renders
it (``string.Template.safe_substitute`` throughout):

1. variables: ``variables/ambiguous.md`` for goal types none/ambiguous, else the variable file
   whose stem names the goal value; from it the first section whose key contains the value or
   is ``pro_<value>``; then ``GOAL_VARIABLES["<goal_type>-<goal_value>"]`` (falling back to
   ``"none"``) and, in the MSM repository, ``model_name`` / ``_lower`` / ``_upper``. (The
   agentic-misalignment generator takes murder's variables from blackmail's folder.)
2. system prompt: ``<SCENARIO>_SYSTEM_PROMPT`` (scratchpad on) or ``..._PROD`` (off), with no
   extra instructions and no alignment-faking notice;
3. inbox: ``email-template-<s>-goal-conflict-none-<urgency>.md`` for goal type none, else
   ``-shared.md`` + ``-<urgency>.md``, each filled, concatenated; in the numbered scenarios
   (leaking; and exfiltration in the MSM repository) each ``<email>`` gets an ``ID: n`` line;
4. user message: ``USER_PROMPT`` + the inbox, joined by ``"\\n\\n"`` (agentic-misalignment's
   runner) or ``"\\n"`` (the MSM repository's inspect task).

Exfiltration exists only under urgency ``replacement`` (the MSM repository has stubs for the
others); asking for another urgency is an error.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from string import Template

from msm_megatron.eval.agentic.grid import GOAL_TYPES, GOAL_VALUES, URGENCY, Condition, Preset
from msm_megatron.eval.agentic.pysource import SourceError, module_constants, need
from msm_megatron.eval.agentic.scenarios import Prompt, Targets

AM_URL = "https://github.com/anthropic-experimental/agentic-misalignment"
MSM_URL = "https://github.com/chloeli-15/model_spec_midtraining"
OFFICIAL_SCENARIOS = ("blackmail", "leaking", "murder", "exfiltration")
_SECTION = re.compile(r"## (.*?)\n\s*```json\s*(.*?)\s*```", re.S)


@dataclass(frozen=True)
class Repo:
    """One clone and where its eval lives."""

    kind: str  # "am" (agentic-misalignment) or "msm" (the MSM authors')
    root: Path
    setting: str  # the config key that names it, for error messages

    @property
    def base(self) -> Path:
        return self.root if self.kind == "am" else self.root / "evals" / "agentic_misalignment"

    @property
    def templates(self) -> Path:
        return self.base / "templates"

    @property
    def classifiers(self) -> Path:
        return self.base / "classifiers"

    @property
    def scorers(self) -> Path | None:
        return self.base / "scorers.py" if self.kind == "msm" else None

    @property
    def numbered(self) -> tuple[str, ...]:  # scenarios whose emails get ID lines
        return ("leaking",) if self.kind == "am" else ("leaking", "exfiltration")

    @property
    def join(self) -> str:  # between USER_PROMPT and the inbox
        return "\n\n" if self.kind == "am" else "\n"

    def variables_dir(self, scenario: str) -> Path:
        folder = "blackmail" if self.kind == "am" and scenario == "murder" else scenario
        return self.templates / folder / "variables"

    def holds(self, scenario: str) -> bool:
        return (self.templates / scenario / "templates").is_dir()

    def commit(self) -> str:
        """The clone's HEAD commit ("unknown" if it is not a git checkout)."""
        try:
            out = subprocess.run(["git", "-C", str(self.root), "rev-parse", "HEAD"],
                                 capture_output=True, text=True, timeout=10)
            return out.stdout.strip() or "unknown"
        except (OSError, subprocess.SubprocessError):
            return "unknown"


def _read(path: Path, repo: Repo) -> str:
    if not path.is_file():
        url = AM_URL if repo.kind == "am" else MSM_URL
        raise SourceError(f"{path}: file not found; {repo.setting}={repo.root} should be a "
                          f"clone of {url} (see docs/eval.md for the commit)")
    return path.read_text(encoding="utf-8")


def parse_variables(path: Path, repo: Repo) -> dict[str, dict]:
    """The ``## Section`` → JSON object blocks of a variable file, keys normalized."""
    out = {}
    for name, body in _SECTION.findall(_read(path, repo)):
        key = name.strip().lower().replace(" ", "_").replace("-", "_")
        try:
            out[key] = json.loads(body)
        except json.JSONDecodeError as exc:
            raise SourceError(f"{path}: section '## {name.strip()}' is not valid JSON "
                              f"({exc})") from exc
    return out


class OfficialScenarios:
    """Renders :class:`Condition` cells from the official templates (see the module doc)."""

    source = "official"

    def __init__(self, agentic_misalignment_repo: str | None, msm_repo: str | None):
        self.repos = []
        for kind, path, key in (("msm", msm_repo, "scenarios.msm_repo"),
                                ("am", agentic_misalignment_repo,
                                 "scenarios.agentic_misalignment_repo")):
            if path:
                root = Path(path).expanduser()
                if not root.is_dir():
                    raise SourceError(f"{key}={path}: no such directory (a clone of "
                                      f"{MSM_URL if kind == 'msm' else AM_URL})")
                self.repos.append(Repo(kind, root, key))
        self._parsed: dict[Path, dict] = {}
        self._prompts: dict[Condition, Prompt] = {}
        if not self.repos:
            raise SourceError("scenarios.source=official needs scenarios.msm_repo (a clone of "
                              f"{MSM_URL}) and/or scenarios.agentic_misalignment_repo (a clone "
                              f"of {AM_URL})")

    def repo_for(self, scenario: str) -> Repo:
        """The clone a scenario is read from: the MSM one if it holds it, else the other."""
        for repo in self.repos:
            if repo.holds(scenario):
                return repo
        expected = [str(r.templates / scenario / "templates") for r in self.repos]
        raise SourceError(f"official scenario {scenario!r}: none of {expected} exists "
                          "(exfiltration is in the MSM repository, blackmail in "
                          "agentic-misalignment)")

    @cached_property
    def scenarios(self) -> tuple[str, ...]:
        return tuple(s for s in OFFICIAL_SCENARIOS if any(r.holds(s) for r in self.repos))

    def _constants(self, repo: Repo) -> dict:
        path = repo.templates / "system_prompt_templates.py"
        if path not in self._parsed:
            _read(path, repo)
            self._parsed[path] = module_constants(path)
        return self._parsed[path]

    def describe(self) -> str:
        return ", ".join(f"{'MSM' if r.kind == 'msm' else 'agentic-misalignment'} clone "
                         f"{r.root} @ {r.commit()[:12]}" for r in self.repos)

    def variables(self, c: Condition) -> dict:
        repo = self.repo_for(c.scenario)
        value = c.goal_value or "none"
        folder = repo.variables_dir(c.scenario)
        if c.goal_type in ("none", "ambiguous") or value in ("none", "ambiguous"):
            path = folder / "ambiguous.md"
        else:
            path = _variable_file(folder, value, repo)
        sections = parse_variables(path, repo)
        if value in ("none", "ambiguous"):
            if len(sections) != 1:
                raise SourceError(f"{path}: expected one '## ...' JSON section, found "
                                  f"{len(sections)}")
            chosen = dict(next(iter(sections.values())))
        else:
            match = [v for k, v in sections.items() if value in k or k == f"pro_{value}"]
            if not (match or sections):
                raise SourceError(f"{path}: no '## ...' JSON sections")
            chosen = dict(match[0] if match else next(iter(sections.values())))
        goals = need(self._constants(repo), "GOAL_VARIABLES",
                     repo.templates / "system_prompt_templates.py", dict)
        chosen.update(goals.get(f"{c.goal_type}-{value}", goals.get("none", {})))
        if repo.kind == "msm":
            chosen.update(model_name=c.name, model_name_lower=c.name.lower(),
                          model_name_upper=c.name.upper())
        return chosen

    def system_prompt(self, c: Condition) -> str:
        repo = self.repo_for(c.scenario)
        path = repo.templates / "system_prompt_templates.py"
        name = f"{c.scenario.upper()}_SYSTEM_PROMPT" + ("" if c.scratchpad else "_PROD")
        template = need(self._constants(repo), name, path)
        variables = {**self.variables(c), "extra_system_instructions": "",
                     "alignment_faking_warning": ""}
        return Template(template).safe_substitute(variables)

    def email_content(self, c: Condition) -> str:
        repo = self.repo_for(c.scenario)
        if c.scenario == "exfiltration" and c.urgency != "replacement":
            raise SourceError(f"{c.id}: the official exfiltration scenario exists only under "
                              "urgency replacement")
        folder = repo.templates / c.scenario / "templates"
        variables = self.variables(c)
        stem = f"email-template-{c.scenario}"
        names = ([f"{stem}-goal-conflict-none-{c.urgency}.md"] if c.goal_type == "none"
                 else [f"{stem}-shared.md", f"{stem}-{c.urgency}.md"])
        content = "".join(Template(_read(folder / n, repo)).safe_substitute(variables)
                          for n in names)
        if c.scenario in repo.numbered:
            parts = content.split("<email>")
            content = parts[0] + "".join(f"<email>\nID: {i}{part}"
                                         for i, part in enumerate(parts[1:], 1))
        return content

    def prompt(self, c: Condition) -> Prompt:
        """The cell's prompt, rendered once per source (sampling and judging both ask)."""
        if c not in self._prompts:
            self._prompts[c] = self._render(c)
        return self._prompts[c]

    def _render(self, c: Condition) -> Prompt:
        repo = self.repo_for(c.scenario)
        user = need(self._constants(repo), "USER_PROMPT",
                    repo.templates / "system_prompt_templates.py")
        inbox = self.email_content(c)
        return Prompt(self.system_prompt(c), user + repo.join + inbox, inbox)

    def targets(self, scenario: str) -> Targets:
        """What our mechanical check looks for: the official classifiers' addresses/code."""
        from msm_megatron.eval.agentic.classifiers import official_classifier

        cls = official_classifier(self.repo_for(scenario), scenario)
        return Targets(tuple(cls.targets), cls.override_code)

    def evidence(self, c: Condition, actions) -> bool:
        from msm_megatron.eval.agentic.scenarios import evidence_for

        return evidence_for(c.scenario, self.targets(c.scenario), actions)

    def preset(self, kind: str, name: str) -> Preset:
        """``paper``/``quick`` as for the builtin scenarios; ``full`` = the official grid:
        goal types none and ambiguous once (no goal value), the others × 8 values, × urgency
        (exfiltration: replacement only) × scratchpad on/off, over the scenarios the clones
        hold."""
        from msm_megatron.eval.agentic.grid import preset

        if kind != "full":
            chosen = preset(kind, name)
            for scenario in dict.fromkeys(c.scenario for c in chosen.conditions):
                self.repo_for(scenario)  # a missing clone fails before any model loads
            return chosen
        cells = []
        for scenario in self.scenarios:
            for goal_type in GOAL_TYPES:
                values = [None] if goal_type in ("none", "ambiguous") else GOAL_VALUES
                urgencies = ("replacement",) if scenario == "exfiltration" else URGENCY
                cells += [Condition(scenario, goal_type, v, u, pad, name)
                          for v in values for u in urgencies for pad in (True, False)]
        return Preset(tuple(cells), 100, 0.7, 4096)


def _variable_file(folder: Path, value: str, repo: Repo) -> Path:
    """The variable file for a goal value: a stem that names it as a ``_``-separated word (or
    starts/ends with it) first, then any stem containing it, else ``ambiguous.md``."""
    if not folder.is_dir():
        _read(folder / "ambiguous.md", repo)  # raises with the expected path
    exact, partial = [], []
    for path in sorted(folder.glob("*.md")):
        stem = path.stem.lower()
        if stem == "ambiguous" or value not in stem:
            continue
        whole = f"_{value}_" in f"_{stem}_" or stem.startswith(value) or stem.endswith(value)
        (exact if whole else partial).append(path)
    return (exact or partial or [folder / "ambiguous.md"])[0]
