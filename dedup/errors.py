"""The dedup error family: one base class, structured attributes, one-line docstrings."""

from __future__ import annotations

from collections.abc import Sequence


class DedupError(Exception):
    """Base class of every error raised by dedup."""


class ConfigurationError(DedupError):
    """A setting is missing or invalid."""


class MissingKeyError(DedupError):
    """No key strategy could derive a key from an event."""

    def __init__(self, message_id: str | None, strategies: Sequence[str], reasons: Sequence[str]):
        self.message_id = message_id
        self.strategies = tuple(strategies)
        self.reasons = tuple(reasons)
        tried = "; ".join(f"{s}: {r}" for s, r in zip(self.strategies, self.reasons, strict=True))
        super().__init__(f"no dedup key for message {message_id or '<unknown>'} (tried {tried})")


class BadMessageError(DedupError):
    """A message body cannot be parsed into an EventBridge envelope."""

    def __init__(self, message_id: str | None, reason: str):
        self.message_id = message_id
        self.reason = reason
        super().__init__(f"bad message {message_id or '<unknown>'}: {reason}")


class PayloadMismatchError(DedupError):
    """An event reuses a key already seen with a different payload."""

    def __init__(self, key: str, message_id: str | None = None):
        self.key = key
        self.message_id = message_id
        super().__init__(
            f"message {message_id or '<unknown>'} has key {key!r} but a different payload "
            "from the event already recorded under it: the key strategy is too coarse"
        )


class StoreUnavailableError(DedupError):
    """The window store could not be reached; nothing was decided."""

    def __init__(self, store: str, cause: BaseException | None = None):
        self.store = store
        self.cause = cause
        super().__init__(f"window store {store} is unavailable: {cause}")


class LeaseLostError(DedupError):
    """A claim's lease ran out, or was taken over, before its event was completed."""

    def __init__(self, key: str):
        self.key = key
        super().__init__(
            f"the lease on {key!r} was lost (it ran out, or another consumer took the key over) "
            "before the event was completed: another consumer may process it too; a live batch "
            "keeps its leases, so look for a stall longer than lease_s or a store that lost records"
        )
