"""The least-privilege documents. moto stores policies but never enforces them, so the
documents themselves are checked, with a small evaluator of the IAM features they use."""

from __future__ import annotations

import fnmatch
import json

import pytest

from dedup.aws.iam import CONSUMER_ACTIONS, TABLE_ACTIONS, consumer_policy, producer_policy, queue_policy
from dedup.stores import ClaimStatus

pytestmark = pytest.mark.aws

QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:dedup-events"
BUS_ARN = "arn:aws:events:us-east-1:123456789012:event-bus/dedup-bus"
RULE_ARN = "arn:aws:events:us-east-1:123456789012:rule/dedup-bus/dedup-contact-centre"


def _listed(value) -> list:
    return value if isinstance(value, list) else [value]


def arn_matches(pattern: str, arn: str | None) -> bool:
    """IAM's ArnEquals / ArnLike: each of the six ``:`` components matched alone, with wildcards."""
    if arn is None:
        return False
    want, have = pattern.split(":", 5), arn.split(":", 5)
    if len(want) != 6 or len(have) != 6:
        return False
    return all(fnmatch.fnmatchcase(h, w) for w, h in zip(want, have, strict=True))


def allows(policy: dict, action: str, resource: str, *, service: str | None = None,
           source_arn: str | None = None) -> bool:
    """Whether an Allow statement grants ``action`` on ``resource`` (no Deny statements are used).

    Supports what the documents use: Action/Resource (with IAM wildcards), a service
    Principal, and the ArnEquals / ArnLike conditions on aws:SourceArn.
    """
    for st in policy["Statement"]:
        if st["Effect"] != "Allow":
            continue
        if not any(fnmatch.fnmatchcase(action, a) for a in _listed(st["Action"])):
            continue
        if not any(fnmatch.fnmatchcase(resource, r) for r in _listed(st["Resource"])):
            continue
        if "Principal" in st and service not in _listed(st["Principal"].get("Service", [])):
            continue
        conditions = st.get("Condition", {})
        patterns = [p for op in ("ArnEquals", "ArnLike") if op in conditions
                    for p in _listed(conditions[op]["aws:SourceArn"])]
        if conditions and not any(arn_matches(p, source_arn) for p in patterns):
            continue
        return True
    return False


def _actions(policy: dict) -> list[str]:
    return [a for st in policy["Statement"] for a in _listed(st["Action"])]


def test_consumer_may_receive_delete_extend_and_read_attributes_on_its_queue_only():
    policy = consumer_policy(QUEUE_ARN)
    assert sorted(_actions(policy)) == sorted(CONSUMER_ACTIONS)
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                   "sqs:GetQueueAttributes"):
        assert allows(policy, action, QUEUE_ARN)
        assert not allows(policy, action, QUEUE_ARN.replace("dedup-events", "other-queue"))
    for action in ("sqs:SendMessage", "sqs:PurgeQueue", "sqs:DeleteQueue", "sqs:SetQueueAttributes"):
        assert not allows(policy, action, QUEUE_ARN)


def test_with_a_dynamodb_store_the_consumer_may_use_its_table_only():
    table_arn = "arn:aws:dynamodb:us-east-1:123456789012:table/dedup-window"
    policy = consumer_policy(QUEUE_ARN, table_arn)
    assert sorted(_actions(policy)) == sorted(CONSUMER_ACTIONS + TABLE_ACTIONS)
    for action in TABLE_ACTIONS:
        assert allows(policy, action, table_arn)
        assert not allows(policy, action, table_arn.replace("dedup-window", "another-table"))
        assert not allows(policy, action, QUEUE_ARN)
    for action in ("dynamodb:Scan", "dynamodb:DeleteTable", "dynamodb:CreateTable", "dynamodb:GetItem"):
        assert not allows(policy, action, table_arn)


def test_the_dynamodb_store_calls_exactly_the_table_actions_the_policy_grants(
        dynamodb_store_factory, dynamodb_client, dynamodb_table, clock):
    called: set[str] = set()

    def record(model, **_):
        called.add(f"dynamodb:{model.name}")

    dynamodb_client.meta.events.register("before-call.dynamodb", record)
    try:
        store = dynamodb_store_factory(clock)
        store.ping()
        done, dropped = store.claim(["a", "b"], lease_s=10)
        assert store.complete([done], window_s=30) == [True]
        assert store.release([dropped]) == [True]
        (again,) = store.claim(["a"], lease_s=10, slide_s=30)  # a sliding duplicate sighting
        assert again.status is ClaimStatus.DUPLICATE
    finally:
        dynamodb_client.meta.events.unregister("before-call.dynamodb", record)
    table_arn = dynamodb_client.describe_table(TableName=dynamodb_table)["Table"]["TableArn"]
    assert called == set(TABLE_ACTIONS)  # every call is granted, and every grant is used
    policy = consumer_policy(QUEUE_ARN, table_arn)
    assert all(allows(policy, action, table_arn) for action in called)


def test_producer_may_put_events_on_its_bus_only():
    policy = producer_policy(BUS_ARN)
    assert _actions(policy) == ["events:PutEvents"]
    assert allows(policy, "events:PutEvents", BUS_ARN)
    assert not allows(policy, "events:PutEvents", BUS_ARN.replace("dedup-bus", "default"))
    assert not allows(policy, "events:PutRule", BUS_ARN)


def test_queue_policy_lets_eventbridge_send_only_for_the_exact_rule():
    policy = queue_policy(QUEUE_ARN, RULE_ARN)
    assert allows(policy, "sqs:SendMessage", QUEUE_ARN, service="events.amazonaws.com", source_arn=RULE_ARN)
    refused = [
        RULE_ARN.replace("dedup-contact-centre", "another-rule"),  # another rule on the same bus
        RULE_ARN.replace("123456789012", "999999999999"),  # the same rule name in another account
        BUS_ARN,  # the tutorial's condition: the bus, not the rule
        None,  # no source ARN at all
    ]
    for source in refused:
        assert not allows(policy, "sqs:SendMessage", QUEUE_ARN, service="events.amazonaws.com",
                          source_arn=source), source
    assert not allows(policy, "sqs:SendMessage", QUEUE_ARN, service="sns.amazonaws.com", source_arn=RULE_ARN)
    assert not allows(policy, "sqs:ReceiveMessage", QUEUE_ARN, service="events.amazonaws.com",
                      source_arn=RULE_ARN)


def test_the_tutorials_bus_condition_never_matches_the_rule_that_actually_sends():
    """A control on the evaluator: EventBridge's aws:SourceArn is the rule ARN, so the tutorial's
    ``arn:aws:events:*:*:event-bus/NAME`` refuses every delivery (its AccessDenied), while a
    wildcard pattern over rules would be accepted."""
    tutorial = queue_policy(QUEUE_ARN, "arn:aws:events:*:*:event-bus/dedup-bus")
    assert not allows(tutorial, "sqs:SendMessage", QUEUE_ARN, service="events.amazonaws.com",
                      source_arn=RULE_ARN)
    loose = queue_policy(QUEUE_ARN, "arn:aws:events:*:*:rule/*")
    assert allows(loose, "sqs:SendMessage", QUEUE_ARN, service="events.amazonaws.com", source_arn=RULE_ARN)


@pytest.mark.parametrize("document", [consumer_policy(QUEUE_ARN), producer_policy(BUS_ARN),
                                      queue_policy(QUEUE_ARN, RULE_ARN),
                                      consumer_policy(QUEUE_ARN, QUEUE_ARN.replace(":sqs:", ":dynamodb:"))])
def test_no_document_uses_wildcards_or_managed_full_access(document):
    text = json.dumps(document)
    assert "*" not in text
    assert "FullAccess" not in text
    assert document["Version"] == "2012-10-17"
    for st in document["Statement"]:
        assert st["Effect"] == "Allow" and ":" in st["Resource"]


def test_provisioned_queues_carry_exactly_the_documented_policies(stack):
    h = stack.handles
    for url, name in ((h.queue_url, "queue"), (h.dlq_url, "dlq")):
        attached = stack.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"]
        assert json.loads(attached["Policy"]) == h.policies()[name]
    assert h.policies()["consumer"] == consumer_policy(h.queue_arn)
    assert h.policies()["producer"] == producer_policy(h.bus_arn)
    assert allows(h.policies()["queue"], "sqs:SendMessage", h.queue_arn, service="events.amazonaws.com",
                  source_arn=h.rule_arn)
