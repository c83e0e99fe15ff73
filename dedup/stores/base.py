"""The window-store contract and the logic every backend shares.

A window store remembers, for a time window, which event keys were processed,
with a claim lifecycle that never loses an event:

``claim`` (atomic per key)
    CLAIMED with a fencing token when no live record exists; DUPLICATE when the
    key was completed within the window; IN_FLIGHT when another consumer holds
    a live lease on it.
``complete``
    turns the caller's claim into a completed record kept for ``window_s``.
    It succeeds when the caller still holds the claim, or when nobody holds the
    key any more (the lease ran out and no one took over); it fails (returns
    ``False``) when another consumer claimed or completed the key meanwhile.
``extend``
    moves the deadline of the caller's live lease to now + ``lease_s``
    (token-fenced: ``False`` when the lease ran out or another consumer holds
    the key), so a lease lives as long as its work does and ``lease_s`` only
    bounds how long a *crashed* holder blocks a key.
``release``
    drops the caller's claim while its lease is live, so a redelivery of the
    event is processed again (a lapsed lease needs no release: it reports ``False``).

Every deadline is exclusive: a lease or window of ``d`` ms set at ``t`` is live
at ``t + d - 1`` and over at ``t + d``. Expiry is always decided in code, never
left to the backend's own TTL alone (DynamoDB deletes expired items up to 48 h
late and simulated time runs faster than a server's). Backends use their TTL
for housekeeping only. "Now" is the store's time: the server's clock where the
backend has one (Redis, unless a clock is injected), else the injectable clock.

Claim, extend and release are safe to send twice (a client retry after a lost
reply): a claim that finds its own token answers CLAIMED, an extend re-extends,
a release finds nothing to drop. A complete sent twice reports ``False`` the
second time (it cannot tell its own completed record from another consumer's).

Backends implement four small private hooks (``_claim``, ``_complete``,
``_extend``, ``_release``) over storage keys and integer milliseconds; this
class owns validation, key hashing, tokens and translating backend failures
into :class:`~dedup.errors.StoreUnavailableError` (``is_outage``).
"""

from __future__ import annotations

import binascii
import enum
import itertools
import math
import secrets
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import NamedTuple

from dedup.canonical import digests
from dedup.clock import SYSTEM_CLOCK, Clock
from dedup.defaults import DEFAULT_PREFIX
from dedup.errors import ConfigurationError, StoreUnavailableError

STORAGE_KEY_DIGEST_BYTES = 16
_MAX_PREFIX_CHARS = 64
# A token's index within its batch, as text, for batches up to an SQS receive's worth and more.
_INDEXES = [str(i) for i in range(64)]
_BASE64_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
# A digest padded to whole base64 groups: 16 + 2 bytes, 24 characters, the first 22 its own.
_PAD = b"\0\0"
_BLOCK_CHARS = (STORAGE_KEY_DIGEST_BYTES + len(_PAD)) * 4 // 3
_KEY_CHARS = math.ceil(STORAGE_KEY_DIGEST_BYTES * 4 / 3)


class ClaimStatus(enum.Enum):
    """What a claim found."""

    CLAIMED = "claimed"
    DUPLICATE = "duplicate"
    IN_FLIGHT = "in_flight"


class Claim(NamedTuple):
    """The result of claiming one key (immutable).

    ``token`` is the fencing token when CLAIMED; ``fingerprint`` is the payload
    fingerprint on record (the caller's when CLAIMED, the earlier event's
    otherwise), used for payload validation. A named tuple: a batch builds one
    per key, and a tuple costs a third of a frozen dataclass to build.
    """

    key: str
    storage_key: str
    status: ClaimStatus
    token: str | None = None
    fingerprint: str = ""


class ClaimOutcome(NamedTuple):
    """What a backend's ``_claim`` hook reports for one key."""

    status: ClaimStatus
    fingerprint: str = ""


class WindowStore(ABC):
    """Base class of all window stores.

    ``prefix`` namespaces the storage keys (several applications may share one
    Redis); a storage key is ``prefix`` plus a fixed-length digest of the raw
    key, so event data can neither inject into nor bloat the key space.
    """

    #: Short backend name used in errors and reports.
    name: str = "store"
    #: Backend exception types that mean "unreachable": wrapped as StoreUnavailableError.
    unavailable_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, *, clock: Clock | None = None, prefix: str = DEFAULT_PREFIX) -> None:
        if not isinstance(prefix, str) or len(prefix) > _MAX_PREFIX_CHARS:
            raise ConfigurationError(f"prefix must be a string of at most {_MAX_PREFIX_CHARS} chars")
        self.clock: Clock = clock or SYSTEM_CLOCK
        self.prefix = prefix
        self._token_nonce = secrets.token_hex(4)
        self._token_seq = itertools.count(1)

    # ---- public API -------------------------------------------------------

    def storage_key(self, key: str) -> str:
        """The bounded, namespaced key under which ``key`` is stored."""
        return self._storage_keys((key,))[0]

    def _storage_keys(self, keys: Sequence[str]) -> list[str]:
        """``storage_key`` of each key, in one pass (hashing is a visible part of a claim's cost).

        A storage key is the prefix and the unpadded base64url of the key's
        digest. The digests are encoded together, each followed by two zero
        bytes so that it fills whole base64 groups (18 bytes, 24 characters)
        whose first 22 characters are its own encoding: one encode for the batch.
        """
        try:
            hashed = digests(keys, STORAGE_KEY_DIGEST_BYTES)
        except TypeError:  # not a string
            hashed = []
        if len(hashed) != len(keys) or "" in keys:
            bad = next(k for k in keys if not isinstance(k, str) or not k)
            raise ValueError(f"a dedup key must be a non-empty string, got {bad!r:.80}")
        text = binascii.b2a_base64(_PAD.join(hashed) + _PAD, newline=False).translate(_BASE64_TO_URLSAFE)
        encoded, prefix, size = text.decode("ascii"), self.prefix, _KEY_CHARS
        return [prefix + encoded[i:i + size] for i in range(0, len(hashed) * _BLOCK_CHARS, _BLOCK_CHARS)]

    def claim(
        self,
        keys: Sequence[str],
        lease_s: float,
        *,
        fingerprints: Sequence[str] | None = None,
        slide_s: float | None = None,
    ) -> list[Claim]:
        """Claim every key for ``lease_s`` seconds, atomically per key, in one call.

        ``fingerprints`` (one per key, strings without commas) are recorded for payload validation.
        ``slide_s`` makes a DUPLICATE sighting extend the record to now + slide_s
        (the ``sliding`` window mode). A key repeated within ``keys`` is claimed
        once; its later copies report IN_FLIGHT.
        """
        if not keys:
            return []
        lease_ms = duration_ms(lease_s, "lease_s")
        slide_ms = duration_ms(slide_s, "slide_s") if slide_s is not None else 0
        fps = list(fingerprints) if fingerprints is not None else [""] * len(keys)
        if len(fps) != len(keys):
            raise ValueError("fingerprints must match keys one to one")
        if fingerprints is not None and any(not isinstance(f, str) or "," in f for f in fps):
            raise ValueError("fingerprints must be strings without commas (e.g. hex digests)")
        skeys = self._storage_keys(keys)
        tokens = self._new_tokens(len(keys))
        outcomes = self._call(
            self._claim, skeys, tokens, fps, self._now_ms(), lease_ms, slide_ms
        )
        claimed, new = ClaimStatus.CLAIMED, tuple.__new__  # Claim._make without its length check
        return [
            new(Claim, (k, sk, status, tok if status is claimed else None, fp))
            for k, sk, tok, (status, fp) in zip(keys, skeys, tokens, outcomes, strict=True)
        ]

    def complete(self, claims: Sequence[Claim], window_s: float) -> list[bool]:
        """Record each CLAIMED claim as completed for ``window_s`` seconds.

        Returns, per claim, whether it was recorded (``False``: another
        consumer claimed or completed the key after this lease ran out; claims
        that were not CLAIMED are skipped and report ``False``).
        """
        window_ms = duration_ms(window_s, "window_s")
        return self._per_claim(claims, lambda owned: self._call(
            self._complete, owned, self._now_ms(), window_ms
        ))

    def extend(self, claims: Sequence[Claim], lease_s: float) -> list[bool]:
        """Extend each CLAIMED claim's live lease to now + ``lease_s``, in one call.

        Returns, per claim, whether the caller still held the live lease (``False``:
        it ran out, or another consumer claimed or completed the key; claims that
        were not CLAIMED report ``False``). The lease may also be shortened this
        way: the new deadline replaces the old one.
        """
        lease_ms = duration_ms(lease_s, "lease_s")
        return self._per_claim(claims, lambda owned: self._call(
            self._extend, owned, self._now_ms(), lease_ms
        ))

    def settle(self, done: Sequence[Claim], window_s: float, held: Sequence[Claim], lease_s: float
               ) -> tuple[list[bool], list[bool]]:
        """``complete(done, window_s)`` and ``extend(held, lease_s)`` together: one round trip where
        the backend allows it (a Redis pipeline, DynamoDB's writes issued at once).

        A lease keeper's beat that also carries finished events' completions costs no extra
        round trip. Raises :class:`~dedup.errors.StoreUnavailableError` when either part failed.
        """
        window_ms = duration_ms(window_s, "window_s")
        lease_ms = duration_ms(lease_s, "lease_s")
        claimed = ClaimStatus.CLAIMED
        owned_done = [(c.storage_key, c.token or "", c.fingerprint) for c in done if c.status is claimed]
        owned_held = [(c.storage_key, c.token or "", c.fingerprint) for c in held if c.status is claimed]
        completed, extended = self._call(self._settle, owned_done, owned_held, self._now_ms(), window_ms,
                                         lease_ms)
        return _per_owned(done, completed), _per_owned(held, extended)

    def release(self, claims: Sequence[Claim]) -> list[bool]:
        """Drop each CLAIMED claim whose live lease is still held by its token."""
        return self._per_claim(claims, lambda owned: self._call(self._release, owned, self._now_ms()))

    def ping(self) -> None:
        """Check that the backend answers; raises :class:`StoreUnavailableError` when it does not.

        Consumers call it after an outage before they receive again, so messages
        are not received (and their receive counts spent) while nothing can be decided.
        """
        self._call(self._ping)

    def _ping(self) -> None:  # noqa: B027 - optional hook: an in-process store always answers
        """Round-trip to the backend."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release backend resources (connections); the default holds none."""

    def __enter__(self) -> WindowStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- backend hooks ----------------------------------------------------

    @abstractmethod
    def _claim(
        self,
        skeys: list[str],
        tokens: list[str],
        fingerprints: list[str],
        now_ms: int,
        lease_ms: int,
        slide_ms: int,
    ) -> list[ClaimOutcome]:
        """Claim storage keys in order; a key repeated in the batch is IN_FLIGHT after its first."""

    @abstractmethod
    def _complete(self, owned: list[tuple[str, str, str]], now_ms: int, window_ms: int) -> list[bool]:
        """Complete ``(storage_key, token, fingerprint)`` triples (see ``complete``)."""

    @abstractmethod
    def _extend(self, owned: list[tuple[str, str, str]], now_ms: int, lease_ms: int) -> list[bool]:
        """Move the live leases still held by these tokens to ``now_ms + lease_ms``."""

    @abstractmethod
    def _release(self, owned: list[tuple[str, str, str]], now_ms: int) -> list[bool]:
        """Delete the live records still held by these tokens."""

    def _settle(self, done: list[tuple[str, str, str]], held: list[tuple[str, str, str]], now_ms: int,
                window_ms: int, lease_ms: int) -> tuple[list[bool], list[bool]]:
        """``_complete`` then ``_extend``; backends that can overlap the two override it."""
        return (self._complete(done, now_ms, window_ms) if done else [],
                self._extend(held, now_ms, lease_ms) if held else [])

    # ---- shared helpers ---------------------------------------------------

    def _now_ms(self) -> int:
        return clock_ms(self.clock)

    def _new_tokens(self, count: int) -> list[str]:
        """``count`` fencing tokens, unique per store: one sequence number per batch."""
        stem = f"{self._token_nonce}{next(self._token_seq):x}."
        indexes = _INDEXES[:count] if count <= len(_INDEXES) else map(str, range(count))
        return [stem + i for i in indexes]

    def _per_claim(self, claims: Sequence[Claim], run) -> list[bool]:
        claimed = ClaimStatus.CLAIMED
        owned = [(c.storage_key, c.token or "", c.fingerprint) for c in claims if c.status is claimed]
        if not owned:
            return [False] * len(claims)
        return _per_owned(claims, run(owned))

    def _call(self, hook, *args):
        try:
            return hook(*args)
        except Exception as exc:
            if self.is_outage(exc):
                raise StoreUnavailableError(self.describe(), exc) from exc
            raise

    @classmethod
    def is_outage(cls, exc: BaseException) -> bool:
        """Whether a backend failure means "the store cannot serve now" (nothing was decided)."""
        return isinstance(exc, cls.unavailable_errors)

    def describe(self) -> str:
        """A human-readable name of this store and where it points (no secrets)."""
        return self.name


def clock_ms(clock: Clock) -> int:
    """``clock``'s time in whole milliseconds, the way every store reads it.

    Floored, but a time within a microsecond below a whole millisecond counts as
    that millisecond: a simulated ``start + 9.999`` s lands a hair below it in
    binary floating point, and must still be that millisecond.
    """
    return int(clock.now_s() * 1000 + 0.001)


def _per_owned(claims: Sequence[Claim], results: list[bool]) -> list[bool]:
    """Spread the results of the CLAIMED claims back over ``claims`` (others report ``False``)."""
    if len(results) == len(claims):  # every claim was CLAIMED
        return [bool(r) for r in results]
    it = iter(results)
    return [bool(next(it)) if c.status is ClaimStatus.CLAIMED else False for c in claims]


def duration_ms(value: float | None, name: str) -> int:
    """``value`` seconds as whole milliseconds (at least 1), the way every store rounds durations.

    Raises ``ValueError`` naming ``name`` unless ``value`` is a positive finite number.
    """
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return max(1, round(value * 1000))
