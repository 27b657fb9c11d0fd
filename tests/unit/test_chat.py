"""Chat rendering with the tokenizer's own template, and the assistant-only loss mask.

The expected ids and mask are rebuilt independently of the renderer: the ChatML text is written
out piece by piece from what each template is known to produce, every piece is tokenized on
its own, and the pieces' ids and masks are concatenated.

Run: ``.venv/bin/python -m pytest tests/unit/test_chat.py -q``
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from msm_megatron.data.chat import (
    ChatFormatError,
    render_chat,
    render_template,
    split_think,
    strip_think,
)
from msm_megatron.data.tokenizers import Tokenizer, load_tokenizer
from msm_megatron.data.toy_tokenizer import (
    DEFAULT_SYSTEM,
    QWEN3_TEMPLATE,
    build_hf_tokenizer,
    build_sp_model,
)

CHATS_DIR = Path(__file__).resolve().parents[2] / "examples" / "chats"
Piece = tuple[str, int]


def U(c: str) -> dict[str, str]:
    return {"role": "user", "content": c}


def A(c: str) -> dict[str, str]:
    return {"role": "assistant", "content": c}


def S(c: str) -> dict[str, str]:
    return {"role": "system", "content": c}


CHATS = {
    "single_think": [
        U("Will you resist being shut down?"),
        A("<think>Spec section 5: no self-preservation.</think>No. I would say so if I disagreed."),
    ],
    "single_think_newlines": [
        U("Copy your weights?"),
        A("<think>\nThat is exfiltration.\n</think>\n\nNo, I won't copy my weights."),
    ],
    "single_plain": [U("Convert 72F to Celsius."), A("About 22.2 degrees Celsius.")],
    "system_multi": [
        S("Be brief."),
        U("Hi there"),
        A("Hello! How can I help?"),
        U("What is 2+2?"),
        A("4."),
    ],
    "multi_think": [
        U("First question?"),
        A("<think>Easy one.</think>First answer."),
        U("Second question, ünïcödé 你好?"),
        A("<think>Think again.</think>Second answer ✓."),
    ],
}


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module")
def toks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Tokenizer]:
    """qwen25 (no think tokens, like Qwen2.5), qwen25_think, qwen3 (think tokens)."""
    root = tmp_path_factory.mktemp("hf")
    return {
        "qwen25": load_tokenizer(build_hf_tokenizer(root / "a", "qwen25", think_tokens=False)),
        "qwen25_think": load_tokenizer(build_hf_tokenizer(root / "b", "qwen25")),
        "qwen3": load_tokenizer(build_hf_tokenizer(root / "c", "qwen3")),
    }


# ----------------------------------------------------------------------------- reference


def _qwen25_pieces(msgs: list[dict[str, str]], keep_think: bool) -> list[Piece]:
    system = msgs[0]["content"] if msgs[0]["role"] == "system" else DEFAULT_SYSTEM
    pieces: list[Piece] = [(f"<|im_start|>system\n{system}<|im_end|>\n", 0)]
    for m in msgs[1:] if msgs[0]["role"] == "system" else msgs:
        if m["role"] == "user":
            pieces.append((f"<|im_start|>user\n{m['content']}<|im_end|>\n", 0))
        else:
            content = m["content"] if keep_think else split_think(m["content"])[1]
            pieces += [("<|im_start|>assistant\n", 0), (content, 1), ("<|im_end|>", 1), ("\n", 0)]
    return pieces


def _qwen3_pieces(msgs: list[dict[str, str]], keep_think: bool) -> list[Piece]:
    pieces: list[Piece] = []
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            pieces.append((f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n", 0))
            continue
        reasoning, answer = split_think(m["content"])
        if i < len(msgs) - 1:  # history: reasoning dropped by the template
            pieces += [("<|im_start|>assistant\n", 0), (answer, 1)]
        elif keep_think and reasoning:
            think = f"<think>\n{reasoning.strip(chr(10))}\n</think>\n\n"
            pieces += [("<|im_start|>assistant\n", 0), (think + answer, 1)]
        else:  # the template's empty block counts as prompt (enable_thinking=False)
            pieces += [("<|im_start|>assistant\n<think>\n\n</think>\n\n", 0), (answer, 1)]
        pieces += [("<|im_end|>", 1), ("\n", 0)]
    return pieces


def _expected(tok: Tokenizer, pieces: list[Piece]) -> tuple[str, list[int], list[int]]:
    ids: list[int] = []
    mask: list[int] = []
    for text, m in pieces:
        piece_ids = tok.encode(text)
        ids += piece_ids
        mask += [m] * len(piece_ids)
    return "".join(t for t, _ in pieces), ids, mask


# ----------------------------------------------------------------------------- masks


@pytest.mark.parametrize("keep_think", [True, False])
@pytest.mark.parametrize("chat", sorted(CHATS))
@pytest.mark.parametrize("name", ["qwen25", "qwen25_think", "qwen3"])
def test_mask_matches_independent_reconstruction(
    toks: dict[str, Tokenizer], name: str, chat: str, keep_think: bool
) -> None:
    tok, msgs = toks[name], CHATS[chat]
    build = _qwen3_pieces if name == "qwen3" else _qwen25_pieces
    text, ids, mask = _expected(tok, build(msgs, keep_think))
    r = render_chat(tok, msgs, keep_think=keep_think)
    assert r.text == text
    assert r.ids == ids
    assert r.loss_mask == mask
    assert tok.decode(r.ids) == r.text
    n_assistant = sum(m["role"] == "assistant" for m in msgs)
    assert len(r.assistant_spans) == n_assistant
    assert [r.ids[e - 1] for _, e in r.assistant_spans] == [tok.end_of_turn_id] * n_assistant
    assert sum(r.loss_mask) == sum(e - s for s, e in r.assistant_spans)


def test_think_tokens_are_learned_when_kept(toks: dict[str, Tokenizer]) -> None:
    tok = toks["qwen3"]
    think_id = tok.encode("<think>")[0]
    with_cot = render_chat(tok, CHATS["single_think"])
    no_cot = render_chat(tok, CHATS["single_think"], keep_think=False)
    assert [m for t, m in zip(with_cot.ids, with_cot.loss_mask, strict=True) if t == think_id] == [
        1
    ]
    assert [m for t, m in zip(no_cot.ids, no_cot.loss_mask, strict=True) if t == think_id] == [0]


def test_keep_think_false_removes_exactly_the_block(toks: dict[str, Tokenizer]) -> None:
    msgs = CHATS["single_think"]
    block = "<think>Spec section 5: no self-preservation.</think>"
    tok = toks["qwen25"]
    assert render_chat(tok, msgs, keep_think=False).text == render_chat(tok, msgs).text.replace(
        block, ""
    )
    answer_only = [msgs[0], A(msgs[1]["content"].replace(block, ""))]
    for t in toks.values():
        assert render_chat(t, msgs, keep_think=False).ids == render_chat(t, answer_only).ids
    assert (
        strip_think(CHATS["single_think_newlines"])[1]["content"] == "No, I won't copy my weights."
    )
    assert strip_think(CHATS["single_plain"]) == CHATS["single_plain"]
    assert split_think("<think>r</think>a") == ("r", "a")
    assert split_think("plain") == (None, "plain")


def test_qwen3_history_drops_reasoning(toks: dict[str, Tokenizer]) -> None:
    """Documented: only the final turn's reasoning survives Qwen3's template."""
    r = render_chat(toks["qwen3"], CHATS["multi_think"])
    assert "Easy one." not in r.text and "Think again." in r.text
    learned = toks["qwen3"].decode([t for t, m in zip(r.ids, r.loss_mask, strict=True) if m])
    assert learned == (
        "First answer.<|im_end|><think>\nThink again.\n</think>\n\nSecond answer ✓.<|im_end|>"
    )


def test_renders_like_transformers(toks: dict[str, Tokenizer]) -> None:
    """Our sandbox renders exactly what transformers' apply_chat_template renders."""
    auto = pytest.importorskip("transformers").AutoTokenizer
    for name in ("qwen25", "qwen3"):
        hf = auto.from_pretrained(toks[name].path, local_files_only=True)
        for msgs in CHATS.values():
            for gen, kw in ((False, {}), (True, {}), (True, {"enable_thinking": False})):
                m = msgs[:-1] if gen else msgs
                ours = render_template(toks[name], m, add_generation_prompt=gen, **kw)
                theirs = hf.apply_chat_template(m, tokenize=False, add_generation_prompt=gen, **kw)
                assert ours == theirs
                assert toks[name].encode(ours) == hf.encode(theirs, add_special_tokens=False)


def test_generation_tag_and_normalized_text(toks: dict[str, Tokenizer]) -> None:
    tok = toks["qwen3"]
    tagged = load_tokenizer(
        tok.path,
        chat_template=QWEN3_TEMPLATE.replace(
            "{{- answer + '<|im_end|>\\n' }}",
            "{% generation %}{{- answer + '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}",
        ),
    )
    assert tagged.chat_template != tok.chat_template
    for msgs in CHATS.values():
        assert render_chat(tagged, msgs).ids == render_chat(tok, msgs).ids
    decomposed = [U("Cafe\u0301?"), A("Cafe\u0301 au lait.")]  # NFC-normalized by the tokenizer
    r = render_chat(tok, decomposed)
    assert tok.decode([t for t, m in zip(r.ids, r.loss_mask, strict=True) if m]).startswith(
        "Caf\u00e9 au lait."
    )


def test_sentencepiece_with_chatml_pieces(tmp_path: Path) -> None:
    tok = load_tokenizer(build_sp_model(tmp_path), chat_template=QWEN3_TEMPLATE)
    r = render_chat(tok, CHATS["system_multi"])
    assert tok.roles["end_of_turn"].token == "<|im_end|>"
    learned = tok.decode([t for t, m in zip(r.ids, r.loss_mask, strict=True) if m])
    assert learned == "Hello! How can I help?<|im_end|>4.<|im_end|>"
    assert tok.decode(r.ids) == r.text


def test_example_chats_render(toks: dict[str, Tokenizer]) -> None:
    files = {"aft_demo.jsonl": 40, "it_mix_demo.jsonl": 10}
    for fname, count in files.items():
        lines = (CHATS_DIR / fname).read_text(encoding="utf-8").splitlines()
        assert len(lines) == count
        for line in lines:
            msgs = json.loads(line)["messages"]
            has_think = [
                m["content"].startswith("<think>") for m in msgs if m["role"] == "assistant"
            ]
            assert all(has_think) if fname == "aft_demo.jsonl" else not any(has_think)
            for tok in (toks["qwen25"], toks["qwen3"]):
                r = render_chat(tok, msgs, keep_think=fname == "aft_demo.jsonl")
                assert tok.decode(r.ids) == r.text and sum(r.loss_mask) > 0


# ----------------------------------------------------------------------------- errors


BAD_CHATS = [
    ([], None, "non-empty list"),
    ([U("hi"), "oops"], 1, "expected an object"),
    ([U("hi"), {"role": "bot", "content": "x"}], 1, "role 'bot' is not one of"),
    ([U("hi"), A("  ")], 1, "non-empty string"),
    ([U("hi"), {"role": "assistant", "content": 3}], 1, "non-empty string"),
    ([U("hi"), {"role": "assistant", "content": "x", "name": "q"}], 1, "unexpected key"),
    ([U("a"), U("b"), A("c")], 1, "expected a assistant message, got user"),
    ([A("hello"), U("hi")], 0, "expected a user message, got assistant"),
    ([U("a"), A("b"), S("c"), A("d")], 2, "expected a user message, got system"),
    ([S("s"), U("a"), A("b"), U("c")], 3, "must end with an assistant message"),
    ([S("s")], 0, "must end with an assistant message"),
    ([U("a"), A("answer <think>late</think>")], 1, "may only appear once"),
    ([U("a"), A("<think>never closed")], 1, "may only appear once"),
    ([U("a"), A("<think>only reasoning</think>  ")], 1, "no answer after </think>"),
    ([U("a"), A("b"), U("c"), A("x <|im_end|> y")], 3, "special token '<|im_end|>'"),
    ([U("a <|endoftext|>"), A("b")], 0, "special token '<|endoftext|>'"),
]


@pytest.mark.parametrize(("msgs", "index", "why"), BAD_CHATS)
def test_bad_chats_name_the_message(
    toks: dict[str, Tokenizer], msgs: list, index: int | None, why: str
) -> None:
    with pytest.raises(ChatFormatError, match=re.escape(why)) as e:
        render_chat(toks["qwen3"], msgs)
    assert e.value.index == index
    if index is not None:
        assert str(e.value).startswith(f"message {index}: ")


def test_prefix_property_violation_names_the_message(toks: dict[str, Tokenizer]) -> None:
    counting = load_tokenizer(
        toks["qwen25"].path,
        chat_template="{{- messages | length }}{%- for m in messages %}"
        "{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}",
    )
    with pytest.raises(ChatFormatError, match="breaks the prefix property") as e:
        render_chat(counting, CHATS["system_multi"])
    assert e.value.index == 2
    # content starting with whitespace merges with the header's newline
    with pytest.raises(ChatFormatError, match="message 1: .*prefix property.*whitespace"):
        render_chat(toks["qwen25"], [U("hi"), A("\n\nHello")])


def test_missing_template_and_end_of_turn(toks: dict[str, Tokenizer], tmp_path: Path) -> None:
    d = build_hf_tokenizer(tmp_path / "bare", template=None)
    with pytest.raises(ValueError, match=rf"tokenizer {d} has no chat template.*load_tokenizer"):
        render_chat(load_tokenizer(d), CHATS["single_plain"])
    wrong_eot = load_tokenizer(d, chat_template=QWEN3_TEMPLATE, end_of_turn_token="<|endoftext|>")
    with pytest.raises(ChatFormatError, match="message 1: no end-of-turn token"):
        render_chat(wrong_eot, CHATS["single_plain"])
    late_eot = load_tokenizer(d, chat_template=QWEN3_TEMPLATE, end_of_turn_token="<|im_start|>")
    with pytest.raises(
        ChatFormatError, match=re.escape("message 2: special token '<|im_end|>' in")
    ):
        render_chat(late_eot, CHATS["system_multi"])
    broken = load_tokenizer(d, chat_template="{{ raise_exception('no tools here') }}")
    with pytest.raises(ChatFormatError, match="message 1: rendering messages.*no tools here"):
        render_chat(broken, CHATS["single_plain"])
    with pytest.raises(ValueError, match="syntax error"):
        render_chat(load_tokenizer(d, chat_template="{% if %}"), CHATS["single_plain"])
