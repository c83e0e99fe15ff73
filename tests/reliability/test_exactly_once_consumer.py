"""Exactly-once under time and failure, end to end: two SQSConsumers on moto's server and a real Redis.

Time the dedup lifecycle sees is a :class:`~dedup.clock.ManualClock` shared by both
consumers' stores: a handler "takes" 0.5 s by advancing it, and the lease keeper's
beats fire at the instants a real clock would give them. Real time passes only
where SQS must hand a message back (a 1 s visibility timeout).
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aws.aws_support import RecordingSleep, distinct_events, until

from dedup.aws.consumer import SQSConsumer
from dedup.aws.producer import DuplicateInjector
from dedup.clock import ManualClock
from dedup.localredis import LocalRedis
from dedup.service import Deduplicator, Outcome
from dedup.stores import RedisStore

pytestmark = [pytest.mark.aws, pytest.mark.redis]

LEASE_S = 3.0


class Effects:
    """A handler counting its effects per dedup key; ``during`` runs inside the n-th call (1-based)."""

    def __init__(self, dedup: Deduplicator, *, clock: ManualClock | None = None, run_s: float = 0.0,
                 during: dict[int, Callable[[], None]] | None = None) -> None:
        self.dedup = dedup
        self.clock = clock
        self.run_s = run_s
        self.during = during or {}
        self.counts: Counter[str] = Counter()
        self.calls = 0

    def __call__(self, event: dict[str, Any]) -> None:
        self.calls += 1
        self.counts[self.dedup.key_of(event)] += 1  # the effect happens first...
        if self.clock is not None:
            self.clock.advance(self.run_s)  # ...then the handler takes its time
        if self.calls in self.during:
            self.during[self.calls]()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def stores(redis_server, prefix) -> Iterator[Callable[..., RedisStore]]:
    """Stores on the session's Redis under a prefix of this test, closed after it."""
    made: list[RedisStore] = []

    def make(**options: Any) -> RedisStore:
        made.append(RedisStore(options.pop("url", redis_server.url), prefix=prefix, **options))
        return made[-1]

    yield make
    for store in made:
        store.close()


def consumer(stack, dedup: Deduplicator, handler, **options) -> SQSConsumer:
    options.setdefault("sleep", RecordingSleep())
    return SQSConsumer(stack.sqs, stack.handles.queue_url, dedup, handler, wait_time_s=1, **options)


def send_copy(stack, event: dict[str, Any]) -> None:
    """A second delivery of ``event`` (same body, as SQS at-least-once delivery gives)."""
    stack.send_raw(json.dumps(event))


@pytest.mark.parametrize("batch, run_s, copy_during", [
    pytest.param(10, 0.5, 7, id="10 handlers of 0.5 s, a copy of the 10th at 3.5 s"),
    pytest.param(1, 10.0, 1, id="one handler of 10 s, a copy at 10 s"),
])
def test_a_copy_arriving_after_lease_s_while_its_batch_still_runs_is_in_flight_and_processed_once(
        patient_stack, stores, batch, run_s, copy_during):
    clock = ManualClock()
    events = distinct_events(batch)
    DuplicateInjector().publish(patient_stack.events, patient_stack.handles.bus_name, events)
    first = Deduplicator(stores(clock=clock), lease_s=LEASE_S)
    second = Deduplicator(stores(clock=clock), lease_s=LEASE_S)
    other = Effects(second)
    # The other consumer does not hide IN_FLIGHT copies: the copy comes back after 1 s of real time.
    b = consumer(patient_stack, second, other, in_flight_visibility_s=0)
    seen_by_b: list[Outcome] = []

    def copy_of_the_last_event_reaches_the_other_consumer() -> None:
        assert clock.now_s() - start_s > LEASE_S  # a lease not kept alive would have run out
        send_copy(patient_stack, events[-1])
        seen_by_b.extend(d.result.outcome for d in b.poll_once(wait_time_s=1).dispositions)

    mine = Effects(first, clock=clock, run_s=run_s,
                   during={copy_during: copy_of_the_last_event_reaches_the_other_consumer})
    a = consumer(patient_stack, first, mine)
    start_s = clock.now_s()
    report = a.poll_once(max_messages=10, wait_time_s=1)
    assert report.received == batch and len(report.deleted) == batch
    assert seen_by_b == [Outcome.IN_FLIGHT]
    until(lambda: patient_stack.depth() == 0, lambda: b.poll_once(wait_time_s=1))
    assert b.stats.duplicates == 1 and not other.counts  # dropped once the first consumer completed it
    assert mine.counts == Counter({first.key_of(e): 1 for e in events})
    assert first.stats.lease_lost == second.stats.lease_lost == 0


def test_a_second_signal_inside_a_batch_runs_again_at_most_the_event_in_progress(patient_stack, stores):
    events = distinct_events(10)
    DuplicateInjector().publish(patient_stack.events, patient_stack.handles.bus_name, events)
    dedup = Deduplicator(stores(), lease_s=LEASE_S)

    def two_signals() -> None:  # Ctrl-C twice while the 4th handler runs, after its effect
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)

    effects = Effects(dedup, during={4: two_signals})
    a = consumer(patient_stack, dedup, effects)
    with pytest.raises(KeyboardInterrupt):
        a.run(max_idle_s=5)
    received = a.stats.received
    assert effects.calls == 4 and a.stats.deleted == 3 and a.stats.released_on_stop == received - 3
    for event in events[:3]:  # copies of the finished events: completed, so they are duplicates
        send_copy(patient_stack, event)
    again = Effects(dedup)
    b = consumer(patient_stack, dedup, again)
    until(lambda: patient_stack.depth() == 0, lambda: b.poll_once(wait_time_s=1))
    keys = [dedup.key_of(e) for e in events]
    assert b.stats.duplicates == 3
    total = effects.counts + again.counts
    assert total == Counter({**{k: 1 for k in keys}, keys[3]: 2})  # only the interrupted 4th ran twice


def test_a_primary_demoted_mid_handler_crashes_no_consumer_and_loses_nothing(patient_stack, stores, caplog):
    events = distinct_events(5)
    with LocalRedis() as old, LocalRedis() as new:
        # Simulated time: the completion's retries (up to store_retry_s) wait on it, not for real.
        dedup = Deduplicator(stores(url=old.url, clock=ManualClock()), lease_s=LEASE_S, store_retry_s=1.0)
        demoted: list[bool] = []

        def failover() -> None:  # a failover demotes the primary this consumer talks to
            old.demote(new.port)
            demoted.append(True)

        effects = Effects(dedup, during={2: failover})
        sleep = RecordingSleep()
        a = consumer(patient_stack, dedup, effects, sleep=sleep)
        DuplicateInjector().publish(patient_stack.events, patient_stack.handles.bus_name, events[:3])
        first = a.poll_once(max_messages=10, wait_time_s=1)  # READONLY on the batch's completion
        assert demoted and first.store_outage is None
        assert len(first.deleted) == 3  # the effects happened: acknowledged, not run again
        assert dedup.stats.completion_failed == 3
        DuplicateInjector().publish(patient_stack.events, patient_stack.handles.bus_name, events[3:])
        second = a.poll_once(max_messages=10, wait_time_s=1)  # READONLY on the claim: an outage
        assert second.store_outage is not None and second.deleted == ()
        assert a.stats.store_outages >= 1 and len(sleep.delays_s) >= 1  # backed off, did not crash
        old.promote()  # the operator (or the endpoint's flip) gives the consumer a primary again
        until(lambda: patient_stack.depth() == 0, lambda: a.poll_once(wait_time_s=1))
    assert effects.counts == Counter({dedup.key_of(e): 1 for e in events})  # lost 0
    assert patient_stack.dlq_depth() == 0
