"""The generator: deterministic by seed, exact size, consistent ground truth, realistic envelopes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from trace_support import small_trace

from dedup.errors import ConfigurationError
from dedup.keys import NoKey, auto, key_strategy
from dedup.traces import (
    DEFAULT_START_S,
    Duplicates,
    TraceConfig,
    cache_path,
    generate,
    logical_events,
)
from dedup.traces.generate import FRAME_COLUMNS


def test_same_seed_gives_the_same_trace_and_envelopes():
    a = generate(n_events=2000, seed=7, source="mixed", cache=False)
    b = generate(n_events=2000, seed=7, source="mixed", cache=False)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert list(a.envelopes()) == list(b.envelopes())


def test_another_seed_gives_another_trace():
    a, b = small_trace(seed=1), small_trace(seed=2)
    assert not a.frame["arrival_ms"].equals(b.frame["arrival_ms"])
    assert a.envelope(0)["id"] != b.envelope(0)["id"]


@pytest.mark.parametrize("source", ["genesys", "nice", "mixed"])
@pytest.mark.parametrize("n", [0, 1, 999])
def test_trace_has_exactly_the_requested_messages_in_arrival_order(source, n):
    trace = generate(n_events=n, source=source, seed=3, cache=False)
    assert len(trace) == n
    assert list(trace.frame.columns) == list(FRAME_COLUMNS)
    assert (np.diff(trace.arrival_ms) >= 0).all()
    assert trace.arrival_ms.dtype == np.int64


@pytest.mark.parametrize("source", ["genesys", "nice", "mixed"])
def test_every_logical_event_has_one_original_arriving_first(source):
    f = small_trace(source).frame
    originals = f[f["kind"] == "original"]
    assert originals["logical_id"].is_unique
    assert set(originals["logical_id"]) == set(f["logical_id"])
    first_row = f.groupby("logical_id").head(1)
    assert (first_row["kind"] == "original").all()
    # Logical ids number the events by their original's arrival.
    assert list(originals["logical_id"]) == list(range(len(originals)))
    original_arrival = originals.set_index("logical_id")["arrival_ms"]
    assert (f["original_arrival_ms"].to_numpy() == original_arrival[f["logical_id"]].to_numpy()).all()


def test_copies_are_made_the_way_their_kind_says():
    trace = small_trace("mixed", seed=5, n_events=20_000)
    f = trace.frame
    envelopes = list(trace.envelopes())
    original_row = {lid: i for i, (lid, k) in enumerate(zip(f["logical_id"], f["kind"], strict=True))
                    if k == "original"}
    delay_s = (f["arrival_ms"] - f["original_arrival_ms"]) / 1000
    first_with_id: dict[str, int] = {}
    for i, envelope in enumerate(envelopes):
        first_with_id.setdefault(envelope["id"], i)
    counts = f["kind"].value_counts()
    assert all(counts[k] > 0 for k in ("delivery", "publish", "late"))
    for i in np.flatnonzero(f["kind"] != "original"):
        copy, original = envelopes[i], envelopes[original_row[f["logical_id"][i]]]
        assert copy["detail"] == original["detail"]
        kind = f["kind"][i]
        if kind == "publish":  # a producer retry: new envelope id and time
            assert copy["id"] != original["id"]
            assert copy["time"] >= original["time"]
            assert 0 < delay_s[i] < 120
        elif kind == "delivery":  # an SQS redelivery of an earlier envelope, after the visibility timeout
            earlier = first_with_id[copy["id"]]
            assert earlier < i and envelopes[earlier] == copy
            assert f["logical_id"][earlier] == f["logical_id"][i]
            assert delay_s[i] >= 30
        else:
            assert 60 <= delay_s[i] <= 86_400 + 60


@pytest.mark.parametrize("source", ["genesys", "nice", "mixed"])
def test_auto_keys_copies_alike_and_distinct_events_apart(source):
    trace = small_trace(source, seed=11, n_events=10_000)
    (keys,) = trace.keys(auto())
    f = trace.frame
    keyed = keys.codes >= 0
    per_event = pd.Series(keys.codes[keyed]).groupby(f["logical_id"].to_numpy()[keyed]).nunique()
    assert (per_event == 1).all()  # every copy of an event has its event's key
    firsts = keyed & (f["kind"] == "original").to_numpy()
    assert pd.Series(keys.codes[firsts]).is_unique  # no two events share a key
    assert keyed.all(), sorted(set(f["event"][~keyed]))  # presence keys on modifiedDate


def test_genesys_envelopes_look_like_the_partner_integration():
    trace = small_trace("genesys", seed=4)
    seen = {}
    for envelope in trace.envelopes():
        seen.setdefault(envelope["detail-type"], envelope)
    for detail_type, envelope in seen.items():
        assert envelope["source"].startswith("aws.partner/genesys.com/cloud/")
        detail = envelope["detail"]
        assert set(detail) == {"topicName", "version", "eventBody", "metadata", "timestamp"}
        assert "{id}" not in detail["topicName"] and "CorrelationId" in detail["metadata"]
        body = detail["eventBody"]
        if detail_type.startswith("v2.detail.events.conversation."):
            assert isinstance(body["eventTime"], int)
            assert detail["topicName"] == detail_type.replace("{id}", body["conversationId"])
        elif detail_type.startswith("v2.audits."):
            assert isinstance(body["eventTime"], str) and body["eventTime"].endswith("Z")
        elif detail_type.endswith(".transcription"):
            assert body["transcripts"][0]["utteranceId"]
    assert "v2.conversations.{id}.transcription" in seen
    assert "v2.detail.events.conversation.{id}.attributes" in seen
    assert "v2.users.{id}.presence" in seen


def test_nice_envelopes_come_through_a_custom_bridge_source():
    for envelope in small_trace("nice", seed=4, n_events=500).envelopes():
        assert "nice" in envelope["source"]
        detail = envelope["detail"]
        assert detail["eventType"] == envelope["detail-type"]
        assert detail["payload"]["ContactID"] == detail["payload"]["MasterID"]
        assert detail["createdAt"].endswith("Z")
        if detail["payload"]["mediaType"] == "Chat":
            assert detail["payload"]["interactionId"]


def test_state_updates_of_one_conversation_are_distinct_events():
    f = small_trace("genesys", seed=6, n_events=10_000).frame
    updates = f[(f["event"] == "v2.detail.events.conversation.{id}.attributes") & (f["kind"] == "original")]
    repeated = updates.groupby("participant")["event_time_ms"].agg(["count", "nunique"])
    assert (repeated["count"] > 1).any()  # one participant updated several times...
    assert (repeated["count"] == repeated["nunique"]).all()  # ...each at its own eventTime


def test_arrivals_follow_the_daily_profile():
    f = generate(n_events=120_000, seed=2, cache=False).frame
    hour = ((f["arrival_ms"] // 3_600_000) % 24).to_numpy()
    busy, night = np.isin(hour, [10, 14]).sum(), np.isin(hour, [2, 3]).sum()
    assert busy > 10 * night > 0


def test_duplicate_rates_follow_their_parameters():
    none = generate(n_events=5000, cache=False, duplicates=Duplicates(delivery_p=0, publish_p=0, late_p=0))
    assert (none.frame["kind"] == "original").all()
    many = generate(n_events=20_000, cache=False, duplicates=Duplicates(delivery_p=0.1, publish_p=0.05))
    share = many.frame["kind"].value_counts(normalize=True)
    assert 0.07 < share["delivery"] < 0.13
    assert 0.03 < share["publish"] < 0.07


def test_bad_configuration_is_rejected_with_the_field_named():
    with pytest.raises(ConfigurationError, match="n_events"):
        TraceConfig(n_events=-1)
    with pytest.raises(ConfigurationError, match="source"):
        TraceConfig(source="avaya")
    with pytest.raises(ConfigurationError, match="delivery_p"):
        Duplicates(delivery_p=1.5)
    with pytest.raises(ConfigurationError, match="late_max_s"):
        Duplicates(late_min_s=100, late_max_s=10)


@pytest.mark.parametrize("source", ["genesys", "nice", "mixed"])
def test_logical_events_are_distinct_keyable_envelopes(source):
    events = logical_events(3000, source=source, seed=9)
    assert len(events) == 3000
    assert events == logical_events(3000, source=source, seed=9)
    assert len({e["id"] for e in events}) == 3000
    strategy = auto()
    assert len({strategy.key_for(e) for e in events}) == 3000
    for e in events[:50]:
        assert {"version", "id", "source", "detail-type", "time", "region", "resources"} <= set(e)
        assert isinstance(e["detail"], dict)


def test_logical_events_start_at_the_given_time():
    events = logical_events(20, start_s=1_800_000_000.0)
    assert events[0]["time"] >= "2027-01-15T08:00:00Z"  # 1_800_000_000 s
    default = logical_events(1)
    assert default[0]["time"] >= pd.Timestamp(DEFAULT_START_S, unit="s").strftime("%Y-%m-%dT%H:%M:%SZ")


def test_large_traces_are_cached_and_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv("DEDUP_TRACE_CACHE", str(tmp_path))
    config = TraceConfig(n_events=3000, seed=8)
    first = generate(config, cache=True)
    assert cache_path(config).exists() and cache_path(config).parent == tmp_path
    again = generate(config, cache=True)
    pd.testing.assert_frame_equal(first.frame, again.frame)


def test_derived_keys_are_the_strategies_own_keys_for_every_message():
    trace = small_trace("mixed", seed=12, n_events=3000)
    strategies = ["auto", "envelope-id", "business:detail.eventBody.conversationId"]
    derived = trace.keys(*strategies)
    for envelope_no, envelope in enumerate(trace.envelopes()):
        for spec, keys in zip(strategies, derived, strict=True):
            try:
                expected = key_strategy(spec).key_for(envelope)
            except NoKey:
                expected = None
            assert keys.key(envelope_no) == expected
    coarse = derived[2]  # audits, presence and NICE events have no conversationId
    assert sum(coarse.unkeyed_reasons.values()) == coarse.unkeyed > 0
