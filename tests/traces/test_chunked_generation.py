"""The generator in epochs: one trace in arrival order across chunks, the statistics of one epoch, bounded."""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dedup.traces import TraceConfig, generate
from dedup.traces.catalogue import EVENT_NAMES, Event
from dedup.traces.generate import generate_chunks, generate_frame

N = 40_000
EPOCH = 2_000  # rows an epoch aims at here: a trace of N is about 20 epochs
CONFIG = TraceConfig(n_events=N, source="mixed", seed=21)
# The module (the package's ``generate`` is the function).
generate_module = importlib.import_module("dedup.traces.generate")
CONTENT = ["event", "entity", "participant", "item", "event_time_ms"]


@pytest.fixture(scope="module")
def epochs():
    """The chunks of CONFIG drawn in small epochs."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(generate_module, "EPOCH_ROWS", EPOCH)
        return list(generate_chunks(CONFIG))


@pytest.fixture(scope="module")
def whole():
    """CONFIG drawn as one epoch (the default epoch holds all of it)."""
    assert N * generate_module._MARGIN < generate_module.EPOCH_ROWS
    return generate_frame(CONFIG)


def test_chunks_make_one_trace_in_arrival_order_with_the_requested_size(epochs):
    frame = pd.concat(epochs, ignore_index=True)
    assert len(epochs) > 10
    assert len(frame) == N
    assert (np.diff(frame["arrival_ms"].to_numpy()) >= 0).all()


def test_logical_ids_are_unique_across_chunks_and_number_events_by_their_originals_arrival(epochs):
    frame = pd.concat(epochs, ignore_index=True)
    originals = frame[frame["kind"] == "original"]
    assert list(originals["logical_id"]) == list(range(len(originals)))
    assert set(frame["logical_id"]) == set(originals["logical_id"])
    first = frame.groupby("logical_id").head(1)
    assert (first["kind"] == "original").all()
    by_id = originals.set_index("logical_id")["arrival_ms"]
    assert (frame["original_arrival_ms"].to_numpy() == by_id[frame["logical_id"]].to_numpy()).all()


def test_one_logical_event_is_one_content_across_epochs(epochs):
    """Ids go on from epoch to epoch: no two events of different epochs render as one."""
    frame = pd.concat(epochs, ignore_index=True)
    content = frame[CONTENT].astype({"event": str})
    assert content.assign(logical_id=frame["logical_id"]).drop_duplicates().groupby(CONTENT).size().max() == 1
    assert frame.groupby("logical_id")[CONTENT].nunique().max().max() == 1
    starts = frame[(frame["event"] == EVENT_NAMES[Event.CUSTOMER_START]) & (frame["kind"] == "original")]
    assert starts["entity"].is_unique  # a conversation number is never drawn twice


def test_same_config_gives_the_same_chunks_and_another_seed_other_ones(epochs, monkeypatch):
    monkeypatch.setattr(generate_module, "EPOCH_ROWS", EPOCH)
    again = list(generate_chunks(CONFIG))
    assert len(again) == len(epochs)
    for a, b in zip(again, epochs, strict=True):
        pd.testing.assert_frame_equal(a, b)
    other = next(generate_chunks(CONFIG.replace(seed=22)))
    assert not other["arrival_ms"].equals(epochs[0]["arrival_ms"][:len(other)])


def test_generate_frame_is_the_chunks_concatenated(epochs, monkeypatch):
    monkeypatch.setattr(generate_module, "EPOCH_ROWS", EPOCH)
    pd.testing.assert_frame_equal(generate_frame(CONFIG), pd.concat(epochs, ignore_index=True))
    assert generate(CONFIG, cache=False).frame.equals(generate_frame(CONFIG))


def _poisson_close(a: int, b: int) -> bool:
    """Two independent Poisson counts agree within 5 standard deviations of their difference."""
    return abs(a - b) <= 5 * np.sqrt(a + b)


def _binomial_close(k1: int, n1: int, k2: int, n2: int) -> bool:
    """Two shares agree within 5 standard deviations of their difference (pooled binomial)."""
    p = (k1 + k2) / (n1 + n2)
    return abs(k1 / n1 - k2 / n2) <= 5 * np.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))


def test_small_epochs_have_the_statistics_of_one_epoch(epochs, whole):
    """Duplicate kinds, sources and the rates of independent activity agree within their sampling error."""
    chunked = pd.concat(epochs, ignore_index=True)
    assert len(whole) == len(chunked)
    for kind in ("original", "publish", "delivery"):
        assert _binomial_close(int((chunked["kind"] == kind).sum()), N, int((whole["kind"] == kind).sum()), N)
    # Counted up to the arrival both traces reach: streams drawn as Poisson processes, and the platform
    # share of the conversations and contacts that start (each a NICE contact with the same chance).
    cutoff = min(chunked["arrival_ms"].iloc[-1], whole["arrival_ms"].iloc[-1])
    counts = []
    for frame in (chunked, whole):
        first = frame[(frame["kind"] == "original") & (frame["arrival_ms"] <= cutoff)]
        counts.append(first["event"].astype(str).value_counts())
    starts = {"genesys": EVENT_NAMES[Event.CUSTOMER_START], "nice": EVENT_NAMES[Event.CONTACT_CREATED]}
    for event in (Event.CUSTOMER_START, Event.CONTACT_CREATED, Event.AUDIT, Event.PRESENCE,
                  Event.QUEUE_OBSERVATIONS):
        a, b = counts[0][EVENT_NAMES[event]], counts[1][EVENT_NAMES[event]]
        assert a > 100 and _poisson_close(a, b), event.name
    nice, started = ([int(c[starts["nice"]]) for c in counts],
                     [int(c[starts["genesys"]] + c[starts["nice"]]) for c in counts])
    assert _binomial_close(nice[0], started[0], nice[1], started[1])


def test_what_is_held_at_once_is_bounded_by_the_epoch_not_the_trace(monkeypatch):
    """Chunks, the events of an epoch and the messages it carries over stay a few epochs' worth."""
    monkeypatch.setattr(generate_module, "EPOCH_ROWS", EPOCH)
    held: list[tuple[str, int]] = []
    distinct, number = generate_module._distinct_times, generate_module._number

    def distinct_times(events, time_ms):
        held.append(("events", len(events)))
        return distinct(events, time_ms)

    def numbered(chunk, pending, next_id):
        held.append(("chunk", len(chunk)))
        held.append(("pending", len(pending)))
        return number(chunk, pending, next_id)

    monkeypatch.setattr(generate_module, "_distinct_times", distinct_times)
    monkeypatch.setattr(generate_module, "_number", numbered)
    n = 50 * EPOCH
    assert sum(len(c) for c in generate_chunks(CONFIG.replace(n_events=n))) == n
    assert {what for what, _ in held} == {"events", "chunk", "pending"}
    assert max(size for _, size in held) <= 2 * EPOCH


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-50, 50), max_size=40), st.booleans())
def test_the_dense_argsort_orders_integers_as_argsort(values, distinct):
    """Scattered positions give argsort's order of distinct values; ties and sparse ranges take argsort."""
    values = np.array(sorted(set(values), key=values.index) if distinct else values, dtype=np.int64)
    order = generate_module._argsort_dense(values)
    assert np.array_equal(values[order], np.sort(values))
    if len(set(values.tolist())) == len(values):  # the order of distinct values is the one sorted order
        assert np.array_equal(order, np.argsort(values))
