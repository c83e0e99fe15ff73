"""Key strategies: what makes an EventBridge event unique.

A key strategy maps one event (an EventBridge envelope as a dict, ``detail`` an
object) to a raw key string, or raises :class:`NoKey` saying why it cannot. The
window store turns the raw key into a bounded, namespaced storage key, so raw
keys may be as long as the event makes them.

Choosing the key is the whole game:

* :class:`EnvelopeId` keys on the envelope ``id``. EventBridge assigns a fresh
  ``id`` to every PutEvents entry, so it only catches *delivery* duplicates
  (SQS redelivering the same envelope), never a producer's re-publish.
* :class:`GenesysKey` and :class:`NiceKey` key on the fields that identify one
  notification of its family (:mod:`dedup.key_catalogue`), so a re-publish (new
  ``id`` and ``time``, same ``detail``) is caught while a conversation's
  distinct events (start vs end, two participants, two utterances) and an
  agent's successive states stay distinct. A family without such fields keys on
  a canonical fingerprint of its body, never on topic and entity id alone.
* :class:`BusinessKey` keys on JMESPath expressions with an optional time bucket.
* :class:`ContentFingerprint` hashes the canonical (RFC 8785) JSON of ``detail``.
* :func:`first_of` chains strategies; :func:`auto` picks by ``source`` (Genesys
  by partner prefix, NICE by configured source names) and never refuses an
  event whose ``detail`` is an object: what the vendor key cannot key is keyed
  by content, counted per source in :attr:`AutoKey.fallbacks`.
* :func:`explain_key` says which strategy applied, the fields used and the key.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jmespath
import jmespath.exceptions

from dedup.canonical import TimestampError, canonical_json, digest, fingerprint
from dedup.canonical import epoch_ms as _epoch_ms
from dedup.errors import ConfigurationError, MissingKeyError
from dedup.key_catalogue import (
    GENESYS_SOURCE_PREFIX,
    NICE_BRIDGE_SOURCE,
    Family,
    genesys_family,
    nice_family,
    resolve,
)

__all__ = [
    "GENESYS_SOURCE_PREFIX",
    "KEY_STRATEGIES",
    "NICE_BRIDGE_SOURCE",
    "AutoKey",
    "BusinessKey",
    "ContentFingerprint",
    "EnvelopeId",
    "FirstOf",
    "GenesysKey",
    "KeyExplanation",
    "KeyStrategy",
    "NiceKey",
    "NoKey",
    "auto",
    "canonical_json",
    "derive_key",
    "digest",
    "epoch_ms",
    "explain_key",
    "fingerprint",
    "first_of",
    "key_strategy",
]

log = logging.getLogger("dedup.keys")
_REASON_MAX_CHARS = 200
#: Sources :attr:`AutoKey.fallbacks` counts by name; past this many, the rest share one entry.
MAX_FALLBACK_SOURCES = 1000
OTHER_SOURCES = "(other sources)"


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


@dataclass(frozen=True)
class KeyExplanation:
    """Why an event's key is what it is: the strategy applied, the fields used, the raw key.

    ``fields`` are paths from the envelope root (``detail.eventBody.eventTime``);
    ``fingerprint(detail.eventBody)`` means the canonical JSON of that object was
    hashed. ``fallback`` says why a content fingerprint stood in for identifying
    fields; ``error`` why there is no key (then ``key`` is None).
    """

    strategy: str
    key: str | None
    fields: tuple[str, ...] = ()
    family: str | None = None
    chosen_by: str | None = None
    fallback: str | None = None
    error: str | None = None

    def __str__(self) -> str:
        lines = [f"strategy: {self.strategy}"]
        if self.chosen_by:
            lines.append(f"chosen by: {self.chosen_by}")
        if self.family:
            lines.append(f"family: {self.family}")
        lines.append("fields used: " + (", ".join(self.fields) or "(none)"))
        if self.fallback:
            lines.append(f"fallback: {self.fallback}")
        lines.append(f"key: {self.key}" if self.key is not None else f"no key: {self.error}")
        return "\n".join(lines)


class _Keyed(NamedTuple):
    key: str
    fields: tuple[str, ...]
    family: str | None = None
    fallback: str | None = None


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


def explain_key(strategy: KeyStrategy | str, event: Any) -> KeyExplanation:
    """Say how ``strategy`` keys ``event``: the strategy applied, the fields used and the raw key.

    Explaining changes nothing: :attr:`AutoKey.fallbacks` counts only keys derived
    for processing.
    """
    strategy = key_strategy(strategy)
    if not isinstance(event, Mapping):
        error = f"event is a JSON {_json_type(event)}, not an object"
        return KeyExplanation(strategy.name, None, error=error)
    derive = getattr(strategy, "_derive", None)
    try:
        if derive is not None:
            keyed = derive(event)
            if isinstance(keyed, KeyExplanation):
                return keyed
            return KeyExplanation(strategy.name, keyed.key, keyed.fields, keyed.family,
                                  fallback=keyed.fallback)
        return KeyExplanation(strategy.name, strategy.key_for(event))
    except NoKey as exc:
        return KeyExplanation(strategy.name, None, error=exc.reason)
    except RecursionError:
        return KeyExplanation(strategy.name, None, error="event nests too deeply to key")


def epoch_ms(value: Any) -> int:
    """A timestamp as epoch ms (:func:`dedup.canonical.epoch_ms`); :class:`NoKey` if it is none."""
    try:
        return _epoch_ms(value)
    except TimestampError as exc:
        raise NoKey(str(exc)) from None


@dataclass(frozen=True)
class EnvelopeId:
    """Keys on the envelope ``id``: catches delivery duplicates only.

    EventBridge gives every PutEvents entry a new ``id``, so a producer that
    re-publishes an event is never caught by this key.
    """

    name: str = "envelope-id"

    def key_for(self, event: Mapping[str, Any]) -> str:
        return self._derive(event).key

    def _derive(self, event: Mapping[str, Any]) -> _Keyed:
        event_id = event.get("id")
        if not isinstance(event_id, str) or not event_id:
            raise NoKey(f"envelope 'id' is {_describe(event_id)}")
        return _Keyed(f"id:{event_id}", ("id",))


@dataclass(frozen=True)
class BusinessKey:
    """Keys on JMESPath expressions over the envelope, with an optional time bucket.

    ``time_expr`` and ``bucket_s`` put events whose timestamp falls in the same
    ``bucket_s``-second bucket on the same key, e.g. conversationId + eventTime
    floored to the minute (buckets start at whole multiples of ``bucket_s``
    since the epoch). Every expression must yield a value.
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
        return self._derive(event).key

    def _derive(self, event: Mapping[str, Any]) -> _Keyed:
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
        used = (*self.expressions, *([self.time_expr] if self.time_expr else []))
        return _Keyed(f"{self.name}:" + "|".join(parts), used)


@dataclass(frozen=True)
class ContentFingerprint:
    """Keys on a hash of the canonical (RFC 8785) JSON of ``source``, ``detail-type`` and ``detail``.

    Canonical JSON makes the key independent of key order, whitespace and number
    form (``1`` = ``1.0``). ``ignore`` names dotted paths inside ``detail`` that
    change between copies of one logical event (e.g. a send timestamp) and must
    not count.
    """

    ignore: Sequence[str] = ()
    name: str = "fingerprint"

    def key_for(self, event: Mapping[str, Any]) -> str:
        return self._derive(event).key

    def _derive(self, event: Mapping[str, Any]) -> _Keyed:
        detail = event.get("detail")
        if not isinstance(detail, Mapping):
            raise NoKey(f"'detail' is {_describe(detail)}, not an object")
        trimmed = _without(detail, [p.split(".") for p in self.ignore]) if self.ignore else detail
        body = canonical_json([event.get("source"), event.get("detail-type"), trimmed])
        ignored = "".join(f" without detail.{p}" for p in self.ignore)
        return _Keyed(f"fp:{digest(body).hex()}", ("source", "detail-type", f"fingerprint(detail){ignored}"))


@dataclass(frozen=True)
class GenesysKey:
    """Keys a Genesys Cloud notification by its topic and the fields of its topic family.

    The key is ``detail.topicName`` (the topic with its ids filled in) plus the
    fields :data:`dedup.key_catalogue.GENESYS_FAMILIES` names for the family,
    times normalised to epoch ms: a conversation detail event's
    ``participantId``, ``sessionId`` and ``eventTime``; a user activity's
    ``routingStatus.startTime`` and ``presence.modifiedDate``; and so on. A topic
    outside the catalogue, or a family whose payload has no identifying field,
    keys on a canonical fingerprint of ``eventBody`` plus the notification's
    ``detail.timestamp`` (so an agent's summary going 1, 0, 1 active
    conversations is three notifications). A re-publish (new envelope
    ``id`` and ``time``, re-serialised) keys identically; two notifications of
    one entity do not.
    """

    source_prefixes: tuple[str, ...] = (GENESYS_SOURCE_PREFIX,)
    name: str = "genesys"

    def key_for(self, event: Mapping[str, Any]) -> str:
        return self._derive(event).key

    def _derive(self, event: Mapping[str, Any]) -> _Keyed:
        source = event.get("source")
        if type(source) is not str or not source.startswith(self.source_prefixes):
            raise NoKey(f"source {_clip(source)!r} is not a Genesys partner source")
        detail = event.get("detail")
        if type(detail) is not dict and not isinstance(detail, Mapping):
            raise NoKey(f"'detail' is {_describe(detail)}, not an object")
        topic = detail.get("topicName")
        if not isinstance(topic, str) or not topic:
            raise NoKey(f"detail.topicName is {_describe(topic)}")
        body = detail.get("eventBody")
        if type(body) is not dict and not isinstance(body, Mapping):
            raise NoKey(f"detail.eventBody is {_describe(body)}, not an object")
        family = genesys_family(topic)
        unknown = "" if family else f"topic {_clip(topic)!r} is not in the catalogue"
        return _family_key("genesys:" + topic, family, body, None, "detail.eventBody", ("detail.topicName",),
                           unknown, detail.get("timestamp"))


@dataclass(frozen=True)
class NiceKey:
    """Keys a NICE CXone event bridged into EventBridge under a custom source.

    The event is ``detail.payload`` when the bridge wraps it (``eventType``,
    ``createdAt``, ``payload``), else ``detail`` itself (a CXone event bridged as
    it came, with ``Type``). The key is the event type plus the fields
    :data:`dedup.key_catalogue.NICE_FAMILIES` names for its family: contact ids
    (``ContactID``, ``MasterID``, ``interactionId``) and state, agent and
    session ids, message ids, and the bridge's ``eventId`` or else the event's
    timestamps; one without any of its family's items or times on a canonical
    fingerprint of its body. An event of no catalogued family gets no key
    (:class:`NoKey`): ``auto`` then keys it by content.
    """

    name: str = "nice"

    def key_for(self, event: Mapping[str, Any]) -> str:
        return self._derive(event).key

    def _derive(self, event: Mapping[str, Any]) -> _Keyed:
        detail = event.get("detail")
        if not isinstance(detail, Mapping):
            raise NoKey(f"'detail' is {_describe(detail)}, not an object")
        payload = detail.get("payload")
        wrapped = type(payload) is dict or isinstance(payload, Mapping)
        body = payload if wrapped else detail
        kind = detail.get("eventType") or detail.get("Type") or body.get("Type") or event.get("detail-type")
        family = nice_family(body)
        if family is None:  # not recognisably NICE: let a chain (or auto's fallback) key it
            raise NoKey("the event carries no field of a catalogued NICE event family "
                        "(ContactID, MasterID, interactionId, messageId, SessionId, CurrentState or state)")
        type_field = ("detail.eventType" if detail.get("eventType") else "detail.Type" if detail.get("Type")
                      else "detail.payload.Type" if body.get("Type") else "detail-type")
        return _family_key("nice:" + _text(kind), family, body, detail if wrapped else None,
                           "detail.payload" if wrapped else "detail", (type_field,), "")


def _family_key(head: str, family: Family | None, body: Mapping[str, Any], outer: Mapping[str, Any] | None,
                body_path: str, head_fields: tuple[str, ...], unknown: str, stamp: Any = None) -> _Keyed:
    """The key of one vendor notification: ``head`` plus its family's fields, else a body fingerprint.

    ``outer`` is where a name missing from ``body`` is looked up next (the NICE
    bridge's ``detail`` around its ``payload``). ``stamp`` is the notification's
    own timestamp (Genesys ``detail.timestamp``), added to a body fingerprint so
    that a snapshot equal to an earlier one (IDLE, BUSY, IDLE) is not taken for
    its copy; a platform that re-stamped a re-send would only let a duplicate
    through, never drop a notification.
    """
    if family is None:
        return _fingerprinted(head, body, body_path, head_fields, None, unknown, stamp)
    if family.fingerprint_only:
        return _fingerprinted(head, body, body_path, head_fields, family.name, None, stamp)
    parts = [head]
    used = list(head_fields)
    anchored = skip_times = False
    for path, segments, kind, full in family.paths:
        if skip_times and kind == "time":
            break
        value = body.get(path) if segments is None else resolve(body, segments)
        where = body_path
        if value is None and outer is not None:
            value = outer.get(path) if segments is None else resolve(outer, segments)
            where = "detail"
        if value is None or value == "":
            continue
        if kind == "time":
            anchored = True
            try:
                parts.append(f"{path}={_epoch_ms(value)}")
            except TimestampError:
                parts.append(f"{path}~{canonical_json(value)}")  # not a time: its text keys it as is
        else:
            if kind == "item":
                anchored = True
                skip_times = family.items_over_times
            parts.append(f"{path}={value if type(value) is str else _text(value)}")
        used.append(full[where])
    if not anchored:
        return _fingerprinted(head, body, body_path, head_fields, family.name,
                              "none of " + ", ".join([*family.items, *family.times]) + " is present", stamp)
    return _Keyed("|".join(parts), tuple(used), family.name)


def _fingerprinted(head: str, body: Mapping[str, Any], body_path: str, head_fields: tuple[str, ...],
                   family: str | None, fallback: str | None, stamp: Any) -> _Keyed:
    key = f"{head}|body={digest(canonical_json(body)).hex()}"
    if stamp in (None, ""):
        return _Keyed(key, (*head_fields, f"fingerprint({body_path})"), family, fallback)
    try:
        key += f"|timestamp={_epoch_ms(stamp)}"
    except TimestampError:
        key += f"|timestamp~{canonical_json(stamp)}"
    return _Keyed(key, (*head_fields, f"fingerprint({body_path})", "detail.timestamp"), family, fallback)


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

    def _derive(self, event: Mapping[str, Any]) -> KeyExplanation:
        tried = []
        for strategy in self.strategies:
            explained = explain_key(strategy, event)
            if explained.key is not None:
                before = "; ".join(f"{n}: {r}" for n, r in tried)
                return KeyExplanation(
                    explained.strategy, explained.key, explained.fields, explained.family,
                    f"{self.name}: the first strategy that yields a key" + (f" ({before})" if before else ""),
                    explained.fallback,
                )
            tried.append((strategy.name, explained.error or ""))
        raise NoKey("; ".join(f"{n}: {r}" for n, r in tried), tried)


@dataclass(frozen=True)
class AutoKey:
    """Picks the vendor strategy by ``source``; never refuses an event whose ``detail`` is an object.

    * Genesys Cloud: a source starting with one of ``genesys_prefixes``
      (default the partner prefix ``aws.partner/genesys.com/``).
    * NICE CXone: a source in ``nice_sources`` (default the bridge source
      ``dedup provision`` routes, ``com.nice.cxone.bridge``) or starting with one
      of ``nice_prefixes``. Matching is exact, never by substring.
    * Anything else: ``fallback`` (a content fingerprint of ``detail``).

    When the vendor strategy yields no key, or keys an event of an uncatalogued
    family by a body fingerprint, the event is still keyed by content, counted
    per source in :attr:`fallbacks` and logged once per source at WARNING, so an
    unexpected shape is visible without a message being dead-lettered.
    """

    genesys: KeyStrategy | None = None
    nice: KeyStrategy = field(default_factory=NiceKey)
    fallback: KeyStrategy = field(default_factory=ContentFingerprint)
    genesys_prefixes: tuple[str, ...] = (GENESYS_SOURCE_PREFIX,)
    nice_sources: tuple[str, ...] = (NICE_BRIDGE_SOURCE,)
    nice_prefixes: tuple[str, ...] = ()
    name: str = "auto"
    #: Events keyed by content although their source named a vendor, per source (cumulative).
    fallbacks: dict[str, int] = field(default_factory=dict, init=False, compare=False, repr=False)
    _lock: Any = field(default_factory=threading.Lock, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "genesys_prefixes", tuple(self.genesys_prefixes))
        object.__setattr__(self, "nice_sources", frozenset(self.nice_sources))
        object.__setattr__(self, "nice_prefixes", tuple(self.nice_prefixes))
        if self.genesys is None:
            object.__setattr__(self, "genesys", GenesysKey(self.genesys_prefixes))

    def __getstate__(self) -> dict[str, Any]:
        """What a copy in another process (a key-derivation worker) needs: the configuration only."""
        return {name: value for name, value in vars(self).items() if name not in ("fallbacks", "_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A copy starts its own fallback counts, under its own lock."""
        for name, value in state.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "fallbacks", {})
        object.__setattr__(self, "_lock", threading.Lock())

    def pick(self, event: Mapping[str, Any]) -> KeyStrategy:
        """The strategy ``auto`` applies first to ``event``."""
        return self._vendor(event.get("source")) or self.fallback

    def key_for(self, event: Mapping[str, Any]) -> str:
        source = event.get("source")
        vendor = self._vendor(source)
        if vendor is None:
            return self.fallback.key_for(event)
        keyed = self._vendor_key(vendor, event)
        if keyed.fallback is not None:
            self._count_fallback(source, vendor.name, keyed.fallback)
        return keyed.key

    def _derive(self, event: Mapping[str, Any]) -> KeyExplanation:
        source = event.get("source")
        vendor = self._vendor(source)
        if vendor is None:
            explained = explain_key(self.fallback, event)
            chosen = f"{self.name}: source {_clip(source)!r} is neither Genesys nor a configured NICE source"
            if explained.key is None:
                raise NoKey(f"{self.fallback.name}: {explained.error}")
            return KeyExplanation(explained.strategy, explained.key, explained.fields, explained.family,
                                  chosen, explained.fallback)
        keyed = self._vendor_key(vendor, event)
        name = self.fallback.name if keyed.key.startswith("fp:") else vendor.name
        chosen = f"{self.name}: {self._why(source)}"
        return KeyExplanation(name, keyed.key, keyed.fields, keyed.family, chosen, keyed.fallback)

    def _vendor(self, source: Any) -> KeyStrategy | None:
        if type(source) is str:
            if source.startswith(self.genesys_prefixes):
                return self.genesys
            if source in self.nice_sources or (self.nice_prefixes and source.startswith(self.nice_prefixes)):
                return self.nice
        return None

    def _why(self, source: str) -> str:
        if source.startswith(self.genesys_prefixes):
            return f"source starts with {_matching(source, self.genesys_prefixes)!r} (Genesys)"
        if source in self.nice_sources:
            return f"source {source!r} is a configured NICE source"
        return f"source starts with {_matching(source, self.nice_prefixes)!r} (NICE)"

    def _vendor_key(self, vendor: KeyStrategy, event: Mapping[str, Any]) -> _Keyed:
        derive = getattr(vendor, "_derive", None)
        try:
            if derive is None:
                return _Keyed(vendor.key_for(event), ())
            keyed = derive(event)
            return keyed if isinstance(keyed, _Keyed) else _Keyed(keyed.key, keyed.fields, keyed.family,
                                                                  keyed.fallback)
        except NoKey as exc:
            if not isinstance(event.get("detail"), Mapping):
                raise NoKey(f"{vendor.name}: {exc.reason}") from None
            fp = self.fallback.key_for(event)
            return _Keyed(fp, ("source", "detail-type", "fingerprint(detail)"), None,
                          f"{vendor.name}: {exc.reason}")

    def _count_fallback(self, source: Any, vendor: str, reason: str) -> None:
        name = source if isinstance(source, str) else repr(source)
        with self._lock:
            if name not in self.fallbacks and len(self.fallbacks) >= MAX_FALLBACK_SOURCES:
                name = OTHER_SOURCES
            first = name not in self.fallbacks
            self.fallbacks[name] = self.fallbacks.get(name, 0) + 1
        if first:
            log.warning(
                "key: events from source %r are keyed by a content fingerprint, not by %s fields (%s); "
                "counted in AutoKey.fallbacks, logged once per source", _clip(name), vendor, _clip(reason),
            )


def first_of(*strategies: KeyStrategy) -> FirstOf:
    """Chain strategies: the first that yields a key wins."""
    return FirstOf(tuple(strategies))


def auto(*, nice_sources: Iterable[str] = (NICE_BRIDGE_SOURCE,), nice_prefixes: Iterable[str] = (),
         genesys_prefixes: Iterable[str] = (GENESYS_SOURCE_PREFIX,)) -> AutoKey:
    """The default strategy: Genesys or NICE by ``source``, else (and as a fallback) a content fingerprint."""
    return AutoKey(nice_sources=tuple(nice_sources), nice_prefixes=tuple(nice_prefixes),
                   genesys_prefixes=tuple(genesys_prefixes))


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
    ``auto:nice=SOURCE,PREFIX*`` names the NICE sources (a trailing ``*`` makes
    a prefix) in place of the default bridge source; ``fingerprint:PATH,...``
    ignores those paths of ``detail``. Several specs joined by ``|`` are
    chained with :func:`first_of`.
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
    if name == "auto" and arg:
        return _auto_spec(spec, arg)
    try:
        return KEY_STRATEGIES[name]()
    except KeyError:
        known = ", ".join([*KEY_STRATEGIES, "business:...", "auto:nice=..."])
        raise ConfigurationError(f"unknown key strategy {spec!r} (known: {known})") from None


def _auto_spec(spec: str, arg: str) -> AutoKey:
    option, _, values = arg.partition("=")
    names = [v.strip() for v in values.split(",") if v.strip()]
    if option.strip() != "nice" or not names:
        raise ConfigurationError(
            f"{spec!r}: auto takes nice=SOURCE[,PREFIX*...], e.g. auto:nice=com.acme.cxone")
    exact = [n for n in names if not n.endswith("*")]
    prefixes = [n[:-1] for n in names if n.endswith("*")]
    if any(not p for p in prefixes):
        raise ConfigurationError(f"{spec!r}: a bare '*' would send every source to the NICE key")
    return auto(nice_sources=exact, nice_prefixes=prefixes)


def _matching(source: str, prefixes: tuple[str, ...]) -> str:
    return next(p for p in prefixes if source.startswith(p))


def _text(value: Any) -> str:
    """An id as key text: strings as they are, lists joined by commas, numbers and the rest canonical."""
    kind = type(value)
    if kind is str:
        return value
    if kind is int:
        return str(value)
    if kind is list:
        return ",".join(_text(v) for v in value)
    return canonical_json(value)


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
