"""A tiny Qwen3 for the CPU demo and tests: trains in seconds, exercises Qwen3's quirks.

``head_dim`` 32 ≠ hidden/heads (64/4 = 16), GQA (4 heads, 2 KV heads), q/k norm and tied
embeddings. The demo overrides the vocabulary with its tokenizer's; ``data.prepared`` points at
where ``msm demo`` writes its prepared datasets. The shape divides for TP ≤ 2 and PP ∈ {1, 2, 4},
so the same recipes run the CPU parallelism checks (e.g. ``parallel.tp=2 parallel.pp=2``).
``max_position_embeddings`` (16384) is the context the HF exports declare, not what training
uses (rows of 128 and 512 tokens): the eval presets' prompts plus their 4,096 new tokens fit
(≈1,100 tokens for the builtin scenarios with the toy tokenizer; the official ones, ≈3,000 Qwen
tokens, take about twice as many toy tokens), so ``vllm serve`` and ``runner=vllm`` accept the
demo's exports. RoPE has no parameters: the length costs only a table of angles.

Run (after ``msm demo`` prepared the data)::

    msm train qwen3_toy_midtrain
    msm train qwen3_toy_sft checkpoint.load=runs/toy/checkpoints
"""

from __future__ import annotations

from collections.abc import Callable

from msm_megatron.config import (
    CheckpointConfig,
    Config,
    DataConfig,
    LogConfig,
    OptimConfig,
    ParallelConfig,
    TrainConfig,
)
from msm_megatron.models.hf_config import model_config_from_hf

DEMO = "runs/demo/latest"  # where `msm demo` links each stage's output

QWEN3_TOY = {
    "model_type": "qwen3",
    "vocab_size": 2048,
    "hidden_size": 64,
    "intermediate_size": 192,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "max_position_embeddings": 16384,
    "rope_theta": 1000000,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
    "initializer_range": 0.02,
}


def qwen3_toy_midtrain() -> Config:
    """Tiny Qwen3 midtraining on CPU: fp32, 150 steps of 16 × 128 tokens, checkpoint every 50."""
    return Config(
        name="qwen3_toy_midtrain",
        model=model_config_from_hf(QWEN3_TOY),
        parallel=ParallelConfig(),
        data=DataConfig(prepared=[f"{DEMO}/prepare_corpus-default/corpus"], seq_length=128),
        optim=OptimConfig(lr=3e-3, min_lr=3e-4, warmup_fraction=0.1, decay_style="cosine"),
        train=TrainConfig(
            micro_batch_size=4,
            global_batch_size=16,
            steps=150,
            precision="fp32",
            run_dir="runs/toy",
        ),
        checkpoint=CheckpointConfig(save_interval=50),
        log=LogConfig(interval=5),
    )


def qwen3_toy_sft() -> Config:
    """Tiny Qwen3 SFT on CPU: packed chats (THD rows of 512 tokens), assistant-only loss.

    Starts from weights given by ``checkpoint.load`` (the demo passes the midtraining run's).
    """
    return Config(
        name="qwen3_toy_sft",
        model=model_config_from_hf(QWEN3_TOY),
        data=DataConfig(prepared=[f"{DEMO}/prepare_sft-default-no_cot-nall/chats"], seq_length=512,
                        mode="packed"),
        optim=OptimConfig(lr=1e-3, min_lr=1e-4, warmup_fraction=0.1, weight_decay=0.0),
        train=TrainConfig(micro_batch_size=1, global_batch_size=8, steps=40, precision="fp32",
                          run_dir="runs/toy_sft"),
        checkpoint=CheckpointConfig(save_interval=20),
        log=LogConfig(interval=5),
    )


RECIPES: dict[str, Callable[[], Config]] = {
    "qwen3_toy_midtrain": qwen3_toy_midtrain, "qwen3_toy_sft": qwen3_toy_sft}
