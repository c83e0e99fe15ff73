"""The Deduplicator lifecycle, on every store: nothing lost, nothing processed twice."""

from __future__ import annotations

import copy
import logging

import pytest
from samples import load_event

from dedup import Deduplicator, Outcome
from dedup.errors import ConfigurationError, MissingKeyError, PayloadMismatchError
from dedup.keys import BusinessKey


class Boom(RuntimeError):
    pass


class Recorder:
    """A handler that records the events it processed and can be told to fail."""

    def __init__(self, fail_times: int = 0):
        self.seen: list[dict] = []
        self.fail_times = fail_times

    def __call__(self, event):
        if self.fail_times > 0:
            self.fail_times -= 1
            raise Boom("downstream unavailable")
        self.seen.append(event)
        return len(self.seen)


@pytest.fixture
def start():
    return load_event("envelope_genesys_customer_start.json")


@pytest.fixture
def dedup(make_store, clock):
    return Deduplicator(make_store(clock), window_s=300, lease_s=30)


def test_a_new_event_is_processed_and_its_duplicate_is_skipped(dedup, start):
    handler = Recorder()
    assert dedup.process(start, handler).outcome is Outcome.PROCESSED
    assert dedup.process(copy.deepcopy(start), handler).outcome is Outcome.DUPLICATE
    assert len(handler.seen) == 1


def test_a_republished_event_is_caught_by_the_default_key(dedup, start):
    handler = Recorder()
    dedup.process(start, handler)
    republished = load_event("envelope_genesys_customer_start_republished.json")
    assert dedup.process(republished, handler).outcome is Outcome.DUPLICATE
    assert len(handler.seen) == 1


def test_when_handler_fails_then_event_is_retried(dedup, start):
    handler = Recorder(fail_times=1)
    with pytest.raises(Boom):
        dedup.process(start, handler)
    result = dedup.process(start, handler)
    assert result.outcome is Outcome.PROCESSED
    assert handler.seen == [start]


def test_mark_first_lifecycle_loses_the_event_when_the_handler_fails(make_store, clock, start):
    """The tutorial's defect, reproduced on purpose: the redelivery is taken for a duplicate."""
    naive = Deduplicator(make_store(clock), window_s=300, lease_s=30, lifecycle="mark_first")
    handler = Recorder(fail_times=1)
    with pytest.raises(Boom):
        naive.process(start, handler)
    assert naive.process(start, handler).outcome is Outcome.DUPLICATE
    assert handler.seen == []


def test_a_duplicate_after_the_window_is_processed_again(dedup, clock, start):
    handler = Recorder()
    dedup.process(start, handler)
    clock.advance(300)
    assert dedup.process(start, handler).outcome is Outcome.PROCESSED
    assert len(handler.seen) == 2


def test_a_batch_claims_once_and_reports_each_event(dedup, start):
    handler = Recorder(fail_times=0)
    end = load_event("envelope_genesys_customer_end.json")
    events = [start, copy.deepcopy(start), end, {"source": "x", "detail": "not an object"}]
    results = dedup.process_batch(events, handler, message_ids=["m1", "m2", "m3", "m4"])
    assert [r.outcome for r in results] == [
        Outcome.PROCESSED, Outcome.DUPLICATE, Outcome.PROCESSED, Outcome.MISSING_KEY
    ]
    assert [r.outcome.acknowledge for r in results] == [True, True, True, False]
    assert isinstance(results[3].error, MissingKeyError)
    assert results[3].error.message_id == "m4"
    assert dedup.stats.processed == 2 and dedup.stats.duplicates == 1 and dedup.stats.missing_key == 1


def test_a_failed_event_in_a_batch_is_released_and_its_copy_in_the_same_batch_is_not_acknowledged(
    dedup, start
):
    handler = Recorder(fail_times=1)
    results = dedup.process_batch([start, copy.deepcopy(start)], handler)
    assert [r.outcome for r in results] == [Outcome.FAILED, Outcome.IN_FLIGHT]
    assert not any(r.outcome.acknowledge for r in results)
    assert dedup.process(start, handler).outcome is Outcome.PROCESSED


def test_another_consumer_holding_the_lease_means_in_flight(make_store, clock, start):
    store = make_store(clock)
    other = Deduplicator(store, window_s=300, lease_s=30)
    ours = Deduplicator(store, window_s=300, lease_s=30)

    def slow_handler(event):
        # While the other consumer is inside its handler, our copy is in flight.
        assert ours.process(event, Recorder()).outcome is Outcome.IN_FLIGHT
        return "done"

    assert other.process(start, slow_handler).value == "done"
    assert ours.process(start, Recorder()).outcome is Outcome.DUPLICATE


def test_missing_key_passes_through_with_a_warning_when_told_to(make_store, clock, caplog):
    dedup = Deduplicator(make_store(clock), key="envelope-id", on_missing_key="pass")
    handler = Recorder()
    with caplog.at_level(logging.WARNING, logger="dedup"):
        result = dedup.process({"detail": {}}, handler)
    assert result.outcome is Outcome.PROCESSED and handler.seen == [{"detail": {}}]
    assert "without dedup" in caplog.text
    assert dedup.stats.passed_without_key == 1


def test_missing_key_raises_by_default(make_store, clock):
    dedup = Deduplicator(make_store(clock), key="envelope-id")
    with pytest.raises(MissingKeyError, match="msg-9"):
        dedup.process({"detail": {}}, Recorder(), message_id="msg-9")


def test_payload_validation_exposes_a_key_that_is_too_coarse(make_store, clock, start):
    coarse = BusinessKey(["detail.eventBody.conversationId"])
    dedup = Deduplicator(make_store(clock), key=coarse, validate_payload=True)
    handler = Recorder()
    dedup.process(start, handler)
    assert dedup.process(copy.deepcopy(start), handler).outcome is Outcome.DUPLICATE
    end = load_event("envelope_genesys_customer_end.json")
    with pytest.raises(PayloadMismatchError) as info:
        dedup.process(end, handler, message_id="m-end")
    assert info.value.message_id == "m-end"
    assert dedup.stats.payload_mismatches == 1


def test_sliding_mode_keeps_suppressing_a_steady_stream_of_copies(make_store, clock, start):
    fixed = Deduplicator(make_store(clock), window_s=60, mode="fixed")
    sliding = Deduplicator(make_store(clock), window_s=60, mode="sliding")
    outcomes = {"fixed": [], "sliding": []}
    for _ in range(4):
        for name, dedup in (("fixed", fixed), ("sliding", sliding)):
            outcomes[name].append(dedup.process(start, Recorder()).outcome)
        clock.advance(40)
    assert outcomes["sliding"] == [Outcome.PROCESSED] + [Outcome.DUPLICATE] * 3
    assert outcomes["fixed"] == [Outcome.PROCESSED, Outcome.DUPLICATE, Outcome.PROCESSED, Outcome.DUPLICATE]


@pytest.mark.parametrize(
    "kwargs",
    [{"mode": "tumbling"}, {"window_s": 0}, {"lease_s": -1}, {"lifecycle": "x"}, {"key": "nope"},
     {"on_store_down": "ignore"}],
)
def test_bad_settings_are_configuration_errors(make_store, clock, kwargs):
    with pytest.raises(ConfigurationError):
        Deduplicator(make_store(clock), **kwargs)


def test_an_event_nested_too_deeply_to_key_is_a_missing_key_not_a_crash(make_store, clock):
    deep: dict = {}
    node = deep
    for _ in range(5_000):
        node["x"] = {}
        node = node["x"]
    event = {"source": "com.example", "detail-type": "Deep", "detail": deep}
    dedup = Deduplicator(make_store(clock), key="fingerprint", validate_payload=True)
    (result,) = dedup.process_batch([event], Recorder(), message_ids=["m-deep"])
    assert result.outcome is Outcome.MISSING_KEY
    assert "too deeply" in str(result.error) and "m-deep" in str(result.error)


def test_a_copy_in_the_same_batch_with_a_different_payload_is_a_mismatch(make_store, clock, start):
    coarse = BusinessKey(["detail.eventBody.conversationId"])
    dedup = Deduplicator(make_store(clock), key=coarse, validate_payload=True)
    end = load_event("envelope_genesys_customer_end.json")
    results = dedup.process_batch([start, end], Recorder())
    assert [r.outcome for r in results] == [Outcome.PROCESSED, Outcome.FAILED]
    assert isinstance(results[1].error, PayloadMismatchError)
