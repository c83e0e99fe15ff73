"""Least-privilege policy documents for the stack that :mod:`dedup.aws.stack` builds.

Every statement names its exact actions (no wildcards) on one exact resource: the
consumer can only receive, delete, extend visibility and read attributes on its
queue, and (with a DynamoDB store) read the table's description and write its
items; the producer can only put events on its bus; EventBridge can only send to
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

TABLE_ACTIONS = (
    "dynamodb:DescribeTable",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
)
"""What :class:`~dedup.stores.dynamodb.DynamoDBStore` calls: ping, claim / complete, slide, release."""

PRODUCER_ACTIONS = ("events:PutEvents",)

LAMBDA_LOG_ACTIONS = ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents")
"""What a Lambda consumer needs beyond :data:`CONSUMER_ACTIONS`: its own log group."""

EVENTS_PRINCIPAL = "events.amazonaws.com"


def consumer_policy(queue_arn: Any, table_arn: Any = None) -> dict[str, Any]:
    """Identity policy for the consumer's role: its queue, and its DynamoDB store's table if any.

    ARNs may be template references (:mod:`dedup.aws.resources`): the document is the same.
    """
    policy = _identity_policy("ConsumeDedupQueue", CONSUMER_ACTIONS, queue_arn)
    if table_arn is not None:
        policy["Statement"].append(_statement("UseDedupTable", TABLE_ACTIONS, table_arn))
    return policy


def producer_policy(bus_arn: Any) -> dict[str, Any]:
    """Identity policy for a test producer's role: PutEvents on that bus only."""
    return _identity_policy("PublishToDedupBus", PRODUCER_ACTIONS, bus_arn)


def queue_policy(queue_arn: Any, rule_arn: Any) -> dict[str, Any]:
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


def _identity_policy(sid: str, actions: tuple[str, ...], resource_arn: Any) -> dict[str, Any]:
    return {"Version": POLICY_VERSION, "Statement": [_statement(sid, actions, resource_arn)]}


def _statement(sid: str, actions: tuple[str, ...], resource_arn: Any) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": list(actions), "Resource": resource_arn}
