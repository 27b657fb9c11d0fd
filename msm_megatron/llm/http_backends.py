"""Real HTTP clients: OpenAI-compatible chat completions and the Anthropic Messages API.

Both share one retry loop (:class:`HTTPBackend`): per-request timeout, retries with exponential
backoff and full jitter on 429 / 5xx / timeouts / connection errors / unparseable bodies, the
server's ``Retry-After`` honoured. The API key is read from the environment variable the config
names (never from the config itself), sent only in request headers, and never logged, saved or
included in error messages.

Examples::

    backend = OpenAICompatBackend("http://127.0.0.1:8000/v1", model="Qwen/Qwen3-32B")  # vLLM serve
    backend = AnthropicBackend(model="claude-opus-4-6")          # key from ANTHROPIC_API_KEY
    response = await backend.complete(LLMRequest.user("Name three colours."))
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random

from msm_megatron.llm.backend import (
    LLMRequest,
    LLMResponse,
    PermanentError,
    TransientError,
    Usage,
)
from msm_megatron.llm.retry import RetryPolicy, parse_retry_after

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 529}


class HTTPBackend:
    """The shared client: connection pool, timeout, retry loop, usage counters.

    Subclasses build the request body and headers and parse the response body.
    """

    kind = "http"
    POOL_CONNECTIONS = 16

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None,
                 timeout_s: float = 600.0, retry: RetryPolicy | None = None,
                 max_connections: int = 256, seed: int | None = None,
                 setting: str | None = None):
        """``setting``: the config key or flag that chose ``base_url`` (``judge.base_url``…),
        named beside the URL in every error."""
        self.base_url = base_url.rstrip("/")
        self.setting = setting
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.max_connections = max_connections
        self.usage = Usage()
        self._rng = random.Random(seed)
        self._clients = None

    @property
    def backend_id(self) -> str:
        """Identifies the model behind the calls (part of every cache key); no secrets. The
        URL is left out: the same model served from another host or port reuses paid work."""
        return f"{self.kind}:{self.model}"

    def where(self, url: str | None = None) -> str:
        """``url`` (default the base URL) and the setting that chose it, for messages."""
        return f"{url or self.base_url}" + (f" ({self.setting})" if self.setting else "")

    def _api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise PermanentError(f"environment variable {self.api_key_env} (the API key for "
                                 f"{self.base_url}) is not set")
        return key

    def _http(self):
        """The next client of a small pool of httpx clients (round robin).

        httpcore's connection pool does work proportional to (connections × waiting requests)
        on every request, which caps one client near 50 requests/s at 256 connections on a
        2-core machine; clients of at most ``POOL_CONNECTIONS`` connections each keep that
        cost flat (bench/generate.py).
        """
        import httpx

        if self._clients is None:
            import ssl

            import certifi

            count = max(1, -(-self.max_connections // self.POOL_CONNECTIONS))
            per = -(-self.max_connections // count)
            limits = httpx.Limits(max_connections=per, max_keepalive_connections=per)
            tls = ssl.create_default_context(cafile=certifi.where())  # one, shared: 20 ms each
            self._clients = [httpx.AsyncClient(timeout=self.timeout_s, limits=limits, verify=tls)
                             for _ in range(count)]
            self._next = itertools.cycle(self._clients)
        return next(self._next)

    async def aclose(self) -> None:
        if self._clients is not None:
            for client in self._clients:
                await client.aclose()
            self._clients = None

    async def complete(self, request: LLMRequest) -> LLMResponse:
        """One completion, retrying transient failures up to ``retry.max_attempts`` times."""
        url, headers, body = self._build(request)
        response = await self.call("POST", url, headers, body, self._parse)
        self.usage.input_tokens += response.input_tokens
        self.usage.output_tokens += response.output_tokens
        return response

    async def call(self, method: str, url: str, headers: dict, body: dict | None, parse):
        """One HTTP exchange with the retry policy; ``parse(reply)`` → the result.

        ``parse`` gets the decoded JSON body (or, with ``parse.raw = True``, the text).
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._once(method, url, headers, body, parse)
            except TransientError as exc:
                self.usage.count_error(exc.kind)
                if attempt >= self.retry.max_attempts:
                    raise TransientError(f"gave up after {attempt} attempts: {exc}",
                                         exc.kind) from exc
                self.usage.retries += 1
                await asyncio.sleep(self.retry.delay(attempt, exc.retry_after, self._rng))

    async def _once(self, method: str, url: str, headers: dict, body: dict | None, parse):
        import httpx

        self.usage.http_requests += 1
        try:
            reply = await self._http().request(method, url, headers=headers, json=body)
        except httpx.TimeoutException as exc:
            raise TransientError(f"timeout after {self.timeout_s:g}s at {self.where(url)}",
                                 "timeout") from exc
        except httpx.TransportError as exc:  # refused, reset, dropped mid-response
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise TransientError(f"connection error ({detail}) at {self.where(url)}",
                                 "connection") from exc
        if reply.status_code in RETRYABLE_STATUS:
            raise TransientError(f"HTTP {reply.status_code} at {self.where(url)}",
                                 f"http_{reply.status_code}",
                                 parse_retry_after(reply.headers.get("retry-after")))
        if reply.status_code >= 400:
            raise PermanentError(f"HTTP {reply.status_code} from {self.where(url)}: "
                                 f"{reply.text[:300]}")
        try:
            return parse(reply.text if getattr(parse, "raw", False) else reply.json())
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise TransientError(f"unparseable response body ({type(exc).__name__}) at "
                                 f"{self.where(url)}", "bad_body") from exc

    def _build(self, request: LLMRequest) -> tuple[str, dict, dict]:
        raise NotImplementedError

    def _parse(self, data: dict) -> LLMResponse:
        raise NotImplementedError


class OpenAICompatBackend(HTTPBackend):
    """``POST {base_url}/chat/completions`` (vLLM ``serve``, SGLang, OpenAI, most providers)."""

    kind = "openai"

    def __init__(self, base_url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY",
                 **kwargs):
        super().__init__(base_url, model, api_key_env, **kwargs)

    def _api_key(self) -> str | None:  # local servers need none: an unset variable is fine
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def headers(self) -> dict:
        """Request headers: JSON, and the bearer key when one is set."""
        key = self._api_key()
        return {"content-type": "application/json",
                **({"authorization": f"Bearer {key}"} if key else {})}

    def _build(self, request: LLMRequest) -> tuple[str, dict, dict]:
        messages = ([{"role": "system", "content": request.system}] if request.system else [])
        messages += [{"role": role, "content": text} for role, text in request.messages]
        body = {"model": self.model, "messages": messages, **request.sampling()}
        return f"{self.base_url}/chat/completions", self.headers(), body

    def _parse(self, data: dict) -> LLMResponse:
        choice = data["choices"][0]
        text = choice["message"]["content"]
        if not isinstance(text, str):
            raise TypeError("message content is not text")
        usage = data.get("usage") or {}
        return LLMResponse(text=text, finish_reason=choice.get("finish_reason") or "stop",
                           input_tokens=int(usage.get("prompt_tokens", 0)),
                           output_tokens=int(usage.get("completion_tokens", 0)))


ANTHROPIC_DEFAULT_MAX_TOKENS = 4096  # sent when a request leaves max_tokens unset


class AnthropicBackend(HTTPBackend):
    """``POST {base_url}/v1/messages`` (the Anthropic Messages API)."""

    kind = "anthropic"
    API_VERSION = "2023-06-01"

    def __init__(self, model: str, base_url: str = "https://api.anthropic.com",
                 api_key_env: str = "ANTHROPIC_API_KEY", **kwargs):
        super().__init__(base_url, model, api_key_env, **kwargs)

    def headers(self) -> dict:
        return {"content-type": "application/json", "x-api-key": self._api_key() or "",
                "anthropic-version": self.API_VERSION}

    def body(self, request: LLMRequest) -> dict:
        """The Messages API body of a request (also a Message Batches ``params``); an unset
        max_tokens is :data:`ANTHROPIC_DEFAULT_MAX_TOKENS` (the API requires one), an unset
        temperature is not sent (the API's default, 1.0); no seed (the API takes none)."""
        sampling = request.sampling()
        sampling.pop("seed", None)
        body = {"model": self.model,
                "max_tokens": sampling.pop("max_tokens", ANTHROPIC_DEFAULT_MAX_TOKENS),
                **sampling,
                "messages": [{"role": role, "content": text} for role, text in request.messages]}
        if request.system:
            body["system"] = request.system
        return body

    def _build(self, request: LLMRequest) -> tuple[str, dict, dict]:
        return f"{self.base_url}/v1/messages", self.headers(), self.body(request)

    def _parse(self, data: dict) -> LLMResponse:
        return parse_anthropic_message(data)

    # --- Message Batches API (bulk stages: half price, results within 24 h) ------------------

    async def submit_batch(self, items: list[tuple[str, LLMRequest]]) -> str:
        """Create a batch of ``(custom_id, request)``; returns the batch id."""
        body = {"requests": [{"custom_id": key, "params": self.body(request)}
                             for key, request in items]}
        return await self.call("POST", f"{self.base_url}/v1/messages/batches", self.headers(),
                               body, lambda data: data["id"])

    async def batch_status(self, batch_id: str) -> dict:
        """The batch object (``processing_status``, ``request_counts``, ``results_url``)."""
        return await self.call("GET", f"{self.base_url}/v1/messages/batches/{batch_id}",
                               self.headers(), None, lambda data: data)

    async def batch_results(self, results_url: str) -> list[dict]:
        """The results JSONL: one ``{"custom_id", "result": {"type", ...}}`` per request."""
        def parse(text: str) -> list[dict]:
            return [json.loads(line) for line in text.splitlines() if line.strip()]

        parse.raw = True
        return await self.call("GET", results_url, self.headers(), None, parse)


def parse_anthropic_message(data: dict) -> LLMResponse:
    """An Anthropic ``message`` object → :class:`LLMResponse` (text blocks joined)."""
    if data.get("type") == "error":
        raise ValueError(json.dumps(data.get("error"))[:200])
    text = "".join(block["text"] for block in data["content"] if block.get("type") == "text")
    usage = data.get("usage") or {}
    return LLMResponse(text=text, finish_reason=data.get("stop_reason") or "end_turn",
                       input_tokens=int(usage.get("input_tokens", 0)),
                       output_tokens=int(usage.get("output_tokens", 0)))


BACKENDS = {"openai": OpenAICompatBackend, "anthropic": AnthropicBackend}


def make_backend(kind: str, model: str, base_url: str | None = None,
                 api_key_env: str | None = None, **kwargs) -> HTTPBackend:
    """A backend by name (``openai`` = any OpenAI-compatible server, ``anthropic``)."""
    from msm_megatron.config import ConfigError

    if kind not in BACKENDS:
        raise ConfigError(f"unknown backend '{kind}'; choose one of {', '.join(BACKENDS)}")
    if kind == "openai":
        if not base_url:
            raise ConfigError("the openai backend needs a base URL, e.g. "
                              "http://127.0.0.1:8000/v1 for `vllm serve`")
        return OpenAICompatBackend(base_url, model, api_key_env or "OPENAI_API_KEY", **kwargs)
    extra = {"base_url": base_url} if base_url else {}
    return AnthropicBackend(model, api_key_env=api_key_env or "ANTHROPIC_API_KEY", **extra,
                            **kwargs)
