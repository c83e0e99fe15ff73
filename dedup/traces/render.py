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
from dedup.traces.ids import Namespace, pick, uuids

#: Envelope ids: one per (logical event, publish); publish numbers stay below this.
PUBLISHES_PER_EVENT = 64
_CONVERSATION_EVENTS = frozenset(DETAIL_SUFFIX) | {Event.TRANSCRIPTION, Event.QUEUE_CONVERSATION,
                                                   Event.CONVERSATION_METRICS}
_USER_EVENTS = [Event.PRESENCE, Event.ROUTING_STATUS, Event.ACTIVITY, Event.CONVERSATION_SUMMARY]
_CONTACT_EVENTS = [Event.CONTACT_CREATED, Event.CONTACT_STATE, Event.AGENT_ASSIGNED, Event.CONTACT_ENDED,
                   Event.DIGITAL_MESSAGE]
_NICE_AGENT_EVENTS = [Event.AGENT_SESSION_START, Event.AGENT_SESSION_END, Event.AGENT_STATE]
_AGENT_EVENTS = frozenset({Event.USER_START, Event.USER_END, Event.ACW})
_QUEUE_EVENTS = [Event.ACD_START, Event.ACD_END, Event.QUEUE_CONVERSATION, *_AGENT_EVENTS]
_DAY_MS = 86_400_000
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
    if code >= FIRST_NICE:
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
            (Namespace.USER, np.isin(event, _USER_EVENTS)),
            (Namespace.QUEUE, event == Event.QUEUE_OBSERVATIONS),
            (Namespace.FLOW, event == Event.FLOW_NOTIFICATION),
            (Namespace.INTERACTION, np.isin(event, _CONTACT_EVENTS)),
        ):
            if mask.any():
                self.entity_id[mask] = uuids(seed, namespace, entity[mask])
        for namespace, mask, numbers in (
            (Namespace.UTTERANCE, event == Event.TRANSCRIPTION, item),
            (Namespace.AUDIT, event == Event.AUDIT, item),
            (Namespace.OPERATION, event == Event.FLOW_NOTIFICATION, item // 2),
            (Namespace.MESSAGE, event == Event.DIGITAL_MESSAGE, item),
            # A NICE agent's login session of the day (a session row's item is its UTC day).
            (Namespace.AGENT_SESSION, np.isin(event, _NICE_AGENT_EVENTS),
             entity * 100_000 + np.where(event == Event.AGENT_STATE,
                                         frame["event_time_ms"].to_numpy() // _DAY_MS, item)),
        ):
            if mask.any():
                self.item_id[mask] = uuids(seed, namespace, numbers[mask])
        has_participant = participant >= 0
        self.participant_id = np.empty(n, dtype=object)
        self.session_id = np.empty(n, dtype=object)
        if has_participant.any():
            ids = participant[has_participant]
            self.participant_id[has_participant] = uuids(seed, Namespace.PARTICIPANT, ids)
            self.session_id[has_participant] = uuids(seed, Namespace.SESSION, ids)
        # A queue snapshot's row is its ACD participant; the customer is the one before it.
        self.customer_id = np.empty(n, dtype=object)
        snapshot = event == Event.QUEUE_CONVERSATION
        if snapshot.any():
            self.customer_id[snapshot] = uuids(seed, Namespace.PARTICIPANT, participant[snapshot] - 1)
        self.customer_id = self.customer_id.tolist()
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
        # An activity row of a presence change draws what that presence row draws.
        drawn = np.where((event == Event.ACTIVITY) & (item >= ACTIVITY_PRESENCE_OFFSET),
                         item - ACTIVITY_PRESENCE_OFFSET, item)
        self.choice = pick(seed, Namespace.CORRELATION, entity * 7919 + drawn, 1 << 30).tolist()
        self.day_iso = iso_ms(frame["event_time_ms"].to_numpy() // _DAY_MS * _DAY_MS)
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
    if code == Event.QUEUE_CONVERSATION:
        return f"v2.routing.queues.{cols.queue_id[i]}.conversations"
    return EVENT_NAMES[code].replace("{id}", cols.entity_id[i])


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
    if code in _USER_TOPIC_BODIES:
        return _USER_TOPIC_BODIES[code](i, cols)
    if code == Event.QUEUE_OBSERVATIONS:
        return {"group": {"queueId": cols.entity_id[i], "mediaType": "voice"}, "data": [
            {"metric": "oWaiting", "stats": {"count": choice % 9}},
            {"metric": "oInteracting", "stats": {"count": (choice >> 4) % 25}},
            {"metric": "oOnQueueUsers", "qualifier": "IDLE", "stats": {"count": (choice >> 9) % 12}},
        ]}
    if code == Event.QUEUE_CONVERSATION:
        return _queue_conversation(i, cols)
    if code == Event.FLOW_NOTIFICATION:
        return _flow_notification(i, cols)
    if code == Event.CONVERSATION_METRICS:
        return {"conversationId": cols.entity_id[i], "participantId": cols.participant_id[i],
                "sessionId": cols.session_id[i], "metrics": [
                    {"name": "tHandle", "value": 60_000 + choice % 600_000, "emitDate": event_iso}]}
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


def _routing_status(i: int, cols: _Columns) -> dict:
    return {"routingStatus": {"status": ROUTING_STATUSES[cols.item[i]], "startTime": cols.event_iso[i]}}


def _activity(i: int, cols: _Columns) -> dict:
    """An agent's activity: the routing status or the presence changed now, the other at day start."""
    item, now, earlier = cols.item[i], cols.event_iso[i], cols.day_iso[i]
    presence = PRESENCES[cols.choice[i] % len(PRESENCES)] if item >= ACTIVITY_PRESENCE_OFFSET else "Available"
    routing = (ROUTING_STATUSES[item], now) if item < ACTIVITY_PRESENCE_OFFSET else ("IDLE", earlier)
    return {
        "id": cols.entity_id[i],
        "routingStatus": {"status": routing[0], "startTime": routing[1]},
        "presence": {"presenceDefinition": {"id": f"presence-{presence.lower()}", "systemPresence": presence},
                     "modifiedDate": now if item >= ACTIVITY_PRESENCE_OFFSET else earlier},
        "outOfOffice": {"active": False, "indefinite": False},
        "activeQueueIds": [],
        "dateActiveQueuesChanged": earlier,
    }


def _conversation_summary(i: int, cols: _Columns) -> dict:
    active, acw = SUMMARY_COUNTS[cols.item[i]]
    idle = {"contactCenter": {"active": 0, "acw": 0}, "enterprise": {"active": 0, "acw": 0}}
    body: dict[str, Any] = {"userId": cols.entity_id[i], "call": idle, "callback": idle, "email": idle,
                            "message": idle, "chat": idle}
    body["call" if cols.media[i] == "voice" else "chat"] = {
        "contactCenter": {"active": active, "acw": acw}, "enterprise": {"active": 0, "acw": 0}}
    return body


_USER_TOPIC_BODIES = {Event.ROUTING_STATUS: _routing_status, Event.ACTIVITY: _activity,
                      Event.CONVERSATION_SUMMARY: _conversation_summary}


def _queue_conversation(i: int, cols: _Columns) -> dict:
    """The queue's snapshot of a conversation: queued (ACD connected), or the ACD leg disconnected."""
    kind = "calls" if cols.media[i] == "voice" else "chats"
    leg, now = cols.session_id[i], cols.event_iso[i]
    acd = ({"id": leg, "state": "disconnected", "disconnectedTime": now} if cols.item[i] == 1
           else {"id": leg, "state": "connected", "connectedTime": now})
    return {"id": cols.entity_id[i], "maxParticipants": 2, "recordingState": "NONE", "participants": [
        {"id": cols.customer_id[i], "purpose": "customer", kind: [{"state": "connected"}]},
        {"id": cols.participant_id[i], "purpose": "acd", "queueId": cols.queue_id[i], kind: [acd]},
    ]}


def _flow_notification(i: int, cols: _Columns) -> dict:
    """An Architect publish of a flow: STARTED, then SUCCESS with the new version published."""
    done = cols.item[i] % 2 == 1
    version = 10 + cols.item[i] // 2
    return {
        "id": cols.entity_id[i], "name": f"Inbound flow {cols.entity[i]}", "description": "",
        "deleted": False,
        "checkedInVersion": {"id": f"{version}.0"}, "savedVersion": {"id": f"{version}.0"},
        "publishedVersion": {"id": f"{version if done else version - 1}.0"},
        "currentOperation": {"id": cols.item_id[i], "complete": done, "actionName": "PUBLISH",
                             "actionStatus": "SUCCESS" if done else "STARTED"},
    }


def _nice_agent_event(code: int, i: int, cols: _Columns) -> dict:
    """A CXone agent event (``Type``, ``AgentId``, ``SessionId``, ...) as the bridge's payload."""
    event: dict[str, Any] = {"Type": EVENT_NAMES[code], "AgentId": NICE_AGENT_ID_BASE + cols.entity[i],
                             "SessionId": cols.item_id[i]}
    if code == Event.AGENT_STATE:
        state = NICE_AGENT_STATES[cols.item[i]]
        event.update(CurrentState=state, CurrentOutReason="", StartTimeUTC=cols.event_iso[i])
    else:
        event["StartTimeUTC" if code == Event.AGENT_SESSION_START else "EndTimeUTC"] = cols.event_iso[i]
    return event


def _nice_detail(code: int, i: int, cols: _Columns) -> dict:
    if code in (Event.AGENT_SESSION_START, Event.AGENT_SESSION_END, Event.AGENT_STATE):
        return {"eventType": EVENT_NAMES[code], "payload": _nice_agent_event(code, i, cols),
                "createdAt": cols.event_iso[i], "businessUnitId": 4600123}
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
    elif code == Event.DIGITAL_MESSAGE:
        direction = "inbound" if cols.choice[i] % 2 == 0 else "outbound"
        payload.update(messageId=cols.item_id[i], direction=direction)
    return {"eventType": EVENT_NAMES[code], "payload": payload, "createdAt": cols.event_iso[i],
            "businessUnitId": 4600123}
