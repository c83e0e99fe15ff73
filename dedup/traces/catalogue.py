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
    """Event types, in the order of the trace frame's ``event`` categories."""

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
    CONTACT_CREATED = 13
    CONTACT_STATE = 14
    AGENT_ASSIGNED = 15
    CONTACT_ENDED = 16


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
        Event.CONTACT_CREATED: "ContactCreated",
        Event.CONTACT_STATE: "ContactStateChanged",
        Event.AGENT_ASSIGNED: "AgentAssigned",
        Event.CONTACT_ENDED: "ContactEnded",
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
