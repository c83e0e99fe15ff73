"""SQSConsumer end to end on moto's server: put_events -> rule -> queue -> consumer."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections import Counter
from typing import Any

import pytest
from aws_support import MAX_RECEIVE_COUNT, VISIBILITY_TIMEOUT_S, Proxy, RecordingSleep, distinct_events, until
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError
from samples import load_event

from dedup.aws.consumer import SQSConsumer
from dedup.aws.producer import DuplicateInjector
from dedup.errors import ConfigurationError
from dedup.localredis import LocalRedis, free_port
from dedup.service import Deduplicator
from dedup.stores import MemoryStore, RedisStore

pytestmark = pytest.mark.aws


class Recorder:
    """A handler that records the key of every event it handles; it can fail on chosen keys."""

    def __init__(self, dedup: Deduplicator, fail_first: set[str] = frozenset()) -> None:
        self.dedup = dedup
        self.fail_first = set(fail_first)
        self.handled: Counter[str] = Counter()
        self.attempts: Counter[str] = Counter()

    def __call__(self, event: dict[str, Any]) -> str:
        key = self.dedup.key_of(event)
        self.attempts[key] += 1
        if key in self.fail_first:
            self.fail_first.discard(key)
            raise RuntimeError(f"downstream unavailable for {key}")
        self.handled[key] += 1
        return key


def consumer_for(stack, dedup: Deduplicator, handler, **options) -> SQSConsumer:
    options.setdefault("sleep", RecordingSleep())
    return SQSConsumer(stack.sqs if "sqs" not in options else options.pop("sqs"), stack.handles.queue_url,
                       dedup, handler, wait_time_s=1, **options)


def drain_with(consumer: SQSConsumer, stack) -> None:
    """Poll until the work queue is empty (bounded by a deadline)."""
    until(lambda: stack.depth() == 0, lambda: consumer.poll_once(wait_time_s=1))


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def store(request):
    if request.param == "redis":
        return RedisStore(request.getfixturevalue("redis_client"))
    return MemoryStore()


def test_both_duplicate_kinds_are_dropped_and_every_event_is_processed_once(stack, store):
    events = distinct_events(12)
    dedup = Deduplicator(store)
    injector = DuplicateInjector(seed=11)
    injector.publish(stack.events, stack.handles.bus_name, events, publish_retries=4)
    injector.duplicate_deliveries(stack.sqs, stack.handles.queue_url, 3)
    handler = Recorder(dedup)
    consumer = consumer_for(stack, dedup, handler)
    drain_with(consumer, stack)
    s = consumer.stats
    assert (s.received, s.processed, s.duplicates, s.deleted) == (19, 12, 7, 19)
    assert (s.failed, s.in_flight, s.bad_input, s.delete_failures) == (0, 0, 0, 0)
    assert handler.handled == Counter({dedup.key_of(e): 1 for e in events})
    assert stack.dlq_depth() == 0


def test_when_handler_fails_then_event_is_retried_after_the_visibility_timeout_and_processed_once(stack):
    events = distinct_events(3)
    dedup = Deduplicator(MemoryStore())
    flaky_key = dedup.key_of(events[1])
    handler = Recorder(dedup, fail_first={flaky_key})
    injector = DuplicateInjector()
    injector.publish(stack.events, stack.handles.bus_name, events)
    consumer = consumer_for(stack, dedup, handler)
    first = consumer.poll_once(max_messages=10, wait_time_s=1)
    failed_at = time.monotonic()
    assert [d.result.outcome.value for d in first.dispositions].count("failed") == 1
    assert len(first.deleted) == 2 and stack.depth() == 1  # the failed message stays on the queue

    redelivered: list = []

    def poll() -> None:
        redelivered.extend(d for d in consumer.poll_once(wait_time_s=1).dispositions)

    until(lambda: bool(redelivered), poll)
    assert time.monotonic() - failed_at >= VISIBILITY_TIMEOUT_S * 0.9
    (again,) = redelivered
    assert again.message.receive_count == 2
    assert again.result.outcome.value == "processed"
    assert handler.attempts[flaky_key] == 2 and handler.handled[flaky_key] == 1
    assert stack.depth() == 0 and consumer.stats.processed == 3 and consumer.stats.failed == 1


def test_an_in_flight_copy_is_not_deleted_and_is_dropped_once_its_holder_completes(stack):
    store = MemoryStore()
    dedup = Deduplicator(store, lease_s=2)  # the copy is hidden for 2 s, then comes back
    event = distinct_events(1)[0]
    holder = store.claim([dedup.key_of(event)], lease_s=60)  # another consumer is processing it
    DuplicateInjector().publish(stack.events, stack.handles.bus_name, [event])
    handler = Recorder(dedup)
    consumer = consumer_for(stack, dedup, handler)
    report = consumer.poll_once(wait_time_s=1)
    assert [d.result.outcome.value for d in report.dispositions] == ["in_flight"]
    assert report.deleted == () and stack.depth() == 1
    store.complete(holder, window_s=300)
    drain_with(consumer, stack)
    assert consumer.stats.in_flight >= 1 and consumer.stats.duplicates == 1 and consumer.stats.deleted == 1
    assert not handler.attempts  # the holder processed it; this consumer never ran the handler


@pytest.mark.parametrize("hide_s, hidden", [(None, True), (0, False)])
def test_an_in_flight_copy_stays_hidden_while_the_lease_may_last_so_it_spends_no_receives(
        stack, hide_s, hidden):
    store = MemoryStore()
    dedup = Deduplicator(store, lease_s=30)
    event = distinct_events(1)[0]
    store.claim([dedup.key_of(event)], lease_s=30)  # another consumer is processing it
    DuplicateInjector().publish(stack.events, stack.handles.bus_name, [event])
    # A visibility timeout of 0 would hand the copy straight back: only the hiding keeps it away.
    consumer = consumer_for(stack, dedup, Recorder(dedup), visibility_timeout_s=0,
                            in_flight_visibility_s=hide_s)
    report = consumer.poll_once(wait_time_s=1)
    assert [d.result.outcome.value for d in report.dispositions] == ["in_flight"]
    again = stack.sqs.receive_message(QueueUrl=stack.handles.queue_url, WaitTimeSeconds=0,
                                      MessageSystemAttributeNames=["ApproximateReceiveCount"])
    assert (not again.get("Messages")) is hidden
    assert consumer.stats.in_flight_hidden == (1 if hidden else 0)
    for m in again.get("Messages", []):  # keep the queue clean for moto
        stack.sqs.delete_message(QueueUrl=stack.handles.queue_url, ReceiptHandle=m["ReceiptHandle"])


def test_an_in_flight_visibility_beyond_the_sqs_limit_is_refused(stack):
    with pytest.raises(ConfigurationError, match="in_flight_visibility_s"):
        consumer_for(stack, Deduplicator(MemoryStore()), print, in_flight_visibility_s=43_201)


def test_poison_bodies_reach_the_dlq_after_max_receive_count_and_are_logged_with_id_and_reason(stack, caplog):
    keyless = load_event("envelope_genesys_customer_start.json")
    keyless["detail"] = json.dumps(keyless["detail"])  # double-encoded: auto keys any object, not text
    poison = {
        stack.send_raw("<html>502 Bad Gateway</html>"): "body is not JSON",
        stack.send_raw("[1, 2, 3]"): "body is JSON list, not an object",
        stack.send_raw(json.dumps(keyless)): "'detail' is a string, not an object",
    }
    dedup = Deduplicator(MemoryStore())
    handler = Recorder(dedup)
    consumer = consumer_for(stack, dedup, handler)
    with caplog.at_level(logging.ERROR):
        until(lambda: stack.depth() == 0, lambda: consumer.poll_once(wait_time_s=1))
    assert stack.dlq_depth() == 3
    assert consumer.stats.bad_input == 3 * MAX_RECEIVE_COUNT and consumer.stats.deleted == 0
    assert not handler.attempts
    for message_id, reason in poison.items():
        lines = [r.getMessage() for r in caplog.records if message_id in r.getMessage()]
        assert len(lines) == MAX_RECEIVE_COUNT, (message_id, lines)
        assert all(reason in line for line in lines), lines
    dead = stack.drain(stack.handles.dlq_url)
    assert sorted(m["MessageId"] for m in dead) == sorted(poison)  # the very messages, not copies


def test_a_stale_receipt_handle_is_reported_and_the_message_is_dropped_as_a_duplicate_later(stack, caplog):
    events = distinct_events(2)
    DuplicateInjector().publish(stack.events, stack.handles.bus_name, events)
    state = {"stale": None}

    def receive(**kwargs):
        response = stack.sqs.receive_message(**kwargs)
        if state["stale"] is None and response.get("Messages"):
            state["stale"] = response["Messages"][0]["MessageId"]
            response["Messages"][0]["ReceiptHandle"] = "stale-receipt-handle"
        return response

    dedup = Deduplicator(MemoryStore())
    handler = Recorder(dedup)
    consumer = consumer_for(stack, dedup, handler, sqs=Proxy(stack.sqs, {"receive_message": receive}))
    with caplog.at_level(logging.ERROR):
        report = consumer.poll_once(wait_time_s=1)
    (failure,) = report.delete_failures
    assert failure.message_id == state["stale"] and failure.code == "ReceiptHandleIsInvalid"
    assert len(report.deleted) == 1 and consumer.stats.delete_failures == 1
    logged = [r.getMessage() for r in caplog.records]
    assert any(state["stale"] in line and "could not delete" in line for line in logged)
    drain_with(consumer, stack)  # it comes back after the visibility timeout...
    assert consumer.stats.duplicates == 1  # ...and is dropped: its event was completed
    assert handler.handled == Counter({dedup.key_of(e): 1 for e in events})


def test_a_transient_delete_failure_is_retried_until_the_message_is_deleted(stack):
    DuplicateInjector().publish(stack.events, stack.handles.bus_name, distinct_events(3))
    calls: list[int] = []

    def delete(QueueUrl: str, Entries: list[dict[str, str]]):
        calls.append(len(Entries))
        if len(calls) > 1:
            return stack.sqs.delete_message_batch(QueueUrl=QueueUrl, Entries=Entries)
        response = stack.sqs.delete_message_batch(QueueUrl=QueueUrl, Entries=Entries[1:])
        response["Failed"] = [{"Id": Entries[0]["Id"], "SenderFault": False, "Code": "InternalError",
                               "Message": "injected"}]
        return response

    sleep = RecordingSleep()
    dedup = Deduplicator(MemoryStore())
    consumer = consumer_for(stack, dedup, Recorder(dedup), sleep=sleep,
                            sqs=Proxy(stack.sqs, {"delete_message_batch": delete}))
    report = consumer.poll_once(wait_time_s=1)
    assert calls == [3, 1]
    assert len(report.deleted) == 3 and report.delete_failures == ()
    assert len(sleep.delays_s) == 1 and 0.05 <= sleep.delays_s[0] <= 0.1
    assert stack.depth() == 0


@pytest.mark.redis
def test_a_store_outage_deletes_nothing_backs_off_and_the_batch_is_processed_after_recovery(
        stack, caplog, redis_server):
    # redis_server only vouches that redis-server runs here; the outage is on a server of our own.
    events = distinct_events(3)
    DuplicateInjector().publish(stack.events, stack.handles.bus_name, events)
    with LocalRedis() as server:
        dedup = Deduplicator(RedisStore(server.url))
        handler = Recorder(dedup)
        sleep = RecordingSleep()
        consumer = consumer_for(stack, dedup, handler, sleep=sleep)
        server.stop()  # the outage
        with caplog.at_level(logging.ERROR):
            report = consumer.poll_once(wait_time_s=1)
        assert report.store_outage is not None and report.received == 3 and report.deleted == ()
        assert consumer.stats.store_outages == 1 and not handler.attempts and stack.depth() == 3
        assert len(sleep.delays_s) == 1 and 0.5 <= sleep.delays_s[0] <= 1.0  # the outage backoff
        assert any("none of the 3 messages" in r.getMessage() for r in caplog.records)
        server.start()  # recovered (empty: nothing had been decided)
        drain_with(consumer, stack)
    assert handler.handled == Counter({dedup.key_of(e): 1 for e in events})
    assert consumer.stats.processed == 3 and stack.dlq_depth() == 0


def test_the_heartbeat_keeps_a_long_running_batch_invisible(stack):
    DuplicateInjector().publish(stack.events, stack.handles.bus_name, distinct_events(1))
    started, release = threading.Event(), threading.Event()

    def slow(event):
        started.set()
        assert release.wait(10), "the test never released the handler"

    dedup = Deduplicator(MemoryStore())
    consumer = consumer_for(stack, dedup, slow, heartbeat_interval_s=0.25)
    worker = threading.Thread(target=consumer.poll_once, kwargs={"wait_time_s": 1})
    worker.start()
    try:
        assert started.wait(10)
        # Three visibility timeouts pass; another receiver must never see the message.
        end = time.monotonic() + 3 * VISIBILITY_TIMEOUT_S
        while time.monotonic() < end:
            seen = stack.sqs.receive_message(QueueUrl=stack.handles.queue_url, WaitTimeSeconds=1,
                                             MaxNumberOfMessages=10).get("Messages", [])
            assert seen == [], "the message became visible while its handler was running"
    finally:
        release.set()
        worker.join(10)
    assert consumer.stats.processed == 1 and consumer.stats.deleted == 1 and stack.depth() == 0


def test_one_heartbeat_thread_serves_every_batch_for_the_consumers_life(stack):
    DuplicateInjector().publish(stack.events, stack.handles.bus_name, distinct_events(3))

    others = set(threading.enumerate())  # other tests' consumers may still have theirs

    def heartbeats() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "sqs-heartbeat"} - others

    with consumer_for(stack, Deduplicator(MemoryStore()), lambda event: None) as consumer:
        threads: set[threading.Thread] = set()
        for _ in range(3):
            assert consumer.poll_once(max_messages=1, wait_time_s=1).received == 1
            threads.update(heartbeats())
        assert len(threads) == 1 and stack.depth() == 0
    assert heartbeats() == set()  # leaving the consumer stops it


def test_sigterm_inside_a_batch_settles_the_finished_event_releases_the_rest_and_stops_run(stack):
    events = distinct_events(15)
    DuplicateInjector().publish(stack.events, stack.handles.bus_name, events)
    dedup = Deduplicator(MemoryStore())
    handled: list[str] = []

    def handler(event):
        handled.append(dedup.key_of(event))
        if len(handled) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives while this handler runs

    previous = signal.getsignal(signal.SIGTERM)
    consumer = consumer_for(stack, dedup, handler)
    stats = consumer.run(max_idle_s=10)
    assert signal.getsignal(signal.SIGTERM) is previous  # restored
    assert len(handled) == 1  # the running handler finished; no other started
    assert stats.processed == stats.deleted == 1 and stats.released_on_stop == stats.received - 1
    assert stack.depth() == 14
    # Released messages are visible again at once (not after the 1 s visibility timeout): all 14
    # are there for a receive right away (without the release only the 15 - received never taken).
    seen = stack.sqs.receive_message(QueueUrl=stack.handles.queue_url, MaxNumberOfMessages=10,
                                     WaitTimeSeconds=0, VisibilityTimeout=0).get("Messages", [])
    assert len(seen) == 10
    consumer.run(max_messages=14, max_idle_s=5)
    assert stack.depth() == 0 and Counter(handled) == Counter({dedup.key_of(e): 1 for e in events})


def test_run_stops_at_max_messages_and_after_max_idle_s(stack):
    DuplicateInjector().publish(stack.events, stack.handles.bus_name, distinct_events(5))
    consumer = consumer_for(stack, Deduplicator(MemoryStore()), lambda event: None)
    assert consumer.run(max_messages=3).received == 3
    started = time.monotonic()
    assert consumer.run(max_idle_s=1).received == 5
    assert time.monotonic() - started < 10 and stack.depth() == 0


def test_a_missing_queue_is_a_configuration_error_naming_queue_region_and_endpoint(aws):
    sqs = aws.client("sqs")
    url = f"{aws.endpoint_url}/123456789012/no-such-queue"
    consumer = SQSConsumer(sqs, url, Deduplicator(MemoryStore()), lambda event: None, wait_time_s=0)
    with pytest.raises(ConfigurationError) as caught:
        consumer.poll_once()
    message = str(caught.value)
    assert url in message and "does not exist" in message
    assert "region us-east-1" in message and aws.endpoint_url in message


def test_access_denied_is_a_configuration_error_saying_what_to_allow(stack):
    def denied(**kwargs):
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "not authorized"}}, "ReceiveMessage")

    consumer = consumer_for(stack, Deduplicator(MemoryStore()), lambda event: None,
                            sqs=Proxy(stack.sqs, {"receive_message": denied}))
    with pytest.raises(ConfigurationError) as caught:
        consumer.poll_once()
    message = str(caught.value)
    assert "access denied: sqs:ReceiveMessage" in message and stack.handles.queue_url in message
    assert "least-privilege" in message


def test_a_queue_without_a_redrive_policy_is_warned_about(aws, caplog):
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName="no-redrive")["QueueUrl"]
    consumer = SQSConsumer(sqs, url, Deduplicator(MemoryStore()), lambda event: None, wait_time_s=0)
    with caplog.at_level(logging.WARNING):
        consumer.poll_once()
    assert any("no redrive policy" in r.getMessage() and url in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("wait_time_s", [-1, 21])
def test_an_out_of_range_long_poll_is_refused(wait_time_s):
    with pytest.raises(ConfigurationError, match="wait_time_s"):
        SQSConsumer(None, "url", Deduplicator(MemoryStore()), lambda event: None, wait_time_s=wait_time_s)


def test_a_lost_connection_after_start_is_ridden_out_with_a_backoff(stack):
    DuplicateInjector().publish(stack.events, stack.handles.bus_name, distinct_events(2))
    lost = []

    def receive(**kwargs):
        if not lost:
            lost.append(True)
            raise EndpointConnectionError(endpoint_url=stack.aws.endpoint_url)
        return stack.sqs.receive_message(**kwargs)

    sleep = RecordingSleep()
    consumer = consumer_for(stack, Deduplicator(MemoryStore()), lambda event: None, sleep=sleep,
                            sqs=Proxy(stack.sqs, {"receive_message": receive}))
    assert consumer.poll_once().received == 0
    assert len(sleep.delays_s) == 1 and 0.5 <= sleep.delays_s[0] <= 1.0
    drain_with(consumer, stack)
    assert consumer.stats.processed == 2


def test_an_unreachable_endpoint_at_start_is_a_configuration_error(aws):
    dead = f"http://127.0.0.1:{free_port()}"
    sqs = aws.client("sqs", endpoint_url=dead, config=Config(retries={"max_attempts": 1}))
    consumer = SQSConsumer(sqs, f"{dead}/123456789012/q", Deduplicator(MemoryStore()), lambda event: None)
    with pytest.raises(ConfigurationError, match=r"cannot reach.*aws-server"):
        consumer.poll_once()
