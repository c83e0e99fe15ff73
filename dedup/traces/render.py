"""Rendering trace rows as EventBridge envelopes (dicts, ``detail`` an object).

Rendering is lazy: the trace frame holds integers, and envelopes are built
here a chunk of rows at a time, ids and timestamps formatted a column at a
time. A row's ``detail`` depends only on its logical event, so every copy of
an event renders the same ``detail``; the envelope ``id`` and ``time`` depend
on the publish (``publish_no``), so a re-publish gets new ones and an SQS
redelivery keeps them.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from dedup.traces.catalogue import (
    ACCOUNT,
    AUDIT_ACTIONS,
    AUDIT_ENTITY_TYPES,
    AUDIT_SERVICES,
    DETAIL_SUFFIX,
    EVENT_NAMES,
    FLOWS,
    GENESYS_ORG_ID,
    GENESYS_SOURCE,
    NICE_CONTACT_ID_BASE,
    NICE_SOURCE,
    NICE_STATES,
    PRESENCES,
    QUEUES,
    REGION,
    UTTERANCES,
    WRAPUP_CODES,
    Event,
)
from dedup.traces.ids import Namespace, pick, uuids

#: Users that agents and audit actors are drawn from.
AGENT_POOL = 150
#: Envelope ids: one per (logical event, publish); publish numbers stay below this.
PUBLISHES_PER_EVENT = 64
_CONVERSATION_EVENTS = frozenset(DETAIL_SUFFIX) | {Event.TRANSCRIPTION}
_AGENT_EVENTS = frozenset({Event.USER_START, Event.USER_END, Event.ACW})
_QUEUE_EVENTS = [Event.ACD_START, Event.ACD_END, *_AGENT_EVENTS]
_FLOW_EVENTS = [Event.FLOW_START, Event.FLOW_END]
_MEDIA_TYPE = {"voice": "VOICE", "chat": "CHAT"}
_NICE_MEDIA = {"voice": "PhoneCall", "chat": "Chat"}


def iso_ms(epoch_ms: np.ndarray) -> list[str]:
    """ISO-8601 UTC text with milliseconds (``2024-03-04T09:15:02.123Z``), vectorised."""
    text = np.datetime_as_string(np.asarray(epoch_ms, dtype="datetime64[ms]"), unit="ms")
    return np.char.add(text, "Z").tolist()


def iso_s(epoch_ms: np.ndarray) -> list[str]:
    """ISO-8601 UTC text to the second, as EventBridge writes the envelope ``time``."""
    text = np.datetime_as_string(np.asarray(epoch_ms, dtype="datetime64[ms]"), unit="s")
    return np.char.add(text, "Z").tolist()


def render(frame: pd.DataFrame, seed: int) -> list[dict[str, Any]]:
    """The envelopes of ``frame``'s rows (a generated trace frame or a slice of one), in order."""
    if len(frame) == 0:
        return []
    cols = _Columns(seed, frame)
    with _collector_paused():
        return [_envelope(cols, i) for i in range(len(frame))]


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small acyclic dicts.

    Otherwise its generation scans keep revisiting the growing batch: rendering
    runs about twice as fast without them. Reference counting still frees everything.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _envelope(cols: _Columns, i: int) -> dict[str, Any]:
    code = cols.event[i]
    if code >= Event.CONTACT_CREATED:
        source, detail = NICE_SOURCE, _nice_detail(code, i, cols)
    else:
        source = GENESYS_SOURCE
        detail = {
            "topicName": _topic(code, i, cols),
            "version": "2",
            "eventBody": _genesys_body(code, i, cols),
            "metadata": {"CorrelationId": cols.correlation[i]},
            "timestamp": cols.event_iso[i],
        }
    return {
        "version": "0",
        "id": cols.envelope_id[i],
        "detail-type": EVENT_NAMES[code],
        "source": source,
        "account": ACCOUNT,
        "time": cols.envelope_time[i],
        "region": REGION,
        "resources": [],
        "detail": detail,
    }


class _Columns:
    """A chunk of rows as Python lists: ids and timestamps formatted a column at a time, where used."""

    def __init__(self, seed: int, frame: pd.DataFrame) -> None:
        event = frame["event"].cat.codes.to_numpy()
        entity = frame["entity"].to_numpy()
        participant = frame["participant"].to_numpy()
        item = frame["item"].to_numpy()
        logical = frame["logical_id"].to_numpy().astype(np.int64)
        self.event = event.tolist()
        self.entity = entity.tolist()
        self.item = item.tolist()
        self.media = frame["media"].astype(str).tolist()
        self.envelope_id = uuids(seed, Namespace.ENVELOPE,
                                 logical * PUBLISHES_PER_EVENT + frame["publish_no"].to_numpy())
        self.correlation = uuids(seed, Namespace.CORRELATION, logical)
        self.envelope_time = iso_s(frame["envelope_time_ms"].to_numpy())
        self.event_ms = frame["event_time_ms"].to_numpy().tolist()
        self.event_iso = iso_ms(frame["event_time_ms"].to_numpy())
        n = len(event)
        self.entity_id = np.empty(n, dtype=object)
        self.item_id = np.empty(n, dtype=object)
        conv = np.isin(event, list(_CONVERSATION_EVENTS))
        for namespace, mask in (
            (Namespace.CONVERSATION, conv),
            (Namespace.ENTITY, event == Event.AUDIT),
            (Namespace.USER, event == Event.PRESENCE),
            (Namespace.INTERACTION, event >= Event.CONTACT_CREATED),
        ):
            if mask.any():
                self.entity_id[mask] = uuids(seed, namespace, entity[mask])
        for namespace, mask in ((Namespace.UTTERANCE, event == Event.TRANSCRIPTION),
                                (Namespace.AUDIT, event == Event.AUDIT)):
            if mask.any():
                self.item_id[mask] = uuids(seed, namespace, item[mask])
        has_participant = participant >= 0
        self.participant_id = np.empty(n, dtype=object)
        self.session_id = np.empty(n, dtype=object)
        if has_participant.any():
            ids = participant[has_participant]
            self.participant_id[has_participant] = uuids(seed, Namespace.PARTICIPANT, ids)
            self.session_id[has_participant] = uuids(seed, Namespace.SESSION, ids)
        # The agent of a conversation, or the user who made an audited change.
        self.user_id = np.empty(n, dtype=object)
        agent_rows = np.isin(event, [*_AGENT_EVENTS, Event.AUDIT, Event.AGENT_ASSIGNED])
        if agent_rows.any():
            # An audit's actor varies per change; a conversation's agent is fixed.
            by = entity[agent_rows] + (event[agent_rows] == Event.AUDIT) * item[agent_rows]
            agent = pick(seed, Namespace.USER, by, AGENT_POOL)
            self.user_id[agent_rows] = uuids(seed, Namespace.USER, agent)
        self.queue_id = self._for(seed, Namespace.QUEUE, np.isin(event, _QUEUE_EVENTS), entity, QUEUES)
        self.flow_id = self._for(seed, Namespace.FLOW, np.isin(event, _FLOW_EVENTS), entity, FLOWS)
        self.choice = pick(seed, Namespace.CORRELATION, entity * 7919 + item, 1 << 30).tolist()
        self.skill = (1200 + pick(seed, Namespace.QUEUE, entity, 40)).tolist()
        self.entity_id = self.entity_id.tolist()
        self.item_id = self.item_id.tolist()
        self.participant_id = self.participant_id.tolist()
        self.session_id = self.session_id.tolist()
        self.user_id = self.user_id.tolist()

    @staticmethod
    def _for(seed: int, namespace: Namespace, rows: np.ndarray, entity: np.ndarray, pool: int) -> list:
        """Ids drawn per entity from a pool of ``pool``, on the rows that show one."""
        out = np.empty(len(rows), dtype=object)
        if rows.any():
            out[rows] = uuids(seed, namespace, pick(seed, namespace, entity[rows], pool))
        return out.tolist()


def _topic(code: int, i: int, cols: _Columns) -> str:
    if code in DETAIL_SUFFIX:
        return f"v2.detail.events.conversation.{cols.entity_id[i]}.{DETAIL_SUFFIX[code]}"
    if code == Event.TRANSCRIPTION:
        return f"v2.conversations.{cols.entity_id[i]}.transcription"
    if code == Event.AUDIT:
        entity_type = AUDIT_ENTITY_TYPES[cols.entity[i] % len(AUDIT_ENTITY_TYPES)]
        return f"v2.audits.entitytype.{entity_type}.entityid.{cols.entity_id[i]}"
    return f"v2.users.{cols.entity_id[i]}.presence"


def _genesys_body(code: int, i: int, cols: _Columns) -> dict:
    choice, media, event_iso = cols.choice[i], cols.media[i], cols.event_iso[i]
    if code == Event.TRANSCRIPTION:
        text = UTTERANCES[cols.item[i] % len(UTTERANCES)]
        return {
            "organizationId": GENESYS_ORG_ID,
            "conversationId": cols.entity_id[i],
            "communicationId": cols.session_id[i],
            "transcripts": [{
                "utteranceId": cols.item_id[i],
                "isFinal": True,
                "channel": "EXTERNAL" if choice % 2 else "INTERNAL",
                "alternatives": [{
                    "confidence": round(0.7 + (choice % 300) / 1000, 3),
                    "durationMs": 800 + choice % 4000,
                    "transcript": text,
                }],
                "dialect": "en-US",
            }],
        }
    if code == Event.AUDIT:
        entity_type = AUDIT_ENTITY_TYPES[cols.entity[i] % len(AUDIT_ENTITY_TYPES)]
        return {
            "id": cols.item_id[i],
            "userHomeOrgId": GENESYS_ORG_ID,
            "user": {"id": cols.user_id[i]},
            "client": {"type": "PublicAPI" if choice % 3 else "Browser"},
            "serviceName": AUDIT_SERVICES[entity_type],
            "level": "USER",
            "eventTime": event_iso,
            "action": AUDIT_ACTIONS[choice % len(AUDIT_ACTIONS)],
            "entity": {"id": cols.entity_id[i], "name": f"{entity_type} {cols.entity[i]}"},
            "entityType": entity_type,
            "status": "SUCCESS",
            "propertyChanges": [{"property": "name", "oldValues": [f"v{choice % 9}"],
                                 "newValues": [f"v{choice % 9 + 1}"]}],
        }
    if code == Event.PRESENCE:
        presence = PRESENCES[choice % len(PRESENCES)]
        return {
            "source": "PURECLOUD",
            "presenceDefinition": {"id": f"presence-{presence.lower()}", "systemPresence": presence},
            "primary": True,
            "message": "",
            "modifiedDate": event_iso,
        }
    body: dict[str, Any] = {
        "eventTime": cols.event_ms[i],
        "conversationId": cols.entity_id[i],
        "participantId": cols.participant_id[i],
        "sessionId": cols.session_id[i],
        "mediaType": _MEDIA_TYPE[media],
        "divisionId": "ee1f3d8c-0000-4000-8000-000000000001",
    }
    if code == Event.CUSTOMER_START:
        body.update(direction="INBOUND", provider="Edge" if media == "voice" else "PureCloud Webchat v2",
                    ani=f"tel:+1555{cols.entity[i] % 10_000_000:07d}", dnis="tel:+18005550100")
    elif code in (Event.FLOW_START, Event.FLOW_END):
        body.update(flowId=cols.flow_id[i], flowVersion="12.0",
                    flowType="INBOUNDCALL" if media == "voice" else "INBOUNDCHAT")
    elif code in (Event.ACD_START, Event.ACD_END):
        body["queueId"] = cols.queue_id[i]
        if code == Event.ACD_END:
            body["acdOutcome"] = "ABANDON" if cols.item[i] == 1 else "SUCCESS"
    elif code in _AGENT_EVENTS:
        body.update(userId=cols.user_id[i], queueId=cols.queue_id[i])
        if code == Event.USER_END:
            body["disconnectType"] = "CLIENT" if choice % 2 else "PEER"
        elif code == Event.ACW:
            body["wrapupCode"] = WRAPUP_CODES[choice % len(WRAPUP_CODES)]
    elif code == Event.CUSTOMER_END:
        body["disconnectType"] = "PEER" if choice % 3 else "CLIENT"
    elif code == Event.ATTRIBUTES:
        body["attributes"] = {"language": "en-US", "intent": ("billing", "orders", "support")[choice % 3],
                              "customerTier": ("gold", "silver", "standard")[cols.item[i] % 3],
                              "step": str(cols.item[i] % 7)}
    return body


def _nice_detail(code: int, i: int, cols: _Columns) -> dict:
    media = cols.media[i]
    contact_id = NICE_CONTACT_ID_BASE + int(cols.entity[i])
    payload: dict[str, Any] = {"ContactID": contact_id, "MasterID": contact_id,
                               "mediaType": _NICE_MEDIA[media], "skillId": cols.skill[i]}
    if media == "chat":
        payload = {"interactionId": cols.entity_id[i], **payload, "channel": "Chat"}
    if code == Event.CONTACT_STATE:
        payload["state"] = NICE_STATES[cols.item[i]]
    elif code == Event.AGENT_ASSIGNED:
        payload["agentId"] = cols.user_id[i]
    return {"eventType": EVENT_NAMES[code], "payload": payload, "createdAt": cols.event_iso[i],
            "businessUnitId": 4600123}
