"""Scenarios the notebooks walk through, kept here so that their cells show the story, not plumbing.

* :func:`fails_once_run`: consume events whose handler fails once on some of
  them, under a given claim lifecycle, and count what was processed and lost.
* :class:`HandledBy`: a thread-safe record of which consumer handled which
  logical event, with a handler that takes some time (so consumers overlap).
* :func:`consume_in_threads`: run several consumers on one queue at once.
* :func:`lambda_sqs_event`: the event an SQS event source mapping hands Lambda.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from dedup.aws.consumer import SQSConsumer
from dedup.aws.producer import DuplicateInjector
from dedup.keys import KeyStrategy
from dedup.service import Deduplicator
from dedup.stores.base import WindowStore


def fails_once_run(
    sqs: Any,
    bus_events: Any,
    handles: Any,
    envelopes: Sequence[Mapping[str, Any]],
    failing_keys: set[str],
    *,
    store: WindowStore,
    lifecycle: str,
    key: KeyStrategy,
    window_s: float,
    max_idle_s: float = 3.0,
) -> dict[str, Any]:
    """Publish ``envelopes``, consume them with a handler failing once on ``failing_keys``; count outcomes.

    ``lost`` counts events the handler never completed. With
    ``lifecycle="mark_first"`` a failed event's redelivery is dropped as a
    duplicate of itself; with ``"claim"`` the claim is released and the
    redelivery processed.
    """
    attempts: collections.Counter[str] = collections.Counter()
    succeeded: set[str] = set()

    def flaky(event: Mapping[str, Any]) -> None:
        k = key.key_for(event)
        attempts[k] += 1
        if k in failing_keys and attempts[k] == 1:
            raise TimeoutError(f"downstream timed out on {k[:40]}…")
        succeeded.add(k)

    DuplicateInjector().publish(bus_events, handles.bus_name, envelopes)
    dedup = Deduplicator(store, key=key, window_s=window_s, lifecycle=lifecycle)
    stats = SQSConsumer(sqs, handles.queue_url, dedup, flaky, wait_time_s=1).run(max_idle_s=max_idle_s)
    keys = {key.key_for(e) for e in envelopes}
    return {"lifecycle": lifecycle, "events": len(keys), "handler failures": stats.failed,
            "processed": len(succeeded & keys), "dropped as duplicate": stats.duplicates,
            "lost": len(keys - succeeded), "deleted": stats.deleted}


class HandledBy:
    """Which consumers handled each logical event (by key), recorded from several threads."""

    def __init__(self, key: KeyStrategy, handler_ms: float = 0.0) -> None:
        self.key = key
        self.handler_ms = handler_ms
        self.by_key: dict[str, list[str]] = collections.defaultdict(list)
        self._lock = threading.Lock()

    def handler(self, consumer: str) -> Callable[[Mapping[str, Any]], None]:
        """A handler for ``consumer`` that works ``handler_ms`` and records the event."""

        def handle(event: Mapping[str, Any]) -> None:
            time.sleep(self.handler_ms / 1000)  # the work a real handler does
            with self._lock:
                self.by_key[self.key.key_for(event)].append(consumer)

        return handle

    def twice(self) -> int:
        """Logical events handled more than once."""
        return sum(len(who) > 1 for who in self.by_key.values())


def consume_in_threads(
    consumers: Mapping[str, SQSConsumer], *, max_idle_s: float
) -> dict[str, dict[str, int]]:
    """Run every consumer in its own thread until each has been idle ``max_idle_s``; their counters."""
    threads = [threading.Thread(target=c.run, kwargs={"max_idle_s": max_idle_s}, name=name)
               for name, c in consumers.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {name: c.stats.as_dict() for name, c in consumers.items()}


def lambda_sqs_event(bodies: Iterable[str]) -> dict[str, Any]:
    """The event an SQS event source mapping passes to Lambda: one record per body, ids ``msg-0``…"""
    return {"Records": [
        {"messageId": f"msg-{i}", "receiptHandle": f"handle-{i}", "body": body, "eventSource": "aws:sqs",
         "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}}
        for i, body in enumerate(bodies)]}
