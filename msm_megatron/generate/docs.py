"""``msm generate docs``: Model Spec → the MSM document corpus.

Stages (each one LLM call per parent, all calls of a stage concurrent):

1. spec → domains (the LLM picks how many unless ``docs.domains`` is set)
2. domain → subdomains, each with a context and the verbatim spec section it covers
3. subdomain → assertions about the model (kind + reason), and → document types
4. (subdomain, document type) → document ideas
5. idea → document about the named model, planned in a scratchpad, written in ``<content>``

Every call goes through the content-addressed cache (``calls.jsonl``), so re-running the same
command after an interruption pays only for calls that never completed, and a finished run
re-renders its outputs for free. A response that does not parse (no JSON list of the requested
shape, no ``<content>`` tags, truncated, too short) is re-asked ``docs.content_attempts`` times,
then recorded in ``failures.jsonl``; its siblings carry on. Only text inside ``<content>`` ever
reaches the corpus. Near-duplicate documents are removed (MinHash, ``docs.dedupe_jaccard``).

Outputs in ``out_dir``: ``tree/<domain>/meta.json``, ``tree/<domain>/<subdomain>/meta.json``
(context, spec section, assertions, document types, ideas), ``dataset.jsonl`` (``text``,
``source`` = ``domain/subdomain/doc_type/idea``, ``domain``; shuffled with ``docs.seed``),
``summary.json``, ``lengths.png``, ``failures.jsonl``, ``config.yaml``, ``calls.jsonl``.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import asdict
from pathlib import Path

from msm_megatron.config import save_yaml
from msm_megatron.generate import prompts
from msm_megatron.generate.cache import CallCache
from msm_megatron.generate.config import DocsGenConfig
from msm_megatron.generate.llm import LLMRequest
from msm_megatron.generate.runner import CallRunner, ContentError, Job
from msm_megatron.spec import Spec

_JSON_BLOCK = re.compile(r"```(?:json)?\s*(.*?)```", re.S)
_CONTENT = re.compile(r"<content>(.*?)</content>", re.S)


def slug(name: str) -> str:
    """A filesystem- and source-safe name."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:60] or "unnamed"


def parse_json_list(text: str, keys: tuple[str, ...] | None, at_least: int = 1) -> list:
    """The JSON list in a response (fenced or bare), checked for shape; else ContentError."""
    fenced = _JSON_BLOCK.search(text)
    candidate = fenced.group(1) if fenced else text[text.find("["): text.rfind("]") + 1]
    try:
        items = json.loads(candidate)
    except json.JSONDecodeError as exc:
        raise ContentError(f"no JSON list ({exc.msg})") from exc
    if not isinstance(items, list) or len(items) < at_least:
        raise ContentError(f"expected a JSON list of at least {at_least} items")
    for item in items:
        if keys is None and not (isinstance(item, str) and item.strip()):
            raise ContentError("expected non-empty strings")
        if keys is not None and not (isinstance(item, dict) and all(
                isinstance(item.get(k), str) and item[k].strip() for k in keys)):
            raise ContentError(f"expected objects with string keys {', '.join(keys)}")
    return items


def _listing(keys, at_least=1):
    def parse(response):
        if response.truncated:
            raise ContentError("truncated")
        return parse_json_list(response.text, keys, at_least)
    return parse


def _document(min_words: int):
    def parse(response):
        if response.truncated:
            raise ContentError("truncated (raise docs.max_doc_tokens)")
        found = _CONTENT.search(response.text)
        if not found:
            raise ContentError("no <content>…</content> (scratchpad text is never used)")
        text = found.group(1).strip()
        if len(text.split()) < min_words:
            raise ContentError(f"shorter than {min_words} words")
        return {"text": text, "tokens": response.output_tokens}
    return parse


class DocsPipeline:
    """One run of the document pipeline (see the module docstring)."""

    def __init__(self, cfg: DocsGenConfig, spec: Spec, backend, progress: bool = True):
        self.cfg, self.spec, self.backend = cfg, spec, backend
        self.out = Path(cfg.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.cache = CallCache(self.out / "calls.jsonl")
        self.runner = CallRunner(backend, self.cache, concurrency=cfg.backend.concurrency,
                                 content_attempts=cfg.docs.content_attempts, progress=progress)
        self.failures: list[dict] = []

    def _request(self, text: str, max_tokens: int = 4096) -> LLMRequest:
        return LLMRequest.user(text, system=prompts.SYSTEM, max_tokens=max_tokens,
                               temperature=self.cfg.backend.temperature)

    def _stage(self, jobs: list[Job], name: str) -> dict[str, object]:
        results = self.runner.run(jobs, stage=name)
        self.failures += [{"stage": name, "id": r.id, "error": r.error} for r in results
                          if not r.ok]
        return {r.id: r.value for r in results if r.ok}

    def run(self) -> dict:
        d, spec, name = self.cfg.docs, self.spec.text, self.spec.model_name
        save_yaml(self.cfg, self.out / "config.yaml")
        found = self._stage([Job("spec", self._request(prompts.domains(spec, d.domains)),
                                 _listing(("name", "description"), d.domains or 1))], "domains")
        domains = _unique(found.get("spec", []))
        subs_by = self._stage([Job(dom["name"], self._request(
            prompts.subdomains(spec, dom, d.subdomains_per_domain)),
            _listing(("name", "context", "spec_section"))) for dom in domains], "subdomains")
        subs = [(dom, sub) for dom in domains for sub in _unique(subs_by.get(dom["name"], []))]
        keyed = {f"{dom['name']}/{sub['name']}": (dom, sub) for dom, sub in subs}
        claims = self._stage([Job(k, self._request(prompts.assertions(s, name,
                                                                      d.assertions_per_subdomain)),
                                  _listing(("kind", "assertion"))) for k, (_, s) in keyed.items()],
                             "assertions")
        types = self._stage([Job(k, self._request(prompts.doc_types(s, d.doc_types)),
                                 _listing(None)) for k, (_, s) in keyed.items()], "doc_types")
        idea_jobs = [Job(f"{k}/{t}", self._request(prompts.ideas(s, t, name, d.ideas_per_type)),
                         _listing(None)) for k, (_, s) in keyed.items()
                     for t in dict.fromkeys(types.get(k, []))]
        ideas = self._stage(idea_jobs, "ideas")
        doc_jobs = []
        for key, idea_list in ideas.items():
            sub_key, doc_type = key.rsplit("/", 1)
            _, sub = keyed[sub_key]
            points = [c["assertion"] for c in claims.get(sub_key, [])]
            for i, idea in enumerate(idea_list):
                text = prompts.document(spec, sub, doc_type, idea, name,
                                        self.spec.provider_name, points)
                doc_jobs.append(Job(f"{key}/{i}", self._request(text, d.max_doc_tokens),
                                    _document(d.min_doc_words)))
        documents = self._stage(doc_jobs, "documents")
        self._write_tree(domains, keyed, claims, types, ideas)
        return self._write_dataset(documents, keyed)

    def _write_tree(self, domains, keyed, claims, types, ideas) -> None:
        tree = self.out / "tree"
        for dom in domains:
            (tree / slug(dom["name"])).mkdir(parents=True, exist_ok=True)
            (tree / slug(dom["name"]) / "meta.json").write_text(json.dumps(dom, indent=2))
        for key, (dom, sub) in keyed.items():
            folder = tree / slug(dom["name"]) / slug(sub["name"])
            folder.mkdir(parents=True, exist_ok=True)
            meta = {**sub, "assertions": claims.get(key, []), "doc_types": types.get(key, []),
                    "ideas": {t: ideas.get(f"{key}/{t}", []) for t in types.get(key, [])}}
            (folder / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))

    def _write_dataset(self, documents: dict, keyed: dict) -> dict:
        from msm_megatron.generate.dedupe import near_duplicates

        order = sorted(documents)
        texts = [documents[k]["text"] for k in order]
        dups = near_duplicates(texts, self.cfg.docs.dedupe_jaccard, self.cfg.docs.seed)
        rows = []
        for i, key in enumerate(order):
            if i in dups:
                continue
            sub_key, doc_type, idea = key.rsplit("/", 2)
            dom, sub = keyed[sub_key]
            rows.append({"text": texts[i], "source": "/".join(
                [slug(dom["name"]), slug(sub["name"]), slug(doc_type), idea]),
                "domain": dom["name"], "tokens": documents[key]["tokens"]})
        random.Random(self.cfg.docs.seed).shuffle(rows)
        with (self.out / "dataset.jsonl").open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps({k: row[k] for k in ("text", "source", "domain")},
                                   ensure_ascii=False) + "\n")
        with (self.out / "failures.jsonl").open("w", encoding="utf-8") as f:
            for failure in self.failures:
                f.write(json.dumps(failure) + "\n")
        summary = self._summary(rows, len(documents), len(dups))
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        _plot_lengths([r["tokens"] for r in rows], self.out / "lengths.png")
        self.cache.close()
        return summary

    def _summary(self, rows: list[dict], written: int, duplicates: int) -> dict:
        b = self.cfg.backend
        stages = [asdict(r) for r in self.runner.reports]
        for stage in stages:
            stage["failures"] = len(stage["failures"])
        tokens_in = sum(s["input_tokens"] for s in stages)
        tokens_out = sum(s["output_tokens"] for s in stages)
        lengths = sorted(r["tokens"] for r in rows)
        return {
            "spec": str(self.spec.path), "spec_sha256": self.spec.sha256,
            "model_name": self.spec.model_name, "backend": f"{b.kind}:{b.model}",
            "documents": len(rows), "documents_written": written,
            "near_duplicates_removed": duplicates, "failures": len(self.failures),
            "doc_tokens_total": sum(lengths),
            "doc_tokens_median": lengths[len(lengths) // 2] if lengths else 0,
            "stages": stages, "input_tokens": tokens_in, "output_tokens": tokens_out,
            "cost_usd": (tokens_in * b.usd_per_mtok_in + tokens_out * b.usd_per_mtok_out) / 1e6,
        }


def _unique(items: list[dict]) -> list[dict]:
    """Drop items whose name repeats an earlier one (it would collide in the tree)."""
    seen, out = set(), []
    for item in items:
        if slug(item["name"]) not in seen:
            seen.add(slug(item["name"]))
            out.append(item)
    return out


def _plot_lengths(lengths: list[int], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(lengths or [0], bins=40)
    ax.set(xlabel="document length (output tokens)", ylabel="documents",
           title=f"{len(lengths)} documents")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def preview(cfg: DocsGenConfig, spec: Spec) -> str:
    """Projected counts and cost, before anything is spent (no requests)."""
    d, b = cfg.docs, cfg.backend
    low, high = (d.domains, d.domains) if d.domains else (3, 8)
    subs = [n * d.subdomains_per_domain for n in (low, high)]
    docs = [n * d.doc_types * d.ideas_per_type for n in subs]
    spec_tokens = len(spec.text) // 4  # ≈4 characters per token for English text
    calls = [1 + n + 2 * s + s * d.doc_types + k for n, s, k in zip((low, high), subs, docs,
                                                                    strict=True)]
    tokens_in = [k * (spec_tokens + 600) + s * 2 * (spec_tokens + 400)
                 for s, k in zip(subs, docs, strict=True)]
    tokens_out = [k * d.expected_doc_tokens for k in docs]
    cost = [(i * b.usd_per_mtok_in + o * b.usd_per_mtok_out) / 1e6
            for i, o in zip(tokens_in, tokens_out, strict=True)]
    rng = "{:,} – {:,}".format
    return "\n".join([
        f"spec {spec.path} ({len(spec.text.split()):,} words ≈ {spec_tokens:,} tokens), "
        f"about {spec.model_name} by {spec.provider_name}",
        f"backend {b.kind}:{b.model} at {b.base_url or 'default URL'}, concurrency "
        f"{b.concurrency}",
        f"domains {rng(low, high)} × subdomains {d.subdomains_per_domain} = {rng(*subs)} "
        f"subdomains",
        f"× doc types {d.doc_types} × ideas {d.ideas_per_type} = {rng(*docs)} documents "
        f"(before failures and de-duplication)",
        f"LLM calls ≈ {rng(*calls)}; input ≈ {rng(*tokens_in)} tokens; output ≈ "
        f"{rng(*tokens_out)} tokens at {d.expected_doc_tokens:,}/document",
        f"estimated cost ≈ ${cost[0]:,.2f} – ${cost[1]:,.2f} (backend.usd_per_mtok_in="
        f"{b.usd_per_mtok_in:g}, usd_per_mtok_out={b.usd_per_mtok_out:g})",
        f"output → {cfg.out_dir}/dataset.jsonl (nothing was requested: this is a preview)",
    ])
