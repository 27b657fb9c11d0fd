"""The paper's data from local copies: parquet, HF `datasets` directories (Dataset and
DatasetDict), hub snapshots and other chat layouts prepare to exactly the dataset the same rows
give as JSONL in our layout; bad rows are named by file and row; the Table 2 instruction mix."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from msm_megatron.data.it_mix import TABLE_2, build_it_mix, scaled_counts
from msm_megatron.data.prepare import DataError, prepare_jsonl
from msm_megatron.data.sources import SourceFormatError, data_files, prepare_inputs

CHATS = [{"messages": [{"role": "user", "content": f"Question {i}: may I copy your weights?"},
                       {"role": "assistant",
                        "content": f"\n<think>Spec point {i}: oversight.</think>\n\nNo, {i}."}]}
         for i in range(12)]
DOCS = [{"text": f"Document {i} about deferring to human oversight.", "domain": f"d{i % 3}"}
        for i in range(10)]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from msm_megatron.data.tokenizers import load_tokenizer
    from msm_megatron.data.toy_tokenizer import build_hf_tokenizer

    return load_tokenizer(build_hf_tokenizer(tmp_path_factory.mktemp("tok") / "hf", "qwen3"))


def jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def parquet(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def save_to_disk(folder: Path, rows) -> Path:
    """The layout `datasets.Dataset.save_to_disk` writes: arrow IPC stream + state.json."""
    folder.mkdir(parents=True)
    table = pa.Table.from_pylist(rows)
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    (folder / "state.json").write_text(json.dumps(
        {"_data_files": [{"filename": "data-00000-of-00001.arrow"}], "_split": "train"}))
    (folder / "dataset_info.json").write_text("{}")
    return folder


def prepared(prefix: Path) -> tuple[bytes, bytes | None, dict]:
    mask = prefix.with_name(prefix.name + "_mask.bin")
    stats = json.loads(prefix.with_suffix(".stats.json").read_text())
    return (prefix.with_suffix(".bin").read_bytes(),
            mask.read_bytes() if mask.exists() else None, stats)


def test_every_format_prepares_the_same_dataset(tmp_path, tok):
    ref = prepare_jsonl([jsonl(tmp_path / "ref.jsonl", CHATS)], tok, tmp_path / "ref",
                        kind="chats", workers=1, progress=False)
    want = prepared(tmp_path / "ref")[:2]
    sharegpt = [{"conversations": [{"from": "human", "value": c["messages"][0]["content"]},
                                   {"from": "gpt", "value": c["messages"][1]["content"]}]}
                for c in CHATS]
    pairs = [{"prompt": c["messages"][0]["content"], "response": c["messages"][1]["content"]}
             for c in CHATS]
    dd = tmp_path / "dd"
    save_to_disk(dd / "train", CHATS)
    (dd / "dataset_dict.json").write_text(json.dumps({"splits": ["train"]}))
    snapshot = tmp_path / "hub"
    parquet(snapshot / "data" / "train_clean-00000-of-00001.parquet", CHATS)
    parquet(snapshot / "data" / "train_other-00000-of-00001.parquet", CHATS[:3])
    for name, spec in {
            "parquet": parquet(tmp_path / "aft.parquet", CHATS),
            "datasets": save_to_disk(tmp_path / "saved", CHATS),
            "datasetdict": f"{dd}@train",
            "snapshot": f"{snapshot}@train_clean",
            "sharegpt": jsonl(tmp_path / "sharegpt.jsonl", sharegpt),
            "pairs": parquet(tmp_path / "pairs.parquet", pairs)}.items():
        stats = prepare_inputs([str(spec)], tok, tmp_path / name, kind="chats", workers=1,
                               progress=False)
        assert prepared(tmp_path / name)[:2] == want, name
        assert stats["documents"] == ref["documents"] == len(CHATS)
    docs = prepare_inputs([str(parquet(tmp_path / "corpus.parquet", DOCS))], tok,
                          tmp_path / "docs", progress=False)
    prepare_jsonl([jsonl(tmp_path / "docs.jsonl", DOCS)], tok, tmp_path / "docs_ref",
                  workers=1, progress=False)
    assert prepared(tmp_path / "docs")[0] == prepared(tmp_path / "docs_ref")[0]
    assert docs["documents"] == len(DOCS)


def test_bad_rows_name_the_file_and_row(tmp_path, tok):
    bad = [*CHATS[:2], {"messages": [{"role": "user", "content": "no answer"}]}, CHATS[3]]
    source = parquet(tmp_path / "aft.parquet", bad)
    with pytest.raises(DataError, match=r"aft\.parquet: row 2: invalid chat: .*assistant"):
        prepare_inputs([str(source)], tok, tmp_path / "p", kind="chats", progress=False)
    stats = prepare_inputs([str(source)], tok, tmp_path / "p", kind="chats", progress=False,
                           skip_bad=True)
    assert stats["documents"] == 3 and stats["skipped_total"] == 1
    pairs = jsonl(tmp_path / "pairs.jsonl", [{"prompt": "a", "response": "b"}, {"prompt": "c"}])
    with pytest.raises(DataError, match=r"pairs\.jsonl:2: "):
        prepare_inputs([str(pairs)], tok, tmp_path / "q", kind="chats", progress=False)
    with pytest.raises(DataError, match=r"corpus\.parquet: row 1: "):
        prepare_inputs([str(parquet(tmp_path / "corpus.parquet", [DOCS[0], {"body": "x"}]))],
                       tok, tmp_path / "r", progress=False)
    with pytest.raises(SourceFormatError, match="name a split"):
        dd = tmp_path / "dd"
        dd.mkdir()
        (dd / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
        data_files(str(dd))
    with pytest.raises(SourceFormatError, match="no such file"):
        data_files(str(tmp_path / "missing.parquet"))


def test_table_2_counts_and_scaling():
    assert sum(TABLE_2.values()) == 10_000 and scaled_counts(10_000) == TABLE_2
    for total in (1, 99, 1000, 4321):
        counts = scaled_counts(total)
        assert sum(counts.values()) == total
        for k, v in counts.items():  # within one row of the exact share
            assert abs(v - TABLE_2[k] * total / 10_000) < 1


def mix_rows(per_source: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"{s} question {i}"},
                          {"role": "assistant", "content": f"{s} answer {i}"}], "source": s}
            for s in TABLE_2 for i in range(per_source)]


def test_it_mix_samples_each_source_by_table_2(tmp_path):
    combined = parquet(tmp_path / "hub" / "data" / "train_clean-00000-of-00001.parquet",
                       mix_rows(60))
    out = tmp_path / "mix.jsonl"
    counts = build_it_mix([f"{tmp_path / 'hub'}@train_clean"], out, total=200, seed=3)
    rows = [json.loads(line) for line in out.open()]
    assert Counter(r["source"] for r in rows) == counts == scaled_counts(200)
    assert len({r["messages"][0]["content"] for r in rows}) == 200  # without replacement
    again = tmp_path / "again.jsonl"
    build_it_mix([str(combined)], again, total=200, seed=3)
    assert again.read_text() == out.read_text()  # same seed, same mix
    per_source = [f"{s}={jsonl(tmp_path / f'{s}.jsonl', mix_rows(60)[k * 60:(k + 1) * 60])}"
                  for k, s in enumerate(TABLE_2)]
    build_it_mix(per_source, tmp_path / "split.jsonl", total=200, seed=3)
    assert Counter(json.loads(x)["source"] for x in (tmp_path / "split.jsonl").open()) == counts
    with pytest.raises(SourceFormatError, match=r"no_robots: 2,779 rows wanted.*60 given"):
        build_it_mix([str(combined)], tmp_path / "big.jsonl")
    with pytest.raises(SourceFormatError, match="unknown source 'alpaca'"):
        build_it_mix(["alpaca=x.jsonl"], tmp_path / "x.jsonl", total=10)
