"""From SQS messages to dedup decisions; shared by the SQS consumer and the Lambda entry.

Needs only the core (no boto3), so the Lambda package stays small. A body that is
not a JSON object is a :class:`~dedup.errors.BadMessageError`: logged with the
message id and the reason and never acknowledged, so the redrive policy moves it
to the dead-letter queue after ``maxReceiveCount`` receives instead of it being
lost.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from dedup.errors import BadMessageError
from dedup.service import Deduplicator, Handler, Outcome, Result

log = logging.getLogger(__name__)

_BODY_EXCERPT_CHARS = 80
MAX_BODY_DEPTH = 128
"""Deepest nesting of objects and arrays accepted in a body (real events nest under 20)."""


@dataclass(frozen=True)
class Message:
    """What the decision needs from one SQS message."""

    message_id: str
    body: str
    receive_count: int | None = None


@dataclass(frozen=True)
class Disposition:
    """The decision on one message: a dedup ``result``, or the ``bad`` body error."""

    message: Message
    result: Result | None = None
    bad: BadMessageError | None = None

    @property
    def acknowledge(self) -> bool:
        """Whether the message may be deleted (processed, or a completed duplicate)."""
        return self.result is not None and self.result.outcome.acknowledge

    @property
    def bad_input(self) -> bool:
        """The body could not be parsed, or no dedup key could be derived from it."""
        missing_key = self.result is not None and self.result.outcome is Outcome.MISSING_KEY
        return self.bad is not None or missing_key


def parse_body(body: str, message_id: str | None = None) -> dict:
    """The EventBridge envelope carried by an SQS body; :class:`BadMessageError` if it is not one.

    A body nesting deeper than :data:`MAX_BODY_DEPTH` is refused too: no real event
    nests that deep, and refusing it here names the message and the reason, where a
    RecursionError in a key strategy or the user's handler would not.
    """
    try:
        value = json.loads(body)
    except RecursionError:
        raise BadMessageError(message_id, f"body nests too deep to parse (more than {MAX_BODY_DEPTH} "
                                          f"levels are refused): {_excerpt(body)!r}") from None
    except (TypeError, ValueError) as exc:
        raise BadMessageError(message_id, f"body is not JSON ({exc}): {_excerpt(body)!r}") from None
    if not isinstance(value, dict):
        kind = "a JSON string (double-encoded?)" if isinstance(value, str) else f"JSON {type(value).__name__}"
        raise BadMessageError(message_id, f"body is {kind}, not an object: {_excerpt(body)!r}")
    # Nesting needs a bracket per level: counting them (at C speed) spares most bodies the walk.
    if body.count("{") + body.count("[") > MAX_BODY_DEPTH and _deeper_than(value, MAX_BODY_DEPTH):
        raise BadMessageError(message_id, f"body nests more than {MAX_BODY_DEPTH} levels deep: "
                                          f"{_excerpt(body)!r}")
    return value


def envelope_id(body: str) -> str | None:
    """The envelope ``id`` of a message body, or ``None`` when it has none (or is no envelope)."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    event_id = value.get("id") if isinstance(value, dict) else None
    return event_id if isinstance(event_id, str) else None


def decide(dedup: Deduplicator, handler: Handler, messages: Sequence[Message], *,
           deadline_s: float | None = None) -> list[Disposition]:
    """Parse every body, then dedup and handle the parsed ones in one ``process_batch`` call.

    Raises :class:`~dedup.errors.StoreUnavailableError` (under ``fail_closed``) when
    the store cannot be reached: then nothing was decided and nothing may be deleted.
    ``deadline_s`` (store clock) bounds how long the batch's leases are kept alive.
    """
    dispositions: list[Disposition | None] = [None] * len(messages)
    parsed: list[int] = []
    events: list[dict] = []
    for i, message in enumerate(messages):
        try:
            events.append(parse_body(message.body, message.message_id))
            parsed.append(i)
        except BadMessageError as exc:
            log.error("%s; not deleted: it returns after the visibility timeout and is dead-lettered "
                      "after maxReceiveCount receives (this was receive %s)",
                      exc, message.receive_count or "?")
            dispositions[i] = Disposition(message, bad=exc)
    if events:
        ids = [messages[i].message_id for i in parsed]
        results = dedup.process_batch(events, handler, message_ids=ids, deadline_s=deadline_s)
        for i, result in zip(parsed, results, strict=True):
            dispositions[i] = Disposition(messages[i], result=result)
    return [d for d in dispositions if d is not None]


def _deeper_than(value: object, limit: int) -> bool:
    """Whether ``value`` nests more than ``limit`` objects/arrays deep (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _excerpt(body: object) -> str:
    text = body if isinstance(body, str) else repr(body)
    return text if len(text) <= _BODY_EXCERPT_CHARS else text[:_BODY_EXCERPT_CHARS] + "…"
