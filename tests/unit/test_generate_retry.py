"""Backoff timing, Retry-After parsing, cache keys and the cache file's crash tolerance."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

from msm_megatron.llm.backend import LLMRequest, LLMResponse
from msm_megatron.llm.cache import CallCache
from msm_megatron.llm.retry import RetryPolicy, parse_retry_after


def test_full_jitter_is_bounded_by_the_capped_exponential():
    policy, rng = RetryPolicy(base_s=0.5, cap_s=4.0), random.Random(0)
    for retry, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        delays = [policy.delay(retry, rng=rng) for _ in range(200)]
        assert 0 <= min(delays) and max(delays) <= ceiling
        assert max(delays) > 0.8 * ceiling  # spread over the whole range (jitter)


def test_retry_after_is_a_floor():
    policy = RetryPolicy(base_s=0.001, cap_s=0.001)
    assert policy.delay(1, retry_after=2.5) == 2.5


def test_parse_retry_after_seconds_and_http_dates():
    assert parse_retry_after("3") == 3.0 and parse_retry_after("0.25") == 0.25
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(datetime(2026, 11, 27, 12, 0, 30, tzinfo=UTC), usegmt=True)
    assert parse_retry_after(later, now=now.timestamp()) == 30.0


def test_cache_keys_separate_backends_attempts_and_content():
    a = LLMRequest.user("hi")
    assert a.key("openai:u:m") == LLMRequest.user("hi").key("openai:u:m")
    assert len({a.key("openai:u:m"), a.key("openai:u:other"), LLMRequest.user("hi!").key(
        "openai:u:m"), LLMRequest.user("hi", attempt=1).key("openai:u:m")}) == 4


def test_cache_survives_a_half_written_last_line(tmp_path):
    cache = CallCache(tmp_path / "calls.jsonl")
    cache.put("k1", LLMResponse("one", "stop", 1, 2))
    cache.put("k2", LLMResponse("two", "length", 3, 4))
    cache.close()
    with open(tmp_path / "calls.jsonl", "a") as f:
        f.write('{"key": "k3", "text": "thr')  # killed mid-write
    again = CallCache(tmp_path / "calls.jsonl")
    assert len(again) == 2 and again.ignored_lines == 1
    assert again.get("k2") == LLMResponse("two", "length", 3, 4) and again.get("k2").truncated
    again.put("k4", LLMResponse("four", "stop"))  # appends after the torn line was dropped
    again.close()
    third = CallCache(tmp_path / "calls.jsonl")
    assert sorted(third._entries) == ["k1", "k2", "k4"] and third.ignored_lines == 0


def test_unset_settings_are_left_out_of_request_bodies_and_cache_keys():
    import hashlib
    import json

    from msm_megatron.llm.http_backends import (
        ANTHROPIC_DEFAULT_MAX_TOKENS,
        AnthropicBackend,
        OpenAICompatBackend,
    )

    full = LLMRequest.user("hi", system="s", max_tokens=50, temperature=0.0)
    payload = {"backend": "b", "messages": [["user", "hi"]], "system": "s", "max_tokens": 50,
               "temperature": 0.0, "attempt": 0}  # a request that sets them: key unchanged
    assert full.key("b") == hashlib.sha256(json.dumps(
        payload, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()
    bare = LLMRequest.user("hi", system="s", max_tokens=None, temperature=None)
    assert bare.key("b") != full.key("b") and bare.sampling() == {}
    _, _, body = OpenAICompatBackend("http://127.0.0.1:1/v1", "m")._build(bare)
    assert not {"max_tokens", "temperature", "seed"} & set(body)
    _, _, body = OpenAICompatBackend("http://127.0.0.1:1/v1", "m")._build(full)
    assert (body["max_tokens"], body["temperature"]) == (50, 0.0)
    body = AnthropicBackend("m").body(bare)
    assert body["max_tokens"] == ANTHROPIC_DEFAULT_MAX_TOKENS and "temperature" not in body
    assert AnthropicBackend("m").body(full)["temperature"] == 0.0
