"""The event types a synthetic trace contains, and the fixed vocabularies they draw on.

An event type's name is the envelope ``detail-type``: for Genesys the topic
pattern with ``{id}`` placeholders (``detail.topicName`` carries the ids), for
NICE the bridge's ``eventType``. The trace frame stores the type as a category
of these names.
"""

from __future__ import annotations

import enum

from dedup.keys import NICE_BRIDGE_SOURCE


class Event(enum.IntEnum):
    """Event types, in the order of the trace frame's ``event`` categories (Genesys, then NICE)."""

    CUSTOMER_START = 0
    FLOW_START = 1
    FLOW_END = 2
    ACD_START = 3
    ACD_END = 4
    USER_START = 5
    ATTRIBUTES = 6
    TRANSCRIPTION = 7
    USER_END = 8
    CUSTOMER_END = 9
    ACW = 10
    AUDIT = 11
    PRESENCE = 12
    ROUTING_STATUS = 13
    ACTIVITY = 14
    CONVERSATION_SUMMARY = 15
    QUEUE_OBSERVATIONS = 16
    QUEUE_CONVERSATION = 17
    FLOW_NOTIFICATION = 18
    CONVERSATION_METRICS = 19
    CONTACT_CREATED = 20
    CONTACT_STATE = 21
    AGENT_ASSIGNED = 22
    CONTACT_ENDED = 23
    AGENT_SESSION_START = 24
    AGENT_SESSION_END = 25
    AGENT_STATE = 26
    DIGITAL_MESSAGE = 27


#: The first NICE event type: codes from here on are NICE CXone, below it Genesys Cloud.
FIRST_NICE = Event.CONTACT_CREATED

_CONVERSATION = "v2.detail.events.conversation.{id}."
#: Conversation detail topic suffixes (``...conversation.{id}.<suffix>``).
DETAIL_SUFFIX = {
    Event.CUSTOMER_START: "customer.start",
    Event.FLOW_START: "flow.start",
    Event.FLOW_END: "flow.end",
    Event.ACD_START: "acd.start",
    Event.ACD_END: "acd.end",
    Event.USER_START: "user.start",
    Event.ATTRIBUTES: "attributes",
    Event.USER_END: "user.end",
    Event.CUSTOMER_END: "customer.end",
    Event.ACW: "acw",
}
EVENT_NAMES: tuple[str, ...] = tuple(
    _CONVERSATION + DETAIL_SUFFIX[e] if e in DETAIL_SUFFIX else {
        Event.TRANSCRIPTION: "v2.conversations.{id}.transcription",
        Event.AUDIT: "v2.audits.entitytype.{id}.entityid.{id}",
        Event.PRESENCE: "v2.users.{id}.presence",
        Event.ROUTING_STATUS: "v2.users.{id}.routingStatus",
        Event.ACTIVITY: "v2.users.{id}.activity",
        Event.CONVERSATION_SUMMARY: "v2.users.{id}.conversationsummary",
        Event.QUEUE_OBSERVATIONS: "v2.analytics.queues.{id}.observations",
        Event.QUEUE_CONVERSATION: "v2.routing.queues.{id}.conversations",
        Event.FLOW_NOTIFICATION: "v2.flows.{id}",
        Event.CONVERSATION_METRICS: "v2.analytics.conversation.{id}.metrics",
        Event.CONTACT_CREATED: "ContactCreated",
        Event.CONTACT_STATE: "ContactStateChanged",
        Event.AGENT_ASSIGNED: "AgentAssigned",
        Event.CONTACT_ENDED: "ContactEnded",
        Event.AGENT_SESSION_START: "AgentSessionStart",
        Event.AGENT_SESSION_END: "AgentSessionEnd",
        Event.AGENT_STATE: "AgentState",
        Event.DIGITAL_MESSAGE: "DigitalMessage",
    }[e]
    for e in Event
)

PLATFORMS: tuple[str, ...] = ("genesys", "nice")
MEDIA: tuple[str, ...] = ("none", "voice", "chat")
KINDS: tuple[str, ...] = ("original", "delivery", "publish", "late")

GENESYS_ORG_ID = "6f1c2b7e-3a52-4a8e-9d0b-2f6b1c4e8a10"
GENESYS_INTEGRATION = "contact-centre-events"
GENESYS_SOURCE = f"aws.partner/genesys.com/cloud/{GENESYS_ORG_ID}/{GENESYS_INTEGRATION}"
NICE_SOURCE = NICE_BRIDGE_SOURCE
ACCOUNT = "123456789012"
REGION = "us-east-1"

#: NICE contact states a ``ContactStateChanged`` event reports (index = the row's ``item``).
NICE_STATES = ("PreQueue", "InQueue", "Active", "Hold", "PostQueue", "Abandoned")
NICE_CONTACT_ID_BASE = 600_000_000
AUDIT_ENTITY_TYPES = ("Queue", "User", "Flow", "WrapupCode", "Skill", "Role")
AUDIT_ACTIONS = ("Update", "Create", "Update", "Delete", "Update")
AUDIT_SERVICES = {"Queue": "Routing", "User": "Directory", "Flow": "Architect",
                  "WrapupCode": "Routing", "Skill": "Routing", "Role": "Authorization"}
AUDIT_ENTITIES = 400
PRESENCES = ("Available", "Busy", "Away", "Break", "Meal", "Meeting", "Training", "Available")
#: Genesys routing statuses a ``routingStatus`` / ``activity`` row reports (index = the row's ``item``).
ROUTING_STATUSES = ("IDLE", "INTERACTING", "NOT_RESPONDING", "OFF_QUEUE", "COMMUNICATING")
#: An ``activity`` row's ``item`` at or above this is a presence change (item - offset = its number).
ACTIVITY_PRESENCE_OFFSET = 1 << 20
#: An agent's (active, after-call work) conversation counts a ``conversationsummary`` row reports.
SUMMARY_COUNTS = ((1, 0), (0, 1), (0, 0))
#: Users that agents and audit actors are drawn from.
AGENT_POOL = 150
#: CXone agent ids are numbers: this plus the agent's index.
NICE_AGENT_ID_BASE = 4_100_000
#: NICE agent states an ``AgentState`` row reports (index = the row's ``item``).
NICE_AGENT_STATES = ("Available", "InboundContact", "Unavailable")
QUEUES = 12
FLOWS = 6
WRAPUP_CODES = ("Resolved", "Follow-up", "Escalated", "Sale", "No answer")
UTTERANCES = (
    "Hi, thanks for calling, how can I help?",
    "I'd like to check the status of my order.",
    "Sure, can I have your order number please?",
    "It's four five one two.",
    "Thanks, one moment while I look that up.",
    "Your order shipped this morning.",
    "Great, thank you so much.",
    "Is there anything else I can help with?",
)
