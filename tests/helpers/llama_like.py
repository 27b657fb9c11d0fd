"""A tiny tokenizer directory shaped like a Llama-3.x *base* model's: a byte-level BPE with
Llama 3's special tokens, ``<|begin_of_text|>`` as BOS, ``<|end_of_text|>`` as EOS, and no chat
template (as a base checkpoint may ship). Written by the tests, from the demo corpus."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, trainers
from tokenizers import pre_tokenizers as pre

REPO = Path(__file__).resolve().parents[2]

LLAMA_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                  "<|end_header_id|>", "<|eot_id|>")


def build_llama_like(out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    with (REPO / "examples/corpus/demo_corpus.jsonl").open(encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for _, line in zip(range(30), f, strict=False)]
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre.ByteLevel.alphabet(), show_progress=False))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in LLAMA_SPECIALS])
    tok.save(str(out_dir / "tokenizer.json"))
    config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
              "model_max_length": 131072, "tokenizer_class": "PreTrainedTokenizerFast",
              "added_tokens_decoder": {str(tok.token_to_id(t)): {
                  "content": t, "lstrip": False, "normalized": False, "rstrip": False,
                  "single_word": False, "special": True} for t in LLAMA_SPECIALS}}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return out_dir
