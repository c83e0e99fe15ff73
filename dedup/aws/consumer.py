"""A long-polling SQS consumer that acknowledges exactly what the dedup lifecycle allows.

Per batch: receive up to 10 messages (long polling), parse every body, claim the
whole batch in one store call (:meth:`Deduplicator.process_batch`), run the handler
on new events while a heartbeat keeps the batch invisible (and ``process_batch``
keeps its leases alive), then delete, with ``DeleteMessageBatch``, only the
processed messages and completed duplicates.
Everything else stays on the queue: handler failures return after the visibility
timeout; IN_FLIGHT copies (another consumer holds their key) are hidden for
``lease_s``, the longest a crashed holder's claim can last (a live holder keeps its
lease alive, and a copy that comes back while it works is hidden again), since
receiving them sooner would only spend their receive counts; bad bodies and
keyless events return too and reach the dead-letter queue after ``maxReceiveCount``
receives. A store outage deletes nothing and backs off. Delete failures are
retried and reported, never ignored.

Every receive counts towards ``maxReceiveCount``, including receives during a
store outage: size ``maxReceiveCount`` x visibility timeout above the longest store
outage you want to ride out without dead-lettering good messages (they can be
redriven from the DLQ afterwards).

SIGTERM or SIGINT inside a batch (in the main thread) ends it early: the handler
that runs finishes, the events not started are released, the finished ones are
completed and deleted, and :meth:`SQSConsumer.run` returns. A second signal
interrupts the running handler too (``KeyboardInterrupt``), after the same
settlement.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from dedup.aws.backoff import Backoff
from dedup.aws.messages import Disposition, Message, decide, parse_body
from dedup.aws_errors import error_code, explain, explained
from dedup.clock import SYSTEM_CLOCK, Clock
from dedup.errors import BadMessageError, ConfigurationError, MissingKeyError, StoreUnavailableError
from dedup.service import Deduplicator, Handler, Outcome

log = logging.getLogger(__name__)

MAX_BATCH = 10  # SQS ReceiveMessage / DeleteMessageBatch limit
MAX_WAIT_S = 20  # SQS long-polling limit
MAX_VISIBILITY_S = 43_200  # SQS limit on a message's visibility timeout (12 h)
DELETE_BACKOFF = Backoff(base_delay_ms=100.0, max_delay_ms=2_000.0)
OUTAGE_BACKOFF = Backoff(base_delay_ms=1_000.0, max_delay_ms=30_000.0)


@dataclass
class ConsumerStats:
    """Cumulative counters of an :class:`SQSConsumer` (messages, except ``store_outages``)."""

    received: int = 0
    processed: int = 0
    duplicates: int = 0
    in_flight: int = 0
    in_flight_hidden: int = 0  # IN_FLIGHT copies kept hidden for the lease (see SQSConsumer)
    failed: int = 0
    bad_input: int = 0  # not JSON, not an object, or no dedup key
    deleted: int = 0
    delete_failures: int = 0  # still not deleted after the retries
    store_outages: int = 0  # batches left alone, or store checks failed, because the store was down
    released_on_stop: int = 0  # messages of a batch a signal ended early, handed back unprocessed

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class DeleteFailure:
    """A message ``DeleteMessageBatch`` would not delete, even after retries."""

    message_id: str
    code: str
    reason: str
    attempts: int


@dataclass(frozen=True)
class BatchReport:
    """What one receive did: the decisions, what was deleted and what could not be."""

    received: int = 0
    dispositions: tuple[Disposition, ...] = ()
    deleted: tuple[str, ...] = ()
    delete_failures: tuple[DeleteFailure, ...] = ()
    store_outage: StoreUnavailableError | None = None


class SQSConsumer:
    """Consumes one queue with a :class:`~dedup.service.Deduplicator` and a handler.

    * ``sqs``: a boto3 SQS client (see :func:`dedup.aws.session.aws_session`).
    * ``queue_url``: the queue (``dedup.aws.stack.queue_url_for`` resolves a name).
    * ``wait_time_s``: long-polling wait, at most 20.
    * ``visibility_timeout_s``: the receive's visibility timeout; ``None`` keeps the
      queue's (read at start, for the heartbeat).
    * ``heartbeat_interval_s``: how often a running batch's visibility is extended;
      default a third of the visibility timeout.
    * ``in_flight_visibility_s``: how long an IN_FLIGHT copy stays hidden; default the
      Deduplicator's ``lease_s`` rounded up (the longest another consumer can hold its
      key), capped at SQS's 12 h. Only applied when longer than the visibility timeout;
      0 leaves such copies to the visibility timeout.
    * ``delete_attempts`` / ``delete_backoff``: retries of failed delete entries.
    * ``outage_backoff``: the pause after a store outage (grows while it lasts).
    * ``sleep`` / ``clock`` / ``rng``: injectable for tests.
    * ``on_batch``: called with each :class:`BatchReport` (progress bars, demos).

    One heartbeat thread serves every batch for the consumer's life (started on the
    first batch; :meth:`close`, or leaving ``with``, stops it).
    """

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        dedup: Deduplicator,
        handler: Handler,
        *,
        wait_time_s: int = MAX_WAIT_S,
        visibility_timeout_s: int | None = None,
        heartbeat_interval_s: float | None = None,
        in_flight_visibility_s: int | None = None,
        delete_attempts: int = 3,
        delete_backoff: Backoff = DELETE_BACKOFF,
        outage_backoff: Backoff = OUTAGE_BACKOFF,
        sleep: Callable[[float], None] = time.sleep,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        on_batch: Callable[[BatchReport], None] | None = None,
    ) -> None:
        if not 0 <= wait_time_s <= MAX_WAIT_S:
            raise ConfigurationError(f"wait_time_s must be 0..{MAX_WAIT_S}, got {wait_time_s}")
        if delete_attempts < 1:
            raise ConfigurationError(f"delete_attempts must be at least 1, got {delete_attempts}")
        self.sqs = sqs
        self.queue_url = queue_url
        self.dedup = dedup
        self.handler = handler
        self.wait_time_s = wait_time_s
        self.visibility_timeout_s = visibility_timeout_s
        self.heartbeat_interval_s = heartbeat_interval_s
        if in_flight_visibility_s is None:
            in_flight_visibility_s = min(MAX_VISIBILITY_S, math.ceil(dedup.lease_s))
        if not 0 <= in_flight_visibility_s <= MAX_VISIBILITY_S:
            raise ConfigurationError(f"in_flight_visibility_s must be 0..{MAX_VISIBILITY_S}, "
                                     f"got {in_flight_visibility_s}")
        self.in_flight_visibility_s = in_flight_visibility_s
        self.delete_attempts = delete_attempts
        self.delete_backoff = delete_backoff
        self.outage_backoff = outage_backoff
        self.stats = ConsumerStats()
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self._on_batch = on_batch
        self._stop = threading.Event()
        self._shutdown = threading.Event()  # a signal: end the running batch early
        self._heartbeat = _Heartbeat(self._extend_visibility)
        self._checked = False
        self._outages_in_a_row = 0
        self._last_outage: StoreUnavailableError | None = None
        self._receive_errors_in_a_row = 0

    # ---- public -------------------------------------------------------------

    def stop(self) -> None:
        """Stop :meth:`run` after the current batch."""
        self._stop.set()

    def close(self) -> None:
        """Stop the heartbeat thread (a later batch starts it again)."""
        self._heartbeat.close()

    def __enter__(self) -> SQSConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, *, max_messages: int | None = None, max_idle_s: float | None = None) -> ConsumerStats:
        """Poll until stopped, ``max_messages`` more received, or nothing arrived for ``max_idle_s``.

        In the main thread, SIGTERM and SIGINT end the current batch after the running
        handler (the rest of the batch is released) and stop; a second signal
        interrupts that handler too and raises ``KeyboardInterrupt`` once the batch
        is settled.
        """
        self._stop.clear()
        self._shutdown.clear()
        start = self.stats.received
        with self._stop_on_signals():
            idle_since_s = self._clock.now_s()
            while not self._stop.is_set():
                batch = MAX_BATCH
                if max_messages is not None:
                    batch = min(batch, max_messages - (self.stats.received - start))
                    if batch <= 0:
                        break
                wait_s = self.wait_time_s
                if max_idle_s is not None:
                    idle_left_s = max_idle_s - (self._clock.now_s() - idle_since_s)
                    if idle_left_s <= 0:
                        break
                    wait_s = min(wait_s, math.ceil(idle_left_s))
                report = self.poll_once(max_messages=batch, wait_time_s=wait_s)
                if report.received:
                    idle_since_s = self._clock.now_s()
        return self.stats

    def poll_once(self, *, max_messages: int = MAX_BATCH, wait_time_s: int | None = None) -> BatchReport:
        """Receive one batch and settle it; returns what happened."""
        self._check_queue()
        if self._outages_in_a_row and not self._store_answers():
            return self._report(BatchReport(0, store_outage=self._last_outage))
        messages = self._receive(max_messages, self.wait_time_s if wait_time_s is None else wait_time_s)
        if not messages:
            return self._report(BatchReport())
        self.stats.received += len(messages)
        batch = [_message(m) for m in messages]
        finished: list[Any] = []
        try:
            with self._heartbeat.watching((self._visibility_entries(messages), messages),
                                          self._beat_interval_s()):
                dispositions = decide(self.dedup, self._guarded(finished), batch)
        except StoreUnavailableError as exc:
            return self._report(self._store_down(exc, len(messages)))
        except KeyboardInterrupt as exc:  # process_batch completed the finished events, released the rest
            report = self._settle_interrupted(messages, finished)
            if not isinstance(exc, _ShutdownRequested):
                raise
            return report
        self._outages_in_a_row = 0
        for d in dispositions:
            self._count(d)
        handles = {m["MessageId"]: m["ReceiptHandle"] for m in messages}
        to_delete = [(d.message.message_id, handles[d.message.message_id]) for d in dispositions
                     if d.acknowledge]
        deleted, failures = self._delete(to_delete)
        self._hide_in_flight(dispositions, handles)
        return self._report(BatchReport(len(messages), tuple(dispositions), tuple(deleted), tuple(failures)))

    # ---- receive ------------------------------------------------------------

    def _check_queue(self) -> None:
        """Fail fast, with a clear error, on a queue that is missing or not ours to read."""
        if self._checked:
            return
        with explained(self.sqs, "sqs:GetQueueAttributes", self.queue_url):
            attrs = self.sqs.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["VisibilityTimeout", "RedrivePolicy"]
            ).get("Attributes", {})
        if self.visibility_timeout_s is None:
            self.visibility_timeout_s = int(attrs.get("VisibilityTimeout", 30))
        if "RedrivePolicy" not in attrs:
            log.warning("queue %s has no redrive policy: a message that can never be processed is "
                        "retried until its retention period ends, then lost", self.queue_url)
        self._checked = True

    def _receive(self, max_messages: int, wait_time_s: int) -> list[dict[str, Any]]:
        from botocore.exceptions import BotoCoreError, ClientError

        request: dict[str, Any] = {
            "QueueUrl": self.queue_url,
            "MaxNumberOfMessages": max(1, min(MAX_BATCH, max_messages)),
            "WaitTimeSeconds": max(0, min(MAX_WAIT_S, wait_time_s)),
            "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
        }
        if self.visibility_timeout_s is not None:
            request["VisibilityTimeout"] = self.visibility_timeout_s
        try:
            messages = self.sqs.receive_message(**request).get("Messages", [])
        except (ClientError, BotoCoreError) as exc:
            clear = self._misconfigured(exc, "sqs:ReceiveMessage")
            if clear is not None:
                raise clear from exc
            delay_ms = self.outage_backoff.delay_ms(self._receive_errors_in_a_row, self._rng)
            self._receive_errors_in_a_row += 1
            log.warning("receive from %s failed (%s); retrying in %.0f ms", self.queue_url, exc, delay_ms)
            self._sleep(delay_ms / 1000)
            return []
        self._receive_errors_in_a_row = 0
        return messages

    def _misconfigured(self, exc: BaseException, action: str) -> ConfigurationError | None:
        """A configuration error to stop on; ``None`` for trouble worth retrying.

        Once the queue answered at start, a lost connection is a network blip to
        ride out, not a wrong endpoint.
        """
        from botocore.exceptions import EndpointConnectionError

        if isinstance(exc, EndpointConnectionError):
            return None
        return explain(exc, self.sqs, action, self.queue_url)

    # ---- settle -------------------------------------------------------------

    def _store_answers(self) -> bool:
        """After an outage, check the store before receiving again (backing off while it is down).

        Receiving while nothing can be decided would only spend the messages' receive
        counts and push good messages towards the DLQ.
        """
        try:
            self.dedup.store.ping()
        except StoreUnavailableError as exc:
            self._store_down(exc, 0)
            return False
        log.info("window store answers again after %d failed attempt(s): resuming", self._outages_in_a_row)
        return True

    def _store_down(self, exc: StoreUnavailableError, received: int) -> BatchReport:
        self._last_outage = exc
        self.stats.store_outages += 1
        delay_ms = self.outage_backoff.delay_ms(self._outages_in_a_row, self._rng)
        self._outages_in_a_row += 1
        if received:
            log.error("%s: none of the %d messages of this batch was decided or deleted; they return "
                      "after the visibility timeout. Backing off %.0f ms (outage #%d in a row)",
                      exc, received, delay_ms, self._outages_in_a_row)
        else:
            log.error("%s: still down, receiving nothing meanwhile. Backing off %.0f ms "
                      "(outage #%d in a row)", exc, delay_ms, self._outages_in_a_row)
        self._sleep(delay_ms / 1000)
        return BatchReport(received, store_outage=exc)

    def _delete(self, entries: Sequence[tuple[str, str]]) -> tuple[list[str], list[DeleteFailure]]:
        """Delete ``(message_id, receipt_handle)`` pairs; retry transient per-entry failures."""
        from botocore.exceptions import BotoCoreError, ClientError

        pending = {str(i): entry for i, entry in enumerate(entries)}
        deleted: list[str] = []
        failures: list[DeleteFailure] = []
        last: dict[str, tuple[str, str]] = {}
        attempt = 0
        while pending and attempt < self.delete_attempts:
            if attempt:
                self._sleep(self.delete_backoff.delay_ms(attempt - 1, self._rng) / 1000)
            attempt += 1
            try:
                response = self.sqs.delete_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[{"Id": k, "ReceiptHandle": handle} for k, (_, handle) in pending.items()],
                )
            except (ClientError, BotoCoreError) as exc:
                clear = self._misconfigured(exc, "sqs:DeleteMessage")
                if clear is not None:
                    raise clear from exc
                last = {k: (error_code(exc) or type(exc).__name__, str(exc)) for k in pending}
                continue
            for ok in response.get("Successful", []):
                deleted.append(pending.pop(ok["Id"])[0])
            for bad in response.get("Failed", []):
                reason = (bad.get("Code", "?"), bad.get("Message", ""))
                if bad.get("SenderFault"):  # e.g. a stale receipt handle: retrying cannot help
                    message_id = pending.pop(bad["Id"])[0]
                    failures.append(DeleteFailure(message_id, reason[0], reason[1], attempt))
                else:
                    last[bad["Id"]] = reason
        failures += [DeleteFailure(mid, *last.get(k, ("?", "")), attempt) for k, (mid, _) in pending.items()]
        for f in failures:
            log.error("could not delete message %s (%s: %s) after %d attempt(s): it returns after the "
                      "visibility timeout and is then dropped as a duplicate", f.message_id, f.code,
                      f.reason, f.attempts)
        self.stats.deleted += len(deleted)
        self.stats.delete_failures += len(failures)
        return deleted, failures

    def _hide_in_flight(self, dispositions: Sequence[Disposition], handles: dict[str, str]) -> None:
        """Keep IN_FLIGHT copies hidden until their holder's lease has surely run out.

        Back after the visibility timeout, they would only be told IN_FLIGHT again
        while the lease lasts, each receive spending one of their ``maxReceiveCount``
        (a copy held through a crashed consumer's lease could reach the DLQ).
        """
        hide_s = self.in_flight_visibility_s
        if hide_s <= (self.visibility_timeout_s or 0):
            return
        ids = [d.message.message_id for d in dispositions
               if d.result is not None and d.result.outcome is Outcome.IN_FLIGHT]
        if not ids:
            return
        from botocore.exceptions import BotoCoreError, ClientError

        entries = [{"Id": str(i), "ReceiptHandle": handles[mid], "VisibilityTimeout": hide_s}
                   for i, mid in enumerate(ids)]
        try:
            response = self.sqs.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)
        except (ClientError, BotoCoreError) as exc:
            log.warning("could not hide %d in-flight copies for %d s (%s): they return after the "
                        "visibility timeout", len(ids), hide_s, exc)
            return
        failed = response.get("Failed", [])
        for bad in failed:
            log.warning("could not hide in-flight copy %s for %d s (%s): it returns after the visibility "
                        "timeout", ids[int(bad["Id"])], hide_s, bad.get("Code"))
        self.stats.in_flight_hidden += len(ids) - len(failed)

    def _count(self, d: Disposition) -> None:
        if d.bad_input:
            self.stats.bad_input += 1
            return
        outcome = d.result.outcome if d.result else None
        if outcome is Outcome.PROCESSED:
            self.stats.processed += 1
        elif outcome is Outcome.DUPLICATE:
            self.stats.duplicates += 1
        elif outcome is Outcome.IN_FLIGHT:
            self.stats.in_flight += 1
        else:
            self.stats.failed += 1

    def _report(self, report: BatchReport) -> BatchReport:
        if self._on_batch is not None:
            self._on_batch(report)
        return report

    # ---- heartbeat and signals ----------------------------------------------

    def _visibility_entries(self, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        visibility_s = self.visibility_timeout_s
        return [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": visibility_s}
                for i, m in enumerate(messages)]

    def _beat_interval_s(self) -> float:
        """0 turns the heartbeat off (no visibility timeout to extend)."""
        visibility_s = self.visibility_timeout_s or 0
        return 0.0 if visibility_s <= 0 else (self.heartbeat_interval_s or visibility_s / 3)

    def _extend_visibility(self, batch: tuple[list[dict[str, Any]], Sequence[dict[str, Any]]]) -> None:
        """One heartbeat: keep a running batch's messages invisible, so no one else receives them."""
        entries, messages = batch
        try:
            response = self.sqs.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)
        except Exception as exc:
            log.warning("heartbeat on %s failed: %s", self.queue_url, exc)
            return
        for bad in response.get("Failed", []):
            log.warning("could not extend the visibility of message %s (%s): another consumer may receive "
                        "it; its claim makes it IN_FLIGHT there", messages[int(bad["Id"])]["MessageId"],
                        bad.get("Code"))

    def _guarded(self, finished: list[Any]) -> Handler:
        """The handler, refusing to start once a signal asked to stop, noting each event it finished."""
        handler = self.handler

        def guarded(event: Any) -> Any:
            if self._shutdown.is_set():
                raise _ShutdownRequested
            value = handler(event)
            finished.append(event)
            return value

        return guarded

    def _settle_interrupted(self, messages: Sequence[dict[str, Any]], finished: Sequence[Any]) -> BatchReport:
        """Delete the messages of the events whose handler finished (``process_batch`` completed
        them); make the rest visible again at once, for another consumer to take."""
        done_keys = {self.dedup.key_of(event) for event in finished}
        keep, delete = [], []
        for m in messages:
            try:
                key = self.dedup.key_of(parse_body(m.get("Body", ""), m["MessageId"]), m["MessageId"])
            except (BadMessageError, MissingKeyError):
                key = None
            (delete if key is not None and key in done_keys else keep).append(m)
        deleted, failures = self._delete([(m["MessageId"], m["ReceiptHandle"]) for m in delete])
        self.stats.processed += len(finished)
        self.stats.released_on_stop += len(keep)
        if keep:
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                       for i, m in enumerate(keep)]
            # Best effort: they return after the visibility timeout anyway.
            with contextlib.suppress(Exception):
                self.sqs.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)
        log.warning("batch interrupted: %d finished event(s) completed, %d message(s) deleted; %d message(s) "
                    "released for redelivery", len(finished), len(deleted), len(keep))
        self._stop.set()
        return self._report(BatchReport(len(messages), (), tuple(deleted), tuple(failures)))

    @contextlib.contextmanager
    def _stop_on_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_signal(signum: int, frame: Any) -> None:
            if self._shutdown.is_set():
                raise KeyboardInterrupt
            log.info("%s: stopping after the running handler; the rest of the batch is released (again to "
                     "interrupt the handler too)", signal.Signals(signum).name)
            self._shutdown.set()
            self._stop.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


class _ShutdownRequested(KeyboardInterrupt):
    """Raised instead of starting a handler once a signal asked the consumer to stop."""


class _Heartbeat:
    """One thread, for the consumer's life, that extends the running batch's visibility every interval."""

    def __init__(self, beat: Callable[[Any], None]) -> None:
        self._beat = beat
        self._lock = threading.Lock()  # guards _batch and _thread
        self._beating = threading.Lock()  # held while a beat is sent
        self._wake = threading.Event()
        self._batch: tuple[Any, float] | None = None
        self._closed = False
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watching(self, batch: Any, interval_s: float) -> Iterator[None]:
        """Beat on ``batch`` every ``interval_s`` (0: never) until the block ends."""
        if interval_s <= 0:
            yield
            return
        with self._lock:
            self._batch = (batch, interval_s)
            self._closed = False
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="sqs-heartbeat", daemon=True)
                self._thread.start()
        self._wake.set()
        try:
            yield
        finally:
            with self._lock:
                self._batch = None
            self._wake.set()
            with self._beating:  # no beat of this batch after it ended
                pass

    def close(self) -> None:
        with self._lock:
            self._closed, thread = True, self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                if self._closed:
                    return
                batch = self._batch
            if batch is None:
                continue
            # Beat every interval until the batch changes (a wake) or ends.
            while not self._wake.wait(batch[1]):
                with self._beating:
                    with self._lock:
                        if self._batch is not batch:
                            break
                    self._beat(batch[0])
            self._wake.set()  # re-read the state at the top


def _message(raw: dict[str, Any]) -> Message:
    count = raw.get("Attributes", {}).get("ApproximateReceiveCount")
    return Message(raw["MessageId"], raw.get("Body", ""), int(count) if count else None)

