"""Least-privilege policy documents for the stack that :mod:`dedup.aws.stack` builds.

Every statement names its exact actions (no wildcards) on one exact resource: the
consumer can only receive, delete, extend visibility and read attributes on its
queue; the producer can only put events on its bus; EventBridge can only send to
the queue on behalf of the one rule (``aws:SourceArn``), so no other rule, bus or
account can write to it. Compare the tutorial, which asks for ``*FullAccess``.
"""

from __future__ import annotations

from typing import Any

POLICY_VERSION = "2012-10-17"

CONSUMER_ACTIONS = (
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
)
"""What :class:`~dedup.aws.consumer.SQSConsumer` calls (the batch APIs authorise as these)."""

PRODUCER_ACTIONS = ("events:PutEvents",)

EVENTS_PRINCIPAL = "events.amazonaws.com"


def consumer_policy(queue_arn: str) -> dict[str, Any]:
    """Identity policy for the consumer's role: its queue only."""
    return _identity_policy("ConsumeDedupQueue", CONSUMER_ACTIONS, queue_arn)


def producer_policy(bus_arn: str) -> dict[str, Any]:
    """Identity policy for a test producer's role: PutEvents on that bus only."""
    return _identity_policy("PublishToDedupBus", PRODUCER_ACTIONS, bus_arn)


def queue_policy(queue_arn: str, rule_arn: str) -> dict[str, Any]:
    """Resource policy on a queue: EventBridge may send only on behalf of ``rule_arn``.

    ``ArnEquals`` on ``aws:SourceArn`` pins the exact rule ARN: another rule, on this
    bus or another, or in another account, is refused (the confused-deputy guard).
    """
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "AllowEventBridgeRuleToSend",
                "Effect": "Allow",
                "Principal": {"Service": EVENTS_PRINCIPAL},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
            }
        ],
    }


def _identity_policy(sid: str, actions: tuple[str, ...], resource_arn: str) -> dict[str, Any]:
    return {
        "Version": POLICY_VERSION,
        "Statement": [{"Sid": sid, "Effect": "Allow", "Action": list(actions), "Resource": resource_arn}],
    }
