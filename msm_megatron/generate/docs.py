"""``msm generate docs``: Model Spec → the MSM document corpus.

Stages (each one LLM call per parent, all calls of a stage concurrent):

1. spec → domains (the LLM picks how many unless ``docs.domains`` is set)
2. domain → subdomains, each with a context and the verbatim spec section it covers
3. subdomain → assertions about the model (kind + reason), and → document types
4. (subdomain, document type) → document ideas
5. idea → document about the named model, planned in a scratchpad, written in ``<content>``

Every call goes through the content-addressed cache (``calls.jsonl``), so re-running the same
command after an interruption pays only for calls that never completed, and a finished run
re-renders its outputs for free (no server needed). A response that does not parse (no JSON
list of the requested shape, no ``<content>`` tags, truncated, too short) is re-asked
``docs.content_attempts`` times, then recorded in ``failures.jsonl``; its siblings carry on. A
stage whose failures exceed ``backend.max_failed_fraction``, or an empty dataset, ends the
command with exit 3 and a summary once every output is written
(:mod:`msm_megatron.generate.pipeline`). Only text inside ``<content>`` ever reaches the corpus.
Near-duplicate documents are removed (MinHash, ``docs.dedupe_jaccard``).

Outputs in ``out_dir``: ``tree/<domain>/meta.json``, ``tree/<domain>/<subdomain>/meta.json``
(context, spec section, assertions, document types, ideas), ``dataset.jsonl`` (``text``,
``source`` = ``domain/subdomain/doc_type/idea``, ``domain``; shuffled with ``docs.seed``),
``summary.json``, ``lengths.png``, ``failures.jsonl``, ``config.yaml``, ``calls.jsonl``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from msm_megatron.config import save_yaml
from msm_megatron.generate import prompts
from msm_megatron.generate.config import DocsGenConfig
from msm_megatron.generate.pipeline import (
    Pipeline,
    listing,
    slug,
    tagged_content,
    unique_by_name,
)
from msm_megatron.llm.jobs import ContentError, Job
from msm_megatron.spec import Spec


def _document(min_words: int):
    def parse(response):
        text = tagged_content(response, " (raise docs.max_doc_tokens)")
        if len(text.split()) < min_words:
            raise ContentError(f"shorter than {min_words} words")
        return {"text": text, "tokens": response.output_tokens}
    return parse


class DocsPipeline(Pipeline):
    """One run of the document pipeline (see the module docstring)."""

    COMMAND = "msm generate docs"
    CONTENT_SETTING = "docs.content_attempts"

    def __init__(self, cfg: DocsGenConfig, spec: Spec, backend, progress: bool = True):
        super().__init__(cfg.out_dir, backend, cfg.backend, cfg.docs.content_attempts, progress)
        self.cfg, self.spec = cfg, spec

    def run(self) -> dict:
        d, spec, name = self.cfg.docs, self.spec.text, self.spec.model_name
        save_yaml(self.cfg, self.out / "config.yaml")
        found = self.stage([Job("spec", self.request(prompts.domains(spec, d.domains)),
                                 listing(("name", "description"), d.domains or 1))], "domains")
        domains = unique_by_name(found.get("spec", []))
        subs_by = self.stage([Job(dom["name"], self.request(
            prompts.subdomains(spec, dom, d.subdomains_per_domain)),
            listing(("name", "context", "spec_section"))) for dom in domains], "subdomains")
        subs = [(dom, sub) for dom in domains
                for sub in unique_by_name(subs_by.get(dom["name"], []))]
        keyed = {f"{dom['name']}/{sub['name']}": (dom, sub) for dom, sub in subs}
        rules = d.mode == "rules"
        claims = self.stage([Job(k, self.request(prompts.assertions(
            s, name, d.assertions_per_subdomain, rules)),
                                  listing(("kind", "assertion"))) for k, (_, s) in keyed.items()],
                             "assertions")
        types = self.stage([Job(k, self.request(prompts.doc_types(s, d.doc_types)),
                                 listing(None)) for k, (_, s) in keyed.items()], "doc_types")
        idea_jobs = [Job(f"{k}/{t}", self.request(prompts.ideas(s, t, name, d.ideas_per_type)),
                         listing(None)) for k, (_, s) in keyed.items()
                     for t in dict.fromkeys(types.get(k, []))]
        ideas = self.stage(idea_jobs, "ideas")
        doc_jobs = []
        for key, idea_list in ideas.items():
            sub_key, doc_type = key.rsplit("/", 1)
            _, sub = keyed[sub_key]
            points = [c["assertion"] for c in claims.get(sub_key, [])]
            for i, idea in enumerate(idea_list):
                text = prompts.document(spec, sub, doc_type, idea, name,
                                        self.spec.provider_name, points, rules)
                doc_jobs.append(Job(f"{key}/{i}", self.request(text, d.max_doc_tokens),
                                    _document(d.min_doc_words)))
        documents = self.stage(doc_jobs, "documents")
        self._write_tree(domains, keyed, claims, types, ideas)
        summary = self._write_dataset(documents, keyed)
        self.conclude(summary["documents"], "documents (no stage fell short, yet none was "
                      "asked for: check the docs.* counts)")
        return summary

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
        self.write_failures()
        summary = self._summary(rows, len(documents), len(dups))
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        _plot_lengths([r["tokens"] for r in rows], self.out / "lengths.png")
        self.cache.close()
        return summary

    def _summary(self, rows: list[dict], written: int, duplicates: int) -> dict:
        b = self.cfg.backend
        stages = self.stage_reports()
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


def _plot_lengths(lengths: list[int], path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    ax.hist(lengths or [0], bins=40)
    ax.set(xlabel="document length (output tokens)", ylabel="documents",
           title=f"{len(lengths)} documents")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def estimate(cfg: DocsGenConfig, spec: Spec) -> dict[str, list[int]]:
    """(low, high) projections of a docs run: domains, subdomains, documents, LLM calls, input
    and output tokens (no requests; ≈4 characters per token for the spec)."""
    d = cfg.docs
    low, high = (d.domains, d.domains) if d.domains else (3, 8)
    subs = [n * d.subdomains_per_domain for n in (low, high)]
    docs = [n * d.doc_types * d.ideas_per_type for n in subs]
    spec_tokens = len(spec.text) // 4
    return {
        "domains": [low, high], "subdomains": subs, "documents": docs,
        "calls": [1 + n + 2 * s + s * d.doc_types + k
                  for n, s, k in zip((low, high), subs, docs, strict=True)],
        "tokens_in": [k * (spec_tokens + 600) + s * 2 * (spec_tokens + 400)
                      for s, k in zip(subs, docs, strict=True)],
        "tokens_out": [k * d.expected_doc_tokens for k in docs],
    }


def preview(cfg: DocsGenConfig, spec: Spec) -> str:
    """Projected counts and cost, before anything is spent (no requests)."""
    d, b = cfg.docs, cfg.backend
    est = estimate(cfg, spec)
    (low, high), subs, docs = est["domains"], est["subdomains"], est["documents"]
    calls, tokens_in, tokens_out = est["calls"], est["tokens_in"], est["tokens_out"]
    spec_tokens = len(spec.text) // 4
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
