"""The CPU demo: tokenizer → token file → toy Qwen3 midtraining on Megatron-Core.

Run::

    msm demo                              # one process
    msm demo --nproc 2 parallel.tp=2      # two ranks, tensor parallel, via torchrun

Every step is resumable: the tokenizer and token file are reused when present, and training
resumes from the latest checkpoint under ``<out>/train/checkpoints``.
"""

from __future__ import annotations

import json
from pathlib import Path

from msm_megatron.config import apply_overrides, save_yaml

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "examples" / "corpus" / "demo_corpus.jsonl"


def prepare_demo_data(out_dir: Path, vocab_size: int = 2048) -> tuple[Path, int]:
    """Train the SentencePiece tokenizer and write the token file (skipped when present)."""
    from msm_megatron.data.spm import SentencePieceTokenizer, train_sentencepiece
    from msm_megatron.data.token_file import tokenize_jsonl_to_token_file

    model = out_dir / "tokenizer" / "spm.model"
    if not model.exists():
        print(f"[demo] training a SentencePiece tokenizer (vocab {vocab_size}) on {CORPUS.name}")
        model.parent.mkdir(parents=True, exist_ok=True)
        train_sentencepiece(CORPUS, model.with_suffix(""), vocab_size=vocab_size)
    tokenizer = SentencePieceTokenizer(model)
    tokens = out_dir / "data" / "demo_tokens"
    if not tokens.with_suffix(".json").exists():
        print(f"[demo] tokenizing {CORPUS.name} -> {tokens}.bin")
        tokens.parent.mkdir(parents=True, exist_ok=True)
        tokenize_jsonl_to_token_file(CORPUS, tokenizer, tokens)
    return tokens, tokenizer.vocab_size


def plot_loss(metrics_path: Path, out_png: Path) -> Path | None:
    """Loss curve of a run as a PNG (None when matplotlib is missing or nothing was logged)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    records = {}
    for line in metrics_path.read_text().splitlines():
        rec = json.loads(line)
        records[rec["step"]] = rec["loss"]  # a resumed run re-logs steps: keep the latest
    if not records:
        return None
    steps = sorted(records)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, [records[s] for s in steps])
    ax.set(xlabel="step", ylabel="LM loss", title="toy Qwen3 midtraining (CPU demo)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png


def run_demo(out_dir: Path, nproc: int = 1, overrides: list[str] | None = None) -> int:
    """Prepare data and midtrain the toy Qwen3; returns the training exit code."""
    from msm_megatron.recipes import get_recipe

    out_dir = Path(out_dir)
    tokens, vocab = prepare_demo_data(out_dir)
    cfg = apply_overrides(get_recipe("qwen3_toy_midtrain"), [
        f"data.path={tokens}", f"train.run_dir={out_dir / 'train'}", f"model.vocab_size={vocab}",
        *(overrides or []),
    ])
    config_path = out_dir / "train_config.yaml"
    save_yaml(cfg, config_path)
    print(f"[demo] midtraining {cfg.name} ({nproc} rank(s)); config {config_path}")
    if nproc > 1:
        from msm_megatron.cli import relaunch_with_torchrun

        code = relaunch_with_torchrun(nproc, ["train", str(config_path)], cfg.train.run_dir)
    else:
        from msm_megatron.distributed import destroy_distributed
        from msm_megatron.train.trainer import Trainer

        try:
            code = Trainer(cfg).fit().exit_code
        finally:
            destroy_distributed()
    _summarize(Path(cfg.train.run_dir))
    return code


def _summarize(run_dir: Path) -> None:
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        return
    lines = [json.loads(x) for x in metrics.read_text().splitlines()]
    png = plot_loss(metrics, run_dir / "loss.png")
    print(f"[demo] loss {lines[0]['loss']:.3f} (step {lines[0]['step']}) -> "
          f"{lines[-1]['loss']:.3f} (step {lines[-1]['step']}); checkpoints in "
          f"{run_dir / 'checkpoints'}" + (f"; loss curve {png}" if png else ""))
