"""Publish EventBridge events, retrying only failed entries, and inject duplicates on purpose.

:func:`put_events` sends at most 10 entries per call and re-sends only the entries
the response reports failed (``FailedEntryCount`` / per-entry ``ErrorCode``), with
backoff and jitter; an entry EventBridge accepted is never sent twice by it.

:class:`DuplicateInjector` creates the two kinds of duplicates a consumer meets,
seeded, and records exactly what it injected:

* a *publish retry*: the same entry put again, so EventBridge stamps a new envelope
  ``id`` and ``time`` (only a key on the event's own fields catches it);
* a *delivery duplicate*: the same delivered envelope body on the queue twice, as
  when SQS delivers a message again (any key catches it, even the envelope ``id``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dedup.aws.backoff import Backoff
from dedup.aws.messages import envelope_id
from dedup.aws_errors import explained
from dedup.errors import ConfigurationError
from dedup.keys import canonical_json

log = logging.getLogger(__name__)

MAX_ENTRIES = 10  # PutEvents and SendMessageBatch limit
PUBLISH_BACKOFF = Backoff(base_delay_ms=100.0, max_delay_ms=5_000.0)
# Per-entry error codes that a retry cannot fix.
PERMANENT_ERROR_CODES = frozenset({
    "MalformedDetail", "InvalidArgument", "ValidationException", "AccessDeniedException",
    "NotAuthorizedForSourceException", "NotAuthorizedForDetailTypeException", "ResourceNotFoundException",
})
INJECTED_ATTRIBUTE = "dedup-injected"  # SQS message attribute marking a delivery-duplicate copy


@dataclass(frozen=True)
class FailedEntry:
    """An entry still not accepted when :func:`put_events` gave up."""

    index: int
    code: str
    message: str
    attempts: int


@dataclass(frozen=True)
class PublishReport:
    """What :func:`put_events` did; ``event_ids[i]`` is entry ``i``'s EventId, or ``None``."""

    event_ids: tuple[str | None, ...]
    calls: int
    resent: int
    delays_ms: tuple[float, ...]
    failed: tuple[FailedEntry, ...]

    @property
    def sent(self) -> int:
        return sum(1 for event_id in self.event_ids if event_id is not None)


def to_entry(envelope: Mapping[str, Any], bus_name: str) -> dict[str, Any]:
    """The PutEvents entry that publishes ``envelope`` (``source``, ``detail-type``, ``detail``).

    ``id`` and ``time`` are left to EventBridge, which stamps them on every put, as it
    does for a partner event source.
    """
    for name in ("source", "detail-type", "detail"):
        if name not in envelope:
            raise ConfigurationError(f"cannot publish an envelope without {name!r}: {sorted(envelope)}")
    entry: dict[str, Any] = {
        "Source": envelope["source"],
        "DetailType": envelope["detail-type"],
        "Detail": canonical_json(envelope["detail"]),
        "EventBusName": bus_name,
    }
    if envelope.get("resources"):
        entry["Resources"] = list(envelope["resources"])
    return entry


def put_events(
    events: Any,
    entries: Sequence[Mapping[str, Any]],
    *,
    max_attempts: int = 5,
    backoff: Backoff = PUBLISH_BACKOFF,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> PublishReport:
    """Send ``entries`` in calls of at most 10; re-send only the failed ones, up to ``max_attempts``."""
    if max_attempts < 1:
        raise ConfigurationError(f"max_attempts must be at least 1, got {max_attempts}")
    rng = rng or random.Random()
    event_ids: list[str | None] = [None] * len(entries)
    failed: list[FailedEntry] = []
    delays_ms: list[float] = []
    calls = resent = 0
    for start in range(0, len(entries), MAX_ENTRIES):
        pending = list(range(start, min(start + MAX_ENTRIES, len(entries))))
        last: dict[int, tuple[str, str]] = {}
        for attempt in range(max_attempts):
            if attempt:
                delays_ms.append(backoff.delay_ms(attempt - 1, rng))
                sleep(delays_ms[-1] / 1000)
                resent += len(pending)
            bus = str(entries[pending[0]].get("EventBusName", "default"))
            with explained(events, "events:PutEvents", f"bus {bus}"):
                response = events.put_events(Entries=[dict(entries[i]) for i in pending])
            calls += 1
            retry: list[int] = []
            for i, result in zip(pending, response["Entries"], strict=True):
                if result.get("EventId") and not result.get("ErrorCode"):
                    event_ids[i] = result["EventId"]
                    continue
                code, message = result.get("ErrorCode", "?"), result.get("ErrorMessage", "")
                if code in PERMANENT_ERROR_CODES:
                    failed.append(FailedEntry(i, code, message, attempt + 1))
                else:
                    last[i] = (code, message)
                    retry.append(i)
            pending = retry
            if not pending:
                break
        failed += [FailedEntry(i, *last[i], max_attempts) for i in pending]
    for f in failed:
        log.error("PutEvents entry %d not accepted after %d attempt(s): %s %s", f.index, f.attempts,
                  f.code, f.message)
    failed.sort(key=lambda f: f.index)
    return PublishReport(tuple(event_ids), calls, resent, tuple(delays_ms), tuple(failed))


@dataclass
class Injected:
    """Exactly what a :class:`DuplicateInjector` added, cumulative."""

    publish_retries: list[int] = field(default_factory=list)  # indices of envelopes put twice
    publish_retry_ids: list[str] = field(default_factory=list)  # EventIds of those extra puts
    delivery_duplicates: list[str] = field(default_factory=list)  # envelope ids whose body was re-sent

    @property
    def total(self) -> int:
        return len(self.publish_retry_ids) + len(self.delivery_duplicates)


class DuplicateInjector:
    """Seeded source of both duplicate kinds; ``injected`` records what it added."""

    def __init__(self, *, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.injected = Injected()

    def publish(
        self,
        events: Any,
        bus_name: str,
        envelopes: Sequence[Mapping[str, Any]],
        *,
        publish_retries: int = 0,
        **put_options: Any,
    ) -> PublishReport:
        """Put every envelope once, plus ``publish_retries`` extra puts of envelopes drawn at random.

        Each extra put follows its original (as a producer's retry does), so EventBridge
        gives it a new ``id`` and ``time``.
        """
        if publish_retries and not envelopes:
            raise ConfigurationError("publish retries need at least one envelope to repeat")
        picks = sorted(self.rng.choices(range(len(envelopes)), k=publish_retries))
        entries = [to_entry(e, bus_name) for e in [*envelopes, *(envelopes[i] for i in picks)]]
        report = put_events(events, entries, **put_options)
        for n, i in enumerate(picks):
            event_id = report.event_ids[len(envelopes) + n]
            if event_id is not None:
                self.injected.publish_retries.append(i)
                self.injected.publish_retry_ids.append(event_id)
        return report

    def duplicate_deliveries(
        self, sqs: Any, queue_url: str, count: int, *, hold_s: int = 60, wait_time_s: int = 1
    ) -> list[str]:
        """Send ``count`` delivered bodies to the queue again; return the copied envelope ids.

        It peeks: receives messages (holding them invisible for ``hold_s``), copies the
        bodies of randomly chosen ones with ``SendMessage``, then makes every peeked
        message visible again. Each peeked message's receive count goes up by one, so
        keep ``maxReceiveCount`` above 2. When fewer than ``count`` messages can be
        peeked (consumers already took the rest), copies repeat the ones peeked: run
        it while the queue still holds what it should copy.
        """
        if count <= 0:
            return []
        peeked: list[dict[str, Any]] = []
        while len(peeked) < count:
            with explained(sqs, "sqs:ReceiveMessage", queue_url):
                batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=MAX_ENTRIES,
                                            WaitTimeSeconds=wait_time_s,
                                            VisibilityTimeout=hold_s).get("Messages", [])
            if not batch:
                break
            peeked += batch
        if not peeked:
            raise ConfigurationError(f"no delivered message on {queue_url} to duplicate: publish first")
        try:
            chosen = (self.rng.sample(peeked, count) if len(peeked) >= count
                      else self.rng.choices(peeked, k=count))
            copied = self._send_copies(sqs, queue_url, chosen)
        finally:
            self._release(sqs, queue_url, peeked)
        self.injected.delivery_duplicates += copied
        return copied

    def _send_copies(self, sqs: Any, queue_url: str, messages: Sequence[dict[str, Any]]) -> list[str]:
        copied: list[str] = []
        for start in range(0, len(messages), MAX_ENTRIES):
            chunk = messages[start:start + MAX_ENTRIES]
            entries = [{"Id": str(i), "MessageBody": m["Body"], "MessageAttributes": {
                INJECTED_ATTRIBUTE: {"DataType": "String", "StringValue": "delivery-duplicate"}}}
                for i, m in enumerate(chunk)]
            with explained(sqs, "sqs:SendMessage", queue_url):
                response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
            for bad in response.get("Failed", []):
                log.error("delivery duplicate not injected: %s %s", bad.get("Code"), bad.get("Message"))
            for ok in response.get("Successful", []):
                copied.append(envelope_id(chunk[int(ok["Id"])]["Body"]) or "<no id>")
        return copied

    def _release(self, sqs: Any, queue_url: str, messages: Sequence[dict[str, Any]]) -> None:
        for start in range(0, len(messages), MAX_ENTRIES):
            chunk = messages[start:start + MAX_ENTRIES]
            sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                for i, m in enumerate(chunk)])
