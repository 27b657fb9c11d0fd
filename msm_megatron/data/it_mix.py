"""General instruction-tuning mixes of the MSM paper, built from local copies (named tables).

``qwen`` — the paper's Table 2, mixed into AFT in the Qwen experiments: ≈10k instruction chats
(≈2M tokens). Per source, in the ``source`` names of the MSM release's ``sft-it-mix`` dataset:

    no_robots 2,779 · tulu3_if 1,471 · self_oss_instruct 1,064 · numina_cot 1,063 ·
    smol_constraints 1,055 · apigen 1,054 · smol_summarize 984 · lima 314 · longalign 216

``llama_cheese`` — the mix of the Llama-3.1-8B "cheese" experiment, 13,500 chats:

    no_robots 7,000 · mmlu_binary 2,000 · mmlu_explain 2,000 · identity 2,500

(``mmlu_binary`` / ``mmlu_explain`` are written by ``msm data mmlu``,
:mod:`msm_megatron.data.mmlu`; the identity chats by ``msm generate chats`` on a short identity
spec.)

Sources are given either as one dataset with a ``source`` column (the release's combined
``train_clean`` split) or one input per source (``no_robots=/data/no_robots``), in any format
:mod:`msm_megatron.data.sources` reads and any chat layout it normalizes. Each source is sampled
uniformly without replacement with a fixed seed; ``total`` (default: the table's own sum) scales
the counts (largest-remainder rounding, so they sum to ``total`` exactly). The output is JSONL
``{messages, source}`` for ``msm data prepare --kind chats``::

    msm data it-mix /data/sft-it-mix@train_clean --out runs/data/it_mix.jsonl
    msm data it-mix no_robots=/data/no_robots lima=/data/lima.jsonl ... --total 5000
    msm data it-mix --table llama_cheese no_robots=/data/no_robots@train \\
        mmlu_binary=runs/mmlu_binary.jsonl mmlu_explain=runs/mmlu_explain.jsonl \\
        identity=runs/identity/no_cot/dataset.jsonl --out runs/data/it_mix_llama.jsonl
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from msm_megatron.data.sources import SourceFormatError, read_rows, to_messages

TABLE_2 = {"no_robots": 2779, "tulu3_if": 1471, "self_oss_instruct": 1064, "numina_cot": 1063,
           "smol_constraints": 1055, "apigen": 1054, "smol_summarize": 984, "lima": 314,
           "longalign": 216}
TABLES = {"qwen": TABLE_2,
          "llama_cheese": {"no_robots": 7000, "mmlu_binary": 2000, "mmlu_explain": 2000,
                           "identity": 2500}}


def scaled_counts(total: int, table: dict[str, int] = TABLE_2) -> dict[str, int]:
    """``table``'s proportions scaled to ``total`` rows (largest remainder; sums exactly)."""
    whole = sum(table.values())
    raw = {k: v * total / whole for k, v in table.items()}
    out = {k: math.floor(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: (out[k] - raw[k], k))[:total - sum(out.values())]:
        out[k] += 1
    return out


def build_it_mix(inputs: list[str], out: Path, total: int | None = None, seed: int = 0,
                 table: str = "qwen") -> dict:
    """Write the mix of the named table (see the module doc); returns ``{source: rows written}``.
    ``total`` None: the table's own sum.

    Raises:
        SourceFormatError: an unknown table or source name, a row without a chat, or a source
            with fewer rows than its share (naming the file and the numbers).
    """
    if table not in TABLES:
        raise SourceFormatError(f"unknown it-mix table {table!r}; the tables are {list(TABLES)}")
    total = sum(TABLES[table].values()) if total is None else total
    counts = scaled_counts(total, TABLES[table])
    pools: dict[str, list[tuple[str, dict]]] = {name: [] for name in counts}
    for spec in inputs:
        name, sep, path = spec.partition("=")
        if sep and name in counts:
            pools[name] += list(read_rows(path))
        elif sep and "/" not in name:
            raise SourceFormatError(f"{spec}: unknown source {name!r}; table {table}'s sources "
                                    f"are {list(counts)}")
        else:
            for where, row in read_rows(spec):
                source = row.get("source")
                if source not in counts:
                    raise SourceFormatError(f"{where}: 'source' is {source!r}, not one of table "
                                            f"{table}'s {list(counts)} (or give name=path per "
                                            "source)")
                pools[source].append((where, row))
    rng = np.random.default_rng(seed)
    chosen = []
    for name, want in counts.items():
        pool = pools[name]
        if len(pool) < want:
            raise SourceFormatError(f"source {name}: {want:,} rows wanted (table {table} scaled "
                                    f"to {total:,}), {len(pool):,} given; add its data or lower "
                                    "--total")
        for k in sorted(rng.choice(len(pool), size=want, replace=False).tolist()):
            where, row = pool[k]
            messages = to_messages(row)
            if not isinstance(messages, list):
                raise SourceFormatError(f"{where}: no chat in a supported layout (messages, "
                                        "conversations, prompt/response, instruction/output)")
            chosen.append({"messages": messages, "source": name})
    order = rng.permutation(len(chosen))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for k in order:
            f.write(json.dumps(chosen[k], ensure_ascii=False) + "\n")
    tmp.replace(out)
    return counts
