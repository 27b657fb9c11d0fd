"""The CPU demo: tokenizer → `msm data prepare` → toy Qwen3 midtraining → packed SFT.

Run::

    msm demo                              # one process
    msm demo --nproc 2 parallel.tp=2      # two ranks, tensor parallel, via torchrun

0. with an OpenAI-compatible endpoint configured (``--llm-base-url``/``--llm-model`` or
   ``MSM_DEMO_LLM_BASE_URL``/``MSM_DEMO_LLM_MODEL``), generates a small corpus and AFT chats
   from ``examples/spec/qwen_spec.txt``; otherwise uses the bundled example corpus and chats;
1. trains a tiny Qwen-like BPE tokenizer with a ChatML/Qwen3-style chat template on the demo
   corpus (:mod:`msm_megatron.data.toy_tokenizer`);
2. prepares the corpus (documents) and the example AFT + instruction chats (with assistant-only
   loss masks) as Megatron indexed datasets;
3. midtrains the toy Qwen3 on the corpus (concat-and-split sequences, LM loss);
4. fine-tunes it on the chats from the midtraining weights (packed THD rows, assistant-only loss);
5. exports the fine-tuned checkpoint as an HF model (safetensors, config, tokenizer) and, when
   transformers is installed, checks that transformers computes the same logits as Megatron.

Every step is resumable: the tokenizer and datasets are reused when present, and each training
stage resumes from its latest checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

from msm_megatron.config import Config, apply_overrides, save_yaml
from msm_megatron.train.metrics import read_metrics

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "examples" / "spec" / "qwen_spec.txt"
CORPUS = REPO / "examples" / "corpus" / "demo_corpus.jsonl"
CHATS = [REPO / "examples" / "chats" / "aft_demo.jsonl",
         REPO / "examples" / "chats" / "it_mix_demo.jsonl"]


LLM_ENV = ("MSM_DEMO_LLM_BASE_URL", "MSM_DEMO_LLM_MODEL")


def demo_sources(out_dir: Path, base_url: str | None = None,
                 model: str | None = None) -> tuple[list[Path], list[Path]]:
    """The corpus and chat JSONL files the demo trains on.

    With an OpenAI-compatible endpoint (``--llm-base-url``/``--llm-model`` or the environment
    variables ``MSM_DEMO_LLM_BASE_URL``/``MSM_DEMO_LLM_MODEL``) they are generated from the
    example spec by ``msm generate docs`` and ``msm generate chats`` at a small scale (cached:
    a rerun pays nothing); otherwise the bundled example corpus and chats are used.
    """
    base_url = base_url or os.environ.get(LLM_ENV[0])
    model = model or os.environ.get(LLM_ENV[1])
    if not base_url:
        return [CORPUS], CHATS
    from msm_megatron.config import apply_overrides
    from msm_megatron.generate.chats import ChatsPipeline
    from msm_megatron.generate.commands import backend_from
    from msm_megatron.generate.config import ChatsGenConfig, DocsGenConfig
    from msm_megatron.generate.docs import DocsPipeline
    from msm_megatron.spec import load_spec

    backend = [f"backend.base_url={base_url}", f"backend.model={model or 'default'}"]
    docs = apply_overrides(DocsGenConfig(), [*backend, f"out_dir={out_dir / 'gen' / 'docs'}",
                                             "docs.domains=3", "docs.subdomains_per_domain=2",
                                             "docs.doc_types=4", "docs.ideas_per_type=3"])
    chats = apply_overrides(ChatsGenConfig(), [*backend, f"out_dir={out_dir / 'gen' / 'chats'}",
                                               "chats.domains=4", "chats.questions_per_style=3",
                                               "chats.target=60"])
    print(f"[demo] generating the corpus and AFT chats with {model} at {base_url}")
    spec = load_spec(SPEC, docs.docs.model_name, docs.docs.provider_name)
    summary = DocsPipeline(docs, spec, backend_from(docs.backend)).run()
    print(f"[demo] {summary['documents']} generated documents -> {docs.out_dir}")
    summary = ChatsPipeline(chats, spec, backend_from(chats.backend)).run()
    print(f"[demo] {summary['chats']} generated AFT chats -> {chats.out_dir}")
    return ([Path(docs.out_dir) / "dataset.jsonl"],
            [Path(chats.out_dir) / "with_cot" / "dataset.jsonl", CHATS[1]])


def prepare_demo_data(out_dir: Path, sources: tuple[list[Path], list[Path]] | None = None
                      ) -> tuple[Path, Path, int]:
    """Tokenizer + prepared corpus and chats under ``out_dir`` (reused when present)."""
    from msm_megatron.data.prepare import prepare_jsonl
    from msm_megatron.data.tokenizers import load_tokenizer
    from msm_megatron.data.toy_tokenizer import build_hf_tokenizer

    tok_dir = out_dir / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists():
        print(f"[demo] training a Qwen-style BPE tokenizer with a chat template -> {tok_dir}")
        build_hf_tokenizer(tok_dir, template="qwen3", vocab_size=2000, docs=10_000)
    tokenizer = load_tokenizer(tok_dir)
    corpus, chats = out_dir / "data" / "corpus", out_dir / "data" / "chats"
    corpus.parent.mkdir(parents=True, exist_ok=True)
    corpus_files, chat_files = sources or ([CORPUS], CHATS)
    for inputs, prefix, kind in ((corpus_files, corpus, "documents"),
                                 (chat_files, chats, "chats")):
        stats = prepare_jsonl(inputs, tokenizer, prefix, kind=kind)
        print(f"[demo] {prefix}: {stats['documents']} {kind}, {stats['tokens']} tokens"
              + (" (reused)" if stats.get("reused") else ""))
    return corpus, chats, tokenizer.vocab_size


def plot_losses(runs: dict[str, Path], out_png: Path) -> Path | None:
    """Loss curves of the demo's stages as one PNG."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    fig = Figure(figsize=(5 * len(runs), 3.5))
    axes = fig.subplots(1, len(runs))
    for ax, (title, run_dir) in zip(axes, runs.items(), strict=True):
        records = read_metrics(run_dir)
        steps = sorted(records)
        ax.plot(steps, [records[s]["loss"] for s in steps])
        ax.set(xlabel="step", ylabel="loss", title=title)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    return out_png


def _train(cfg: Config, config_path: Path, nproc: int) -> int:
    save_yaml(cfg, config_path)
    print(f"[demo] {cfg.name} ({nproc} rank(s)); config {config_path}")
    if nproc > 1:
        from msm_megatron.cli import relaunch_with_torchrun

        return relaunch_with_torchrun(nproc, ["train", str(config_path)], cfg.train.run_dir)
    from msm_megatron.distributed import destroy_distributed
    from msm_megatron.train.trainer import Trainer

    try:
        return Trainer(cfg).fit().exit_code
    finally:
        destroy_distributed()


def run_demo(out_dir: Path, nproc: int = 1, overrides: list[str] | None = None,
             llm_base_url: str | None = None, llm_model: str | None = None) -> int:
    """Prepare data, midtrain, then SFT the toy Qwen3; returns the first non-zero exit code."""
    from msm_megatron.recipes import get_recipe

    out_dir = Path(out_dir)
    corpus, chats, vocab = prepare_demo_data(
        out_dir, demo_sources(out_dir, llm_base_url, llm_model))
    mid_dir, sft_dir = out_dir / "midtrain", out_dir / "sft"
    common = [f"model.vocab_size={vocab}", *(overrides or [])]
    mid = apply_overrides(get_recipe("qwen3_toy_midtrain"), [
        f"data.prepared=[{corpus}]", f"train.run_dir={mid_dir}", *common])
    code = _train(mid, out_dir / "midtrain_config.yaml", nproc)
    if code:
        return code
    sft = apply_overrides(get_recipe("qwen3_toy_sft"), [
        f"data.prepared=[{chats}]", f"train.run_dir={sft_dir}",
        f"checkpoint.load={mid_dir / 'checkpoints'}", *common])
    code = _train(sft, out_dir / "sft_config.yaml", nproc)
    _summarize({"midtraining (LM loss)": mid_dir, "SFT (packed, assistant-only)": sft_dir},
               out_dir / "loss.png")
    if code:
        return code
    return export_and_check(sft_dir, out_dir / "tokenizer")


def export_and_check(run_dir: Path, tokenizer_dir: Path) -> int:
    """HF export of the run's latest checkpoint; logit check against Megatron if possible."""
    import importlib.util

    from msm_megatron.convert.engine import export_run
    from msm_megatron.train.checkpoint import iter_dir, latest_iteration

    hf_dir = export_run(run_dir, hf_assets=tokenizer_dir, progress=False)
    print(f"[demo] HF export (safetensors + config + tokenizer): {hf_dir}")
    if importlib.util.find_spec("transformers") is None:
        print("[demo] transformers not installed: skipping the HF-vs-Megatron logit check")
        return 0
    from msm_megatron.convert.verify import verify
    from msm_megatron.distributed import destroy_distributed

    ckpt = iter_dir(run_dir / "checkpoints", latest_iteration(run_dir / "checkpoints"))
    try:
        report = verify(hf_dir, ckpt, generate=4, tolerance=1e-4)
    finally:
        destroy_distributed()
    print(f"[demo] transformers vs Megatron on 32 tokens: max |Δ logits| "
          f"{report['logits']['max_abs']:.1e}, greedy tokens "
          f"{'match' if report['greedy']['match'] else 'DIFFER'}")
    return 0 if report["passed"] else 1


def _summarize(runs: dict[str, Path], png_path: Path) -> None:
    for title, run_dir in runs.items():
        if not (run_dir / "metrics.jsonl").exists():
            return
        records = read_metrics(run_dir)
        first, last = min(records), max(records)
        print(f"[demo] {title}: loss {records[first]['loss']:.3f} (step {first}) -> "
              f"{records[last]['loss']:.3f} (step {last}); checkpoints {run_dir / 'checkpoints'}")
    png = plot_losses(runs, png_path)
    if png:
        print(f"[demo] loss curves: {png}")
