"""The columnar sweep's compiled paths against a plain model: a dict of records, one message at a time."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dedup.analysis import DUPLICATE, MISSING_KEY, PROCESSED
from dedup.columnar import ColumnarSweep, KeyColumns, kernels
from dedup.columnar.derive import number_keys
from dedup.columnar.repeats import repeat_summary


def model(t: list[int], codes: list[int], logical: list[int], kind: list[int], window_ms: int, mode: str
          ) -> tuple[dict[str, Any], list[int]]:
    """What a store does with these messages: a record per key, expiring a window after it was written.

    Fixed: only a processed message writes its key's record. Sliding: every
    sighting rewrites it. A record is gone once a message arrives at or after
    its expiry; live keys are counted after each message.
    """
    expiry: dict[int, int] = {}
    outcomes, lives = [], []
    processed_events: set[int] = set()
    caught = leaked = false_drops = 0
    for ti, code, event in zip(t, codes, logical, strict=True):
        expiry = {k: e for k, e in expiry.items() if e > ti}
        if code < 0:
            outcomes.append(MISSING_KEY)
        elif code in expiry:
            outcomes.append(DUPLICATE)
            if mode == "sliding":
                expiry[code] = ti + window_ms
            if event in processed_events:
                caught += 1
            else:
                false_drops += 1
        else:
            outcomes.append(PROCESSED)
            expiry[code] = ti + window_ms
            if event in processed_events:
                leaked += 1
            processed_events.add(event)
        lives.append(len(expiry))
    n = len(t)
    duplicates = sum(k != 0 for k in kind)
    keyed_duplicates = sum(k != 0 and c >= 0 for k, c in zip(kind, codes, strict=True))
    return {
        "messages": n, "unkeyed": outcomes.count(MISSING_KEY), "processed": outcomes.count(PROCESSED),
        "suppressed": outcomes.count(DUPLICATE), "duplicates": duplicates,
        "keyed_duplicates": keyed_duplicates, "caught": caught, "leaked": leaked, "false_drops": false_drops,
        "peak_live_keys": max(lives, default=0), "mean_live_keys": sum(lives) / n if n else 0.0,
    }, outcomes


@st.composite
def dumps(draw: st.DrawFn) -> dict[str, list[int]]:
    n = draw(st.integers(0, 80))
    steps = draw(st.lists(st.sampled_from([0, 0, 1, 2, 3, 7, 40]), min_size=n, max_size=n))
    return {
        "t": list(np.cumsum(steps) + 1_700_000_000_000),
        "codes": draw(st.lists(st.integers(-1, 6), min_size=n, max_size=n)),
        "logical": draw(st.lists(st.integers(0, 9), min_size=n, max_size=n)),
        "kind": draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)),
    }


@settings(max_examples=300, deadline=None)
@given(dump=dumps(), window_ms=st.sampled_from([1, 2, 3, 5, 8, 20, 100, 10_000]),
       mode=st.sampled_from(["fixed", "sliding"]), chunks=st.integers(1, 5))
def test_every_window_counts_what_a_store_replaying_the_messages_would(dump, window_ms, mode, chunks):
    columns = KeyColumns("k", np.array(dump["t"], np.int64), np.array(dump["codes"], np.int64), {},
                         np.array(dump["logical"], np.int64), np.array(dump["kind"], np.int8))
    expected, outcomes = model(dump["t"], dump["codes"], dump["logical"], dump["kind"], window_ms, mode)
    sweep = ColumnarSweep(columns)
    row = sweep.metrics(window_ms / 1000, mode, chunks=chunks)
    assert {k: row[k] for k in expected} == expected
    assert sweep.outcomes(window_ms / 1000, mode).tolist() == outcomes
    counts_only = sweep.metrics(window_ms / 1000, mode, live=False)
    assert counts_only["peak_live_keys"] is None
    assert {k: counts_only[k] for k in expected if "live" not in k} == {
        k: v for k, v in expected.items() if "live" not in k}


@settings(max_examples=50, deadline=None)
@given(dump=dumps(), mode=st.sampled_from(["fixed", "sliding"]), workers=st.integers(1, 3))
def test_a_sweep_on_threads_gives_each_window_its_own_row_in_order(dump, mode, workers):
    columns = KeyColumns("k", np.array(dump["t"], np.int64), np.array(dump["codes"], np.int64))
    sweep = ColumnarSweep(columns, workers=workers)
    windows_s = [0.003, 0.001, 0.1, 0.02]
    frame = sweep.sweep(windows_s, mode)
    assert frame["window_s"].tolist() == windows_s
    for row, window_s in zip(frame.to_dict("records"), windows_s, strict=True):
        assert row == sweep.metrics(window_s, mode, chunks=1)


@settings(max_examples=100, deadline=None)
@given(dump=dumps(), window_ms=st.sampled_from([1, 3, 20, 10_000]),
       mode=st.sampled_from(["fixed", "sliding"]), buffer_rows=st.integers(1, 6),
       bounds=st.lists(st.floats(0, 1), max_size=3))
def test_live_keys_are_the_same_when_the_deadline_buffer_must_move_and_grow(dump, window_ms, mode,
                                                                           buffer_rows, bounds):
    columns = KeyColumns("k", np.array(dump["t"], np.int64), np.array(dump["codes"], np.int64))
    sweep = ColumnarSweep(columns)
    flags = kernels.duplicates(sweep.t_m, sweep.first_m, sweep.pos_m, window_ms, mode == "sliding")
    cuts = sorted({0, sweep.n, *(int(b * sweep.n) for b in bounds)})
    for lo, hi in itertools.pairwise(cuts):
        args = (sweep.t, sweep.keyed, sweep.rows_r, flags, window_ms, lo, hi)
        assert kernels.live_keys(*args, buffer_rows) == kernels.live_keys(*args)


@settings(max_examples=200, deadline=None)
@given(pairs=st.lists(st.tuples(st.integers(-1, 4), st.integers(0, 2)), max_size=40))
def test_key_codes_are_equal_exactly_when_both_digest_halves_are(pairs):
    hi = np.array([h for h, _ in pairs], np.int64)
    lo = np.array([lo if h >= 0 else -1 for h, lo in pairs], np.int64)
    codes = number_keys(hi, lo)
    assert ((codes < 0) == (hi < 0)).all()
    for i, j in itertools.combinations(range(len(pairs)), 2):
        if hi[i] >= 0 and hi[j] >= 0:
            assert (codes[i] == codes[j]) == (hi[i] == hi[j] and lo[i] == lo[j])


@settings(max_examples=200, deadline=None)
@given(dump=dumps())
def test_the_repeat_summary_counts_keys_and_gaps_as_a_walk_through_the_messages_does(dump):
    last: dict[int, int] = {}
    seen_again: set[int] = set()
    gaps_s = []
    for ti, code in zip(dump["t"], dump["codes"], strict=True):
        if code < 0:
            continue
        if code in last:
            gaps_s.append((ti - last[code]) / 1000.0)
            seen_again.add(code)
        last[code] = ti
    row = repeat_summary(KeyColumns("k", np.array(dump["t"], np.int64), np.array(dump["codes"], np.int64)))
    n = len(dump["t"])
    assert (row["messages"], row["distinct_keys"], row["repeated_keys"], row["repeats"]) == (
        n, len(last), len(seen_again), len(gaps_s))
    if gaps_s:
        assert row["gap_p50_s"] == np.quantile(gaps_s, 0.5) and row["gap_max_s"] == max(gaps_s)
    else:
        assert np.isnan(row["gap_max_s"])
