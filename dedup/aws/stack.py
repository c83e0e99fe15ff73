"""Provision the EventBridge → SQS path, idempotently, and tear it down.

:func:`provision` makes (or finds) an event bus, a dead-letter queue, the work
queue with a redrive policy, a rule matching Genesys Cloud partner sources by
prefix and the NICE CXone bridge source(s), the rule's SQS target, queue
policies that let EventBridge send only on behalf of that exact rule, and the
DynamoDB store's table when the config names one. It walks the resources of
:func:`dedup.aws.resources.stack_resources`, the same definitions the
CloudFormation template is written from. Running it again changes nothing and
returns equal handles; it only writes what differs from the desired state.
:func:`teardown` removes what it made (never the default bus).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from dedup.aws.iam import consumer_policy, producer_policy, queue_policy
from dedup.aws.resources import GetAtt, LambdaConsumer, Ref, Sub, resolve, stack_resources
from dedup.aws_errors import NOT_FOUND_CODES, QUEUE_NOT_FOUND_CODES, error_code, explained
from dedup.errors import ConfigurationError
from dedup.keys import GENESYS_SOURCE_PREFIX, NICE_BRIDGE_SOURCE

log = logging.getLogger(__name__)

DEFAULT_BUS = "default"
TARGET_ID = "dedup-queue"
DLQ_RETENTION_S = 14 * 24 * 3600  # the SQS maximum: time to look at what failed


class ClientFactory(Protocol):
    """Anything that makes boto3 clients: an :class:`~dedup.aws.session.AwsSession` or an
    :class:`~dedup.aws.embedded.EmbeddedAWS`."""

    def client(self, service: str, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class StackConfig:
    """What to provision. Names derive from ``name``; ``bus_name="default"`` uses the default bus.

    moto cannot host a bus literally named ``aws.partner/...``: the partner-style
    ``source`` works on any bus, so tests use a plain custom bus name.
    """

    name: str = "dedup"
    bus_name: str | None = None
    max_receive_count: int = 5
    visibility_timeout_s: int = 30
    receive_wait_s: int = 20
    genesys_source_prefix: str = GENESYS_SOURCE_PREFIX
    nice_sources: tuple[str, ...] = (NICE_BRIDGE_SOURCE,)
    table_name: str | None = None
    """The DynamoDB store's table (``dynamodb://TABLE``), provisioned with the stack; None: no table."""
    lambda_consumer: LambdaConsumer | None = None
    """A Lambda consumer of the queue: written to the template only; it sizes the visibility timeout."""
    dlq_retention_s: int = DLQ_RETENTION_S
    target_id: str = TARGET_ID

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigurationError(f"stack name must be letters, digits, '-' or '_'; got {self.name!r}")
        if not 1 <= self.max_receive_count <= 1000:
            raise ConfigurationError(f"max_receive_count must be 1..1000, got {self.max_receive_count}")
        if not 0 <= self.visibility_timeout_s <= 43_200:
            raise ConfigurationError(
                f"visibility_timeout_s must be 0..43200, got {self.visibility_timeout_s}")
        if not 0 <= self.receive_wait_s <= 20:
            raise ConfigurationError(f"receive_wait_s must be 0..20, got {self.receive_wait_s}")
        if not self.genesys_source_prefix and not self.nice_sources:
            raise ConfigurationError("the rule needs a Genesys source prefix or at least one NICE source")
        if self.table_name is not None and not 3 <= len(self.table_name) <= 255:
            raise ConfigurationError(f"a DynamoDB table name has 3..255 characters, got {self.table_name!r}")

    @property
    def custom_bus(self) -> bool:
        return self.bus != DEFAULT_BUS

    @property
    def queue_visibility_timeout_s(self) -> int:
        """``visibility_timeout_s``, raised to 6 × a Lambda consumer's timeout (AWS's rule for SQS
        event sources)."""
        if self.lambda_consumer is None:
            return self.visibility_timeout_s
        return max(self.visibility_timeout_s, self.lambda_consumer.min_visibility_timeout_s)

    @property
    def bus(self) -> str:
        return self.bus_name or f"{self.name}-bus"

    @property
    def queue_name(self) -> str:
        return f"{self.name}-events"

    @property
    def dlq_name(self) -> str:
        return f"{self.name}-events-dlq"

    @property
    def rule_name(self) -> str:
        return f"{self.name}-contact-centre"

    def event_pattern(self) -> dict[str, Any]:
        """Genesys partner sources by prefix, plus the NICE bridge source(s) exactly."""
        sources: list[Any] = []
        if self.genesys_source_prefix:
            sources.append({"prefix": self.genesys_source_prefix})
        sources.extend(self.nice_sources)
        return {"source": sources}


@dataclass(frozen=True)
class StackHandles:
    """Names, ARNs and URLs of a provisioned stack."""

    region: str
    account: str
    bus_name: str
    bus_arn: str
    rule_name: str
    rule_arn: str
    queue_name: str
    queue_url: str
    queue_arn: str
    dlq_name: str
    dlq_url: str
    dlq_arn: str
    target_id: str = TARGET_ID
    table_name: str = ""
    table_arn: str = ""
    event_pattern: str = field(default="", compare=False)

    @property
    def custom_bus(self) -> bool:
        return self.bus_name != DEFAULT_BUS

    def policies(self) -> dict[str, dict[str, Any]]:
        """The least-privilege documents for this stack, by purpose."""
        return {
            "consumer": consumer_policy(self.queue_arn, self.table_arn or None),
            "producer": producer_policy(self.bus_arn),
            "queue": queue_policy(self.queue_arn, self.rule_arn),
            "dlq": queue_policy(self.dlq_arn, self.rule_arn),
        }

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if k != "event_pattern" and v != ""}


def provision(aws: ClientFactory, config: StackConfig | None = None) -> StackHandles:
    """Create or converge the stack's resources; return its handles (equal on every run).

    The rule's targets are put last, once both queues let the rule send to them.
    """
    config = config or StackConfig()
    client = functools.cache(aws.client)
    made: dict[tuple[str, str], str] = {}  # (logical id, "Ref" or attribute) -> what the service returned

    def lookup(ref: Ref | GetAtt | Sub) -> str:
        if isinstance(ref, Sub):
            raise ConfigurationError(f"provision cannot resolve {ref}: only template-only resources use it")
        key = (ref.logical_id, ref.attribute if isinstance(ref, GetAtt) else "Ref")
        if key not in made:
            raise ConfigurationError(f"{ref} refers to a resource provision has not made")
        return made[key]

    targets: list[tuple[str, str, list[dict[str, Any]]]] = []
    for resource in stack_resources(config):
        if not resource.provisioned:
            continue
        props = resolve(resource.properties, lookup)
        if resource.type == "AWS::Events::Rule":
            targets.append((props["Name"], props["EventBusName"], props["Targets"]))
        made.update({(resource.logical_id, attribute): value
                     for attribute, value in _CONVERGE[resource.type](client, props).items()})
    for rule, bus, wanted in targets:
        _ensure_targets(client("events"), rule, bus, wanted)
    queue_arn = made["Queue", "Arn"]
    _, _, _, region, account, _ = queue_arn.split(":", 5)
    return StackHandles(
        region=region, account=account, bus_name=config.bus,
        bus_arn=made.get(("Bus", "Arn")) or _ensure_bus(client("events"), config.bus),
        rule_name=config.rule_name, rule_arn=made["Rule", "Arn"], queue_name=config.queue_name,
        queue_url=made["Queue", "Ref"], queue_arn=queue_arn, dlq_name=config.dlq_name,
        dlq_url=made["DeadLetterQueue", "Ref"], dlq_arn=made["DeadLetterQueue", "Arn"],
        target_id=config.target_id, table_name=config.table_name or "",
        table_arn=made.get(("Table", "Arn"), ""),
        event_pattern=json.dumps(config.event_pattern(), sort_keys=True),
    )


def find_stack(aws: ClientFactory, config: StackConfig | None = None) -> StackHandles:
    """The handles of an existing stack, creating nothing; a clear error when a part is missing."""
    config = config or StackConfig()
    sqs, events = aws.client("sqs"), aws.client("events")
    queue_url = queue_url_for(sqs, config.queue_name)
    dlq_url = queue_url_for(sqs, config.dlq_name)
    with explained(events, "events:DescribeRule", f"rule {config.rule_name} on bus {config.bus}"):
        rule = events.describe_rule(Name=config.rule_name, EventBusName=config.bus)
    with explained(events, "events:DescribeEventBus", f"bus {config.bus}"):
        bus_arn = events.describe_event_bus(Name=config.bus)["Arn"]
    queue_arn = _queue_arn(sqs, queue_url)
    _, _, _, region, account, _ = queue_arn.split(":", 5)
    return StackHandles(
        region=region, account=account, bus_name=config.bus, bus_arn=bus_arn,
        rule_name=config.rule_name, rule_arn=rule["Arn"], queue_name=config.queue_name,
        queue_url=queue_url, queue_arn=queue_arn, dlq_name=config.dlq_name, dlq_url=dlq_url,
        dlq_arn=_queue_arn(sqs, dlq_url), target_id=config.target_id, table_name=config.table_name or "",
        table_arn=_table_arn(aws.client("dynamodb"), config.table_name) if config.table_name else "",
        event_pattern=rule.get("EventPattern", ""),
    )


def teardown(aws: ClientFactory, stack: StackHandles | StackConfig) -> list[str]:
    """Remove the target, rule, custom bus, both queues and the table if any; return what was removed.

    Works by name, so a half-provisioned stack (or a second teardown) is fine.
    """
    from botocore.exceptions import ClientError

    sqs, events = aws.client("sqs"), aws.client("events")
    bus = stack.bus_name if isinstance(stack, StackHandles) else stack.bus
    removed: list[str] = []

    def gone(exc: ClientError) -> bool:
        return error_code(exc) in NOT_FOUND_CODES

    try:
        targets = events.list_targets_by_rule(Rule=stack.rule_name, EventBusName=bus)["Targets"]
        if targets:
            events.remove_targets(Rule=stack.rule_name, EventBusName=bus, Ids=[t["Id"] for t in targets])
        events.delete_rule(Name=stack.rule_name, EventBusName=bus)
        removed.append(f"rule {stack.rule_name}")
    except ClientError as exc:
        if not gone(exc):
            raise
    if bus != DEFAULT_BUS:
        try:
            events.describe_event_bus(Name=bus)
            events.delete_event_bus(Name=bus)
            removed.append(f"bus {bus}")
        except ClientError as exc:
            if not gone(exc):
                raise
    for name in (stack.queue_name, stack.dlq_name):
        try:
            sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=name)["QueueUrl"])
            removed.append(f"queue {name}")
        except ClientError as exc:
            if not gone(exc):
                raise
    if stack.table_name:
        from dedup.stores.dynamodb import delete_table

        if delete_table(aws.client("dynamodb"), stack.table_name):
            removed.append(f"table {stack.table_name}")
    log.info("teardown removed: %s", ", ".join(removed) or "nothing")
    return removed


def queue_url_for(sqs: Any, name: str) -> str:
    """The URL of queue ``name``; a :class:`ConfigurationError` naming region and endpoint if absent."""
    with explained(sqs, "sqs:GetQueueUrl", name):
        return sqs.get_queue_url(QueueName=name)["QueueUrl"]


_DEPTH_ATTRIBUTES = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                     "ApproximateNumberOfMessagesDelayed")


def queue_depth(sqs: Any, queue_url: str) -> int:
    """Messages on a queue: visible, in flight and delayed (SQS's approximate counts)."""
    with explained(sqs, "sqs:GetQueueAttributes", queue_url):
        attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=list(_DEPTH_ATTRIBUTES))
    return sum(int(attrs["Attributes"].get(name, 0)) for name in _DEPTH_ATTRIBUTES)


# ---- convergence steps: one per resource type, from the resource's properties ----

Clients = Callable[[str], Any]


def _converge_queue(client: Clients, props: dict[str, Any]) -> dict[str, str]:
    name = props["QueueName"]
    url, arn = _ensure_queue(client("sqs"), name, {k: _attribute(v) for k, v in props.items()
                                                   if k != "QueueName"})
    return {"Ref": url, "Arn": arn, "QueueName": name}


def _converge_bus(client: Clients, props: dict[str, Any]) -> dict[str, str]:
    return {"Ref": props["Name"], "Name": props["Name"], "Arn": _ensure_bus(client("events"), props["Name"])}


def _converge_rule(client: Clients, props: dict[str, Any]) -> dict[str, str]:
    pattern = json.dumps(props["EventPattern"], sort_keys=True)
    arn = _ensure_rule(client("events"), props["Name"], props["EventBusName"], pattern,
                       props["Description"], props["State"])
    return {"Ref": props["Name"], "Arn": arn}


def _converge_queue_policy(client: Clients, props: dict[str, Any]) -> dict[str, str]:
    for url in props["Queues"]:
        _ensure_attributes(client("sqs"), url, {"Policy": json.dumps(props["PolicyDocument"])})
    return {}


def _converge_table(client: Clients, props: dict[str, Any]) -> dict[str, str]:
    from dedup.stores.dynamodb import ensure_table

    dynamodb, name = client("dynamodb"), props["TableName"]
    ensure_table(dynamodb, name)
    return {"Ref": name, "Arn": _table_arn(dynamodb, name)}


_CONVERGE: dict[str, Callable[[Clients, dict[str, Any]], dict[str, str]]] = {
    "AWS::SQS::Queue": _converge_queue,
    "AWS::Events::EventBus": _converge_bus,
    "AWS::Events::Rule": _converge_rule,
    "AWS::SQS::QueuePolicy": _converge_queue_policy,
    "AWS::DynamoDB::Table": _converge_table,
}


def _attribute(value: Any) -> str:
    """An SQS attribute value: numbers as text, documents as JSON."""
    return json.dumps(value) if isinstance(value, dict) else str(value)


def _table_arn(dynamodb: Any, name: str) -> str:
    with explained(dynamodb, "dynamodb:DescribeTable", f"table {name}"):
        return dynamodb.describe_table(TableName=name)["Table"]["TableArn"]



def _ensure_queue(sqs: Any, name: str, attributes: dict[str, str]) -> tuple[str, str]:
    from botocore.exceptions import ClientError

    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as exc:
        if error_code(exc) not in QUEUE_NOT_FOUND_CODES:
            with explained(sqs, "sqs:GetQueueUrl", name):
                raise
        with explained(sqs, "sqs:CreateQueue", name):
            url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        log.info("created queue %s", name)
        return url, _queue_arn(sqs, url)
    _ensure_attributes(sqs, url, attributes)
    return url, _queue_arn(sqs, url)


def _ensure_attributes(sqs: Any, url: str, wanted: dict[str, str]) -> None:
    with explained(sqs, "sqs:GetQueueAttributes", url):
        current = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(wanted)).get("Attributes", {})
    drift = {k: v for k, v in wanted.items() if not _same(current.get(k), v)}
    if drift:
        with explained(sqs, "sqs:SetQueueAttributes", url):
            sqs.set_queue_attributes(QueueUrl=url, Attributes=drift)
        log.info("set %s on %s", ", ".join(sorted(drift)), url)


def _ensure_bus(events: Any, bus: str) -> str:
    from botocore.exceptions import ClientError

    try:
        return events.describe_event_bus(Name=bus)["Arn"]
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException" or bus == DEFAULT_BUS:
            with explained(events, "events:DescribeEventBus", bus):
                raise
    with explained(events, "events:CreateEventBus", bus):
        arn = events.create_event_bus(Name=bus)["EventBusArn"]
    log.info("created event bus %s", bus)
    return arn


def _ensure_rule(events: Any, rule: str, bus: str, pattern: str, description: str, state: str) -> str:
    from botocore.exceptions import ClientError

    try:
        current = events.describe_rule(Name=rule, EventBusName=bus)
        if (_same(current.get("EventPattern"), pattern) and current.get("State") == state
                and current.get("Description") == description):
            return current["Arn"]
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
    with explained(events, "events:PutRule", f"rule {rule} on bus {bus}"):
        arn = events.put_rule(Name=rule, EventBusName=bus, EventPattern=pattern, State=state,
                              Description=description)["RuleArn"]
    log.info("put rule %s on bus %s", rule, bus)
    return arn


def _ensure_targets(events: Any, rule: str, bus: str, wanted: list[dict[str, Any]]) -> None:
    with explained(events, "events:ListTargetsByRule", f"rule {rule}"):
        targets = events.list_targets_by_rule(Rule=rule, EventBusName=bus)["Targets"]
    missing = [w for w in wanted if not any(all(t.get(k) == v for k, v in w.items()) for t in targets)]
    if not missing:
        return
    with explained(events, "events:PutTargets", f"rule {rule}"):
        response = events.put_targets(Rule=rule, EventBusName=bus, Targets=missing)
    if response.get("FailedEntryCount"):
        raise ConfigurationError(f"put_targets on rule {rule} failed: {response.get('FailedEntries')}")
    for target in missing:
        log.info("targeted rule %s at %s (dead letters: %s)", rule, target["Arn"],
                 target.get("DeadLetterConfig", {}).get("Arn"))


def _queue_arn(sqs: Any, url: str) -> str:
    with explained(sqs, "sqs:GetQueueAttributes", url):
        return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def _same(current: str | None, wanted: str) -> bool:
    """Attribute equality; JSON documents compare as data (AWS may reorder keys or quote numbers)."""
    if current == wanted:
        return True
    if current is None:
        return False
    try:
        return _normal(json.loads(current)) == _normal(json.loads(wanted))
    except ValueError:
        return False


def _normal(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value
