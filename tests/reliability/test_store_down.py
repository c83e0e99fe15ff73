"""Store-down policy, end to end: a real redis-server stopped and restarted under a running SQSConsumer.

Fail closed (the default): a batch the store could not check is not decided and not
deleted; the consumer backs off, reconnects when the server is back and resumes.
Fail open is an explicit option that processes without dedup, with a warning.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from aws.aws_support import Proxy, RecordingSleep

from dedup.aws.consumer import BatchReport, SQSConsumer
from dedup.aws.producer import DuplicateInjector
from dedup.service import Deduplicator, Outcome
from dedup.stores import RedisStore
from dedup.traces import logical_events

pytestmark = [pytest.mark.aws, pytest.mark.redis]


class Effects:
    """A handler counting its effects per dedup key; ``hook`` runs first on every call."""

    def __init__(self, dedup: Deduplicator, hook: Callable[[], None] = lambda: None) -> None:
        self.dedup = dedup
        self.hook = hook
        self.counts: Counter[str] = Counter()

    def __call__(self, event: dict[str, Any]) -> None:
        self.hook()
        self.counts[self.dedup.key_of(event)] += 1


def deleting_proxy(stack) -> tuple[Proxy, list[str]]:
    """The stack's SQS client, recording the receipt handle of every message it deletes."""
    deleted: list[str] = []

    def delete(**kwargs):
        response = stack.sqs.delete_message_batch(**kwargs)
        ids = {e["Id"] for e in response.get("Successful", [])}
        deleted.extend(e["ReceiptHandle"] for e in kwargs["Entries"] if e["Id"] in ids)
        return response

    return Proxy(stack.sqs, {"delete_message_batch": delete}), deleted


def drain(consumer: SQSConsumer, stack, *, deadline_polls: int = 200) -> None:
    """Poll until the work queue is empty (a bounded number of 1 s long polls)."""
    for _ in range(deadline_polls):
        if stack.depth() == 0:
            return
        consumer.poll_once(wait_time_s=1)
    pytest.fail("the queue did not drain")


def test_when_redis_stops_mid_run_nothing_unchecked_is_deleted_and_the_consumer_resumes_after_restart(
        stack, local_redis, caplog):
    events = logical_events(30, source="mixed", seed=3)
    DuplicateInjector().publish(stack.events, stack.handles.bus_name, events)
    dedup = Deduplicator(RedisStore(local_redis.url, socket_timeout_s=1.0))  # fail_closed: the default
    handler = Effects(dedup)
    sqs, deletes = deleting_proxy(stack)
    reports: list[BatchReport] = []

    def on_batch(report: BatchReport) -> None:
        reports.append(report)
        outages = sum(r.store_outage is not None for r in reports)
        if report.deleted and outages == 0 and local_redis.running:
            local_redis.stop()  # mid-run: after the first settled batch
        elif outages == 2 and not local_redis.running:
            local_redis.start()  # back, empty, on the same port

    sleep = RecordingSleep()
    consumer = SQSConsumer(sqs, stack.handles.queue_url, dedup, handler, wait_time_s=1, sleep=sleep,
                           on_batch=on_batch)
    with caplog.at_level(logging.ERROR):
        drain(consumer, stack)

    outage_reports = [r for r in reports if r.store_outage is not None]
    assert len(outage_reports) == 2 and consumer.stats.store_outages == 2
    left_alone, checked = outage_reports
    assert left_alone.received > 0  # a batch the store could not check: nothing decided or deleted
    assert checked.received == 0  # then, while down, it checks the store instead of receiving
    for r in outage_reports:
        assert r.dispositions == () and r.deleted == ()
        assert "is unavailable" in str(r.store_outage) and str(local_redis.port) in str(r.store_outage)
    settled = [r for r in reports if r.store_outage is None]
    acknowledged = {d.message.message_id for r in settled for d in r.dispositions if d.acknowledge}
    assert {m for r in reports for m in r.deleted} == acknowledged
    assert len(deletes) == len(acknowledged) == 30  # every delete was of a checked message
    assert handler.counts == Counter({dedup.key_of(e): 1 for e in events})  # resumed: each once
    first, second = sleep.delays_s[:2]
    assert 0.5 <= first <= 1.0 < second <= 2.0  # the backoff grows while the outage lasts
    messages = [r.getMessage() for r in caplog.records]
    assert sum("none of the" in m and "outage #1" in m for m in messages) == 1
    assert sum("still down" in m and "outage #2" in m for m in messages) == 1
    assert stack.dlq_depth() == 0


def test_when_redis_stops_during_the_handler_the_processed_batch_is_still_deleted(stack, local_redis, caplog):
    """Its claim was checked and its effects happened: deleting it is right; only the
    completion record is lost (a later duplicate would run again, as after any data loss),
    and that loss is counted and logged at ERROR, never reported as a success."""
    events = logical_events(3, source="genesys", seed=4)
    DuplicateInjector().publish(stack.events, stack.handles.bus_name, events)
    dedup = Deduplicator(RedisStore(local_redis.url, socket_timeout_s=1.0), store_retry_s=0.5)
    handler = Effects(dedup, hook=lambda: local_redis.running and local_redis.stop())
    consumer = SQSConsumer(stack.sqs, stack.handles.queue_url, dedup, handler, wait_time_s=1,
                           sleep=RecordingSleep())
    with caplog.at_level(logging.WARNING):
        report = consumer.poll_once(max_messages=10, wait_time_s=1)
    assert report.store_outage is None and not local_redis.running
    assert [d.result.outcome for d in report.dispositions] == [Outcome.PROCESSED] * 3
    assert len(report.deleted) == 3 and stack.depth() == 0
    # Never a silent success: counted, and logged at ERROR after the retries ran out.
    assert dedup.stats.completion_failed == 3 and dedup.stats.processed == 3
    assert any("complete failed after the handlers ran" in r.getMessage() for r in caplog.records
               if r.levelno == logging.ERROR)


def test_fail_open_is_explicit_and_processes_without_dedup_with_a_warning(stack, local_redis, caplog):
    events = logical_events(3, source="nice", seed=5)
    injector = DuplicateInjector(seed=1)
    injector.publish(stack.events, stack.handles.bus_name, events)
    injector.duplicate_deliveries(stack.sqs, stack.handles.queue_url, 1, hold_s=5)
    dedup = Deduplicator(RedisStore(local_redis.url, socket_timeout_s=1.0), on_store_down="fail_open")
    handler = Effects(dedup)
    consumer = SQSConsumer(stack.sqs, stack.handles.queue_url, dedup, handler, wait_time_s=1,
                           sleep=RecordingSleep())
    local_redis.stop()
    with caplog.at_level(logging.WARNING):
        drain(consumer, stack)
    assert consumer.stats.store_outages == 0 and consumer.stats.deleted == 4
    # The cost of failing open: the delivery duplicate ran the handler a second time.
    assert sorted(handler.counts.values()) == [1, 1, 2]
    assert dedup.stats.passed_store_down == 4
    assert any("without dedup (fail_open)" in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING)
