"""The producer: batches of 10, only failed entries re-sent with backoff, and the duplicate injector."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from aws_support import Proxy, RecordingSleep, distinct_events

from dedup.aws.backoff import Backoff
from dedup.aws.producer import INJECTED_ATTRIBUTE, DuplicateInjector, put_events, to_entry
from dedup.keys import EnvelopeId, auto

pytestmark = pytest.mark.aws


def failing_entries(events_client: Any, fail: dict[int, str], *, times: int = 1) -> Proxy:
    """A client whose first ``times`` PutEvents calls report the entries at positions ``fail``
    (position -> ErrorCode) failed and forward the others to the real service."""
    proxy = Proxy(events_client)
    calls = {"n": 0}

    def put(Entries: list[dict[str, Any]]) -> dict[str, Any]:
        calls["n"] += 1
        failing = fail if calls["n"] <= times else {}
        forward = [e for i, e in enumerate(Entries) if i not in failing]
        accepted = iter(events_client.put_events(Entries=forward)["Entries"] if forward else [])
        results = [{"ErrorCode": failing[i], "ErrorMessage": "injected"} if i in failing else next(accepted)
                   for i in range(len(Entries))]
        return {"FailedEntryCount": len(failing), "Entries": results}

    proxy.overrides["put_events"] = put
    return proxy


def delivered_details(stack) -> list[str]:
    return sorted(json.dumps(json.loads(m["Body"])["detail"], sort_keys=True) for m in stack.drain())


def test_put_events_sends_at_most_ten_entries_per_call(stack):
    proxy = Proxy(stack.events)
    proxy.overrides["put_events"] = stack.events.put_events
    events = distinct_events(23)
    report = put_events(proxy, [to_entry(e, stack.handles.bus_name) for e in events])
    assert [len(kw["Entries"]) for _, kw in proxy.calls] == [10, 10, 3]
    assert report.sent == 23 and report.calls == 3 and report.resent == 0 and not report.failed
    assert delivered_details(stack) == sorted(json.dumps(e["detail"], sort_keys=True) for e in events)


def test_only_the_failed_entries_are_resent_after_a_backoff(stack):
    events = distinct_events(10)
    client = failing_entries(stack.events, {2: "ThrottlingException", 5: "InternalFailure"})
    sleep = RecordingSleep()
    report = put_events(client, [to_entry(e, stack.handles.bus_name) for e in events], sleep=sleep,
                        backoff=Backoff(base_delay_ms=100, max_delay_ms=1_000), rng=random.Random(1))
    assert [len(kw["Entries"]) for _, kw in client.calls] == [10, 2]
    assert report.sent == 10 and report.resent == 2 and not report.failed
    assert len(sleep.delays_s) == 1 and 0.05 <= sleep.delays_s[0] <= 0.1
    # every event arrived exactly once: the accepted entries were not sent again
    assert delivered_details(stack) == sorted(json.dumps(e["detail"], sort_keys=True) for e in events)


def test_entries_that_keep_failing_are_reported_with_their_code_after_max_attempts(stack):
    events = distinct_events(3)
    client = failing_entries(stack.events, {0: "ThrottlingException"}, times=99)
    sleep = RecordingSleep()
    report = put_events(client, [to_entry(e, stack.handles.bus_name) for e in events], max_attempts=3,
                        sleep=sleep, backoff=Backoff(base_delay_ms=100, max_delay_ms=10_000))
    assert report.sent == 2
    assert [(f.index, f.code, f.attempts) for f in report.failed] == [(0, "ThrottlingException", 3)]
    assert report.event_ids[0] is None
    assert 0.05 <= sleep.delays_s[0] <= 0.1 and 0.1 <= sleep.delays_s[1] <= 0.2  # exponential, jittered
    assert len(stack.drain()) == 2


def test_a_permanent_entry_error_is_not_retried(stack):
    client = failing_entries(stack.events, {1: "MalformedDetail"})
    report = put_events(client, [to_entry(e, stack.handles.bus_name) for e in distinct_events(2)],
                        sleep=RecordingSleep())
    assert len(client.calls) == 1
    assert [(f.index, f.code, f.attempts) for f in report.failed] == [(1, "MalformedDetail", 1)]
    assert len(stack.drain()) == 1


def test_a_publish_retry_arrives_with_a_new_envelope_id_and_the_same_detail(stack):
    events = distinct_events(6)
    injector = DuplicateInjector(seed=3)
    report = injector.publish(stack.events, stack.handles.bus_name, events, publish_retries=2)
    assert report.sent == 8
    injected = injector.injected
    assert len(injected.publish_retries) == len(injected.publish_retry_ids) == 2 == injected.total
    bodies = [json.loads(m["Body"]) for m in stack.drain()]
    assert len(bodies) == 8
    by_id = {b["id"]: b for b in bodies}
    for index, retry_id in zip(injected.publish_retries, injected.publish_retry_ids, strict=True):
        retry = by_id[retry_id]
        original = by_id[report.event_ids[index]]
        assert retry["id"] != original["id"] and retry["detail"] == original["detail"]
        assert EnvelopeId().key_for(retry) != EnvelopeId().key_for(original)  # the envelope id misses it
        assert auto().key_for(retry) == auto().key_for(original)  # a key on the event's fields catches it


def test_a_delivery_duplicate_is_the_same_body_on_the_queue_again(stack):
    injector = DuplicateInjector(seed=5)
    injector.publish(stack.events, stack.handles.bus_name, distinct_events(5))
    copied = injector.duplicate_deliveries(stack.sqs, stack.handles.queue_url, 3)
    assert len(copied) == 3 == injector.injected.total
    messages = stack.drain()  # the peeked originals are visible again at once
    assert len(messages) == 8
    copies = [m for m in messages if INJECTED_ATTRIBUTE in m.get("MessageAttributes", {})]
    originals = {m["Body"] for m in messages if m not in copies}
    assert len(copies) == 3
    assert all(c["Body"] in originals for c in copies)  # byte-identical envelope
    assert sorted(json.loads(c["Body"])["id"] for c in copies) == sorted(copied)


def test_the_injector_is_deterministic_for_a_seed():
    def picks(seed: int) -> list[int]:
        client = Proxy(None, overrides={"put_events": lambda Entries: {
            "FailedEntryCount": 0, "Entries": [{"EventId": f"e{i}"} for i in range(len(Entries))]}})
        injector = DuplicateInjector(seed=seed)
        injector.publish(client, "bus", distinct_events(50), publish_retries=10)
        return injector.injected.publish_retries

    assert picks(7) == picks(7)
    assert picks(7) != picks(8)
