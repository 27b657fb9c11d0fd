"""Tiny Qwen-like HF and SentencePiece tokenizers trained on the demo corpus (no model hub).

The CPU demo and the tests use them: the demo's tokenizer (a ChatML BPE with a Qwen3-like chat
template) serves both midtraining documents and SFT chats.

:func:`build_hf_tokenizer` trains a byte-level BPE (Qwen-style: NFC normalizer, a GPT-4-style
split regex, byte-level bytes-to-unicode, special tokens appended after the learned vocabulary)
on the demo corpus and writes ``tokenizer.json`` + ``tokenizer_config.json`` with one of two
ChatML templates written for these tests (not copied from Qwen):

- ``QWEN25_TEMPLATE`` behaves like Qwen2.5-Instruct's:
  ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, and a default system
  prompt (:data:`DEFAULT_SYSTEM`) when the chat has none (chosen to match Qwen2.5, so tests see
  template-inserted text that must get mask 0).
  ``<think>`` gets no special treatment (Qwen2.5's vocabulary has no think tokens, so
  ``think_tokens=False`` is the realistic setting for this template).
- ``QWEN3_TEMPLATE`` behaves like Qwen3's: no default system prompt; an assistant message's
  leading ``<think>…</think>`` is re-written as ``<think>\\n{reasoning}\\n</think>\\n\\n{answer}``
  for the assistant turn after the last user message (an empty block when it has no reasoning)
  and dropped from earlier turns; ``enable_thinking=False`` pre-fills an empty block after the
  generation prompt.

Both are built in well under a second.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, trainers
from tokenizers import pre_tokenizers as pre

CORPUS = Path(__file__).resolve().parents[2] / "examples" / "corpus" / "demo_corpus.jsonl"  # repo
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
THINK_TOKENS = ("<think>", "</think>")
DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

QWEN25_TEMPLATE = (
    "{%- if messages[0].role == 'system' %}"
    "{%- set system = messages[0].content %}{%- set turns = messages[1:] %}"
    "{%- else %}"
    "{%- set system = '" + DEFAULT_SYSTEM + "' %}{%- set turns = messages %}"
    "{%- endif %}"
    "{{- '<|im_start|>system\\n' + system + '<|im_end|>\\n' }}"
    "{%- for m in turns %}"
    "{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

QWEN3_TEMPLATE = """\
{%- set ns = namespace(last_user=-1) %}
{%- for m in messages %}
  {%- if m.role == 'user' %}{%- set ns.last_user = loop.index0 %}{%- endif %}
{%- endfor %}
{%- for m in messages %}
  {%- if m.role == 'system' or m.role == 'user' %}
    {{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}
  {%- elif m.role == 'assistant' %}
    {%- set answer = m.content %}
    {%- set reasoning = '' %}
    {%- if '</think>' in answer %}
      {%- set reasoning = answer.split('</think>')[0].split('<think>')[-1].strip('\\n') %}
      {%- set answer = answer.split('</think>')[-1].lstrip('\\n') %}
    {%- endif %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if loop.index0 > ns.last_user and (loop.last or reasoning) %}
      {{- '<think>\\n' + reasoning + '\\n</think>\\n\\n' }}
    {%- endif %}
    {{- answer + '<|im_end|>\\n' }}
  {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
  {{- '<|im_start|>assistant\\n' }}
  {%- if enable_thinking is defined and enable_thinking is false %}
    {{- '<think>\\n\\n</think>\\n\\n' }}
  {%- endif %}
{%- endif %}
"""

TEMPLATES = {"qwen25": QWEN25_TEMPLATE, "qwen3": QWEN3_TEMPLATE}


def _corpus_texts(limit: int) -> list[str]:
    with CORPUS.open(encoding="utf-8") as f:
        return [json.loads(line)["text"] for _, line in zip(range(limit), f, strict=False)]


def train_bpe(vocab_size: int = 1000, think_tokens: bool = True, docs: int = 60) -> Tokenizer:
    """A Qwen-style byte-level BPE trained on the demo corpus, specials appended at the end."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre.Sequence(
        [
            pre.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus_texts(docs), trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    if think_tokens:  # Qwen3 has them as added, non-special tokens
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    return tok


def build_hf_tokenizer(
    out_dir: Path,
    template: str | None = "qwen3",
    think_tokens: bool = True,
    template_file: bool = False,
    vocab_size: int = 1000,
    docs: int = 60,
) -> Path:
    """Writes a tiny Qwen-like HF tokenizer directory and returns it.

    Args:
        out_dir: Directory to create.
        template: ``"qwen25"``, ``"qwen3"`` (see the module docstring) or ``None`` for none.
        think_tokens: Add ``<think>``/``</think>`` as single tokens.
        template_file: Put the template in ``chat_template.jinja`` instead of the config.
        vocab_size: BPE vocabulary size before the special tokens.
        docs: How many demo-corpus documents to train on.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = train_bpe(vocab_size=vocab_size, think_tokens=think_tokens, docs=docs)
    tok.save(str(out_dir / "tokenizer.json"))
    added = {
        str(tok.token_to_id(t)): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": t in SPECIAL_TOKENS,
        }
        for t in SPECIAL_TOKENS + (THINK_TOKENS if think_tokens else ())
    }
    config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 4096,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    if template is not None:
        if template_file:
            (out_dir / "chat_template.jinja").write_text(TEMPLATES[template], encoding="utf-8")
        else:
            config["chat_template"] = TEMPLATES[template]
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return out_dir


def build_sp_model(out_dir: Path, chatml: bool = True) -> Path:
    """A tiny SentencePiece BPE model; with ``chatml`` the ChatML markers are single pieces."""
    import sentencepiece as spm

    from msm_megatron.data.spm import TRAINER_OPTIONS

    out_dir.mkdir(parents=True, exist_ok=True)
    symbols = ["\n"] + (list(SPECIAL_TOKENS[1:] + THINK_TOKENS) if chatml else [])
    lines = [ln for t in _corpus_texts(40) for ln in t.split("\n") if ln]
    prefix = out_dir / "sp"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=str(prefix),
        model_type="bpe",
        vocab_size=600,
        **{**TRAINER_OPTIONS, "user_defined_symbols": symbols},
    )
    return prefix.with_suffix(".model")
