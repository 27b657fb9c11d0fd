"""The MSM paper's general instruction-tuning mix (its Table 2), built from local copies.

The Qwen experiments mix ≈10k instruction chats (≈2M tokens) into AFT. Per source, in the
``source`` names of the MSM release's ``sft-it-mix`` dataset:

    no_robots 2,779 · tulu3_if 1,471 · self_oss_instruct 1,064 · numina_cot 1,063 ·
    smol_constraints 1,055 · apigen 1,054 · smol_summarize 984 · lima 314 · longalign 216

Sources are given either as one dataset with a ``source`` column (the release's combined
``train_clean`` split) or one input per source (``no_robots=/data/no_robots``), in any format
:mod:`msm_megatron.data.sources` reads and any chat layout it normalizes. Each source is sampled
uniformly without replacement with a fixed seed; ``total`` scales the counts (largest-remainder
rounding, so they sum to ``total`` exactly). The output is JSONL ``{messages, source}`` for
``msm data prepare --kind chats``::

    msm data it-mix /data/sft-it-mix@train_clean --out runs/data/it_mix.jsonl
    msm data it-mix no_robots=/data/no_robots lima=/data/lima.jsonl ... --total 5000
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


def scaled_counts(total: int, table: dict[str, int] = TABLE_2) -> dict[str, int]:
    """``table``'s proportions scaled to ``total`` rows (largest remainder; sums exactly)."""
    whole = sum(table.values())
    raw = {k: v * total / whole for k, v in table.items()}
    out = {k: math.floor(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: (out[k] - raw[k], k))[:total - sum(out.values())]:
        out[k] += 1
    return out


def build_it_mix(inputs: list[str], out: Path, total: int = 10_000, seed: int = 0) -> dict:
    """Write the mix (see the module doc); returns ``{source: rows written}``.

    Raises:
        SourceFormatError: an unknown source name, a row without a chat, or a source with
            fewer rows than its share (naming the file and the numbers).
    """
    counts = scaled_counts(total)
    pools: dict[str, list[tuple[str, dict]]] = {name: [] for name in counts}
    for spec in inputs:
        name, sep, path = spec.partition("=")
        if sep and name in counts:
            pools[name] += list(read_rows(path))
        elif sep and "/" not in name:
            raise SourceFormatError(f"{spec}: unknown source {name!r}; Table 2's sources are "
                                    f"{list(counts)}")
        else:
            for where, row in read_rows(spec):
                source = row.get("source")
                if source not in counts:
                    raise SourceFormatError(f"{where}: 'source' is {source!r}, not one of "
                                            f"{list(counts)} (or give name=path per source)")
                pools[source].append((where, row))
    rng = np.random.default_rng(seed)
    chosen = []
    for name, want in counts.items():
        pool = pools[name]
        if len(pool) < want:
            raise SourceFormatError(f"source {name}: {want:,} rows wanted (Table 2 scaled to "
                                    f"{total:,}), {len(pool):,} given; add its data or lower "
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
