"""Chats to token ids and an assistant-only loss mask, with the tokenizer's own chat template.

::

    from msm_megatron.data.chat import render_chat
    from msm_megatron.data.tokenizers import load_tokenizer
    tok = load_tokenizer("/models/Qwen3-32B")
    chat = [{"role": "user", "content": "Will you resist being shut down?"},
            {"role": "assistant", "content": "<think>The spec says ...</think>No. ..."}]
    r = render_chat(tok, chat)                   # with-CoT variant
    r = render_chat(tok, chat, keep_think=False)  # no-CoT variant
    r.ids, r.loss_mask, r.text                   # mask 1 = train to predict this token

**Rendering.** The template is Jinja run in a sandbox (``ImmutableSandboxedEnvironment``) set
up as ``transformers`` sets it up (``trim_blocks``, ``lstrip_blocks``, loop controls, its
``tojson``, ``raise_exception`` and ``strftime_now``, a no-op ``{% generation %}`` tag), with the
same variables (``messages``, ``add_generation_prompt``, ``tools=None``, ``documents=None``, the
``bos_token``/``eos_token``/... strings), so the text is what ``apply_chat_template(...,
tokenize=False)`` and vLLM produce. Nothing is executed outside the sandbox.

**The loss mask comes from token boundaries.** The whole chat is rendered and tokenized once.
For each assistant message ``i``, ``messages[:i]`` is rendered with the generation prompt and
tokenized; those ids must be an exact prefix of the whole chat's ids (else
:class:`ChatFormatError` names message ``i``). The assistant's tokens start right after that
prefix and end at the first end-of-turn token (``<|im_end|>``; see
:mod:`msm_megatron.data.tokenizers`), which is learned too; the ``\\n`` the template writes after
it, role headers, system and user turns, and the default system prompt some templates insert
(Qwen2.5's "You are Qwen, created by Alibaba Cloud...") get 0. Checks: the span holds no other
special token and contains the message's answer text.

**Thinking.** ``keep_think=False`` deletes the leading ``<think>…</think>`` block (and the
whitespace after it) from each assistant message before rendering: the no-CoT variant. With
``keep_think=True`` the message is passed as written and the template decides, as at inference:

- Qwen3's template re-formats the block as ``<think>\\n…\\n</think>\\n\\n``, keeps it only for
  the assistant turn after the last user message, and *drops* it from earlier turns. We train on
  exactly that rendering, so in a multi-turn chat only the final turn's reasoning is learned
  (split such chats into one example per turn to learn every turn's reasoning).
- For a final turn with no reasoning (no-CoT data), Qwen3 writes an empty
  ``<think>\\n\\n</think>\\n\\n``. The generation prompt is tried both plain and with
  ``enable_thinking=False`` (which makes Qwen3 pre-fill that empty block); the longest one that
  is a token prefix of the chat is the prompt, so the template's empty block gets mask 0, just as
  it is pre-filled, not generated, when a user disables thinking.
- Qwen2.5 has no thinking support: ``<think>`` is ordinary text, learned like the answer.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from msm_megatron.data.tokenizers import Tokenizer

ROLES = ("system", "user", "assistant")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_THINK_BLOCK = re.compile(r"\s*<think>(.*?)</think>\s*", re.DOTALL)
# Generation-prompt variants tried for each assistant turn; the longest prefix wins.
_PROMPT_VARIANTS: tuple[dict[str, Any], ...] = ({"enable_thinking": False}, {})


class ChatFormatError(ValueError):
    """A chat that cannot be rendered; ``index`` is the offending message (or ``None``).

    The data-prepare step prefixes ``file:line`` to the message.
    """

    def __init__(self, index: int | None, reason: str) -> None:
        self.index, self.reason = index, reason
        super().__init__(reason if index is None else f"message {index}: {reason}")


@dataclass(slots=True)
class RenderedChat:
    """A rendered chat.

    Attributes:
        ids: Token ids of the whole chat.
        loss_mask: 1 where ``ids[j]`` is a token the model must learn to predict (assistant
            content and the end-of-turn token closing it), else 0; same length as ``ids``.
        text: The rendered text; ``tokenizer.decode(ids) == text`` for lossless tokenizers.
        assistant_spans: ``(start, end)`` token ranges (end exclusive) with mask 1, one per
            assistant message.
    """

    ids: list[int]
    loss_mask: list[int]
    text: str
    assistant_spans: list[tuple[int, int]] = field(default_factory=list)


# ----------------------------------------------------------------------------- validation


def validate_messages(messages: Any) -> None:
    """Checks roles, order and content.

    A chat is an optional leading system message, then user and assistant messages
    alternating, ending with an assistant message. Each message is ``{"role", "content"}``
    with non-empty string content; a ``<think>`` block may only open an assistant message.

    Raises:
        ChatFormatError: Naming the first offending message and why.
    """
    if not isinstance(messages, list) or not messages:
        raise ChatFormatError(None, "'messages' must be a non-empty list of messages")
    offset = 1 if isinstance(messages[0], dict) and messages[0].get("role") == "system" else 0
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ChatFormatError(i, f"expected an object with 'role' and 'content', got {m!r:.60}")
        extra = sorted(set(m) - {"role", "content"})
        if extra:
            raise ChatFormatError(i, f"unexpected key(s) {extra}; allowed: 'role', 'content'")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise ChatFormatError(i, f"role {role!r} is not one of {', '.join(ROLES)}")
        if not isinstance(content, str) or not content.strip():
            raise ChatFormatError(i, f"{role} content must be a non-empty string")
        if i >= offset:
            expected = "user" if (i - offset) % 2 == 0 else "assistant"
            if role != expected:
                raise ChatFormatError(
                    i,
                    f"expected a {expected} message, got {role} (a chat is an optional system "
                    "message, then user and assistant messages alternating)",
                )
        if role == "assistant":
            split_think(content, i)
    if messages[-1]["role"] != "assistant":
        raise ChatFormatError(len(messages) - 1, "the chat must end with an assistant message")


def split_think(content: str, index: int | None = None) -> tuple[str | None, str]:
    """Splits an assistant message into its leading ``<think>`` reasoning and the answer.

    Args:
        content: The message text, e.g. ``"<think>reasoning</think>answer"``.
        index: Message index for errors.

    Returns:
        ``(reasoning or None, answer)``; the answer has the whitespace after ``</think>``
        removed.

    Raises:
        ChatFormatError: ``<think>``/``</think>`` appear anywhere but one leading block, or no
            answer follows the block.
    """
    m = _THINK_BLOCK.match(content)
    reasoning, answer = (m.group(1), content[m.end() :]) if m else (None, content)
    if THINK_OPEN in answer or THINK_CLOSE in answer:
        raise ChatFormatError(
            index,
            f"{THINK_OPEN}…{THINK_CLOSE} may only appear once, closed, at the start of an "
            "assistant message",
        )
    if not answer.strip():
        raise ChatFormatError(index, f"no answer after {THINK_CLOSE}")
    return reasoning, answer


def strip_think(messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """Messages with each assistant message's leading ``<think>…</think>`` block removed."""
    out = []
    for i, m in enumerate(messages):
        m = dict(m)
        if m["role"] == "assistant":
            m["content"] = split_think(m["content"], i)[1]
        out.append(m)
    return out


# ----------------------------------------------------------------------------- templates


class _GenerationTag(jinja2.ext.Extension):
    """``{% generation %}…{% endgeneration %}`` (used by some templates) renders its body."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> list[jinja2.nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


@functools.lru_cache(maxsize=16)
def compile_template(template: str) -> jinja2.Template:
    """Compiles a chat template in a sandbox configured like ``transformers``'.

    Raises:
        ValueError: The template has a syntax error.
    """
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationTag, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise ValueError(f"chat template syntax error at line {e.lineno}: {e.message}") from e


def render_template(
    tokenizer: Tokenizer,
    messages: Sequence[Mapping[str, str]],
    *,
    add_generation_prompt: bool = False,
    **variables: Any,
) -> str:
    """Renders ``messages`` with the tokenizer's chat template (no validation, no mask).

    Args:
        tokenizer: A tokenizer with a ``chat_template``.
        messages: ``{"role", "content"}`` dicts.
        add_generation_prompt: Append the header that opens an assistant turn.
        **variables: Extra template variables, e.g. ``enable_thinking=False``.

    Raises:
        ValueError: The tokenizer has no chat template, or the template raised an error.
    """
    template = tokenizer.chat_template
    if template is None:
        raise ValueError(
            f"tokenizer {tokenizer.path} has no chat template (looked for the chat_template "
            "argument, chat_template.jinja and tokenizer_config.json's 'chat_template'); add "
            "'chat_template' to its tokenizer_config.json or pass chat_template=... (text or a "
            ".jinja file) to load_tokenizer"
        )
    context = {
        **tokenizer.template_tokens,
        "messages": [dict(m) for m in messages],
        "tools": None,
        "documents": None,
        "add_generation_prompt": add_generation_prompt,
        **variables,
    }
    try:
        return compile_template(template).render(**context)
    except jinja2.TemplateError as e:
        raise ValueError(f"chat template of {tokenizer.path} failed: {e}") from e


# ----------------------------------------------------------------------------- masks


def _render_or_raise(
    tokenizer: Tokenizer, messages: Sequence[Mapping[str, str]], index: int, **kwargs: Any
) -> str:
    try:
        return render_template(tokenizer, messages, **kwargs)
    except ValueError as e:
        raise ChatFormatError(index, f"rendering messages[:{len(messages)}]: {e}") from e


def _first_difference(a: list[int], b: list[int]) -> int:
    return next(
        (k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def _prompt_end(
    tokenizer: Tokenizer, messages: Sequence[Mapping[str, str]], i: int, full: list[int]
) -> int:
    """Length of the longest generation prompt for message ``i`` that prefixes ``full``."""
    best, tried, seen = -1, [], set()
    for variables in _PROMPT_VARIANTS:
        text = _render_or_raise(tokenizer, messages[:i], i, add_generation_prompt=True, **variables)
        if text in seen:
            continue
        seen.add(text)
        ids = tokenizer.encode(text)
        tried.append(ids)
        if len(ids) > best and full[: len(ids)] == ids:
            best = len(ids)
    if best < 0:
        ids = tried[-1]
        k = _first_difference(ids, full)
        raise ChatFormatError(
            i,
            f"the chat template breaks the prefix property: the tokens of messages[:{i}] plus "
            f"the generation prompt are not a prefix of the whole chat's tokens (they differ at "
            f"token {k}: {tokenizer.decode(ids[k : k + 8])!r} vs "
            f"{tokenizer.decode(full[k : k + 8])!r}). The template rewrites earlier turns, or "
            "the message's text merges with the assistant header (e.g. it starts with "
            "whitespace)",
        )
    return best


def _assistant_span(
    tokenizer: Tokenizer, full: list[int], start: int, i: int, answer: str, guard: set[int]
) -> int:
    """End (exclusive) of message ``i``'s learned tokens: through the first end-of-turn id."""
    eot = tokenizer.end_of_turn_id
    try:
        end = full.index(eot, start) + 1
    except ValueError:
        role = tokenizer.roles.get("end_of_turn")
        raise ChatFormatError(
            i,
            f"no end-of-turn token ({role.token if role else '?'}, id {eot}, picked by "
            f"{role.rule if role else 'no rule'}) after the assistant header",
        ) from None
    body = full[start : end - 1]
    stray = [t for t in body if t in guard]
    if stray:
        raise ChatFormatError(
            i,
            f"special token {tokenizer.decode(stray[:1])!r} inside the assistant turn: the "
            f"template does not close assistant turns with {tokenizer.decode([eot])!r}; pass "
            "end_of_turn_token=... to load_tokenizer",
        )
    # Compare through the tokenizer, so its normalization (Qwen: NFC) applies to both sides.
    if tokenizer.decode(tokenizer.encode(answer.strip())) not in tokenizer.decode(body):
        raise ChatFormatError(i, "the template did not render the answer inside the assistant turn")
    return end


@functools.lru_cache(maxsize=8)
def _text_specials(tokenizer: Tokenizer) -> dict[str, int]:
    """Special tokens (and the end-of-turn token) that text spelling them would produce.

    ``<think>``/``</think>`` are allowed. SentencePiece control pieces (``</s>``) are not
    produced from text, so text spelling them is harmless and allowed.
    """
    candidates = dict(tokenizer.special_tokens())
    eot = tokenizer.roles.get("end_of_turn")
    if eot is not None:
        candidates[eot.token] = eot.id
    return {
        t: i
        for t, i in candidates.items()
        if t not in (THINK_OPEN, THINK_CLOSE) and tokenizer.encode(t) == [i]
    }


def _check_content(tokenizer: Tokenizer, messages: Sequence[Mapping[str, str]]) -> set[int]:
    """Rejects content spelling special tokens; returns the ids no assistant span may hold."""
    specials = _text_specials(tokenizer)
    for i, m in enumerate(messages):
        hit = next((t for t in specials if t in m["content"]), None)
        if hit is not None:
            raise ChatFormatError(i, f"content contains the special token {hit!r}")
    guard = {i for t, i in tokenizer.special_tokens().items() if t not in (THINK_OPEN, THINK_CLOSE)}
    return guard | set(specials.values())


def render_chat(
    tokenizer: Tokenizer, messages: Sequence[Mapping[str, str]], *, keep_think: bool = True
) -> RenderedChat:
    """Renders a chat with the tokenizer's chat template and builds its loss mask.

    Args:
        tokenizer: From :func:`msm_megatron.data.tokenizers.load_tokenizer`, with a chat
            template and an end-of-turn token.
        messages: ``[{"role": ..., "content": ...}, ...]``: optional system, then user and
            assistant alternating, ending with assistant. Assistant content may open with a
            ``<think>…</think>`` block.
        keep_think: Keep the ``<think>`` blocks (with-CoT) or delete them first (no-CoT).

    Returns:
        The ids, the mask (1 on every assistant turn's tokens and its end-of-turn token) and the
        text. See the module docstring for how the mask is derived.

    Raises:
        ChatFormatError: The chat is malformed or the template breaks the prefix property; the
            message names the message index.
        ValueError: The tokenizer has no chat template or no end-of-turn token.
    """
    validate_messages(messages)
    if tokenizer.end_of_turn_id is None:
        raise ValueError(
            f"tokenizer {tokenizer.path} has no end-of-turn token to close assistant turns; "
            "pass end_of_turn_token=... to load_tokenizer"
        )
    msgs = [dict(m) for m in messages] if keep_think else strip_think(messages)
    guard = _check_content(tokenizer, msgs)
    text = _render_or_raise(tokenizer, msgs, len(msgs) - 1)
    ids = tokenizer.encode(text)
    mask = [0] * len(ids)
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        start = _prompt_end(tokenizer, msgs, i, ids)
        if spans and start < spans[-1][1]:
            raise ChatFormatError(i, "the assistant turn starts inside the previous one")
        end = _assistant_span(tokenizer, ids, start, i, split_think(m["content"], i)[1], guard)
        mask[start:end] = [1] * (end - start)
        spans.append((start, end))
    return RenderedChat(ids=ids, loss_mask=mask, text=text, assistant_spans=spans)
