"""Exactly-once under time and failure: a batch keeps its leases alive, and says when one was lost.

Every test runs on every store (``make_store``: memory, fakeredis, a real
redis-server, a real cluster, DynamoDB over moto's HTTP server) with a
``ManualClock``: handlers "take time" by advancing it, and the lease keeper's
background beats run inline at the instants a real clock would fire them.
"""

from __future__ import annotations

import logging

import pytest

from dedup import Deduplicator, Outcome
from dedup.errors import LeaseLostError, StoreUnavailableError
from dedup.stores import ClaimStatus

LEASE_S = 3.0


def events(n: int, tag: str = "e") -> list[dict]:
    return [{"id": f"{tag}{i}", "source": "com.example", "detail-type": "T", "detail": {"n": i}}
            for i in range(n)]


class Ran:
    """A handler that records the events it ran and can take time on the clock first."""

    def __init__(self, clock=None, takes_s: float = 0.0, then=None):
        self.clock, self.takes_s, self.then = clock, takes_s, then
        self.ran: list[str] = []

    def __call__(self, event):
        if self.takes_s:
            self.clock.advance(self.takes_s)
        self.ran.append(event["id"])
        if self.then is not None:
            self.then(event)
        return event["id"]


@pytest.fixture
def store(make_store, clock):
    return make_store(clock)


def dedup(store, **kwargs) -> Deduplicator:
    return Deduplicator(store, key="envelope-id", window_s=300, lease_s=LEASE_S, **kwargs)


def test_a_batch_slower_than_the_lease_keeps_every_lease_until_its_event_completes(store, clock):
    """The issue's case: 10 handlers of 0.5 s with lease_s=3; a second consumer never gets a key in."""
    batch = events(10)
    first, second = dedup(store), dedup(store)
    other = Ran()
    seen: list[list[Outcome]] = []

    def watch(_event):  # after each handler: what a second consumer finds for the whole batch
        seen.append([r.outcome for r in second.process_batch(batch, other)])

    results = first.process_batch(batch, Ran(clock, takes_s=0.5, then=watch))

    assert [r.outcome for r in results] == [Outcome.PROCESSED] * 10
    assert all(r.error is None for r in results)
    assert other.ran == []  # the second consumer never ran any of them
    for outcomes in seen:  # each event is IN_FLIGHT until completed, then DUPLICATE
        assert set(outcomes) <= {Outcome.IN_FLIGHT, Outcome.DUPLICATE}
    assert seen[-1][-1] is Outcome.IN_FLIGHT  # 5 s after a 3 s claim: still held
    assert [r.outcome for r in second.process_batch(batch, other)] == [Outcome.DUPLICATE] * 10
    assert first.stats.lease_lost == 0 and first.stats.completion_failed == 0


def test_a_handler_slower_than_the_lease_keeps_its_lease_and_a_duplicate_copy_is_in_flight(store, clock):
    first, second = dedup(store), dedup(store)
    [event] = events(1)
    copies = Ran()

    def copy_arrives(_event):
        assert second.process(dict(event), copies).outcome is Outcome.IN_FLIGHT

    result = first.process(event, Ran(clock, takes_s=10 * LEASE_S, then=copy_arrives))
    assert result.outcome is Outcome.PROCESSED and result.error is None
    assert second.process(dict(event), copies).outcome is Outcome.DUPLICATE
    assert copies.ran == []


def test_when_the_lease_is_really_lost_the_processed_event_reports_lease_lost(store, clock, caplog):
    """Past deadline_s nothing keeps the lease: a copy is taken over, and the holder is told."""
    first, second = dedup(store), dedup(store)
    [event] = events(1)
    copies = Ran()

    def copy_is_taken_over(_event):
        assert second.process(dict(event), copies).outcome is Outcome.PROCESSED

    start_s = clock.now_s()
    with caplog.at_level(logging.ERROR, logger="dedup"):
        [result] = first.process_batch([event], Ran(clock, takes_s=2 * LEASE_S, then=copy_is_taken_over),
                                       message_ids=["m-1"], deadline_s=start_s + 1)
    assert result.outcome is Outcome.PROCESSED and result.outcome.acknowledge  # its effect happened
    assert isinstance(result.error, LeaseLostError) and result.error.key == result.key
    assert copies.ran == [event["id"]]  # the double the lost lease allowed, now reported
    assert first.stats.lease_lost == 1
    assert any("lease lost" in r.getMessage() and "m-1" in r.getMessage() for r in caplog.records
               if r.levelno == logging.ERROR)


def test_process_raises_lease_lost_when_the_lease_was_lost(store, clock):
    first, second = dedup(store), dedup(store)
    [event] = events(1)
    with pytest.raises(LeaseLostError):
        first.process(event, Ran(clock, takes_s=2 * LEASE_S, then=lambda e: second.process(dict(e), Ran())),
                      deadline_s=clock.now_s() + 1)


def test_deadline_s_bounds_the_keeping_alive_to_the_millisecond(store, clock):
    first, second = dedup(store), dedup(store)
    [event] = events(1)
    deadline_s = clock.now_s() + 2.0
    found: list[ClaimStatus] = []

    def look(_event):
        clock.set(deadline_s - 0.001)
        found.append(second.store.claim([first.key_of(event)], lease_s=LEASE_S)[0].status)
        clock.set(deadline_s)
        found.append(second.store.claim([first.key_of(event)], lease_s=LEASE_S)[0].status)

    first.process_batch([event], Ran(then=look), deadline_s=deadline_s)
    assert found == [ClaimStatus.IN_FLIGHT, ClaimStatus.CLAIMED]


def test_events_whose_leases_lapsed_while_they_waited_are_not_run(store, clock, caplog):
    """A first handler outruns the deadline: the waiting events' leases are gone, so they are left alone."""
    first = dedup(store)
    batch = events(3)
    handler = Ran(clock, takes_s=2 * LEASE_S)
    with caplog.at_level(logging.ERROR, logger="dedup"):
        results = first.process_batch(batch, handler, deadline_s=clock.now_s() + 1)
    assert handler.ran == ["e0"]
    assert [r.outcome for r in results] == [Outcome.PROCESSED, Outcome.IN_FLIGHT, Outcome.IN_FLIGHT]
    assert [type(r.error) for r in results] == [type(None), LeaseLostError, LeaseLostError]
    assert not any(r.outcome.acknowledge for r in results[1:])  # redelivered, and run then
    assert first.stats.lease_lost == 2
    assert dedup(store).process_batch(batch[1:], Ran())[0].outcome is Outcome.PROCESSED


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_an_interrupted_batch_completes_what_finished_and_releases_the_rest(store, clock, interrupt):
    batch = events(10)
    first = dedup(store)

    def stop_at_the_seventh(event):
        if event["id"] == "e6":
            raise interrupt()

    with pytest.raises(interrupt):
        first.process_batch(batch, Ran(clock, takes_s=0.1, then=stop_at_the_seventh))
    after = Ran()
    outcomes = [r.outcome for r in dedup(store).process_batch(batch, after)]
    assert outcomes == [Outcome.DUPLICATE] * 6 + [Outcome.PROCESSED] * 4  # 1-6 completed, 7-10 released
    assert after.ran == ["e6", "e7", "e8", "e9"]


def test_an_interrupted_batch_keeps_a_failed_events_redelivery_processable(store, clock):
    batch = events(3)

    def fail_then_stop(event):
        if event["id"] == "e0":
            raise RuntimeError("downstream down")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        dedup(store).process_batch(batch, fail_then_stop)
    assert [r.outcome for r in dedup(store).process_batch(batch, Ran())] == [Outcome.PROCESSED] * 3


def test_completions_go_out_with_the_next_beat_so_finished_events_are_recorded_early(store, clock):
    """Handlers of 0.5 s under a 1 s beat: a finished event is a DUPLICATE to others within a beat."""
    batch = events(6)
    first, second = dedup(store), dedup(store)
    lag: list[int] = []

    def count_uncompleted(event):
        done = [r.outcome for r in second.process_batch(batch[: int(event["id"][1:])], Ran())]
        lag.append(done.count(Outcome.IN_FLIGHT))

    first.process_batch(batch, Ran(clock, takes_s=0.5, then=count_uncompleted))
    assert max(lag) <= 2  # at most the events of the last beat wait for their record


def test_complete_within_zero_records_each_event_as_its_handler_returns(store, clock):
    batch = events(5)
    first, second = dedup(store, complete_within_s=0), dedup(store)
    before: list[list[Outcome]] = []

    def look(event):
        before.append([r.outcome for r in second.process_batch(batch[: int(event["id"][1:])], Ran())])

    first.process_batch(batch, Ran(then=look))
    assert before == [[Outcome.DUPLICATE] * n for n in range(5)]


class Flaky:
    """Wraps a store; ``fail`` names the operations that raise StoreUnavailableError, ``times`` times each."""

    def __init__(self, store, fail: set[str], times: int = 10**9):
        self._store, self.fail, self.times = store, fail, times
        self.calls: dict[str, int] = {}

    def __getattr__(self, name):
        op = getattr(self._store, name)
        if name not in ("claim", "complete", "extend", "release"):
            return op

        def call(*args, **kwargs):
            self.calls[name] = self.calls.get(name, 0) + 1
            if name in self.fail and self.calls[name] <= self.times:
                raise StoreUnavailableError(f"flaky {self._store.describe()}", ConnectionError(name))
            return op(*args, **kwargs)

        return call


def test_a_completion_that_keeps_failing_is_retried_within_the_bound_then_counted_and_logged(
        store, clock, caplog):
    flaky = Flaky(store, {"complete"})
    first = dedup(flaky, store_retry_s=1.0)
    start_s = clock.now_s()
    with caplog.at_level(logging.ERROR, logger="dedup"):
        results = first.process_batch(events(3), Ran())
    assert [r.outcome for r in results] == [Outcome.PROCESSED] * 3  # the effects happened: acknowledge
    assert flaky.calls["complete"] > 2  # retried with backoff ...
    assert clock.now_s() - start_s <= 1.0  # ... within store_retry_s
    assert first.stats.completion_failed == 3 and first.stats.processed == 3
    assert any("could not record 3 processed events" in r.getMessage() for r in caplog.records
               if r.levelno == logging.ERROR)


def test_a_completion_that_fails_then_succeeds_is_recorded(store, clock):
    flaky = Flaky(store, {"complete"}, times=2)
    first = dedup(flaky)
    first.process_batch(events(2), Ran())
    assert first.stats.completion_failed == 0 and flaky.calls["complete"] == 3
    assert [r.outcome for r in dedup(store).process_batch(events(2), Ran())] == [Outcome.DUPLICATE] * 2


def test_a_release_that_keeps_failing_is_counted_and_logged(store, clock, caplog):
    first = dedup(Flaky(store, {"release"}), store_retry_s=0.2)

    def boom(_event):
        raise RuntimeError("downstream down")

    with caplog.at_level(logging.ERROR, logger="dedup"):
        results = first.process_batch(events(2), boom)
    assert [r.outcome for r in results] == [Outcome.FAILED] * 2
    assert first.stats.release_failed == 2
    assert any("could not release 2 claims" in r.getMessage() for r in caplog.records)


def test_beats_that_fail_do_not_fail_the_batch_and_lapsed_waiters_are_left_alone(store, clock):
    first = dedup(Flaky(store, {"extend"}))
    handler = Ran(clock, takes_s=2.0)
    results = first.process_batch(events(3), handler)
    # 0-2 s: e0 runs; its beats fail; at 2 s e1 starts (its lease lives to 3 s); at 4 s e2's lapsed.
    assert [r.outcome for r in results] == [Outcome.PROCESSED, Outcome.PROCESSED, Outcome.IN_FLIGHT]
    assert handler.ran == ["e0", "e1"]


def test_a_rolling_validate_payload_enable_sees_old_records_as_unvalidated_duplicates(store, clock):
    """Records written before validation was enabled carry no fingerprint: duplicates, not mismatches."""
    batch = events(4)
    old = dedup(store)
    old.process_batch(batch[:2], Ran())  # completed without fingerprints
    held = old.store.claim([old.key_of(batch[2])], lease_s=LEASE_S)  # in flight without one
    new = dedup(store, validate_payload=True)
    results = new.process_batch(batch, Ran())
    assert [r.outcome for r in results] == [Outcome.DUPLICATE, Outcome.DUPLICATE, Outcome.IN_FLIGHT,
                                            Outcome.PROCESSED]
    assert all(r.error is None for r in results)
    assert new.stats.unvalidated == 2 and new.stats.payload_mismatches == 0
    assert held[0].status is ClaimStatus.CLAIMED
    # Records the new fleet writes are validated.
    changed = dict(batch[3], detail={"n": "something else"})
    assert new.process_batch([changed], Ran())[0].outcome is Outcome.FAILED
    assert new.stats.payload_mismatches == 1
