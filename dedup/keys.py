"""Key strategies: what makes an EventBridge event unique.

A key strategy maps one event (an EventBridge envelope as a dict, ``detail`` an
object) to a raw key string, or raises :class:`NoKey` saying why it cannot. The
window store turns the raw key into a bounded, namespaced storage key, so raw
keys may be as long as the event makes them.

Choosing the key is the whole game:

* :class:`EnvelopeId` keys on the envelope ``id``. EventBridge assigns a fresh
  ``id`` to every PutEvents entry, so it only catches *delivery* duplicates
  (SQS redelivering the same envelope), never a producer's re-publish.
* :class:`GenesysKey` and :class:`NiceKey` key on what identifies one
  notification in those platforms' payloads, so a re-publish (new ``id`` and
  ``time``, same ``detail``) is caught while a conversation's distinct events
  (start vs end, two participants, two utterances) stay distinct.
* :class:`BusinessKey` keys on JMESPath expressions with an optional time bucket.
* :class:`ContentFingerprint` hashes the canonical JSON of ``detail``.
* :func:`first_of` chains strategies; :func:`auto` picks by ``source``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import jmespath
import jmespath.exceptions

from dedup.errors import ConfigurationError, MissingKeyError

GENESYS_SOURCE_PREFIX = "aws.partner/genesys.com/"
NICE_SOURCE_MARKERS = ("nice", "cxone")
_REASON_MAX_CHARS = 200


class NoKey(Exception):
    """A strategy cannot derive a key from this event; ``reason`` says why."""

    def __init__(self, reason: str, tried: Sequence[tuple[str, str]] = ()):
        self.reason = reason
        self.tried = tuple(tried)
        super().__init__(reason)


@runtime_checkable
class KeyStrategy(Protocol):
    """Maps an EventBridge envelope to a raw key, or raises :class:`NoKey`."""

    name: str

    def key_for(self, event: Mapping[str, Any]) -> str:
        """Return the raw dedup key of ``event``."""
        ...


def derive_key(strategy: KeyStrategy, event: Any, message_id: str | None = None) -> str:
    """Apply ``strategy`` to ``event``; raise :class:`MissingKeyError` when it yields no key."""
    if not isinstance(event, Mapping):
        raise MissingKeyError(
            message_id, [strategy.name], [f"event is a JSON {_json_type(event)}, not an object"]
        )
    try:
        return strategy.key_for(event)
    except NoKey as exc:
        names, reasons = _explain(strategy, exc)
        raise MissingKeyError(message_id, names, reasons) from None
    except RecursionError:
        raise MissingKeyError(message_id, [strategy.name], ["event nests too deeply to key"]) from None


def canonical_json(value: Any) -> str:
    """Serialise ``value`` deterministically (sorted keys, no whitespace)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def digest(text: str, size: int = 16) -> bytes:
    """A fixed-size BLAKE2b digest of ``text``; lone surrogates from JSON are tolerated."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=size).digest()


def fingerprint(value: Any) -> str:
    """A short stable hex fingerprint of a JSON value (used for payload validation)."""
    return digest(canonical_json(value), 8).hex()


def epoch_ms(value: Any) -> int:
    """Normalise a timestamp (epoch s or ms as a number, or ISO-8601 text) to epoch ms.

    Genesys sends ``eventTime`` as epoch milliseconds in conversation detail events
    and as ISO text elsewhere; both must key identically.
    """
    if isinstance(value, bool):
        raise NoKey(f"timestamp is a boolean: {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise NoKey(f"timestamp is not finite: {value!r}")
        # Below 10^11 it is seconds (until year 5138); above, milliseconds.
        return int(value * 1000) if abs(value) < 1e11 else int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            parsed = _dt.datetime.fromisoformat(text)
        except ValueError:
            raise NoKey(f"timestamp is not ISO-8601: {_clip(value)!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=_dt.UTC)
        return int(parsed.timestamp() * 1000)
    raise NoKey(f"timestamp has type {_json_type(value)}")


@dataclass(frozen=True)
class EnvelopeId:
    """Keys on the envelope ``id``: catches delivery duplicates only.

    EventBridge gives every PutEvents entry a new ``id``, so a producer that
    re-publishes an event is never caught by this key.
    """

    name: str = "envelope-id"

    def key_for(self, event: Mapping[str, Any]) -> str:
        event_id = event.get("id")
        if not isinstance(event_id, str) or not event_id:
            raise NoKey(f"envelope 'id' is {_describe(event_id)}")
        return f"id:{event_id}"


@dataclass(frozen=True)
class BusinessKey:
    """Keys on JMESPath expressions over the envelope, with an optional time bucket.

    ``time_expr`` and ``bucket_s`` put events whose timestamp falls in the same
    ``bucket_s``-second bucket on the same key, e.g. conversationId + eventTime
    rounded to the minute. Every expression must yield a value.
    """

    expressions: Sequence[str]
    time_expr: str | None = None
    bucket_s: float | None = None
    name: str = "business"
    _compiled: tuple[Any, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.expressions and not self.time_expr:
            raise ConfigurationError("a business key needs at least one expression")
        if self.bucket_s is not None and (self.bucket_s <= 0 or not self.time_expr):
            raise ConfigurationError("bucket_s must be positive and needs time_expr")
        exprs = [*self.expressions, *([self.time_expr] if self.time_expr else [])]
        try:
            compiled = tuple(jmespath.compile(e) for e in exprs)
        except jmespath.exceptions.JMESPathError as exc:
            raise ConfigurationError(f"invalid JMESPath in business key: {exc}") from None
        object.__setattr__(self, "_compiled", compiled)

    def key_for(self, event: Mapping[str, Any]) -> str:
        parts: list[str] = []
        for expr, compiled in zip(self.expressions, self._compiled, strict=False):
            value = compiled.search(event)
            if value is None or value == "":
                raise NoKey(f"{expr} is missing")
            parts.append(canonical_json(value))
        if self.time_expr:
            value = self._compiled[-1].search(event)
            if value is None:
                raise NoKey(f"{self.time_expr} is missing")
            ms = epoch_ms(value)
            if self.bucket_s:
                ms = math.floor(ms / (self.bucket_s * 1000))
            parts.append(str(ms))
        return f"{self.name}:" + "|".join(parts)


@dataclass(frozen=True)
class ContentFingerprint:
    """Keys on a hash of the canonical JSON of ``source``, ``detail-type`` and ``detail``.

    ``ignore`` names dotted paths inside ``detail`` that change between copies of
    one logical event (e.g. a send timestamp) and must not count.
    """

    ignore: Sequence[str] = ()
    name: str = "fingerprint"

    def key_for(self, event: Mapping[str, Any]) -> str:
        detail = event.get("detail")
        if not isinstance(detail, Mapping):
            raise NoKey(f"'detail' is {_describe(detail)}, not an object")
        trimmed = _without(detail, [p.split(".") for p in self.ignore])
        body = canonical_json([event.get("source"), event.get("detail-type"), trimmed])
        return f"fp:{digest(body).hex()}"


@dataclass(frozen=True)
class GenesysKey:
    """Keys a Genesys Cloud notification by its topic and identifying fields.

    The key is ``detail.topicName`` (the topic with its ids filled in) plus every
    identifying field of ``eventBody`` that is present: the audit ``id``,
    ``participantId``, ``sessionId``, ``communicationId``, transcript
    ``utteranceId`` values, and ``eventTime`` normalised to epoch ms (or, for
    topics without one such as presence, ``modifiedDate``). A
    re-publish (new envelope ``id`` and ``time``) keys identically; a
    conversation's start and end, two participants or two utterances do not.
    """

    name: str = "genesys"

    _ID_FIELDS = ("id", "participantId", "sessionId", "communicationId")
    _TIME_FIELDS = ("eventTime", "modifiedDate")

    def key_for(self, event: Mapping[str, Any]) -> str:
        source = event.get("source")
        if not isinstance(source, str) or not source.startswith(GENESYS_SOURCE_PREFIX):
            raise NoKey(f"source {_clip(source)!r} is not a Genesys partner source")
        detail = event.get("detail")
        if not isinstance(detail, Mapping):
            raise NoKey(f"'detail' is {_describe(detail)}, not an object")
        topic = detail.get("topicName")
        if not isinstance(topic, str) or not topic:
            raise NoKey(f"detail.topicName is {_describe(topic)}")
        body = detail.get("eventBody")
        if not isinstance(body, Mapping):
            raise NoKey(f"detail.eventBody is {_describe(body)}, not an object")
        parts = [topic]
        for field_name in self._ID_FIELDS:
            value = body.get(field_name)
            if value not in (None, ""):
                parts.append(f"{field_name}={_scalar(value, field_name)}")
        utterances = _utterance_ids(body)
        if utterances:
            parts.append("utt=" + ",".join(utterances))
        stamp = next((body[f] for f in self._TIME_FIELDS if body.get(f) is not None), None)
        if stamp is not None:
            parts.append(f"t={epoch_ms(stamp)}")
        elif not utterances and body.get("id") in (None, ""):
            raise NoKey("detail.eventBody has no eventTime, modifiedDate, id or utteranceId")
        return "genesys:" + "|".join(parts)


@dataclass(frozen=True)
class NiceKey:
    """Keys a NICE CXone event bridged into EventBridge under a custom source.

    The key is ``detail.eventType`` plus the interaction ids present in
    ``detail.payload`` (``interactionId``, ``ContactID``, ``MasterID``) plus
    ``detail.eventId`` when the bridge sets one, else the event's timestamp
    (``detail.createdAt`` or ``payload.timestamp``). A state update of the same
    contact at a later time is a distinct event.
    """

    name: str = "nice"

    _ID_FIELDS = ("interactionId", "ContactID", "MasterID")

    def key_for(self, event: Mapping[str, Any]) -> str:
        detail = event.get("detail")
        if not isinstance(detail, Mapping):
            raise NoKey(f"'detail' is {_describe(detail)}, not an object")
        payload = detail.get("payload")
        if not isinstance(payload, Mapping):
            raise NoKey(f"detail.payload is {_describe(payload)}, not an object")
        ids = [
            f"{f}={_scalar(payload[f], f)}" for f in self._ID_FIELDS if payload.get(f) not in (None, "")
        ]
        if not ids:
            raise NoKey("detail.payload has none of interactionId, ContactID, MasterID")
        parts = [str(detail.get("eventType", event.get("detail-type", ""))), *ids]
        if detail.get("eventId") not in (None, ""):
            parts.append(f"eid={_scalar(detail['eventId'], 'eventId')}")
        else:
            stamp = detail.get("createdAt", payload.get("timestamp"))
            if stamp is None:
                raise NoKey("detail has no eventId, createdAt or payload.timestamp")
            parts.append(f"t={epoch_ms(stamp)}")
        return "nice:" + "|".join(parts)


@dataclass(frozen=True)
class FirstOf:
    """Tries strategies in order; the first that yields a key wins."""

    strategies: Sequence[KeyStrategy]
    name: str = "first_of"

    def __post_init__(self) -> None:
        if not self.strategies:
            raise ConfigurationError("first_of needs at least one strategy")

    def key_for(self, event: Mapping[str, Any]) -> str:
        tried = []
        for strategy in self.strategies:
            try:
                return strategy.key_for(event)
            except NoKey as exc:
                tried.append((strategy.name, exc.reason))
        raise NoKey("; ".join(f"{n}: {r}" for n, r in tried), tried)


@dataclass(frozen=True)
class AutoKey:
    """Picks a strategy by ``source``: Genesys, NICE, else a content fingerprint."""

    genesys: KeyStrategy = field(default_factory=GenesysKey)
    nice: KeyStrategy = field(default_factory=NiceKey)
    fallback: KeyStrategy = field(default_factory=ContentFingerprint)
    name: str = "auto"

    def pick(self, event: Mapping[str, Any]) -> KeyStrategy:
        """The strategy ``auto`` applies to ``event``."""
        source = event.get("source")
        if isinstance(source, str):
            if source.startswith(GENESYS_SOURCE_PREFIX):
                return self.genesys
            lowered = source.lower()
            if any(marker in lowered for marker in NICE_SOURCE_MARKERS):
                return self.nice
        return self.fallback

    def key_for(self, event: Mapping[str, Any]) -> str:
        strategy = self.pick(event)
        try:
            return strategy.key_for(event)
        except NoKey as exc:
            raise NoKey(f"{strategy.name}: {exc.reason}") from None


def first_of(*strategies: KeyStrategy) -> FirstOf:
    """Chain strategies: the first that yields a key wins."""
    return FirstOf(tuple(strategies))


def auto() -> AutoKey:
    """The default strategy: Genesys or NICE by ``source``, else a content fingerprint."""
    return AutoKey()


KEY_STRATEGIES: dict[str, Callable[[], KeyStrategy]] = {
    "auto": auto,
    "envelope-id": EnvelopeId,
    "genesys": GenesysKey,
    "nice": NiceKey,
    "fingerprint": ContentFingerprint,
}


def key_strategy(spec: str | KeyStrategy) -> KeyStrategy:
    """Build a strategy from a name or spec string, as used in env vars and the CLI.

    ``auto``, ``envelope-id``, ``genesys``, ``nice``, ``fingerprint``, or
    ``business:EXPR[,EXPR...][@TIME_EXPR/BUCKET_S]`` such as
    ``business:detail.eventBody.conversationId@detail.eventBody.eventTime/60``.
    Several specs joined by ``|`` are chained with :func:`first_of`.
    """
    if not isinstance(spec, str):
        return spec
    if "|" in spec:
        return first_of(*(key_strategy(part.strip()) for part in spec.split("|")))
    name, _, arg = spec.strip().partition(":")
    if name == "business":
        exprs_part, _, time_part = arg.partition("@")
        exprs = [e.strip() for e in exprs_part.split(",") if e.strip()]
        time_expr, bucket_s = None, None
        if time_part:
            time_expr, _, bucket = time_part.partition("/")
            try:
                bucket_s = float(bucket) if bucket else None
            except ValueError:
                raise ConfigurationError(f"bucket in {spec!r} is not a number") from None
        return BusinessKey(exprs, time_expr=time_expr, bucket_s=bucket_s)
    if name == "fingerprint" and arg:
        return ContentFingerprint(ignore=tuple(p.strip() for p in arg.split(",") if p.strip()))
    try:
        return KEY_STRATEGIES[name]()
    except KeyError:
        known = ", ".join([*KEY_STRATEGIES, "business:..."])
        raise ConfigurationError(f"unknown key strategy {spec!r} (known: {known})") from None


def _utterance_ids(body: Mapping[str, Any]) -> list[str]:
    found = []
    if body.get("utteranceId") not in (None, ""):
        found.append(_scalar(body["utteranceId"], "utteranceId"))
    transcripts = body.get("transcripts")
    if isinstance(transcripts, list):
        for item in transcripts:
            if isinstance(item, Mapping) and item.get("utteranceId") not in (None, ""):
                found.append(_scalar(item["utteranceId"], "utteranceId"))
    return found


def _scalar(value: Any, field_name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise NoKey(f"{field_name} is {_describe(value)}, not a string or number")
    return str(value)


def _without(obj: Mapping[str, Any], paths: Iterable[list[str]]) -> dict[str, Any]:
    out = dict(obj)
    for path in paths:
        _drop(out, path)
    return out


def _drop(node: dict[str, Any], path: list[str]) -> None:
    head, rest = path[0], path[1:]
    if head not in node:
        return
    if not rest:
        del node[head]
    elif isinstance(node[head], Mapping):
        node[head] = dict(node[head])
        _drop(node[head], rest)


def _explain(strategy: KeyStrategy, exc: NoKey) -> tuple[list[str], list[str]]:
    if exc.tried:
        return [name for name, _ in exc.tried], [_clip(reason) for _, reason in exc.tried]
    return [strategy.name], [_clip(exc.reason)]


def _json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number" if isinstance(value, int | float) else type(value).__name__
    )


def _describe(value: Any) -> str:
    if value is None:
        return "missing"
    if value == "":
        return "empty"
    return f"a {_json_type(value)}"


def _clip(value: Any) -> str:
    text = str(value)
    return text if len(text) <= _REASON_MAX_CHARS else text[:_REASON_MAX_CHARS] + "…"
