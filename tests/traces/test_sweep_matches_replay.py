"""The sweep's closed-form metrics equal a replay through the real Deduplicator, row for row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trace_support import KEYS, small_trace

from dedup.analysis import OUTCOMES, outcomes, replay, sweep
from dedup.clock import ManualClock
from dedup.stores.memory import MemoryStore
from dedup.traces import KINDS, Trace

# Around the duplicate delays: publish retries (~1 s), SQS redelivery (30-36 s), late copies.
WINDOWS_S = [0.001, 1.0, 2.5, 30.0, 33.3, 300.0, 7200.0, 172_800.0]


@pytest.mark.parametrize("mode", ["fixed", "sliding"])
@pytest.mark.parametrize("key", list(KEYS.values()), ids=list(KEYS))
@pytest.mark.parametrize(("source", "seed"), [("genesys", 1), ("mixed", 2), ("nice", 3)])
def test_sweep_equals_replay_on_every_window(source, seed, key, mode):
    trace = small_trace(source, seed, n_events=2500)
    swept = sweep(trace, key, WINDOWS_S, mode)
    for row, window_s in zip(swept.to_dict("records"), WINDOWS_S, strict=True):
        replayed = replay(trace, key, window_s, mode)
        assert row == replayed.metrics
        assert (outcomes(trace, key, window_s, mode) == replayed.outcomes).all()


def test_a_coarse_key_exercises_every_outcome_class():
    # The conversationId key at a middling window catches, leaks and falsely drops at once,
    # so the equality above covers every branch of the classification.
    row = sweep(small_trace("genesys", 1, n_events=2500), KEYS["conversationId"], [30.0]).iloc[0]
    assert row["caught"] > 0 and row["leaked"] > 0 and row["false_drops"] > 0 and row["unkeyed"] > 0


def test_replay_accepts_a_store_on_a_manual_clock_and_refuses_other_clocks():
    trace = small_trace("genesys", 1, n_events=500)
    store = MemoryStore(clock=ManualClock(trace.arrival_ms[0] / 1000 - 10))
    assert replay(trace, "auto", 60, store=store).metrics == replay(trace, "auto", 60).metrics
    with pytest.raises(ValueError, match="ManualClock"):
        replay(trace, "auto", 60, store=MemoryStore())


# ---- property: arbitrary tiny traces with ties, collisions and unkeyed messages -------------


@st.composite
def tiny_traces(draw):
    n = draw(st.integers(1, 30))
    gaps = draw(st.lists(st.sampled_from([0, 1, 2, 3, 5, 8, 13, 40]), min_size=n, max_size=n))
    arrival = 1_700_000_000_000 + np.cumsum(gaps)
    logical = draw(st.lists(st.integers(0, 8), min_size=n, max_size=n))
    key_of = draw(st.lists(st.sampled_from(["a", "b", "c", None]), min_size=9, max_size=9))
    envelopes, kinds, seen, original_at = [], [], set(), {}
    for i, lid in enumerate(logical):
        detail = {"n": lid} if key_of[lid] is None else {"k": key_of[lid], "n": lid}
        envelopes.append({"id": f"e{i}", "source": "test", "detail-type": "t", "detail": detail})
        kinds.append("delivery" if lid in seen else "original")
        original_at.setdefault(lid, int(arrival[i]))
        seen.add(lid)
    frame = pd.DataFrame({
        "arrival_ms": arrival.astype(np.int64),
        "logical_id": logical,
        "kind": pd.Categorical(kinds, categories=KINDS),
        "original_arrival_ms": [original_at[lid] for lid in logical],
    })
    return Trace(frame, envelopes=envelopes)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trace=tiny_traces(), window_ms=st.sampled_from([1, 2, 3, 4, 5, 8, 10, 21, 60]),
       mode=st.sampled_from(["fixed", "sliding"]))
def test_sweep_equals_replay_on_any_tiny_trace(trace, window_ms, mode):
    key = "business:detail.k"
    window_s = window_ms / 1000
    replayed = replay(trace, key, window_s, mode)
    assert sweep(trace, key, [window_s], mode).iloc[0].to_dict() == replayed.metrics
    assert OUTCOMES[int(replayed.outcomes.max())] != "other"


def test_the_head_of_a_trace_is_a_trace_with_consistent_truth():
    trace = small_trace("mixed", 2, n_events=2500)
    head = trace.head(700)
    assert len(head) == 700 and list(head.envelopes()) == list(trace.envelopes(0, 700))
    replayed = replay(head, "auto", 30.0)
    assert sweep(head, "auto", [30.0]).iloc[0].to_dict() == replayed.metrics
    names = replayed.outcome_names()
    assert (names == "processed").sum() == replayed.metrics["processed"]
