"""The dedup lifecycle: claim, run the handler, then complete or release.

:class:`Deduplicator` is what consumers (the SQS consumer, the Lambda handler,
the trace replay) call. It derives each event's key, claims the batch's keys in
one store call, runs the handler only for CLAIMED events, and then completes the
claims of events the handler processed and releases the claims of events it
failed on, so a redelivery processes them: a failing handler never loses an
event.

Completion is batched too: the claims of a batch are completed together after
its last handler ran. A consumer killed in between leaves those claims to lapse
with their lease, and a redelivery then runs the batch's earlier handlers again.
No dedup store can close that gap (the effect and the record are not one
transaction): handlers whose effects must not repeat after a crash should be
idempotent themselves, e.g. an upsert keyed by the event's dedup key.

``lifecycle="mark_first"`` reproduces the tutorial's defect (mark the key seen
*before* running the handler, never undo it) so the workbench can show the
events it loses.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from dedup.errors import (
    ConfigurationError,
    MissingKeyError,
    PayloadMismatchError,
    StoreUnavailableError,
)
from dedup.keys import KeyExplanation, KeyStrategy, derive_key, explain_key, fingerprint, key_strategy
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
    IN_FLIGHT = "in_flight"  # another consumer holds it: do not acknowledge, it comes back
    FAILED = "failed"  # the handler (or payload validation) failed: claim released, retry
    MISSING_KEY = "missing_key"  # no key could be derived: retry, then dead-letter

    @property
    def acknowledge(self) -> bool:
        """Whether the message carrying the event may be deleted."""
        return self in (Outcome.PROCESSED, Outcome.DUPLICATE)


@dataclass(frozen=True, slots=True)
class Result:
    """The outcome of one event, with the handler's return value or the error."""

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
    lease_lost: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class Deduplicator:
    """Exactly-once handler effects over at-least-once delivery, within a time window.

    * ``key``: a :class:`~dedup.keys.KeyStrategy` or spec string (default ``auto``).
    * ``window_s``: how long a completed key suppresses duplicates.
    * ``lease_s``: how long a claim blocks other consumers; set it above the
      handler's longest run (a lease that runs out lets another consumer in).
    * ``mode``: ``fixed`` (the window counts from completion) or ``sliding``
      (every duplicate sighting extends it).
    * ``lifecycle``: ``claim`` (safe) or ``mark_first`` (the tutorial's defect).
    * ``on_missing_key``: ``raise`` (the message is retried, then dead-lettered)
      or ``pass`` (the handler runs without dedup, with a warning).
    * ``on_store_down``: ``fail_closed`` (raise; nothing is acknowledged) or
      ``fail_open`` (run the handler without dedup, with a warning).
    * ``validate_payload``: a duplicate whose ``detail`` differs from the event
      on record fails with :class:`~dedup.errors.PayloadMismatchError`,
      exposing a key strategy that is too coarse.
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

    def key_of(self, event: Any, message_id: str | None = None) -> str:
        """The raw dedup key of ``event``; raises :class:`MissingKeyError`."""
        return derive_key(self.key, event, message_id)  # type: ignore[arg-type]

    def process(self, event: Mapping[str, Any], handler: Handler, *, message_id: str | None = None) -> Result:
        """Process one event; a handler exception is raised after the claim is released."""
        result = self.process_batch([event], handler, message_ids=[message_id])[0]
        if result.error is not None:
            raise result.error
        return result

    def process_batch(
        self,
        events: Sequence[Any],
        handler: Handler,
        *,
        message_ids: Sequence[str | None] | None = None,
    ) -> list[Result]:
        """Process a batch: one store call per phase; per-event results, in order.

        Handler exceptions are captured in ``Result.error`` (the claim released).
        Raises :class:`StoreUnavailableError` under ``fail_closed`` when the
        store cannot be reached to claim: no event was decided.
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

        claims = self._claim(keys, fps if self.validate_payload else None)
        if claims is None:  # store down, fail open
            for i, k in zip(keyed, keys, strict=True):
                self.stats.passed_store_down += 1
                results[i] = self._run(events[i], handler, k)
        else:
            self._decide(events, ids, handler, keyed, claims, results, fps)

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
            self._safe(self.store.complete, claims, self.window_s)
        return claims

    def _decide(self, events, ids, handler, keyed, claims, results, fps) -> None:
        done: list[Claim] = []
        failed: list[Claim] = []
        # Outcome of each key claimed in this batch, so a later copy in the same
        # batch is a DUPLICATE once the first copy was processed.
        claimed_here: dict[str, Outcome] = {}
        for j, (i, claim) in enumerate(zip(keyed, claims, strict=True)):
            if claim.status is ClaimStatus.CLAIMED:
                result = self._run(events[i], handler, claim.key)
                (done if result.outcome is Outcome.PROCESSED else failed).append(claim)
                claimed_here[claim.storage_key] = result.outcome
            elif self.validate_payload and claim.fingerprint != fps[j]:
                self.stats.payload_mismatches += 1
                result = Result(Outcome.FAILED, claim.key, error=PayloadMismatchError(claim.key, ids[i]))
            elif (claim.status is ClaimStatus.DUPLICATE
                  or claimed_here.get(claim.storage_key) is Outcome.PROCESSED):
                result = Result(Outcome.DUPLICATE, claim.key)
            else:
                result = Result(Outcome.IN_FLIGHT, claim.key)
            results[i] = result
        if self.lifecycle == "mark_first":
            return  # the tutorial's defect: marked before the handler, never undone
        if done:
            recorded = self._safe(self.store.complete, done, self.window_s) or [True] * len(done)
            for claim, ok in zip(done, recorded, strict=True):
                if not ok:
                    self.stats.lease_lost += 1
                    log.warning("lease lost on %s: another consumer may process it again", claim.key)
        if failed:
            self._safe(self.store.release, failed)

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

    def _safe(self, op: Callable[..., list[bool]], *args: Any) -> list[bool] | None:
        """Run a complete/release; a store outage here is logged, not raised.

        The handler's outcome is already decided: after success the message is
        acknowledged anyway; after failure the claim lapses with its lease.
        """
        try:
            return op(*args)
        except StoreUnavailableError as exc:
            log.warning("%s after the handler ran: %s", op.__name__, exc)
            return None

    def _count(self, outcome: Outcome) -> None:
        attr = _COUNTER[outcome]
        setattr(self.stats, attr, getattr(self.stats, attr) + 1)

    def explain(self, event: Any) -> KeyExplanation:
        """Why ``event``'s key is what it is: the strategy applied, the fields used, the raw key."""
        return explain_key(self.key, event)  # type: ignore[arg-type]


# The Stats counter of each outcome (built once: hashing enum members is slow).
_COUNTER = {
    Outcome.PROCESSED: "processed",
    Outcome.DUPLICATE: "duplicates",
    Outcome.IN_FLIGHT: "in_flight",
    Outcome.FAILED: "failed",
    Outcome.MISSING_KEY: "missing_key",
}


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigurationError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
