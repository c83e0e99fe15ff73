"""The columnar sweep gives today's numbers: analysis.sweep's at 1M events, and a Deduplicator replay's."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil

import numpy as np
import pytest

from dedup import analysis
from dedup.analysis import format_bytes
from dedup.columnar import ColumnarSweep, KeyColumns, analyze, cache_paths, cached_keys
from dedup.columnar import cache as cache_module
from dedup.columnar.write import BYTES_PER_EVENT, NotEnoughDiskError, write_trace
from dedup.traces import TraceConfig, generate
from dedup.traces.generate import generate_frame
from dedup.traces.render import PUBLISHES_PER_EVENT

WINDOWS_S = [0.001, 1.0, 2.5, 30.0, 33.3, 300.0, 3600.0, 7200.0, 86_400.0, 172_800.0, 1e7]


class _Codes:
    def __init__(self, codes: np.ndarray) -> None:
        self.codes = codes


class _Frame:
    """What analysis.SweepEngine reads of a trace, without rendering a million envelopes."""

    def __init__(self, frame) -> None:
        self.frame = frame
        self.arrival_ms = frame["arrival_ms"].to_numpy()
        self.has_truth = True


@pytest.mark.parametrize("codes_from", ["envelope", "event", "event, a tenth unkeyed"])
def test_on_a_million_events_every_window_equals_the_sweep_engine(codes_from):
    # Keys as codes the generator knows (the envelope-id partition, the event partition) stand in for
    # derived keys, so the test compares the two sweeps at full size in seconds; derivation is tested apart.
    frame = generate_frame(TraceConfig(n_events=1_000_000, source="mixed", seed=11))
    logical = frame["logical_id"].to_numpy().astype(np.int64)
    envelope = logical * PUBLISHES_PER_EVENT + frame["publish_no"].to_numpy()
    codes = envelope if codes_from == "envelope" else logical
    if "unkeyed" in codes_from:
        codes = np.where(logical % 10 == 3, -1, codes)
    columns = KeyColumns("k", frame["arrival_ms"].to_numpy(), codes, {}, logical,
                         frame["kind"].cat.codes.to_numpy())
    ours = ColumnarSweep(columns)
    engine = analysis.SweepEngine(_Frame(frame), _Codes(codes))
    for mode in ("fixed", "sliding"):
        for window_s in WINDOWS_S:
            row = ours.metrics(window_s, mode)
            assert {k: row[k] for k in engine.metrics(window_s, mode)} == engine.metrics(window_s, mode)
        assert (ours.outcomes(300.0, mode) == engine.outcomes(300.0, mode)).all()


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    config = TraceConfig(n_events=3000, source="mixed", seed=4)
    dump = write_trace(config, tmp_path_factory.mktemp("dump") / "trace.parquet", workers=1)
    return dump, generate(config, cache=False)


@pytest.mark.parametrize("key", ["auto", "envelope-id", "business:detail.eventBody.conversationId"])
@pytest.mark.parametrize("mode", ["fixed", "sliding"])
def test_a_dump_on_disk_sweeps_like_the_trace_in_memory_and_its_replay(written, key, mode):
    dump, trace = written
    result = analyze(dump, [key], windows=WINDOWS_S[:8], mode=mode)
    ours = result.sweeps.to_dict("records")
    assert ours == analysis.sweep(trace, key, WINDOWS_S[:8], mode).to_dict("records")
    for row in ours[1:7:2]:
        replayed = analysis.replay(trace, key, row["window_s"], mode)
        assert row == replayed.metrics
        engine = result.engines[key]
        assert (engine.outcomes(row["window_s"], mode) == replayed.outcomes).all()
    assert result.recommendations[key] == analysis.recommend(trace, key, mode=mode, windows=WINDOWS_S[:8])


def test_recommend_reuses_the_sweep_it_is_given(written, monkeypatch):
    dump, _ = written
    engine = ColumnarSweep(cached_keys(dump, "auto"))
    frame = engine.sweep(WINDOWS_S)
    swept: list[list[float]] = []
    original = engine.sweep
    monkeypatch.setattr(engine, "sweep", lambda ws, *a, **k: swept.append(list(ws)) or original(ws, *a, **k))
    rec = engine.recommend(windows=WINDOWS_S, frame=frame)
    assert rec.met
    grid = sorted(WINDOWS_S)
    # Only the finer windows between two grid points were swept, never the grid again.
    assert all(any(lo < min(ws) and max(ws) < hi for lo, hi in itertools.pairwise(grid)) for ws in swept)


def test_keys_are_cached_until_the_dump_or_the_strategy_changes(tmp_path, monkeypatch):
    config = TraceConfig(n_events=1500, source="genesys", seed=2)
    path = tmp_path / "t.jsonl.gz"
    write_trace(config, path, workers=1)
    first = cached_keys(path, "auto")
    data, meta = cache_paths(first_dump := cache_module.Dump.of(path), "auto")
    assert data.exists() and meta.exists() and data.parent == path.parent
    derived: list[str] = []
    real = cache_module.derive_keys
    monkeypatch.setattr(cache_module, "derive_keys", lambda d, s, **k: derived.append(s) or real(d, s, **k))
    again = cached_keys(path, "auto")
    assert derived == []
    assert (again.codes == first.codes).all() and (again.arrival_ms == first.arrival_ms).all()
    cached_keys(path, "envelope-id")
    assert derived == ["envelope-id"]
    write_trace(config.replace(seed=3), path, workers=1)  # the dump is rewritten
    changed = cached_keys(path, "auto")
    assert derived == ["envelope-id", "auto"]
    assert not np.array_equal(changed.arrival_ms, first.arrival_ms)
    assert cache_paths(first_dump, "auto") == (data, meta)


def test_when_the_disk_is_too_small_then_writing_says_so_and_writes_nothing(tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage._replace(free=10_000_000))
    needed = format_bytes(10_000_000 * BYTES_PER_EVENT["gzip"])
    message = rf"needs about {re.escape(needed)}, 10\.0 MB is free"
    with pytest.raises(NotEnoughDiskError, match=message) as error:
        write_trace(TraceConfig(n_events=10_000_000), tmp_path / "big.jsonl.gz")
    assert error.value.free == 10_000_000
    assert os.listdir(tmp_path) == []


def test_dedup_analyze_takes_the_columnar_path_for_a_parquet_dump(written, capsys):
    from dedup.cli import main

    dump, trace = written
    assert main(["analyze", str(dump.path), "--key", "auto", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["engine"] == "columnar" and report["messages"] == len(trace)
    by_mode = {w["mode"]: w for w in report["windows"]}
    for mode in ("fixed", "sliding"):
        assert by_mode[mode]["ground_truth"]
        assert by_mode[mode]["window_s"] == analysis.recommend(trace, "auto", mode=mode).window_s
