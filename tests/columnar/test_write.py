"""write_trace: every format holds generate()'s envelopes and ground truth, across row groups and pages."""

from __future__ import annotations

import importlib
import json
import os

import pandas as pd
import pyarrow.parquet as pq
import pytest

from dedup.analysis import format_bytes
from dedup.columnar import write
from dedup.columnar.dump import TRUTH_FIELDS
from dedup.columnar.engine import connect
from dedup.columnar.write import write_trace
from dedup.traces import TraceConfig, generate
from dedup.traces.generate import EPOCH_ROWS

CONFIG = TraceConfig(n_events=3500, source="mixed", seed=6)


@pytest.fixture(scope="module")
def expected():
    trace = generate(CONFIG, cache=False)
    lines = [json.dumps(e, ensure_ascii=False, separators=(",", ":")) for e in trace.envelopes()]
    truth = trace.frame[list(TRUTH_FIELDS)].astype({"kind": str})
    return lines, [tuple(r) for r in truth.itertuples(index=False)]


@pytest.fixture
def small_groups(monkeypatch):
    """Row groups of 1000 rows and pages of 64 KiB, so a small trace spans several of each."""
    monkeypatch.setattr(write, "CHUNK_ROWS", 1000)
    monkeypatch.setattr(write, "PAGE_BYTES", 1 << 16)


def read(dump) -> tuple[list[str], list[tuple]]:
    con = connect()
    lines = [r[0] for r in con.execute(f"SELECT line FROM {dump.lines_sql()}").fetchall()]
    truth = con.execute(f"SELECT {', '.join(TRUTH_FIELDS)} FROM {dump.truth_sql()}").fetchall()
    return lines, truth


@pytest.mark.parametrize("name", ["t.parquet", "t.jsonl", "t.jsonl.gz", "t.jsonl.zst"])
def test_every_format_holds_the_trace_and_its_truth_in_order(tmp_path, small_groups, expected, name):
    dump = write_trace(CONFIG, tmp_path / name, workers=2)
    assert read(dump) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({name, "t.truth.parquet"} - (
        {"t.truth.parquet"} if name.endswith(".parquet") else set()))


def test_a_parquet_dump_has_the_columns_and_types_the_readers_expect(tmp_path, small_groups, expected):
    dump = write_trace(CONFIG, tmp_path / "t.parquet", workers=2)
    con = connect()
    schema = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{dump.path}')").fetchall()
    assert [(c[0], c[1]) for c in schema] == [("envelope", "VARCHAR"), ("arrival_ms", "BIGINT"),
                                              ("logical_id", "INTEGER"), ("kind", "VARCHAR"),
                                              ("original_arrival_ms", "BIGINT")]
    groups = con.execute(f"SELECT count(DISTINCT row_group_id), max(row_group_num_rows), "
                         f"list(DISTINCT compression) FROM parquet_metadata('{dump.path}')").fetchone()
    assert groups == (4, 1000, ["ZSTD"])
    first = pq.ParquetFile(dump.path).metadata.row_group(0)
    assert first.column(0).total_uncompressed_size > 2 * write.PAGE_BYTES  # several pages to a row group
    arrival = first.column(1).statistics
    assert (arrival.min, arrival.max) == (min(r[0] for r in expected[1][:1000]),
                                          max(r[0] for r in expected[1][:1000]))
    assert first.column(0).statistics is None  # the envelope text's would prune nothing


@pytest.mark.parametrize("epoch_rows", [700, 2300])  # epochs shorter than a row group, and longer
def test_a_trace_of_many_epochs_is_written_in_full_row_groups_as_generated(tmp_path, small_groups,
                                                                          monkeypatch, epoch_rows):
    """Row groups straddle the generator's epochs: all full but the last, rows in the trace's order."""
    monkeypatch.setattr(importlib.import_module("dedup.traces.generate"), "EPOCH_ROWS", epoch_rows)
    trace = generate(CONFIG, cache=False)
    dump = write_trace(CONFIG, tmp_path / "t.parquet", workers=2)
    lines, truth = read(dump)
    assert lines == [json.dumps(e, ensure_ascii=False, separators=(",", ":")) for e in trace.envelopes()]
    assert truth == [tuple(r) for r in trace.frame[list(TRUTH_FIELDS)].astype({"kind": str})
                     .itertuples(index=False)]
    metadata = pq.ParquetFile(dump.path).metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [1000, 1000, 1000, 500]


def test_pyarrow_and_pandas_read_a_parquet_dump_as_the_trace(tmp_path, small_groups, expected):
    dump = write_trace(CONFIG, tmp_path / "t.parquet", workers=2)
    table = pq.read_table(dump.path)
    assert table.column("envelope").to_pylist() == expected[0]
    frame = pd.read_parquet(dump.path)
    assert list(frame["envelope"]) == expected[0]
    truth = frame[list(TRUTH_FIELDS)].astype({"kind": str})
    assert [tuple(r) for r in truth.itertuples(index=False)] == expected[1]


def test_jsonl_blocks_concatenate_into_one_stream_the_standard_tools_read(tmp_path, small_groups, expected):
    import gzip

    import pyarrow as pa

    write_trace(CONFIG, tmp_path / "t.jsonl.gz", workers=2)
    write_trace(CONFIG, tmp_path / "u.jsonl.zst", workers=2)
    with gzip.open(tmp_path / "t.jsonl.gz", "rt", encoding="utf-8") as lines:
        assert lines.read().splitlines() == expected[0]
    with pa.CompressedInputStream(str(tmp_path / "u.jsonl.zst"), "zstd") as stream:
        assert stream.read().decode("utf-8").splitlines() == expected[0]


def test_an_empty_trace_is_an_empty_dump(tmp_path):
    for name in ("e.parquet", "e.jsonl.gz", "e.jsonl.zst"):
        dump = write_trace(TraceConfig(n_events=0), tmp_path / name)
        assert read(dump) == ([], [])


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(write, "render_lines", fail)
    for name in ("f.parquet", "f.jsonl", "f.jsonl.zst"):
        with pytest.raises(RuntimeError, match="disk on fire"):
            write_trace(CONFIG, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_when_memory_is_short_then_writing_says_so_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(write, "available_memory", lambda: 100_000_000)
    config = TraceConfig(n_events=100_000_000)
    needed = format_bytes(write.memory_needed(config, os.cpu_count() or 1))
    with pytest.raises(write.NotEnoughMemoryError,
                       match=rf"100,000,000 events: it needs about {needed}, 100\.0 MB is available"):
        write_trace(config, tmp_path / "big.parquet")
    assert list(tmp_path.iterdir()) == []


def test_the_memory_writing_needs_stops_growing_at_an_epoch():
    """Generated an epoch at a time: 100M events need what 10M do, and fewer than an epoch need less."""
    def needed(n):
        return write.memory_needed(TraceConfig(n_events=n), 2)

    assert needed(1_000) < needed(EPOCH_ROWS) == needed(10_000_000) == needed(100_000_000) < 2e9


@pytest.mark.skipif(not os.path.exists("/proc/meminfo"), reason="MemAvailable is Linux's")
def test_available_memory_is_at_most_the_physical_memory():
    memory = write.available_memory()
    assert 0 < memory <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
