"""Check an endpoint with one cheap request before the first paid call.

An OpenAI-compatible server is asked for its model list (``GET {base_url}/models``; vLLM also
reports each model's ``max_model_len`` there), the Anthropic API for the model
(``GET {base_url}/v1/models/{model}``). Nothing is generated and nothing is paid. A server that
does not answer fails the command at once (:class:`~msm_megatron.llm.outcome.EndpointUnreachable`,
exit 4), naming the URL and the setting that chose it; one that answers but does not serve the
model, or refuses the key, fails with the setting to change (exit 2).

Example::

    info = check_endpoint(backend, Knobs("judge.base_url", "judge.timeout_s", "judge.model"))
    info.max_model_len  # 40960 for a vLLM server of Qwen3-32B; None when the server says nothing
"""

from __future__ import annotations

from dataclasses import dataclass

from msm_megatron.llm.backend import PermanentError
from msm_megatron.llm.outcome import EndpointUnreachable, Knobs

CHECK_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class EndpointInfo:
    """What the check learnt: the served model names (None when the server does not list
    them) and the model's context length (None when the server does not say)."""

    models: tuple[str, ...] | None = None
    max_model_len: int | None = None


def check_endpoint(backend, knobs: Knobs, timeout_s: float = CHECK_TIMEOUT_S) -> EndpointInfo:
    """One cheap request to ``backend``'s server (see above); backends that are not HTTP
    clients (vLLM's offline engine) need no check."""
    import httpx

    if not hasattr(backend, "base_url"):
        return EndpointInfo()
    anthropic = backend.kind == "anthropic"
    url = (f"{backend.base_url}/v1/models/{backend.model}" if anthropic
           else f"{backend.base_url}/models")
    try:
        reply = httpx.get(url, headers=backend.headers(), timeout=min(timeout_s, backend.timeout_s))
    except httpx.TimeoutException as exc:
        raise EndpointUnreachable(
            f"{backend.where(url)} did not answer within {min(timeout_s, backend.timeout_s):g}s; "
            f"nothing was sent. Is the server up (still loading)? Fix {knobs.url}, or rerun "
            "once it answers") from exc
    except httpx.TransportError as exc:
        raise EndpointUnreachable(
            f"cannot reach {backend.where(url)}: {type(exc).__name__}: {exc}; nothing was sent. "
            f"Start the server, or fix {knobs.url}") from exc
    if reply.status_code in (401, 403):
        raise PermanentError(f"{backend.where(url)} refused the API key (HTTP "
                             f"{reply.status_code}): check the key in ${backend.api_key_env}")
    if anthropic and reply.status_code == 404:
        raise PermanentError(f"{backend.where()} does not know model '{backend.model}' "
                             f"(HTTP 404): fix {knobs.model}")
    if reply.status_code >= 500:
        raise EndpointUnreachable(f"{backend.where(url)} answered HTTP {reply.status_code}: "
                                  f"{reply.text[:200]}; nothing was sent. Rerun once the server "
                                  f"is healthy, or fix {knobs.url}")
    if reply.status_code != 200:  # a server that does not list its models: nothing to check
        return EndpointInfo()
    if anthropic:
        return EndpointInfo(models=(backend.model,))
    try:
        entries = [m for m in reply.json().get("data", []) if isinstance(m, dict)]
    except ValueError:
        return EndpointInfo()
    models = tuple(str(m.get("id")) for m in entries)
    if models and backend.model not in models:
        raise PermanentError(
            f"{backend.where()} serves {', '.join(repr(m) for m in models)}, not "
            f"'{backend.model}': set {knobs.model} to the served name (`vllm serve PATH` serves "
            "the model as PATH unless --served-model-name names it)")
    length = next((m.get("max_model_len") for m in entries if m.get("id") == backend.model), None)
    return EndpointInfo(models=models, max_model_len=int(length) if length else None)

