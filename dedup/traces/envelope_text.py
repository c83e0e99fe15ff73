"""Envelopes as JSON text, written a chunk of rows at a time by a compiled loop.

:func:`dedup.traces.render.render` builds each envelope as a Python dict: the
readable definition, but about 30 µs an event. Dumps of 10M-100M events need
the text only, so here every envelope shape is a *template*: the JSON text of
:func:`render`'s dict with its variable parts (ids, times, numbers, words of a
vocabulary) left as operations on per-row integer columns. The columns are
computed with numpy exactly as :func:`render` computes them (same ids, same
dtypes, same draws), and a numba loop writes the bytes; the text equals
``json.dumps(envelope, ensure_ascii=False, separators=(",", ":"))`` of
:func:`render`'s envelope, byte for byte (tested on every event type).

A template is written below as the dict :func:`render` returns, with the
placeholders :class:`_Uuid`, :class:`_Int`, :class:`_Iso`, :class:`_Word` and
:class:`_Text` where a value varies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import numpy as np
import pandas as pd
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from dedup.traces.catalogue import (
    ACCOUNT,
    ACTIVITY_PRESENCE_OFFSET,
    AGENT_POOL,
    AUDIT_ACTIONS,
    AUDIT_ENTITY_TYPES,
    AUDIT_SERVICES,
    DETAIL_SUFFIX,
    EVENT_NAMES,
    FIRST_NICE,
    FLOWS,
    GENESYS_ORG_ID,
    GENESYS_SOURCE,
    MEDIA,
    NICE_AGENT_ID_BASE,
    NICE_AGENT_STATES,
    NICE_CONTACT_ID_BASE,
    NICE_SOURCE,
    NICE_STATES,
    PRESENCES,
    QUEUES,
    REGION,
    ROUTING_STATUSES,
    SUMMARY_COUNTS,
    UTTERANCES,
    WRAPUP_CODES,
    Event,
)
from dedup.traces.ids import Namespace, mix64
from dedup.traces.render import PUBLISHES_PER_EVENT

_DAY_MS = 86_400_000
_VARIANTS = 4  # shapes per event type: a template is numbered event * _VARIANTS + variant
# Operation kinds of the compiled templates.
_CONST, _INT, _UUID, _ISO_MS, _ISO_S, _WORD = range(6)
_FIXED_WIDTH = {_UUID: 36, _ISO_MS: 24, _ISO_S: 20}

# ---- the per-row values the templates read --------------------------------------------------------

#: What a template can show of a row, computed per row in the compiled loop (:func:`_row_values`)
#: exactly as :func:`dedup.traces.render.render` computes its columns.
_SLOTS = (
    "envelope_no", "logical", "envelope_time_ms", "event_time_ms", "day_ms", "entity", "item",
    "participant", "customer", "user", "queue", "flow", "choice", "skill", "agent_session", "media",
    "activity_status", "activity_presence", "activity_status_ms", "activity_presence_ms",
    "call_active", "call_acw", "chat_active", "chat_acw", "published_version",
)  # fmt: skip
_SLOT = {name: i for i, name in enumerate(_SLOTS)}
_CHAT, _VOICE = MEDIA.index("chat"), MEDIA.index("voice")
_IDLE, _AVAILABLE = ROUTING_STATUSES.index("IDLE"), PRESENCES.index("Available")
_ACTIVE_COUNTS = np.array([c[0] for c in SUMMARY_COUNTS], dtype=np.int64)
_ACW_COUNTS = np.array([c[1] for c in SUMMARY_COUNTS], dtype=np.int64)
_NICE_CONTACT_EVENTS = (Event.CONTACT_CREATED, Event.CONTACT_STATE, Event.AGENT_ASSIGNED, Event.CONTACT_ENDED,
                        Event.DIGITAL_MESSAGE)


@njit(cache=True, nogil=True)
def _int32(x: np.int64) -> np.int64:
    """``x`` wrapped to int32, as numpy's int32 arithmetic on the frame's columns wraps."""
    return ((x + 2**31) & 0xFFFFFFFF) - 2**31


@njit(cache=True, nogil=True)
def _pick(index: np.int64, salt: np.uint64, size: int) -> np.int64:
    """:func:`dedup.traces.ids.pick` of one index (``salt`` is its namespace's)."""
    return np.int64(_mix64(np.uint64(index) ^ salt) % np.uint64(size))


@njit(cache=True, nogil=True)
def _row_values(v: np.ndarray, event: int, entity: np.int64, participant: np.int64, item: np.int64,
                logical: np.int64, publish: np.int64, envelope_ms: np.int64, event_ms: np.int64, media: int,
                picks: np.ndarray) -> int:
    """Fill ``v`` with the row's :data:`_SLOTS` values (in that order); return its template number."""
    day_ms = event_ms // _DAY_MS * _DAY_MS
    v[0] = logical * PUBLISHES_PER_EVENT + publish
    v[1] = logical
    v[2] = envelope_ms
    v[3] = event_ms
    v[4] = day_ms
    v[5] = entity
    v[6] = item
    v[7] = participant
    v[8] = participant - 1
    v[9] = _pick(_int32(entity + (item if event == Event.AUDIT else 0)), picks[Namespace.USER], AGENT_POOL)
    v[10] = _pick(entity, picks[Namespace.QUEUE], QUEUES)
    v[11] = _pick(entity, picks[Namespace.FLOW], FLOWS)
    presence_change = event == Event.ACTIVITY and item >= ACTIVITY_PRESENCE_OFFSET
    drawn = item - ACTIVITY_PRESENCE_OFFSET if presence_change else item
    choice = _pick(_int32(_int32(entity * 7919) + drawn), picks[Namespace.CORRELATION], 1 << 30)
    v[12] = choice
    v[13] = 1200 + _pick(entity, picks[Namespace.QUEUE], 40)
    v[14] = _int32(entity * 100_000) + (event_ms // _DAY_MS if event == Event.AGENT_STATE else item)
    v[15] = media
    routing = item < ACTIVITY_PRESENCE_OFFSET
    v[16] = item if routing else _IDLE
    v[17] = _AVAILABLE if routing else choice % len(PRESENCES)
    v[18] = event_ms if routing else day_ms
    v[19] = day_ms if routing else event_ms
    summary = item if event == Event.CONVERSATION_SUMMARY else len(_ACTIVE_COUNTS) - 1
    voice = 1 if media == _VOICE else 0
    v[20] = _ACTIVE_COUNTS[summary] * voice
    v[21] = _ACW_COUNTS[summary] * voice
    v[22] = _ACTIVE_COUNTS[summary] * (1 - voice)
    v[23] = _ACW_COUNTS[summary] * (1 - voice)
    # A flow publish's published version: the new one once done (odd item), the one before until then.
    v[24] = 10 + item // 2 - (1 if item % 2 == 0 else 0)
    # The row's shape within its event type: a chat or not (NICE contacts, queue snapshots), ACD leg ended.
    chat = 1 if media == _CHAT else 0
    variant = 0
    if event == Event.QUEUE_CONVERSATION:
        variant = chat * 2 + (1 if item == 1 else 0)
    elif event >= Event.CONTACT_CREATED and event != Event.AGENT_SESSION_START and (
            event != Event.AGENT_SESSION_END and event != Event.AGENT_STATE):
        variant = chat
    return event * _VARIANTS + variant


# ---- template placeholders ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Value:
    """A row's value of ``slot``, transformed: ``((value >> shift) % mod) + add`` (``mod`` 0: none)."""

    slot: str
    shift: int = 0
    mod: int = 0
    add: int = 0


@dataclass(frozen=True)
class _Uuid(_Value):
    """The UUID text :func:`dedup.traces.ids.uuids` gives the value in ``namespace``."""

    namespace: Namespace = Namespace.ENVELOPE


@dataclass(frozen=True)
class _Int(_Value):
    """The value as a decimal number, zero-padded to ``width`` digits."""

    width: int = 0


@dataclass(frozen=True)
class _Iso(_Value):
    """The value (epoch ms) as ISO-8601 UTC text: to the millisecond, or to the second (``seconds``)."""

    seconds: bool = False


@dataclass(frozen=True)
class _Word(_Value):
    """``words[value]``: a JSON value from a fixed vocabulary (a string, or True/False)."""

    words: tuple = ()


@dataclass(frozen=True)
class _Text:
    """A JSON string of fixed text and placeholders (``"v2.users.<uuid>.presence"``)."""

    parts: tuple


def _uuid(namespace: Namespace, slot: str, **transform: int) -> _Uuid:
    return _Uuid(slot, namespace=namespace, **transform)


_ENTITY_NAMESPACE = {
    **{e: Namespace.CONVERSATION for e in (*DETAIL_SUFFIX, Event.TRANSCRIPTION, Event.QUEUE_CONVERSATION,
                                          Event.CONVERSATION_METRICS)},
    Event.AUDIT: Namespace.ENTITY,
    **{e: Namespace.USER for e in (Event.PRESENCE, Event.ROUTING_STATUS, Event.ACTIVITY,
                                  Event.CONVERSATION_SUMMARY)},
    Event.QUEUE_OBSERVATIONS: Namespace.QUEUE,
    Event.FLOW_NOTIFICATION: Namespace.FLOW,
    **{e: Namespace.INTERACTION for e in (Event.CONTACT_CREATED, Event.CONTACT_STATE, Event.AGENT_ASSIGNED,
                                         Event.CONTACT_ENDED, Event.DIGITAL_MESSAGE)},
}
_AGENT_EVENTS = (Event.USER_START, Event.USER_END, Event.ACW)
_EVENT_MS = _Iso("event_time_ms")
_ENTITY_TYPE = _Word("entity", mod=len(AUDIT_ENTITY_TYPES), words=AUDIT_ENTITY_TYPES)
_PARTICIPANT = _uuid(Namespace.PARTICIPANT, "participant")
_SESSION = _uuid(Namespace.SESSION, "participant")
_USER = _uuid(Namespace.USER, "user")
_QUEUE = _uuid(Namespace.QUEUE, "queue")
# By media code (none, voice, chat): what render writes for a voice row, and otherwise.
_BY_MEDIA = {"mediaType": ("CHAT", "VOICE", "CHAT"),
             "provider": ("PureCloud Webchat v2", "Edge", "PureCloud Webchat v2"),
             "flowType": ("INBOUNDCHAT", "INBOUNDCALL", "INBOUNDCHAT"), "nice": ("Chat", "PhoneCall", "Chat")}


def _media(field: str) -> _Word:
    return _Word("media", words=_BY_MEDIA[field])


def _entity_id(code: Event) -> _Uuid:
    return _uuid(_ENTITY_NAMESPACE[code], "entity")


# ---- the templates: render's dicts, with placeholders ------------------------------------------------


def _template(code: Event, variant: int) -> dict[str, Any]:
    if code >= FIRST_NICE:
        source, detail = NICE_SOURCE, _nice_detail(code, variant)
    else:
        source = GENESYS_SOURCE
        detail = {"topicName": _topic(code), "version": "2", "eventBody": _genesys_body(code, variant),
                  "metadata": {"CorrelationId": _uuid(Namespace.CORRELATION, "logical")},
                  "timestamp": _EVENT_MS}
    return {"version": "0", "id": _uuid(Namespace.ENVELOPE, "envelope_no"), "detail-type": EVENT_NAMES[code],
            "source": source, "account": ACCOUNT, "time": _Iso("envelope_time_ms", seconds=True),
            "region": REGION, "resources": [], "detail": detail}


def _topic(code: Event) -> _Text:
    if code in DETAIL_SUFFIX:
        return _Text(("v2.detail.events.conversation.", _entity_id(code), "." + DETAIL_SUFFIX[code]))
    if code == Event.AUDIT:
        return _Text(("v2.audits.entitytype.", _ENTITY_TYPE, ".entityid.", _entity_id(code)))
    if code == Event.QUEUE_CONVERSATION:
        return _Text(("v2.routing.queues.", _QUEUE, ".conversations"))
    before, after = EVENT_NAMES[code].split("{id}")
    return _Text((before, _entity_id(code), after))


def _genesys_body(code: Event, variant: int) -> dict[str, Any]:
    choice = "choice"
    if code == Event.TRANSCRIPTION:
        confidences = tuple(round(0.7 + k / 1000, 3) for k in range(300))
        return {"organizationId": GENESYS_ORG_ID, "conversationId": _entity_id(code),
                "communicationId": _SESSION, "transcripts": [{
                    "utteranceId": _uuid(Namespace.UTTERANCE, "item"), "isFinal": True,
                    "channel": _Word(choice, mod=2, words=("INTERNAL", "EXTERNAL")),
                    "alternatives": [{"confidence": _Word(choice, mod=300, words=confidences),
                                      "durationMs": _Int(choice, mod=4000, add=800),
                                      "transcript": _Word("item", mod=len(UTTERANCES), words=UTTERANCES)}],
                    "dialect": "en-US"}]}
    if code == Event.AUDIT:
        version = _Int(choice, mod=9)
        return {"id": _uuid(Namespace.AUDIT, "item"), "userHomeOrgId": GENESYS_ORG_ID, "user": {"id": _USER},
                "client": {"type": _Word(choice, mod=3, words=("Browser", "PublicAPI", "PublicAPI"))},
                "serviceName": _Word("entity", mod=len(AUDIT_ENTITY_TYPES),
                                     words=tuple(AUDIT_SERVICES[t] for t in AUDIT_ENTITY_TYPES)),
                "level": "USER", "eventTime": _EVENT_MS,
                "action": _Word(choice, mod=len(AUDIT_ACTIONS), words=AUDIT_ACTIONS),
                "entity": {"id": _entity_id(code), "name": _Text((_ENTITY_TYPE, " ", _Int("entity")))},
                "entityType": _ENTITY_TYPE, "status": "SUCCESS",
                "propertyChanges": [{"property": "name", "oldValues": [_Text(("v", version))],
                                     "newValues": [_Text(("v", _Int(choice, mod=9, add=1)))]}]}
    if code == Event.PRESENCE:
        return {"source": "PURECLOUD", "presenceDefinition": _presence(_Value(choice, mod=len(PRESENCES))),
                "primary": True, "message": "", "modifiedDate": _EVENT_MS}
    if code == Event.ROUTING_STATUS:
        return {"routingStatus": {"status": _Word("item", words=ROUTING_STATUSES), "startTime": _EVENT_MS}}
    if code == Event.ACTIVITY:
        return {"id": _entity_id(code),
                "routingStatus": {"status": _Word("activity_status", words=ROUTING_STATUSES),
                                  "startTime": _Iso("activity_status_ms")},
                "presence": {"presenceDefinition": _presence(_Value("activity_presence")),
                             "modifiedDate": _Iso("activity_presence_ms")},
                "outOfOffice": {"active": False, "indefinite": False}, "activeQueueIds": [],
                "dateActiveQueuesChanged": _Iso("day_ms")}
    if code == Event.CONVERSATION_SUMMARY:
        def counts(active: Any, acw: Any) -> dict:
            return {"contactCenter": {"active": active, "acw": acw}, "enterprise": {"active": 0, "acw": 0}}

        return {"userId": _entity_id(code), "call": counts(_Int("call_active"), _Int("call_acw")),
                "callback": counts(0, 0), "email": counts(0, 0), "message": counts(0, 0),
                "chat": counts(_Int("chat_active"), _Int("chat_acw"))}
    if code == Event.QUEUE_OBSERVATIONS:
        return {"group": {"queueId": _entity_id(code), "mediaType": "voice"}, "data": [
            {"metric": "oWaiting", "stats": {"count": _Int(choice, mod=9)}},
            {"metric": "oInteracting", "stats": {"count": _Int(choice, shift=4, mod=25)}},
            {"metric": "oOnQueueUsers", "qualifier": "IDLE",
             "stats": {"count": _Int(choice, shift=9, mod=12)}},
        ]}
    if code == Event.QUEUE_CONVERSATION:
        kind = "chats" if variant & 2 else "calls"
        acd = ({"id": _SESSION, "state": "disconnected", "disconnectedTime": _EVENT_MS} if variant & 1
               else {"id": _SESSION, "state": "connected", "connectedTime": _EVENT_MS})
        return {"id": _entity_id(code), "maxParticipants": 2, "recordingState": "NONE", "participants": [
            {"id": _uuid(Namespace.PARTICIPANT, "customer"), "purpose": "customer",
             kind: [{"state": "connected"}]},
            {"id": _PARTICIPANT, "purpose": "acd", "queueId": _QUEUE, kind: [acd]},
        ]}
    if code == Event.FLOW_NOTIFICATION:
        version = _Text((_Int("item", shift=1, add=10), ".0"))
        return {"id": _entity_id(code), "name": _Text(("Inbound flow ", _Int("entity"))), "description": "",
                "deleted": False, "checkedInVersion": {"id": version}, "savedVersion": {"id": version},
                "publishedVersion": {"id": _Text((_Int("published_version"), ".0"))},
                "currentOperation": {"id": _uuid(Namespace.OPERATION, "item", shift=1),
                                     "complete": _Word("item", mod=2, words=(False, True)),
                                     "actionName": "PUBLISH",
                                     "actionStatus": _Word("item", mod=2, words=("STARTED", "SUCCESS"))}}
    if code == Event.CONVERSATION_METRICS:
        return {"conversationId": _entity_id(code), "participantId": _PARTICIPANT, "sessionId": _SESSION,
                "metrics": [{"name": "tHandle", "value": _Int(choice, mod=600_000, add=60_000),
                             "emitDate": _EVENT_MS}]}
    body: dict[str, Any] = {"eventTime": _Int("event_time_ms"), "conversationId": _entity_id(code),
                            "participantId": _PARTICIPANT, "sessionId": _SESSION,
                            "mediaType": _media("mediaType"),
                            "divisionId": "ee1f3d8c-0000-4000-8000-000000000001"}
    if code == Event.CUSTOMER_START:
        body.update(direction="INBOUND", provider=_media("provider"),
                    ani=_Text(("tel:+1555", _Int("entity", mod=10_000_000, width=7))),
                    dnis="tel:+18005550100")
    elif code in (Event.FLOW_START, Event.FLOW_END):
        body.update(flowId=_uuid(Namespace.FLOW, "flow"), flowVersion="12.0", flowType=_media("flowType"))
    elif code in (Event.ACD_START, Event.ACD_END):
        body["queueId"] = _QUEUE
        if code == Event.ACD_END:
            body["acdOutcome"] = _Word("item", mod=2, words=("SUCCESS", "ABANDON"))
    elif code in _AGENT_EVENTS:
        body.update(userId=_USER, queueId=_QUEUE)
        if code == Event.USER_END:
            body["disconnectType"] = _Word(choice, mod=2, words=("PEER", "CLIENT"))
        elif code == Event.ACW:
            body["wrapupCode"] = _Word(choice, mod=len(WRAPUP_CODES), words=WRAPUP_CODES)
    elif code == Event.CUSTOMER_END:
        body["disconnectType"] = _Word(choice, mod=3, words=("CLIENT", "PEER", "PEER"))
    elif code == Event.ATTRIBUTES:
        body["attributes"] = {"language": "en-US",
                              "intent": _Word(choice, mod=3, words=("billing", "orders", "support")),
                              "customerTier": _Word("item", mod=3, words=("gold", "silver", "standard")),
                              "step": _Text((_Int("item", mod=7),))}
    return body


def _presence(index: _Value) -> dict[str, Any]:
    lower = tuple(p.lower() for p in PRESENCES)
    return {"id": _Text(("presence-", _Word(index.slot, mod=index.mod, words=lower))),
            "systemPresence": _Word(index.slot, mod=index.mod, words=PRESENCES)}


def _nice_detail(code: Event, variant: int) -> dict[str, Any]:
    if code in (Event.AGENT_SESSION_START, Event.AGENT_SESSION_END, Event.AGENT_STATE):
        event: dict[str, Any] = {"Type": EVENT_NAMES[code], "AgentId": _Int("entity", add=NICE_AGENT_ID_BASE),
                                 "SessionId": _uuid(Namespace.AGENT_SESSION, "agent_session")}
        if code == Event.AGENT_STATE:
            event.update(CurrentState=_Word("item", words=NICE_AGENT_STATES), CurrentOutReason="",
                         StartTimeUTC=_EVENT_MS)
        else:
            event["StartTimeUTC" if code == Event.AGENT_SESSION_START else "EndTimeUTC"] = _EVENT_MS
        return {"eventType": EVENT_NAMES[code], "payload": event, "createdAt": _EVENT_MS,
                "businessUnitId": 4600123}
    contact_id = _Int("entity", add=NICE_CONTACT_ID_BASE)
    payload: dict[str, Any] = {"ContactID": contact_id, "MasterID": contact_id, "mediaType": _media("nice"),
                               "skillId": _Int("skill")}
    if variant:  # a chat
        payload = {"interactionId": _entity_id(code), **payload, "channel": "Chat"}
    if code == Event.CONTACT_STATE:
        payload["state"] = _Word("item", words=NICE_STATES)
    elif code == Event.AGENT_ASSIGNED:
        payload["agentId"] = _USER
    elif code == Event.DIGITAL_MESSAGE:
        payload.update(messageId=_uuid(Namespace.MESSAGE, "item"),
                       direction=_Word("choice", mod=2, words=("inbound", "outbound")))
    return {"eventType": EVENT_NAMES[code], "payload": payload, "createdAt": _EVENT_MS,
            "businessUnitId": 4600123}


# ---- compiling templates to operations ---------------------------------------------------------------


class _Program:
    """Templates as rows of operations (kind, a, shift, mod, add, b, at) over a pool of constant bytes.

    Constant text and the fixed-width fields (UUIDs, ISO times) inside it form one block, copied at
    once and then patched (``at``: where in the block); numbers and words, of varying width, end a block.
    """

    def __init__(self) -> None:
        self.pool = bytearray()
        self.words: list[bytes] = []
        self.ops: list[tuple[int, ...]] = []
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.bounds: list[int] = []

    def add(self, template: Any) -> None:
        start = len(self.ops)
        self._text = bytearray()
        self._patches: list[tuple[int, ...]] = []
        self._bound = 0
        self._emit(template)
        self._flush()
        self.starts.append(start)
        self.ends.append(len(self.ops))
        self.bounds.append(self._bound)

    def skip(self) -> None:
        self.starts.append(0)
        self.ends.append(0)
        self.bounds.append(0)

    def _const(self, text: str) -> None:
        self._text += text.encode("utf-8")

    def _flush(self) -> None:
        if self._text:
            self.ops.append((_CONST, len(self.pool), 0, 0, 0, len(self._text), 0))
            self.ops += self._patches
            self.pool += self._text
            self._bound += len(self._text)
            self._text = bytearray()
            self._patches = []

    def _op(self, kind: int, value: _Value, arg: int, bound: int) -> None:
        op = (kind, _SLOT[value.slot], value.shift, value.mod, value.add, arg)
        if kind in _FIXED_WIDTH:  # a hole in the block, patched after the copy
            self._patches.append((*op, len(self._text)))
            self._text += b"?" * _FIXED_WIDTH[kind]
            return
        self._flush()
        self.ops.append((*op, 0))
        self._bound += bound

    def _emit(self, obj: Any, in_text: bool = False) -> None:
        quote = "" if in_text else '"'
        if isinstance(obj, dict):
            self._const("{")
            for n, (key, value) in enumerate(obj.items()):
                self._const(("," if n else "") + json.dumps(key, ensure_ascii=False) + ":")
                self._emit(value)
            self._const("}")
        elif isinstance(obj, list):
            self._const("[")
            for n, value in enumerate(obj):
                self._const("," if n else "")
                self._emit(value)
            self._const("]")
        elif isinstance(obj, _Text):
            self._const(quote)
            for part in obj.parts:
                if isinstance(part, str):
                    self._const(json.dumps(part, ensure_ascii=False)[1:-1])
                else:
                    self._emit(part, in_text=True)
            self._const(quote)
        elif isinstance(obj, _Uuid):
            self._const(quote)
            self._op(_UUID, obj, int(obj.namespace), 0)
            self._const(quote)
        elif isinstance(obj, _Iso):
            self._const(quote)
            self._op(_ISO_S if obj.seconds else _ISO_MS, obj, 0, 0)
            self._const(quote)
        elif isinstance(obj, _Int):
            self._op(_INT, obj, obj.width, 21)
        elif isinstance(obj, _Word):
            encoded = [json.dumps(w, ensure_ascii=False) for w in obj.words]
            encoded = [e[1:-1] for e in encoded] if in_text else encoded
            first = len(self.words)
            self.words += [e.encode("utf-8") for e in encoded]
            self._op(_WORD, obj, first, max(len(w.encode("utf-8")) for w in encoded))
        else:  # a constant str, number, bool or None
            self._const(json.dumps(obj, ensure_ascii=False))


@dataclass(frozen=True)
class _Compiled:
    pool: np.ndarray
    word_offsets: np.ndarray
    words: np.ndarray
    ops: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    bounds: np.ndarray


@cache
def _compiled() -> _Compiled:
    program = _Program()
    for template_no in range(len(Event) * _VARIANTS):
        code, variant = Event(template_no // _VARIANTS), template_no % _VARIANTS
        shapes = 4 if code == Event.QUEUE_CONVERSATION else 2 if code in _NICE_CONTACT_EVENTS else 1
        if variant < shapes:
            program.add(_template(code, variant))
        else:
            program.skip()
    word_offsets = np.cumsum([0, *(len(w) for w in program.words)]).astype(np.int64)
    return _Compiled(np.frombuffer(bytes(program.pool), dtype=np.uint8),
                     word_offsets, np.frombuffer(b"".join(program.words), dtype=np.uint8),
                     np.array(program.ops, dtype=np.int64).reshape(-1, 7),
                     np.array(program.starts, dtype=np.int64), np.array(program.ends, dtype=np.int64),
                     np.array(program.bounds, dtype=np.int64))


def _salts(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per namespace number, the salts that :func:`~dedup.traces.ids.uuids` and :func:`~dedup.traces.ids.pick`
    mix into indices."""
    spaces = np.arange(max(Namespace) + 1, dtype=np.uint64)
    base = np.uint64((seed & 0xFFFFFFFF) << 8) | spaces
    return mix64(base), base * np.uint64(0x2545F4914F6CDD1D)


# ---- the compiled loop ---------------------------------------------------------------------------------

#: Event and envelope times must have four-digit years, as the ISO text here writes them.
_MIN_MS, _MAX_MS = -30_610_224_000_000, 253_402_300_800_000


Framing = Literal["jsonl", "arrow"]
#: Bytes an Arrow ``string`` array's values may span (its offsets are int32).
_ARROW_STRING_BYTES = 2**31 - 1


def render_lines(frame: pd.DataFrame, seed: int, framing: Framing = "jsonl",
                 buffer: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The envelopes of ``frame``'s rows as UTF-8 JSON text, and the ``len(frame) + 1`` offsets where
    rows start (the last is the end).

    Each text is ``json.dumps(render(frame, seed)[i], ensure_ascii=False, separators=(",", ":"))``.
    ``jsonl``: each followed by a newline, int64 offsets. ``arrow``: the texts back to back with int32
    offsets, Arrow's layout of a ``string`` array, so the two arrays become one without a copy
    (``pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(text)])``).
    The bytes are written into ``buffer`` when it is large enough (see :func:`buffer_bytes`; reusing
    one saves faulting fresh pages in), else a new array. The compiled loop releases the GIL: threads
    render chunks in parallel.
    """
    program = _compiled()
    columns = [frame[c].to_numpy() for c in ("entity", "participant", "item", "logical_id", "publish_no",
                                              "envelope_time_ms", "event_time_ms")]
    for times in columns[-2:]:
        if len(times) and (times.min() < _MIN_MS or times.max() >= _MAX_MS):
            raise ValueError("envelope text needs times in the years 1000-9999")
    event = frame["event"].cat.codes.to_numpy()
    uuid_salts, pick_salts = _salts(seed)
    size = buffer_bytes(len(frame))
    if framing == "arrow" and size > _ARROW_STRING_BYTES:
        raise ValueError(f"{len(frame):,} rows may exceed an Arrow string array's 2 GiB: "
                         "render fewer at a time")
    out = buffer if buffer is not None and len(buffer) >= size else np.empty(size, dtype=np.uint8)
    offsets = np.empty(len(frame) + 1, dtype=np.int32 if framing == "arrow" else np.int64)
    _write(out, offsets, event, *columns, frame["media"].cat.codes.to_numpy(), uuid_salts, pick_salts,
           program.pool, program.words, program.word_offsets, program.ops, program.starts, program.ends,
           framing == "jsonl")
    return out[:offsets[-1]], offsets


def buffer_bytes(rows: int) -> int:
    """Bytes :func:`render_lines` may need for ``rows`` rows (the longest envelope and a newline, each)."""
    return (int(_compiled().bounds.max()) + 1) * rows


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


@intrinsic
def _memcpy(typingctx: Any, dst: Any, dst_at: Any, src: Any, src_at: Any, count: Any) -> Any:
    """``dst[dst_at:dst_at + count] = src[src_at:src_at + count]`` as one memcpy (uint8 arrays)."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> None:
        at = [context.cast(builder, args[k], sig.args[k], types.intp) for k in (1, 3, 4)]
        target = context.make_array(sig.args[0])(context, builder, args[0])
        source = context.make_array(sig.args[2])(context, builder, args[2])
        cgutils.raw_memcpy(builder, builder.gep(target.data, [at[0]]), builder.gep(source.data, [at[1]]),
                           at[2], 1)

    return types.void(dst, dst_at, src, src_at, count), codegen


@njit(cache=True, nogil=True)
def _mix64(z: np.uint64) -> np.uint64:
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True)
def _put_uuid(out: np.ndarray, p: int, index: np.int64, salt: np.uint64, hexdigits: np.ndarray) -> int:
    hi = _mix64(np.uint64(index) ^ salt)
    lo = _mix64(hi ^ salt ^ np.uint64(0x9E3779B97F4A7C15))
    hi = (hi & np.uint64(0xFFFFFFFFFFFF0FFF)) | np.uint64(0x4000)
    lo = (lo & np.uint64(0x3FFFFFFFFFFFFFFF)) | np.uint64(0x8000000000000000)
    digit = 0
    for half in range(2):
        word = hi if half == 0 else lo
        for k in range(16):
            if digit == 8 or digit == 12 or digit == 16 or digit == 20:
                out[p] = 45  # '-'
                p += 1
            out[p] = hexdigits[(word >> np.uint64(60 - 4 * k)) & np.uint64(15)]
            p += 1
            digit += 1
    return p


@njit(cache=True, nogil=True)
def _put_int(out: np.ndarray, p: int, value: np.int64, width: int) -> int:
    if value < 0:
        out[p] = 45
        p += 1
        value = -value
    digits = 1
    bound = 10
    while value >= bound and digits < 19:
        bound *= 10
        digits += 1
    return _put_digits(out, p, value, max(digits, width))


@njit(cache=True, nogil=True)
def _put_digits(out: np.ndarray, p: int, value: np.int64, width: int) -> int:
    for k in range(width - 1, -1, -1):
        out[p + k] = 48 + value % 10
        value //= 10
    return p + width


@njit(cache=True, nogil=True)
def _put_iso(out: np.ndarray, p: int, epoch_ms: np.int64, millis: bool) -> int:
    """``YYYY-MM-DDTHH:MM:SS[.mmm]Z`` (proleptic Gregorian, UTC), as numpy's datetime_as_string writes."""
    days = epoch_ms // 86_400_000
    ms_of_day = epoch_ms - days * 86_400_000
    # Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    z = days + 719_468
    era = (z if z >= 0 else z - 146_096) // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    p = _put_digits(out, p, year, 4)
    out[p] = 45
    p = _put_digits(out, p + 1, month, 2)
    out[p] = 45
    p = _put_digits(out, p + 1, day, 2)
    out[p] = 84  # 'T'
    p = _put_digits(out, p + 1, ms_of_day // 3_600_000, 2)
    out[p] = 58  # ':'
    p = _put_digits(out, p + 1, ms_of_day // 60_000 % 60, 2)
    out[p] = 58
    p = _put_digits(out, p + 1, ms_of_day // 1000 % 60, 2)
    if millis:
        out[p] = 46  # '.'
        p = _put_digits(out, p + 1, ms_of_day % 1000, 3)
    out[p] = 90  # 'Z'
    return p + 1


@njit(cache=True, nogil=True)
def _write(out: np.ndarray, offsets: np.ndarray, event: np.ndarray, entity: np.ndarray,
           participant: np.ndarray, item: np.ndarray, logical: np.ndarray, publish: np.ndarray,
           envelope_ms: np.ndarray, event_ms: np.ndarray, media: np.ndarray, uuid_salts: np.ndarray,
           pick_salts: np.ndarray, pool: np.ndarray, words: np.ndarray, word_offsets: np.ndarray,
           ops: np.ndarray, starts: np.ndarray, ends: np.ndarray, newlines: bool) -> None:
    p = 0
    v = np.empty(len(_SLOTS), dtype=np.int64)
    for row in range(len(event)):
        offsets[row] = p
        t = _row_values(v, event[row], np.int64(entity[row]), np.int64(participant[row]), np.int64(item[row]),
                        np.int64(logical[row]), np.int64(publish[row]), envelope_ms[row], event_ms[row],
                        media[row], pick_salts)
        block = p
        for o in range(starts[t], ends[t]):
            kind = ops[o, 0]
            if kind == 0:  # a block of constant text (with holes the next operations patch)
                _memcpy(out, p, pool, ops[o, 1], ops[o, 5])
                block = p
                p += ops[o, 5]
                continue
            value = v[ops[o, 1]]
            if ops[o, 2]:
                value = value >> ops[o, 2]
            if ops[o, 3]:
                value = value % ops[o, 3]
            value += ops[o, 4]
            if kind == 1:
                p = _put_int(out, p, value, ops[o, 5])
            elif kind == 2:
                _put_uuid(out, block + ops[o, 6], value, uuid_salts[ops[o, 5]], _HEX)
            elif kind == 3:
                _put_iso(out, block + ops[o, 6], value, True)
            elif kind == 4:
                _put_iso(out, block + ops[o, 6], value, False)
            else:
                w = ops[o, 5] + value
                a = word_offsets[w]
                _memcpy(out, p, words, a, word_offsets[w + 1] - a)
                p += word_offsets[w + 1] - a
        if newlines:
            out[p] = 10
            p += 1
    offsets[len(event)] = p
