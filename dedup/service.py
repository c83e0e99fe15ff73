"""The dedup lifecycle: claim, run the handler, then complete or release.

:class:`Deduplicator` is what consumers (the SQS consumer, the Lambda handler,
the trace replay) call. It derives each event's key, claims the batch's keys in
one store call, runs the handler only for CLAIMED events, and then completes the
claims of events the handler processed and releases the claims of events it
failed on, so a redelivery processes them: a failing handler never loses an
event.

**Leases live while their work lives.** While a batch's events wait for their
turn or their handler runs, a lease keeper extends the batch's live leases
(token-fenced, one ``extend`` call for all of them) every ``lease_s / 3``: between
handlers on the batch's own thread, and from a background beat while a handler
runs longer than that. So ``lease_s`` bounds only how long a *crashed* holder
blocks a key, not how long a batch or a handler may take. ``deadline_s`` (e.g. a
Lambda's end) stops the keeping-alive: no lease is extended past it.

**Completion.** An event is completed once its handler returned, at the next
store call the batch makes: the next beat, or the end of the batch, or sooner
when ``complete_within_s`` says so. A batch shorter than a beat thus costs one
claim call and one complete call (and one release call when a handler failed);
``complete_within_s=0`` completes every event as its handler returns, at one
round trip per event, for consumers that may be killed (SIGKILL) mid-batch.
On ``KeyboardInterrupt`` or ``SystemExit`` (a consumer turns SIGTERM into one)
inside a batch, the finished events are completed and the unfinished ones
released before the exception goes on. A kill between an effect and its
completion still repeats that effect on redelivery: handlers whose effects
must never repeat should be idempotent themselves (e.g. an upsert keyed by the
event's dedup key).

**A lost lease is never silent.** If the store says the lease is gone (it ran
out and another consumer claimed or completed the key), an event still waiting
is not run (``IN_FLIGHT`` with :class:`~dedup.errors.LeaseLostError`: do not
acknowledge, the holder decides it), and an event whose handler already ran is
``PROCESSED`` with :class:`~dedup.errors.LeaseLostError` (acknowledge it:
running it again could only add a third effect, while another consumer may
have run it too). Both count ``stats.lease_lost`` and log at ERROR.
:meth:`Deduplicator.process` raises the error.

**No store error escapes once handlers ran.** ``complete`` and ``release`` are
retried with backoff for up to ``store_retry_s`` (never past the leases); what
still fails is counted (``completion_failed``, ``release_failed``) and logged at
ERROR. The event stays PROCESSED (its effect happened); without its completion
record a later duplicate would run again.

``lifecycle="mark_first"`` reproduces the tutorial's defect (mark the key seen
*before* running the handler, never undo it) so the workbench can show the
events it loses.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from dedup.errors import (
    ConfigurationError,
    LeaseLostError,
    MissingKeyError,
    PayloadMismatchError,
    StoreUnavailableError,
)
from dedup.keys import KeyStrategy, derive_key, fingerprint, key_strategy
from dedup.stores.base import Claim, ClaimStatus, WindowStore, duration_ms

log = logging.getLogger("dedup")

WindowMode = Literal["fixed", "sliding"]
Lifecycle = Literal["claim", "mark_first"]
MissingKeyPolicy = Literal["raise", "pass"]
StoreDownPolicy = Literal["fail_closed", "fail_open"]
Handler = Callable[[Mapping[str, Any]], Any]


class Outcome(enum.Enum):
    """What happened to one event."""

    PROCESSED = "processed"  # the handler ran and succeeded
    DUPLICATE = "duplicate"  # completed within the window: skipped, safe to acknowledge
    IN_FLIGHT = "in_flight"  # another consumer holds it (or took our lapsed lease): do not acknowledge
    FAILED = "failed"  # the handler (or payload validation) failed: claim released, retry
    MISSING_KEY = "missing_key"  # no key could be derived: retry, then dead-letter

    @property
    def acknowledge(self) -> bool:
        """Whether the message carrying the event may be deleted."""
        return self in (Outcome.PROCESSED, Outcome.DUPLICATE)


@dataclass(frozen=True, slots=True)
class Result:
    """The outcome of one event, with the handler's return value or the error.

    ``error`` is a :class:`~dedup.errors.LeaseLostError` beside ``PROCESSED``
    when the handler ran but the lease was lost (acknowledge: the effect
    happened), or beside ``IN_FLIGHT`` when it was lost before the handler ran.
    """

    outcome: Outcome
    key: str | None
    value: Any = None
    error: BaseException | None = None


@dataclass
class Stats:
    """Counters kept by a :class:`Deduplicator` (cumulative)."""

    events: int = 0
    processed: int = 0
    duplicates: int = 0
    in_flight: int = 0
    failed: int = 0
    missing_key: int = 0
    payload_mismatches: int = 0
    passed_without_key: int = 0
    passed_store_down: int = 0
    lease_lost: int = 0  # a claim's lease was lost (an effect may have happened twice)
    completion_failed: int = 0  # processed, but the completion record could not be written
    release_failed: int = 0  # failed, but the claim could not be released (it lapses with its lease)
    unvalidated: int = 0  # a duplicate whose record has no fingerprint to validate against

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class Deduplicator:
    """Exactly-once handler effects over at-least-once delivery, within a time window.

    * ``key``: a :class:`~dedup.keys.KeyStrategy` or spec string (default ``auto``).
    * ``window_s``: how long a completed key suppresses duplicates.
    * ``lease_s``: how long a crashed consumer's claims block other consumers.
      A live batch keeps its leases alive (extended every ``lease_s / 3``), so a
      batch or handler may take longer; set it above the longest stall of a live
      process (a GC pause, a store failover) and below the time a crashed one
      should hold up its events.
    * ``mode``: ``fixed`` (the window counts from completion) or ``sliding``
      (every duplicate sighting extends it).
    * ``lifecycle``: ``claim`` (safe) or ``mark_first`` (the tutorial's defect).
    * ``on_missing_key``: ``raise`` (the message is retried, then dead-lettered)
      or ``pass`` (the handler runs without dedup, with a warning).
    * ``on_store_down``: ``fail_closed`` (raise; nothing is acknowledged) or
      ``fail_open`` (run the handler without dedup, with a warning).
    * ``validate_payload``: a duplicate whose ``detail`` differs from the event
      on record fails with :class:`~dedup.errors.PayloadMismatchError`,
      exposing a key strategy that is too coarse. A record written without a
      fingerprint (before validation was enabled) validates nothing: its
      duplicates are DUPLICATE, counted in ``stats.unvalidated``.
    * ``complete_within_s``: the longest a finished event waits for its
      completion record (default ``lease_s / 3``, the beat); 0 completes each
      event as its handler returns (a round trip per event).
    * ``store_retry_s``: how long complete and release are retried after the
      handlers ran (never past the leases).
    """

    store: WindowStore
    key: KeyStrategy | str = "auto"
    window_s: float = 300.0
    lease_s: float = 60.0
    mode: WindowMode = "fixed"
    lifecycle: Lifecycle = "claim"
    on_missing_key: MissingKeyPolicy = "raise"
    on_store_down: StoreDownPolicy = "fail_closed"
    validate_payload: bool = False
    complete_within_s: float | None = None
    store_retry_s: float = 5.0
    stats: Stats = field(default_factory=Stats)

    def __post_init__(self) -> None:
        self.key = key_strategy(self.key)
        _check_choice("mode", self.mode, ("fixed", "sliding"))
        _check_choice("lifecycle", self.lifecycle, ("claim", "mark_first"))
        _check_choice("on_missing_key", self.on_missing_key, ("raise", "pass"))
        _check_choice("on_store_down", self.on_store_down, ("fail_closed", "fail_open"))
        for name in ("window_s", "lease_s"):
            try:
                duration_ms(getattr(self, name), name)
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from None
        for name in ("complete_within_s", "store_retry_s"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int | float) and 0 <= value < float("inf")):
                raise ConfigurationError(f"{name} must be a finite number of seconds >= 0, got {value!r}")

    def key_of(self, event: Any, message_id: str | None = None) -> str:
        """The raw dedup key of ``event``; raises :class:`MissingKeyError`."""
        return derive_key(self.key, event, message_id)  # type: ignore[arg-type]

    def process(self, event: Mapping[str, Any], handler: Handler, *, message_id: str | None = None,
                deadline_s: float | None = None) -> Result:
        """Process one event; a handler exception is raised after the claim is released.

        Raises :class:`~dedup.errors.LeaseLostError` when the handler ran but its
        lease was lost (see the module docstring).
        """
        result = self.process_batch([event], handler, message_ids=[message_id], deadline_s=deadline_s)[0]
        if result.error is not None:
            raise result.error
        return result

    def process_batch(
        self,
        events: Sequence[Any],
        handler: Handler,
        *,
        message_ids: Sequence[str | None] | None = None,
        deadline_s: float | None = None,
    ) -> list[Result]:
        """Process a batch: one store call per phase; per-event results, in order.

        Handler exceptions are captured in ``Result.error`` (the claim released).
        Raises :class:`StoreUnavailableError` under ``fail_closed`` when the
        store cannot be reached to claim: no event was decided. The batch's
        leases are kept alive while it runs, up to ``deadline_s`` (the store
        clock's time) when given. ``KeyboardInterrupt`` and ``SystemExit`` from a
        handler propagate after the finished events were completed and the
        others released.
        """
        if message_ids is not None and len(message_ids) != len(events):
            raise ValueError("message_ids must match events one to one")
        ids = list(message_ids) if message_ids is not None else [None] * len(events)
        results: list[Result | None] = [None] * len(events)
        keyed: list[int] = []
        keys: list[str] = []
        fps: list[str] = []
        for i, event in enumerate(events):
            try:
                key = self.key_of(event, ids[i])
                if self.validate_payload:
                    fps.append(self._fingerprint(event, ids[i]))
                keys.append(key)
                keyed.append(i)
            except MissingKeyError as exc:
                results[i] = self._missing_key(event, handler, exc)

        claimed_at_s = self.store.clock.now_s()  # the leases end no sooner than this + lease_s
        claims = self._claim(keys, fps if self.validate_payload else None)
        if claims is None:  # store down, fail open
            for i, k in zip(keyed, keys, strict=True):
                self.stats.passed_store_down += 1
                results[i] = self._run(events[i], handler, k)
        else:
            self._decide(events, ids, handler, keyed, claims, results, fps, claimed_at_s, deadline_s)

        self.stats.events += len(events)
        final = [r for r in results if r is not None]
        for r in final:
            self._count(r.outcome)
        return final

    # ---- internals ----------------------------------------------------------

    def _fingerprint(self, event: Mapping[str, Any], message_id: str | None) -> str:
        try:
            return fingerprint(event.get("detail"))
        except RecursionError:
            raise MissingKeyError(message_id, ["validate_payload"], ["detail nests too deeply to fingerprint"]
                                  ) from None

    def _claim(self, keys: list[str], fps: list[str] | None) -> list[Claim] | None:
        if not keys:
            return []
        lease_s = self.window_s if self.lifecycle == "mark_first" else self.lease_s
        slide_s = self.window_s if self.mode == "sliding" else None
        try:
            claims = self.store.claim(keys, lease_s, fingerprints=fps, slide_s=slide_s)
        except StoreUnavailableError:
            if self.on_store_down == "fail_closed":
                raise
            log.warning("window store down: processing %d events without dedup (fail_open)", len(keys))
            return None
        if self.lifecycle == "mark_first":
            try:
                self.store.complete(claims, self.window_s)
            except StoreUnavailableError as exc:
                log.warning("complete (mark_first) failed: %s", exc)
        return claims

    def _decide(self, events, ids, handler, keyed, claims, results, fps, claimed_at_s, deadline_s) -> None:
        held = [c for c in claims if c.status is ClaimStatus.CLAIMED]
        keeper = _Keeper(self, held, claimed_at_s, deadline_s) if held and self.lifecycle == "claim" else None
        # Outcome of each key claimed in this batch, so a later copy in the same
        # batch is a DUPLICATE once the first copy was processed.
        claimed_here: dict[str, Outcome] = {}
        try:
            for j, (i, claim) in enumerate(zip(keyed, claims, strict=True)):
                if claim.status is ClaimStatus.CLAIMED:
                    if keeper is not None and not keeper.may_run(claim):
                        result = self._lost_before_run(claim, ids[i])
                    else:
                        result = self._run(events[i], handler, claim.key)
                        if keeper is not None:
                            keeper.finished(claim, i, result.outcome is Outcome.PROCESSED)
                    claimed_here[claim.storage_key] = result.outcome
                elif self.validate_payload and claim.fingerprint and claim.fingerprint != fps[j]:
                    self.stats.payload_mismatches += 1
                    result = Result(Outcome.FAILED, claim.key, error=PayloadMismatchError(claim.key, ids[i]))
                elif (claim.status is ClaimStatus.DUPLICATE
                      or claimed_here.get(claim.storage_key) is Outcome.PROCESSED):
                    if self.validate_payload and not claim.fingerprint:
                        self.stats.unvalidated += 1
                    result = Result(Outcome.DUPLICATE, claim.key)
                else:
                    result = Result(Outcome.IN_FLIGHT, claim.key)
                results[i] = result
        except BaseException:
            if keeper is not None:
                keeper.interrupted()
            raise
        if keeper is None:
            return  # nothing claimed, or mark_first: the tutorial's defect, marked and never undone
        for i in keeper.close():
            results[i] = self._lost_after_run(results[i], ids[i])

    def _lost_before_run(self, claim: Claim, message_id: str | None) -> Result:
        self.stats.lease_lost += 1
        log.error("lease lost on %s (message %s) before its handler ran: not run, left to the holder",
                  claim.key, message_id or "<unknown>")
        return Result(Outcome.IN_FLIGHT, claim.key, error=LeaseLostError(claim.key))

    def _lost_after_run(self, result: Result, message_id: str | None) -> Result:
        self.stats.lease_lost += 1
        log.error("lease lost on %s (message %s) after its handler ran: another consumer may process it "
                  "too; acknowledged (running it again could only repeat the effect)",
                  result.key, message_id or "<unknown>")
        return dataclasses.replace(result, error=LeaseLostError(result.key or "<unknown>"))

    def _run(self, event: Mapping[str, Any], handler: Handler, key: str | None) -> Result:
        try:
            return Result(Outcome.PROCESSED, key, value=handler(event))
        except Exception as exc:
            log.info("handler failed on %s: %s", key, exc)
            return Result(Outcome.FAILED, key, error=exc)

    def _missing_key(self, event: Any, handler: Handler, exc: MissingKeyError) -> Result:
        if self.on_missing_key == "pass" and isinstance(event, Mapping):
            log.warning("%s; processing without dedup (on_missing_key='pass')", exc)
            self.stats.passed_without_key += 1
            return self._run(event, handler, None)
        log.error("%s", exc)
        return Result(Outcome.MISSING_KEY, None, error=exc)

    def _count(self, outcome: Outcome) -> None:
        attr = _COUNTER[outcome]
        setattr(self.stats, attr, getattr(self.stats, attr) + 1)


# The Stats counter of each outcome (built once: hashing enum members is slow).
_COUNTER = {
    Outcome.PROCESSED: "processed",
    Outcome.DUPLICATE: "duplicates",
    Outcome.IN_FLIGHT: "in_flight",
    Outcome.FAILED: "failed",
    Outcome.MISSING_KEY: "missing_key",
}


class _Keeper:
    """Keeps one batch's leases alive and completes or releases its claims.

    Every store call it makes carries everything due: the completions of the
    events finished so far, then (when a beat is due) one ``extend`` of the
    leases still held. Calls come from the batch's thread after a handler
    (:meth:`finished`) and from a background beat on the store's clock while a
    handler runs; a lock keeps them one at a time.
    """

    __slots__ = ("beat_s", "clock", "closed", "deadline_s", "dedup", "flush_by_s", "held", "last_s",
                 "lease_end_s", "lock", "lost", "lost_after", "next_beat_s", "pos", "store", "timer",
                 "to_complete", "to_release", "within_s")

    def __init__(self, dedup: Deduplicator, held: list[Claim], claimed_at_s: float, deadline_s: float | None
                 ) -> None:
        self.dedup = dedup
        self.store = dedup.store
        self.clock = dedup.store.clock
        self.beat_s = dedup.lease_s / 3
        self.within_s = self.beat_s if dedup.complete_within_s is None else dedup.complete_within_s
        self.deadline_s = deadline_s
        self.held = held  # the batch's CLAIMED claims, in order: held[pos:] wait or run
        self.pos = 0
        self.to_complete: list[tuple[Claim, int]] = []
        self.to_release: list[Claim] = []  # failed: held (and kept alive) until released
        self.lost_after: list[int] = []  # result indexes whose completion found the lease lost
        self.lost: set[str] = set()  # storage keys whose extend found the lease lost
        self.lock = threading.Lock()
        self.closed = False
        # When the leases surely still run (by this clock; the store's deadlines are no sooner).
        self.lease_end_s = claimed_at_s + dedup.lease_s
        self.last_s = claimed_at_s  # the clock when the last handler returned
        self.next_beat_s = claimed_at_s + self.beat_s
        self.flush_by_s = float("inf")
        self.timer = self.clock.call_at(self.next_beat_s, self._background)

    # ---- the batch's thread ---------------------------------------------

    def finished(self, claim: Claim, index: int, processed: bool) -> None:
        """A handler returned; make the store call if a beat or a completion is due."""
        with self.lock:
            self.pos += 1
            self.last_s = now_s = self.clock.now_s()
            if processed:
                if not self.to_complete:
                    self.flush_by_s = now_s + self.within_s
                self.to_complete.append((claim, index))
            else:
                self.to_release.append(claim)
            if now_s >= self.next_beat_s or now_s >= self.flush_by_s:
                self._due(now_s)

    def may_run(self, claim: Claim) -> bool:
        """Whether the next claim's handler may run: its lease is surely still ours.

        Not when an extend found it lost, nor once the leases may have lapsed (beats
        failed, or ``deadline_s`` stopped them): another consumer may hold it. A claim
        that may not run is skipped: not ours to complete or release. The time is the
        one read when the previous handler returned (nothing slow ran since).
        """
        if claim.storage_key not in self.lost and self.last_s < self.lease_end_s:
            return True
        with self.lock:
            self.lost.add(claim.storage_key)
            self.pos += 1
        return False

    def close(self) -> list[int]:
        """End of the batch: complete and release what is left; the indexes whose lease was lost."""
        self.timer.cancel()
        with self.lock:
            self.closed = True
            self._flush()
            self._release(self.to_release)
        return self.lost_after

    def interrupted(self) -> None:
        """A handler raised KeyboardInterrupt/SystemExit: complete what finished, release the rest."""
        self.timer.cancel()
        with self.lock:
            self.closed = True
            self._flush()
            self._release(self.to_release + self.held[self.pos:])

    # ---- the background beat --------------------------------------------

    def _background(self) -> None:
        if not self.lock.acquire(blocking=False):  # the batch's thread is at the store: it beats
            self._rearm(self.clock.now_s() + self.beat_s / 4)
            return
        try:
            if self.closed:
                return
            now_s = self.clock.now_s()
            self._due(now_s)
            self._rearm(self.next_beat_s)
        finally:
            self.lock.release()

    def _rearm(self, when_s: float) -> None:
        if not self.closed and (self.deadline_s is None or when_s < self.deadline_s):
            self.timer = self.clock.call_at(when_s, self._background)

    # ---- store calls (lock held) ----------------------------------------

    def _due(self, now_s: float) -> None:
        if now_s >= self.next_beat_s:
            self._beat(now_s)
        elif now_s >= self.flush_by_s:
            self._flush()

    def _beat(self, now_s: float) -> None:
        """Extend the leases still held, carrying the completions due: one store call."""
        self.next_beat_s = now_s + self.beat_s
        lost = self.lost
        live = [c for c in (*self.to_release, *self.held[self.pos:]) if c.storage_key not in lost]
        lease_s = self.dedup.lease_s
        if self.deadline_s is not None:
            lease_s = min(lease_s, self.deadline_s - now_s)
        if not live or lease_s <= 0:
            self._flush()
            return
        done, self.to_complete = self.to_complete, []
        self.flush_by_s = float("inf")
        window_s = self.dedup.window_s
        # now_s was read before the call: the new deadlines are no sooner than now_s + lease_s.
        if done:
            settled = self._retry("complete", lambda: self.store.settle([c for c, _ in done], window_s,
                                                                        live, lease_s))
            recorded, kept = settled if settled is not None else (None, None)
            self._recorded(done, recorded)
        else:
            try:
                kept = self.store.extend(live, lease_s)
            except StoreUnavailableError as exc:
                log.warning("could not extend %d leases (next try in %.1f s): %s", len(live), self.beat_s,
                            exc)
                kept = None
        if kept is None:
            return
        self.lease_end_s = now_s + lease_s
        for claim, ok in zip(live, kept, strict=True):
            if not ok:
                self.lost.add(claim.storage_key)
                log.warning("lease on %s ran out or was taken over while its batch held it", claim.key)

    def _flush(self) -> None:
        done, self.to_complete = self.to_complete, []
        self.flush_by_s = float("inf")
        if done:
            window_s = self.dedup.window_s
            self._recorded(done, self._retry("complete", lambda: self.store.complete([c for c, _ in done],
                                                                                     window_s)))

    def _recorded(self, done: list[tuple[Claim, int]], recorded: list[bool] | None) -> None:
        if recorded is not None:
            self.lost_after += [index for (_claim, index), ok in zip(done, recorded, strict=True) if not ok]
            return
        self.dedup.stats.completion_failed += len(done)
        log.error("could not record %d processed events as completed (%s): a later duplicate of "
                  "them would be processed again", len(done), ", ".join(c.key for c, _ in done))

    def _release(self, claims: list[Claim]) -> None:
        if not claims:
            return
        if self._retry("release", lambda: self.store.release(claims)) is None:
            self.dedup.stats.release_failed += len(claims)
            log.error("could not release %d claims (%s): their redeliveries wait for the lease to lapse",
                      len(claims), ", ".join(c.key for c in claims))

    def _retry(self, what: str, call: Callable[[], Any]) -> Any:
        """``call`` until it answers, with backoff, for up to ``store_retry_s`` and never past the leases."""
        give_up_s = None
        delay_s = RETRY_FIRST_DELAY_S
        while True:
            try:
                return call()
            except StoreUnavailableError as exc:
                now_s = self.clock.now_s()
                if give_up_s is None:
                    give_up_s = min(now_s + self.dedup.store_retry_s, self.lease_end_s)
                if now_s + delay_s > give_up_s:
                    log.error("%s failed after the handlers ran: %s", what, exc)
                    return None
                log.warning("%s failed (retrying in %.2f s): %s", what, delay_s, exc)
            self.clock.sleep(delay_s)
            delay_s = min(delay_s * 2, RETRY_MAX_DELAY_S)


# Backoff of complete/release retries (doubling).
RETRY_FIRST_DELAY_S = 0.05
RETRY_MAX_DELAY_S = 1.0


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigurationError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
