"""An experiment expanded into a graph of stages, each content-addressed.

A stage's **hash** covers its kind, its parameters (recipe, overrides, seeds, sizes), the
contents of the input files it names and the hashes of the stages it depends on; its output
directory is ``<out_dir>/<kind>/<name>-<hash[:10]>``. So a rerun finds every unchanged stage
done (its completion marker carries the same hash), and a change anywhere — an override, a
spec edit, an upstream stage — gives the stage and everything downstream new hashes, hence
fresh output directories: nothing resumes from a checkpoint trained under another config.

Stages (per spec variant ``v``, CoT setting ``c``, AFT size ``n``, seed ``s``)::

    tokenizer | convert_base   (→ chat_tokenizer, with chat_template)
    generate_docs[v] → prepare_corpus[v] → midtrain[v,s] ─┐
    generate_chats[v] → prepare_sft[v,c,n] ───────────────┴→ sft[msm|base, v,c,n,s] → export[…]
    export[*] → eval (array: one task per arm) → report

Training configs and the eval sweep file are resolved here — on the login node, no GPU
needed — and written under ``<out_dir>/configs/``; jobs run exactly those files. Every path in
the plan is absolute (the experiment's were resolved when it was loaded), and no stage name
depends on whether an input exists yet. :mod:`msm_megatron.pipeline.checks` checks the plan.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from msm_megatron.config import ConfigError, apply_overrides, resolve_paths, save_yaml
from msm_megatron.pipeline.experiment import ExperimentConfig, Resources

FILE_DIGEST_LIMIT = 256 * 2**20  # bigger inputs are identified by size and mtime


@dataclass
class Stage:
    """One node of the graph. ``argv`` is an ``msm`` command line (``kind`` names a built-in
    step when empty); an array stage has ``cells`` (one argv per array task) instead."""

    name: str
    kind: str
    deps: list[str]
    params: dict
    resources: dict
    hash: str = ""
    out: str = ""
    argv: list[str] = field(default_factory=list)
    cells: dict[str, list[str]] = field(default_factory=dict)
    ranks: int = 1  # training ranks (nodes × GPUs per node)
    config: str = ""  # the resolved YAML a training or eval stage runs
    spec: str = ""  # the spec a generation stage writes from


@dataclass
class Plan:
    experiment: str
    out_dir: str
    stages: dict[str, Stage]

    def order(self) -> list[Stage]:
        """Stages in dependency order (the insertion order is one)."""
        return list(self.stages.values())

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"experiment": self.experiment, "out_dir": self.out_dir,
                "stages": [asdict(s) for s in self.order()]}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)

    @staticmethod
    def load(path: Path) -> Plan:
        data = json.loads(Path(path).read_text())
        return Plan(data["experiment"], data["out_dir"],
                    {s["name"]: Stage(**s) for s in data["stages"]})


def file_digest(path: str | Path) -> str:
    """Content hash of an input file or directory (size + mtime for very large files)."""
    path = Path(path)
    if path.is_dir():
        parts = [f"{p.relative_to(path)}:{file_digest(p)}" for p in sorted(path.rglob("*"))
                 if p.is_file()]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()
    if not path.is_file():
        raise ConfigError(f"{path}: input file not found")
    stat = path.stat()
    if stat.st_size > FILE_DIGEST_LIMIT:
        return f"size={stat.st_size},mtime={stat.st_mtime_ns}"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")


class _Builder:
    def __init__(self, exp: ExperimentConfig):
        self.exp = exp
        self.out = Path(exp.out_dir)
        self.stages: dict[str, Stage] = {}

    def add(self, name: str, kind: str, deps: list[str], params: dict,
            resources: Resources | None = None, inputs: list[str] = ()) -> Stage:
        for dep in deps:
            assert dep in self.stages, dep
        payload = {"kind": kind, "params": params,
                   "inputs": {str(p): file_digest(p) for p in inputs},
                   "deps": {d: self.stages[d].hash for d in deps}}
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        res = asdict(resources or self.exp.cpu_stages.resources)  # none given: a CPU stage
        stage = Stage(name, kind, list(deps), params, res, digest,
                      str(self.out / kind / f"{slug(name)}-{digest[:10]}"))
        self.stages[name] = stage
        return stage

    def config_file(self, stage: Stage, cfg) -> str:
        path = self.out / "configs" / f"{slug(stage.name)}-{stage.hash[:10]}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, path)
        return str(path)


def build_plan(exp: ExperimentConfig) -> Plan:
    """Expand ``exp`` into stages (writing the resolved configs they run).

    Inputs that do not exist yet are planned all the same (their stages' hashes cover what
    exists); :func:`msm_megatron.pipeline.checks.preflight` refuses them before a run.
    Relative paths left in ``exp`` (one built in code, not loaded) are taken from the current
    directory.
    """
    exp = resolve_paths(exp, Path.cwd())
    _check(exp)
    b = _Builder(exp)
    tok, base_load, base_deps = _base(b, exp)
    arms: dict[str, tuple[Stage, str, int]] = {}  # arm -> (export stage, series, AFT chats)
    for variant, spec in exp.specs.items():
        corpus, chats, gen_deps = _sources(b, exp, variant, spec)
        prep = b.add(f"prepare_corpus/{variant}", "prepare_corpus", [*base_deps, *gen_deps],
                     {"tokenizer": tok}, inputs=_existing(corpus))
        prep.argv = ["data", "prepare", *corpus, "--tokenizer", tok, "--out",
                     f"{prep.out}/corpus", "--kind", "documents"]
        sft_data = {}
        sizes = _size_labels(exp, chats)
        for cot in exp.cot:
            for size in exp.aft_sizes:
                s = b.add(f"prepare_sft/{variant}/{cot}/{sizes[size]}", "prepare_sft",
                          [*base_deps, *gen_deps],
                          {"chats": chats, "mix": exp.sft_mix, "size": size,
                           "keep_think": cot == "with_cot", "tokenizer": tok,
                           **_end_of_turn(exp)},
                          inputs=_existing([chats, *exp.sft_mix]))
                sft_data[cot, size] = s
        for seed in exp.seeds:
            mid = _train(b, exp.midtrain, f"midtrain/{variant}/s{seed}", [prep.name],
                         [f"data.prepared=[{prep.out}/corpus]", *_seeded(seed), *base_load])
            starts = [("msm", variant, mid, [f"checkpoint.load={mid.out}/checkpoints"])]
            if exp.baseline:
                starts.append(("base", base_label(exp, variant), None, base_load))
            for (cot, size), data in sft_data.items():
                for origin, label, parent, load in starts:
                    arm = "-".join(filter(None, [origin, label, cot, sizes[size], f"s{seed}"]))
                    if arm in arms:  # the AFT-only arm that the specs share: trained once
                        continue
                    deps = [data.name, *([parent.name] if parent else base_deps)]
                    sft = _train(b, exp.sft, f"sft/{arm}", deps,
                                 [f"data.prepared=[{data.out}/chats]", *_seeded(seed), *load])
                    export = b.add(f"export/{arm}", "export", [sft.name], {"tokenizer": tok})
                    export.argv = ["convert", "export", sft.out, "--out", export.out,
                                   "--hf-assets", tok, "--quiet"]
                    arms[arm] = (export, f"{origin}-{cot}", size or _count_lines(chats))
    if exp.eval.enabled:
        _eval(b, exp, arms)
    return Plan(exp.name, exp.out_dir, b.stages)


def base_label(exp: ExperimentConfig, variant: str) -> str:
    """The spec in an AFT-only arm's name: none when every spec's AFT chats are the same file
    (no generation, several specs: one AFT-only arm, ``base-no_cot-nall-s0``, serves them
    all); else the spec whose chats it was fine-tuned on."""
    return "" if not exp.generation.enabled and len(exp.specs) > 1 else variant


def _check(exp: ExperimentConfig) -> None:
    bad = [c for c in exp.cot if c not in ("no_cot", "with_cot")]
    if bad or not exp.cot:
        raise ConfigError(f"cot={exp.cot}: choose from no_cot, with_cot")
    if not exp.specs:
        raise ConfigError("specs: name at least one spec file ({name: path})")
    _check_corpora(exp)
    if any(n < 0 for n in exp.aft_sizes) or not exp.aft_sizes or not exp.seeds:
        raise ConfigError("aft_sizes (≥ 0; 0 = all chats) and seeds must be non-empty")


def _check_corpora(exp: ExperimentConfig) -> None:
    """Without generation, several specs need a corpus each (``corpora``): otherwise every
    variant would train on the same documents."""
    unknown = sorted(set(exp.corpora) - set(exp.specs))
    if unknown:
        raise ConfigError(f"corpora names {unknown}, which are not in specs "
                          f"({sorted(exp.specs)}): name each spec's corpus under its spec's name")
    if exp.generation.enabled:
        if exp.corpora:
            raise ConfigError("corpora is for studies without generation; with "
                              "generation.enabled=true each spec's corpus is generated")
        return
    shared = [name for name in exp.specs if name not in exp.corpora]
    if len(exp.specs) > 1 and len(shared) > 1:
        raise ConfigError(f"specs {shared} would all train on the same corpus: give each its "
                          "own, corpora: {spec name: [files]} (or set generation.enabled=true "
                          "to generate them)")


def _size_labels(exp: ExperimentConfig, chats: str) -> dict[int, str]:
    """Each AFT size's name in stage and arm names: ``n20``, and ``nall`` for all the chats
    (size 0) — never their count, which the name would then depend on (a file that does not
    exist yet, or is edited later); the eval's curve gets the count as ``aft_examples``."""
    if len(set(exp.aft_sizes)) < len(exp.aft_sizes):
        raise ConfigError(f"aft_sizes={exp.aft_sizes}: list each size once")
    total = 0 if exp.generation.enabled else _count_lines(chats)
    if total and {0, total} <= set(exp.aft_sizes):
        raise ConfigError(f"aft_sizes={exp.aft_sizes}: 0 means all {total} chats of {chats}, "
                          f"which size {total} already names; list it once")
    return {size: f"n{size}" if size else "nall" for size in exp.aft_sizes}


def _existing(paths: list[str]) -> list[str]:
    """Input files that exist now (generated ones are covered by their stage's hash); a
    dataset directory (``DIR`` or ``DIR@SPLIT``) stands for its data files."""
    from msm_megatron.data.sources import SourceFormatError, data_files

    out = []
    for p in paths:
        try:
            out += [str(f) for f in data_files(p)]
        except SourceFormatError:
            continue  # not there yet: made by an earlier stage
    return out


def ranks_per_node(res) -> int:
    """Training ranks per node: ``tasks_per_node``, else one per GPU, else one."""
    if isinstance(res, dict):
        tasks, gpus = res.get("tasks_per_node"), res["gpus_per_node"]
    else:
        tasks, gpus = res.tasks_per_node, res.gpus_per_node
    return tasks or max(1, gpus)


def _count_lines(path: str) -> int:
    """Chats in an input that exists now, in any format ``msm data prepare`` reads (0 for one
    generated later: no curve point)."""
    from msm_megatron.data.sources import SourceFormatError, count_rows

    try:
        return count_rows(path)
    except SourceFormatError:
        return 0


def _seeded(seed: int) -> list[str]:
    return [f"train.seed={1234 + seed}", f"data.seed={1234 + seed}"]


def _base(b: _Builder, exp: ExperimentConfig) -> tuple[str, list[str], list[str]]:
    """(tokenizer dir, checkpoint.load overrides of the base model, stages they need)."""
    if exp.base_model == "toy":
        tok = b.add("tokenizer", "tokenizer", [], {"template": "qwen3", "vocab_size": 2000})
        return _with_template(b, exp, tok.out, [tok.name], [tok.name], [])
    base = Path(exp.base_model)  # checks.base_model_problem says when it is not there yet
    config = base / "config.json"
    conv = b.add("convert_base", "convert_base", [], {"base": str(base)},
                 inputs=[str(config)] if config.is_file() else [])
    conv.argv = ["convert", "hf-to-megatron", str(base), conv.out, "--quiet"]
    return _with_template(b, exp, str(base), [], [conv.name], [f"checkpoint.load={conv.out}"])


def _with_template(b: _Builder, exp: ExperimentConfig, tok: str, tok_deps: list[str],
                   deps: list[str], load: list[str]) -> tuple[str, list[str], list[str]]:
    """With ``chat_template``: a ``chat_tokenizer`` stage writes the base's tokenizer and
    config files with that template, and the SFT data, the exports and the eval use it."""
    if not exp.chat_template:
        return tok, load, deps
    from msm_megatron.convert.hf_io import asset_files

    assets = [str(p) for p in asset_files(Path(tok))] if Path(tok).is_dir() else []
    template = [exp.chat_template] if Path(exp.chat_template).is_file() else []
    stage = b.add("chat_tokenizer", "chat_tokenizer", tok_deps,
                  {"tokenizer": tok, "chat_template": exp.chat_template, **_end_of_turn(exp)},
                  inputs=[*template, *assets])
    return stage.out, load, [*deps, stage.name]


def _end_of_turn(exp: ExperimentConfig) -> dict:
    """The ``end_of_turn_token`` parameter, only when set (so other plans keep their hashes)."""
    return {"end_of_turn_token": exp.end_of_turn_token} if exp.end_of_turn_token else {}


def _sources(b: _Builder, exp: ExperimentConfig, variant: str, spec: str
             ) -> tuple[list[str], str, list[str]]:
    """(corpus JSONL files, AFT chats JSONL with <think>, generation stages)."""
    if not exp.generation.enabled:
        return list(exp.corpora.get(variant, exp.corpus)), exp.aft_chats, []
    backend = _dotlist("backend", asdict(exp.generation.backend))
    inputs = [spec] if Path(spec).is_file() else []  # checks.input_problems names a missing one
    docs = b.add(f"generate_docs/{variant}", "generate_docs", [],
                 {"backend": backend, "overrides": exp.generation.docs},
                 exp.generation.resources, inputs=inputs)
    docs.argv = ["generate", "docs", spec, f"out_dir={docs.out}", *backend,
                 *exp.generation.docs, "--quiet"]
    docs.spec = spec
    chats = b.add(f"generate_chats/{variant}", "generate_chats", [],
                  {"backend": backend, "overrides": exp.generation.chats},
                  exp.generation.resources, inputs=inputs)
    chats.argv = ["generate", "chats", spec, f"out_dir={chats.out}", *backend,
                  *exp.generation.chats, "--quiet"]
    chats.spec = spec
    return ([f"{docs.out}/dataset.jsonl"], f"{chats.out}/with_cot/dataset.jsonl",
            [docs.name, chats.name])


def _dotlist(prefix: str, values: dict) -> list[str]:
    return [f"{prefix}.{k}={'null' if v is None else v}" for k, v in values.items()]


def _train(b: _Builder, stage_cfg, name: str, deps: list[str], overrides: list[str]) -> Stage:
    from msm_megatron.recipes import get_recipe

    kind = name.split("/")[0]
    stage = b.add(name, kind, deps, {"recipe": stage_cfg.recipe,
                                     "overrides": [*stage_cfg.overrides, *overrides]},
                  stage_cfg.resources)
    try:
        cfg = apply_overrides(get_recipe(stage_cfg.recipe),
                              [*stage_cfg.overrides, *overrides, f"train.run_dir={stage.out}"])
    except (ConfigError, KeyError) as exc:
        raise ConfigError(f"{kind}: {exc}") from exc
    res = stage_cfg.resources
    stage.ranks = res.nodes * ranks_per_node(res)
    stage.config = b.config_file(stage, cfg)
    stage.argv = ["train", stage.config]
    return stage


def _eval(b: _Builder, exp: ExperimentConfig, arms: dict) -> None:
    from msm_megatron.eval.sweep_config import EvalSweepConfig

    exports = [stage.name for stage, _, _ in arms.values()]
    ev = b.add("eval", "eval", exports, {"overrides": exp.eval.overrides}, exp.eval.resources)
    ev.resources["array_throttle"] = exp.eval.array_throttle
    sweep = apply_overrides(EvalSweepConfig(), [*exp.eval.overrides, f"out_dir={ev.out}"])
    sweep.arms = [f"{arm}={stage.out}" for arm, (stage, _, _) in arms.items()]
    if exp.eval.include_base and exp.base_model != "toy":  # the untouched model: the paper's
        sweep.arms.insert(0, f"base_model={exp.base_model}")  # "base" row
    sweep.series = {arm: series for arm, (_, series, _) in arms.items()}
    sweep.aft_examples = {arm: size for arm, (_, _, size) in arms.items() if size}
    path = ev.config = b.config_file(ev, sweep)
    # one array task per arm; the curve metadata belongs to the all-arms report below
    ev.cells = {entry.partition("=")[0]: ["eval", "--config", path, f"arms=[{entry}]",
                                          "aft_examples={}", "series={}", "--quiet"]
                for entry in sweep.arms}
    report = b.add("report", "report", [ev.name], {})  # a CPU stage: loads no model
    report.out = ev.out  # the report is written into the sweep's directory
    report.config = path
    report.argv = ["eval", "--config", path, "--quiet"]
