"""Synthetic Genesys Cloud / NICE CXone event traces with duplicate ground truth.

:func:`logical_events` returns distinct EventBridge envelopes (no duplicates,
every ``dedup.keys.auto()`` key distinct), for producers and demos.
"""

from __future__ import annotations

import datetime as _dt
import random
import uuid
from typing import Any, Literal

Source = Literal["genesys", "nice", "mixed"]

#: Where traces start when no start time is given (2024-03-04T00:00:00Z, a Monday).
DEFAULT_START_S = 1_709_510_400.0
GENESYS_ORG_ID = "6f1c2b7e-3a52-4a8e-9d0b-2f6b1c4e8a10"
NICE_SOURCE = "com.nice.cxone.bridge"
_GENESYS_TOPICS = ("customer.start", "acd.start", "acd.end", "agent.start", "acw.end", "customer.end")
_NICE_TYPES = ("ContactStarted", "ContactRouted", "AgentConnected", "ContactEnded")


def _iso_ms(ms: int) -> str:
    return _dt.datetime.fromtimestamp(ms / 1000, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def logical_events(
    n: int, *, source: Source = "genesys", seed: int = 0, start_s: float | None = None
) -> list[dict[str, Any]]:
    """``n`` distinct EventBridge envelopes, ``detail`` an object, in time order.

    No two share an envelope ``id`` or an ``auto()`` key. ``start_s`` defaults
    to :data:`DEFAULT_START_S`, so a seed always yields the same events.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    t_ms = int((DEFAULT_START_S if start_s is None else start_s) * 1000)
    out = []
    for i in range(n):
        t_ms += rng.randint(1, 2000)
        kind = source if source != "mixed" else ("genesys" if i % 3 else "nice")
        uid = lambda: str(uuid.UUID(int=rng.getrandbits(128), version=4))  # noqa: E731
        if kind == "genesys":
            conv = uid()
            topic_tail = _GENESYS_TOPICS[i % len(_GENESYS_TOPICS)]
            topic = f"v2.detail.events.conversation.{conv}.{topic_tail}"
            detail = {
                "topicName": topic,
                "version": "2",
                "eventBody": {"eventTime": t_ms, "conversationId": conv, "participantId": uid(),
                              "sessionId": uid(), "mediaType": "VOICE"},
                "metadata": {"CorrelationId": uid()},
                "timestamp": _iso_ms(t_ms),
            }
            src = f"aws.partner/genesys.com/cloud/{GENESYS_ORG_ID}/dedup-demo"
            dtype = "v2.detail.events.conversation.{id}." + topic_tail  # the subscription pattern
        else:
            contact = 700_000_000 + i
            detail = {
                "eventType": _NICE_TYPES[i % len(_NICE_TYPES)],
                "payload": {"interactionId": uid(), "ContactID": contact, "MasterID": contact},
                "createdAt": _iso_ms(t_ms),
            }
            src, dtype = NICE_SOURCE, "NICE CXone Interaction Event"
        out.append({
            "version": "0",
            "id": uid(),
            "source": src,
            "detail-type": dtype,
            "time": _iso_ms(t_ms)[:19] + "Z",
            "region": "us-east-1",
            "account": "000000000000",
            "resources": [],
            "detail": detail,
        })
    return out
