"""Provisioning on moto's server: what it creates, idempotence, convergence, routing, teardown."""

from __future__ import annotations

import json

import pytest
from samples import load_event

from dedup.aws.producer import put_events, to_entry
from dedup.aws.stack import StackConfig, find_stack, provision, teardown
from dedup.errors import ConfigurationError

pytestmark = pytest.mark.aws


def _state(stack) -> dict:
    """Everything provisioning controls, as the services report it."""
    h, sqs, events = stack.handles, stack.sqs, stack.events
    return {
        "queue": sqs.get_queue_attributes(QueueUrl=h.queue_url, AttributeNames=["All"])["Attributes"],
        "dlq": sqs.get_queue_attributes(QueueUrl=h.dlq_url, AttributeNames=["All"])["Attributes"],
        "rule": {k: v for k, v in events.describe_rule(Name=h.rule_name, EventBusName=h.bus_name).items()
                 if k != "ResponseMetadata"},
        "targets": events.list_targets_by_rule(Rule=h.rule_name, EventBusName=h.bus_name)["Targets"],
        "buses": sorted(b["Name"] for b in events.list_event_buses()["EventBuses"]),
        "queues": sorted(sqs.list_queues()["QueueUrls"]),
    }


def test_provision_creates_queue_with_redrive_to_the_dlq(stack):
    attrs = stack.sqs.get_queue_attributes(QueueUrl=stack.handles.queue_url,
                                           AttributeNames=["All"])["Attributes"]
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == stack.handles.dlq_arn
    assert int(redrive["maxReceiveCount"]) == stack.config.max_receive_count
    assert attrs["VisibilityTimeout"] == str(stack.config.visibility_timeout_s)


def test_provision_targets_the_queue_with_the_dlq_for_undeliverable_events(stack):
    h = stack.handles
    (target,) = stack.events.list_targets_by_rule(Rule=h.rule_name, EventBusName=h.bus_name)["Targets"]
    assert target["Arn"] == h.queue_arn
    assert target["DeadLetterConfig"] == {"Arn": h.dlq_arn}


def test_rule_pattern_matches_genesys_by_prefix_and_the_nice_bridge_source(stack):
    h = stack.handles
    rule = stack.events.describe_rule(Name=h.rule_name, EventBusName=h.bus_name)
    assert rule["State"] == "ENABLED"
    assert json.loads(rule["EventPattern"]) == {
        "source": [{"prefix": "aws.partner/genesys.com/"}, "com.nice.cxone.bridge"]}
    assert rule["Arn"] == h.rule_arn and h.rule_arn.endswith(f":rule/{h.bus_name}/{h.rule_name}")


def test_rule_delivers_genesys_and_nice_events_and_nothing_else(stack):
    genesys = load_event("envelope_genesys_customer_start.json")
    nice = load_event("envelope_nice_contact_active.json")
    other = {**load_event("envelope_genesys_customer_end.json"), "source": "com.example.crm"}
    partner_lookalike = {**genesys, "source": "genesys.com/not-a-partner-source"}
    report = put_events(stack.events, [to_entry(e, stack.handles.bus_name)
                                       for e in (genesys, nice, other, partner_lookalike)])
    assert report.sent == 4
    delivered = [json.loads(m["Body"]) for m in stack.drain()]
    assert sorted(d["source"] for d in delivered) == sorted([genesys["source"], nice["source"]])
    assert {d["id"] for d in delivered} == {report.event_ids[0], report.event_ids[1]}


def test_provision_twice_returns_equal_handles_and_changes_nothing(stack):
    before = _state(stack)
    again = provision(stack.aws, stack.config)
    assert again == stack.handles
    assert _state(stack) == before  # LastModifiedTimestamp included: nothing was re-set


def test_provision_converges_a_drifted_queue_back_to_its_config(stack):
    h = stack.handles
    stack.sqs.set_queue_attributes(QueueUrl=h.queue_url, Attributes={
        "VisibilityTimeout": "300", "Policy": json.dumps({"Version": "2012-10-17", "Statement": []})})
    provision(stack.aws, stack.config)
    attrs = stack.sqs.get_queue_attributes(QueueUrl=h.queue_url, AttributeNames=["All"])["Attributes"]
    assert attrs["VisibilityTimeout"] == str(stack.config.visibility_timeout_s)
    assert json.loads(attrs["Policy"]) == h.policies()["queue"]


def test_find_stack_returns_the_provisioned_handles(stack):
    assert find_stack(stack.aws, stack.config) == stack.handles


def test_find_stack_of_a_missing_stack_says_which_queue_region_and_endpoint(aws):
    with pytest.raises(ConfigurationError) as caught:
        find_stack(aws, StackConfig(name="never-made"))
    message = str(caught.value)
    assert "never-made-events does not exist" in message
    assert "region us-east-1" in message and aws.endpoint_url in message
    assert "dedup provision" in message


def test_teardown_removes_everything_provision_made(stack):
    removed = teardown(stack.aws, stack.handles)
    h = stack.handles
    assert removed == [f"rule {h.rule_name}", f"bus {h.bus_name}", f"queue {h.queue_name}",
                       f"queue {h.dlq_name}"]
    assert not stack.sqs.list_queues().get("QueueUrls")
    assert [b["Name"] for b in stack.events.list_event_buses()["EventBuses"]] == ["default"]
    assert teardown(stack.aws, stack.config) == []  # a second teardown finds nothing to remove


def test_the_default_bus_is_used_and_never_deleted(aws):
    config = StackConfig(name="on-default", bus_name="default")
    handles = provision(aws, config)
    assert handles.bus_name == "default" and not handles.custom_bus
    assert handles.bus_arn.endswith(":event-bus/default")
    assert handles.rule_arn.endswith(":rule/on-default-contact-centre")
    removed = teardown(aws, handles)
    assert "bus default" not in removed
    assert [b["Name"] for b in aws.client("events").list_event_buses()["EventBuses"]] == ["default"]


def test_extra_nice_sources_are_routed(aws):
    config = StackConfig(name="two-nice", nice_sources=("com.nice.cxone.bridge", "com.acme.cxone.eu"))
    handles = provision(aws, config)
    nice = {**load_event("envelope_nice_contact_active.json"), "source": "com.acme.cxone.eu"}
    put_events(aws.client("events"), [to_entry(nice, handles.bus_name)])
    sqs = aws.client("sqs")
    (message,) = sqs.receive_message(QueueUrl=handles.queue_url, MaxNumberOfMessages=10)["Messages"]
    assert json.loads(message["Body"])["source"] == "com.acme.cxone.eu"
    sqs.delete_message(QueueUrl=handles.queue_url, ReceiptHandle=message["ReceiptHandle"])


@pytest.mark.parametrize(("options", "complaint"), [
    ({"name": "has space"}, "stack name"),
    ({"max_receive_count": 0}, "max_receive_count"),
    ({"visibility_timeout_s": 43_201}, "visibility_timeout_s"),
    ({"receive_wait_s": 21}, "receive_wait_s"),
    ({"genesys_source_prefix": "", "nice_sources": ()}, "needs a Genesys source prefix"),
])
def test_invalid_stack_settings_are_refused(options, complaint):
    with pytest.raises(ConfigurationError, match=complaint):
        StackConfig(**options)
