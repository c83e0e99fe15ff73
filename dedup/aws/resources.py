"""The stack's resources, defined once: :func:`~dedup.aws.stack.provision` creates them with boto3
and :func:`~dedup.aws.template.template` writes them as CloudFormation, so the two cannot drift.

Each :class:`Resource` carries CloudFormation's type and properties; references to
another resource are :class:`Ref` / :class:`GetAtt` (and :class:`Sub` for ARNs built
from the account and region), which the template writes as intrinsic functions
and ``provision`` resolves to the names, URLs and ARNs the services returned.
The IAM policy and the Lambda consumer are template-only (``provisioned=False``):
``provision`` prints the policy documents (``--print-policies``) instead of creating
IAM principals, and runs no function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dedup.aws.iam import LAMBDA_LOG_ACTIONS, POLICY_VERSION, consumer_policy, queue_policy
from dedup.defaults import DEFAULT_KEY, DEFAULT_LEASE_S, DEFAULT_MODE, DEFAULT_PREFIX, DEFAULT_WINDOW_S
from dedup.errors import ConfigurationError
from dedup.stores.dynamodb import TTL_ATTRIBUTE

if TYPE_CHECKING:
    from dedup.aws.stack import StackConfig

TABLE_KEY = "pk"  # the partition key dedup.stores.dynamodb.ensure_table makes (a test compares the two)
LAMBDA_HANDLER = "dedup.aws.lambda_handler.handler"
LAMBDA_RUNTIME = "python3.12"
LAMBDA_MAX_TIMEOUT_S = 900
LAMBDA_VISIBILITY_FACTOR = 6
"""AWS's rule for SQS event sources: the queue's visibility timeout at least 6 × the function timeout."""
SQS_BATCH_SIZE = 10
"""One SQS receive, and the DynamoDB store's concurrent writes per phase: one round trip per phase."""


@dataclass(frozen=True)
class Ref:
    """The ``Ref`` of a resource (a queue's URL, a policy's ARN, a function's name)."""

    logical_id: str


@dataclass(frozen=True)
class GetAtt:
    """An attribute of a resource (``Arn``, ``Name``)."""

    logical_id: str
    attribute: str


@dataclass(frozen=True)
class Sub:
    """A string with ``${AWS::Region}``-style placeholders (template-only resources use it)."""

    text: str


@dataclass(frozen=True)
class Resource:
    """One resource: CloudFormation type and properties; ``provisioned`` if ``provision`` creates it."""

    logical_id: str
    type: str
    properties: Mapping[str, Any]
    provisioned: bool = True


@dataclass(frozen=True)
class LambdaConsumer:
    """A Lambda function consuming the queue through ``dedup.aws.lambda_handler`` (template only).

    ``handler`` is your ``package.module:function`` (``DEDUP_HANDLER``), packaged in the zip
    beside dedup (``dedup lambda-zip``); ``store_url`` defaults to the stack's DynamoDB table.
    The function timeout is ``lease_s`` (a batch cannot outlive its claims) and the queue's
    visibility timeout at least 6 × that; the batch is one SQS receive (10 messages).
    """

    handler: str
    store_url: str | None = None
    key: str = DEFAULT_KEY
    window_s: float = DEFAULT_WINDOW_S
    lease_s: float = DEFAULT_LEASE_S
    mode: str = DEFAULT_MODE
    prefix: str = DEFAULT_PREFIX
    batch_size: int = SQS_BATCH_SIZE
    memory_mb: int = 256
    extra_environment: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if ":" not in self.handler:
            raise ConfigurationError(
                f"a handler must be named 'package.module:function', got {self.handler!r}")
        if not 1 <= self.lease_s <= LAMBDA_MAX_TIMEOUT_S:
            raise ConfigurationError(
                f"lease_s bounds the function timeout: 1..{LAMBDA_MAX_TIMEOUT_S} s, got {self.lease_s}")
        if not 1 <= self.batch_size <= SQS_BATCH_SIZE:
            raise ConfigurationError(f"batch_size must be 1..{SQS_BATCH_SIZE}, got {self.batch_size}")

    @property
    def timeout_s(self) -> int:
        return math.ceil(self.lease_s)

    @property
    def min_visibility_timeout_s(self) -> int:
        return LAMBDA_VISIBILITY_FACTOR * self.timeout_s


def stack_resources(config: StackConfig) -> list[Resource]:
    """The stack's resources in creation order (a resource refers only to earlier ones)."""
    bus_name: Any = GetAtt("Bus", "Name") if config.custom_bus else config.bus
    resources = [
        Resource("DeadLetterQueue", "AWS::SQS::Queue", {
            "QueueName": config.dlq_name,
            "MessageRetentionPeriod": config.dlq_retention_s,
        }),
        Resource("Queue", "AWS::SQS::Queue", {
            "QueueName": config.queue_name,
            "VisibilityTimeout": config.queue_visibility_timeout_s,
            "ReceiveMessageWaitTimeSeconds": config.receive_wait_s,
            "RedrivePolicy": {"deadLetterTargetArn": GetAtt("DeadLetterQueue", "Arn"),
                              "maxReceiveCount": config.max_receive_count},
        }),
    ]
    if config.custom_bus:
        resources.append(Resource("Bus", "AWS::Events::EventBus", {"Name": config.bus}))
    resources += [
        Resource("Rule", "AWS::Events::Rule", {
            "Name": config.rule_name,
            "EventBusName": bus_name,
            "Description": "Genesys Cloud and NICE CXone events to the dedup queue",
            "EventPattern": config.event_pattern(),
            "State": "ENABLED",
            "Targets": [{"Id": config.target_id, "Arn": GetAtt("Queue", "Arn"),
                         "DeadLetterConfig": {"Arn": GetAtt("DeadLetterQueue", "Arn")}}],
        }),
        Resource("QueuePolicy", "AWS::SQS::QueuePolicy", {
            "Queues": [Ref("Queue")],
            "PolicyDocument": queue_policy(GetAtt("Queue", "Arn"), GetAtt("Rule", "Arn")),
        }),
        Resource("DeadLetterQueuePolicy", "AWS::SQS::QueuePolicy", {
            "Queues": [Ref("DeadLetterQueue")],
            "PolicyDocument": queue_policy(GetAtt("DeadLetterQueue", "Arn"), GetAtt("Rule", "Arn")),
        }),
    ]
    if config.table_name:
        resources.append(Resource("Table", "AWS::DynamoDB::Table", {
            "TableName": config.table_name,
            "AttributeDefinitions": [{"AttributeName": TABLE_KEY, "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": TABLE_KEY, "KeyType": "HASH"}],
            "BillingMode": "PAY_PER_REQUEST",
            "TimeToLiveSpecification": {"AttributeName": TTL_ATTRIBUTE, "Enabled": True},
        }))
    table_arn = GetAtt("Table", "Arn") if config.table_name else None
    resources.append(Resource("ConsumerPolicy", "AWS::IAM::ManagedPolicy", {
        "Description": f"least privilege for the consumers of {config.queue_name}",
        "PolicyDocument": consumer_policy(GetAtt("Queue", "Arn"), table_arn),
    }, provisioned=False))
    if config.lambda_consumer:
        resources += _lambda_resources(config, config.lambda_consumer)
    return resources


def _lambda_resources(config: StackConfig, fn: LambdaConsumer) -> list[Resource]:
    function_name = f"{config.name}-consumer"
    store_url = fn.store_url or (f"dynamodb://{config.table_name}" if config.table_name else None)
    if store_url is None:
        raise ConfigurationError("a Lambda consumer needs a store: a DynamoDB table (--store "
                                 "dynamodb://TABLE) or a store URL the function can reach (redis://...)")
    log_group = Sub(f"arn:${{AWS::Partition}}:logs:${{AWS::Region}}:${{AWS::AccountId}}:"
                    f"log-group:/aws/lambda/{function_name}:*")
    environment = {
        "DEDUP_HANDLER": fn.handler, "DEDUP_STORE_URL": store_url, "DEDUP_KEY": fn.key,
        "DEDUP_WINDOW_S": f"{fn.window_s:g}", "DEDUP_LEASE_S": f"{fn.lease_s:g}", "DEDUP_MODE": fn.mode,
        "DEDUP_PREFIX": fn.prefix, **fn.extra_environment,
    }
    return [
        Resource("ConsumerRole", "AWS::IAM::Role", {
            "AssumeRolePolicyDocument": {"Version": POLICY_VERSION, "Statement": [{
                "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": "sts:AssumeRole"}]},
            "ManagedPolicyArns": [Ref("ConsumerPolicy")],
            "Policies": [{"PolicyName": "logs", "PolicyDocument": {"Version": POLICY_VERSION, "Statement": [{
                "Effect": "Allow", "Action": list(LAMBDA_LOG_ACTIONS), "Resource": log_group}]}}],
        }, provisioned=False),
        Resource("ConsumerFunction", "AWS::Lambda::Function", {
            "FunctionName": function_name,
            "Description": f"dedups and handles the events of {config.queue_name}",
            "Runtime": LAMBDA_RUNTIME,
            "Handler": LAMBDA_HANDLER,
            "Code": {"S3Bucket": Ref("CodeS3Bucket"), "S3Key": Ref("CodeS3Key")},
            "Role": GetAtt("ConsumerRole", "Arn"),
            "Timeout": fn.timeout_s,
            "MemorySize": fn.memory_mb,
            "Environment": {"Variables": environment},
        }, provisioned=False),
        Resource("ConsumerEventSourceMapping", "AWS::Lambda::EventSourceMapping", {
            "EventSourceArn": GetAtt("Queue", "Arn"),
            "FunctionName": Ref("ConsumerFunction"),
            "BatchSize": fn.batch_size,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "Enabled": True,
        }, provisioned=False),
    ]


def resolve(value: Any, lookup: Callable[[Ref | GetAtt | Sub], Any]) -> Any:
    """``value`` with every reference replaced by ``lookup(reference)``."""
    if isinstance(value, Ref | GetAtt | Sub):
        return lookup(value)
    if isinstance(value, Mapping):
        return {k: resolve(v, lookup) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [resolve(v, lookup) for v in value]
    return value


__all__ = [
    "GetAtt",
    "LambdaConsumer",
    "Ref",
    "Resource",
    "Sub",
    "resolve",
    "stack_resources",
]
