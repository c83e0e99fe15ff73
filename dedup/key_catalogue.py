"""The vendor event families and the fields that identify one notification of each.

A key must tell apart every two notifications a platform sends (an agent's
successive states, a conversation's participants, a call's utterances) and
give a re-publish of one notification the same key. For each family this
catalogue names:

* ``ids``: what the notification is about and its state (participant,
  session, routing status, contact state...), added to the key when present;
* ``items``: ids of the notification itself (an utterance, an audit record, a
  message, the bridge's event id);
* ``times``: when it happened (``eventTime``, ``routingStatus.startTime``,
  ``presence.modifiedDate``...), each normalised to epoch milliseconds.

A notification keys on those fields only when at least one *item or time* is
present: ids and states alone would make an agent's IDLE → INTERACTING → IDLE
one key. Otherwise, and for families whose payload has no such field at all (a
conversation summary, queue observations, a queue's conversation snapshot, a
flow), the key is a canonical (RFC 8785) fingerprint of the whole body (for
Genesys with the notification's ``detail.timestamp``, so that a snapshot equal
to an earlier one is still a new notification): never topic and entity id alone.

Paths are dotted; ``name[]`` maps over a list (``transcripts[].utteranceId``).
Genesys paths are inside ``detail.eventBody``; NICE names are looked up in
``detail.payload`` (the bridge's shape) and then in ``detail`` itself (an event
bridged as it came, e.g. a CXone agent event with ``Type`` at the top).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "GENESYS_FAMILIES",
    "GENESYS_SOURCE_PREFIX",
    "NICE_BRIDGE_SOURCE",
    "NICE_FAMILIES",
    "Family",
    "genesys_family",
    "nice_family",
    "resolve",
]

#: Every Genesys Cloud partner event source starts with this (``.../cloud/{orgId}/{integration}``).
GENESYS_SOURCE_PREFIX = "aws.partner/genesys.com/"
#: The custom source the NICE CXone bridge publishes under (what ``dedup provision`` routes).
NICE_BRIDGE_SOURCE = "com.nice.cxone.bridge"


@dataclass(frozen=True)
class Family:
    """One family of vendor notifications and the fields its key uses.

    ``pattern`` is the Genesys topic pattern (``{id}`` placeholders, ``*`` for
    any suffix) or the NICE event types the family covers. ``match`` is how an
    event is recognised: Genesys ``(prefix, suffix)`` of ``topicName``; NICE
    the names whose presence marks the family (any one of them).
    """

    name: str
    vendor: str
    pattern: str
    match: tuple[str, ...]
    ids: tuple[str, ...] = ()
    items: tuple[str, ...] = ()
    times: tuple[str, ...] = ()
    #: When one of these items is present the times are left out (a bridge's event id
    #: names the event; a re-sent copy may carry a new send time).
    items_over_times: bool = False
    #: ``(path, its segments or None for a top-level name, kind, {body path: full path})`` for every
    #: field in key order; kind is "id", "item" or "time".
    paths: tuple[tuple[str, tuple[str, ...] | None, str, dict[str, str]], ...] = field(
        init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        paths = []
        for kind, group in (("id", self.ids), ("item", self.items), ("time", self.times)):
            for p in group:
                segments = tuple(p.split("."))
                full = {where: f"{where}.{p}" for where in ("detail.eventBody", "detail.payload", "detail")}
                paths.append((p, segments if len(segments) > 1 or p.endswith("[]") else None, kind, full))
        object.__setattr__(self, "paths", tuple(paths))

    @property
    def fingerprint_only(self) -> bool:
        """Whether this family's payload has no identifying field: its key is a body fingerprint."""
        return not (self.items or self.times)

    def describe(self) -> str:
        """The fields this family's key uses, as one line (for docs, explanations and the closing note)."""
        stamp = " + detail.timestamp" if self.vendor == "genesys" else ""
        if self.fingerprint_only:
            return "canonical fingerprint of the body" + stamp
        used = [*self.ids, *self.items, *(f"{t} (epoch ms)" for t in self.times)]
        rest = "; with none of " + ", ".join([*self.items, *self.times]) + ": a body fingerprint" + stamp
        return ", ".join(used) + rest


def resolve(node: Any, segments: tuple[str, ...]) -> Any:
    """The value at a dotted path (``name[]`` maps over a list); None when absent."""
    for i, seg in enumerate(segments):
        if type(node) is not dict and not isinstance(node, Mapping):
            return None
        if seg[-1] == "]" and seg.endswith("[]"):
            items = node.get(seg[:-2])
            if not isinstance(items, list):
                return None
            rest = segments[i + 1:]
            if len(rest) == 1:  # the common case, e.g. transcripts[].utteranceId
                name = rest[0]
                found = [v for x in items if type(x) is dict and (v := x.get(name)) is not None and v != ""]
            else:
                found = [v for v in (resolve(x, rest) for x in items) if v is not None and v != ""]
            return found or None
        node = node.get(seg)
        if node is None:
            return None
    return node


_DETAIL = "v2.detail.events.conversation."
#: Genesys Cloud topic families customers route to EventBridge, most specific first.
GENESYS_FAMILIES: tuple[Family, ...] = (
    Family("conversation detail event", "genesys",
           "v2.detail.events.conversation.{id}.{purpose}.{start|end} / .acw / .attributes / .contact",
           (_DETAIL, ""), ids=("participantId", "sessionId"), times=("eventTime",)),
    Family("conversation transcription", "genesys", "v2.conversations.{id}.transcription",
           ("v2.conversations.", ".transcription"), ids=("communicationId",),
           items=("transcripts[].utteranceId",), times=("eventTime",)),
    Family("audit", "genesys", "v2.audits.entitytype.{type}.entityid.{id}",
           ("v2.audits.", ""), items=("id",), times=("eventTime",)),
    Family("user presence", "genesys", "v2.users.{id}.presence", ("v2.users.", ".presence"),
           ids=("presenceDefinition.id", "presenceDefinition.systemPresence"), times=("modifiedDate",)),
    Family("user routing status", "genesys", "v2.users.{id}.routingStatus",
           ("v2.users.", ".routingStatus"), ids=("routingStatus.status",),
           times=("routingStatus.startTime",)),
    Family("user activity", "genesys", "v2.users.{id}.activity", ("v2.users.", ".activity"),
           ids=("routingStatus.status", "presence.presenceDefinition.id", "outOfOffice.active"),
           times=("routingStatus.startTime", "presence.modifiedDate", "dateActiveQueuesChanged")),
    Family("user conversation summary", "genesys", "v2.users.{id}.conversationsummary",
           ("v2.users.", ".conversationsummary")),
    Family("queue observations", "genesys", "v2.analytics.queues.{id}.observations",
           ("v2.analytics.queues.", ".observations")),
    Family("queue conversations", "genesys", "v2.routing.queues.{id}.conversations[.{media}]",
           ("v2.routing.queues.", "*conversations")),
    Family("flow", "genesys", "v2.flows.{id}", ("v2.flows.", "")),
    Family("analytics conversation metrics", "genesys", "v2.analytics.conversation.{id}.metrics",
           ("v2.analytics.conversation.", ".metrics")),
)

_CONTACT_IDS = ("ContactID", "ContactId", "contactId", "MasterID", "MasterId", "interactionId")
_STAMPS = ("createdAt", "timestamp")
#: NICE CXone event families, recognised by the names their payload carries (first match wins).
NICE_FAMILIES: tuple[Family, ...] = (
    Family("digital message", "nice", "DigitalMessageReceived / DigitalMessageSent",
           ("messageId",), ids=("interactionId",), items=("eventId", "messageId"),
           times=_STAMPS, items_over_times=True),
    Family("contact / interaction", "nice",
           "ContactCreated / ContactStateChanged / AgentAssigned / ContactEnded / CallContactEvent",
           _CONTACT_IDS, ids=(*_CONTACT_IDS, "state", "Status"), items=("eventId",),
           times=(*_STAMPS, "LastStateChangeTimeUTC"), items_over_times=True),
    Family("agent state", "nice", "AgentStateChanged / AgentState", ("CurrentState", "state"),
           ids=("AgentId", "agentId", "SessionId", "sessionId", "CurrentState", "state",
                "CurrentOutReason"),
           items=("eventId",), times=(*_STAMPS, "StartTimeUTC"), items_over_times=True),
    Family("agent session", "nice", "AgentSessionStart / AgentSessionEnd",
           ("SessionId", "sessionId"), ids=("AgentId", "agentId", "SessionId", "sessionId"),
           items=("eventId",), times=(*_STAMPS, "StartTimeUTC", "EndTimeUTC"), items_over_times=True),
)

_GENESYS_BY_PREFIX: dict[str, list[Family]] = {}
for _family in GENESYS_FAMILIES:
    _GENESYS_BY_PREFIX.setdefault(_family.match[0], []).append(_family)


def genesys_family(topic: str) -> Family | None:
    """The catalogued family of a Genesys ``topicName``, or None."""
    for prefix, families in _GENESYS_BY_PREFIX.items():
        if topic.startswith(prefix):
            for family in families:
                suffix = family.match[1]
                if suffix.startswith("*"):
                    if suffix[1:] in topic[len(prefix):]:
                        return family
                elif topic.endswith(suffix):
                    return family
    return None


def nice_family(payload: Mapping[str, Any]) -> Family | None:
    """The catalogued family of a NICE event by the names its payload carries, or None."""
    for family in NICE_FAMILIES:
        for name in family.match:
            if payload.get(name) not in (None, ""):
                return family
    return None
