"""The stack as a CloudFormation template: cfn-lint clean, the same stack ``provision`` makes, and
deployable through moto's CloudFormation, where the end-to-end path then runs against it.

moto's CloudFormation does not implement ``AWS::SQS::QueuePolicy`` (it warns and skips
it) and does not apply a table's ``TimeToLiveSpecification``: those two are checked
structurally here and by cfn-lint, and on the stack ``provision`` makes, which applies both.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import yaml
from aws_support import row
from cfnlint.api import ManualArgs, lint

from dedup.aws.resources import LambdaConsumer
from dedup.aws.stack import StackConfig, StackHandles, find_stack, provision, teardown
from dedup.aws.template import template, template_yaml
from dedup.cli import main
from dedup.stores.dynamodb import TTL_ATTRIBUTE

pytestmark = pytest.mark.aws

HANDLER = "app.handlers:on_event"
VARIANTS = {
    "custom bus": StackConfig(name="t1"),
    "default bus": StackConfig(name="t1", bus_name="default", nice_sources=("a.nice", "b.nice")),
    "dynamodb table": StackConfig(name="t1", table_name="t1-window"),
    "lambda on dynamodb": StackConfig(name="t1", table_name="t1-window",
                                      lambda_consumer=LambdaConsumer(HANDLER)),
    "lambda on redis": StackConfig(name="t1", lambda_consumer=LambdaConsumer(
        HANDLER, store_url="rediss://cache.example.com:6379/0", lease_s=120, batch_size=5)),
}
LINT_REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-2"]
# Attributes SQS reports that the stack does not set.
SQS_OWN = {"QueueArn", "CreatedTimestamp", "LastModifiedTimestamp", "ApproximateNumberOfMessages",
           "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed", "DelaySeconds",
           "MaximumMessageSize", "SqsManagedSseEnabled", "Policy"}


def _unique(config: StackConfig) -> StackConfig:
    """``config`` with names no other test uses (moto's state is shared by the session)."""
    name = f"t{uuid.uuid4().hex[:8]}"
    table = f"{name}-window" if config.table_name else None
    return StackConfig(name=name, bus_name=config.bus_name, nice_sources=config.nice_sources,
                       table_name=table, lambda_consumer=config.lambda_consumer,
                       max_receive_count=config.max_receive_count)


def _references(handles: StackHandles) -> dict[tuple[str, str], str]:
    refs = {("Queue", "Ref"): handles.queue_url, ("Queue", "Arn"): handles.queue_arn,
            ("DeadLetterQueue", "Ref"): handles.dlq_url, ("DeadLetterQueue", "Arn"): handles.dlq_arn,
            ("Rule", "Arn"): handles.rule_arn, ("Bus", "Name"): handles.bus_name,
            ("Bus", "Arn"): handles.bus_arn}
    if handles.table_name:
        refs |= {("Table", "Ref"): handles.table_name, ("Table", "Arn"): handles.table_arn}
    return refs


def _resolved(value: Any, refs: dict[tuple[str, str], str]) -> Any:
    """A template value with its ``Ref`` / ``Fn::GetAtt`` replaced by what the stack reports."""
    if isinstance(value, dict):
        if set(value) == {"Ref"}:
            return refs[value["Ref"], "Ref"]
        if set(value) == {"Fn::GetAtt"}:
            return refs[tuple(value["Fn::GetAtt"])]
        return {k: _resolved(v, refs) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolved(v, refs) for v in value]
    return value


def _live(aws, handles: StackHandles) -> dict[str, Any]:
    """What the stack is, as the services report it, without ids, timestamps and the queue policies."""
    sqs, events = aws.client("sqs"), aws.client("events")

    def queue(url: str) -> dict[str, Any]:
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        return {k: json.loads(v) if k == "RedrivePolicy" else v for k, v in attrs.items() if k not in SQS_OWN}

    rule = events.describe_rule(Name=handles.rule_name, EventBusName=handles.bus_name)
    state = {
        "queue": queue(handles.queue_url), "dlq": queue(handles.dlq_url),
        "rule": {k: json.loads(rule[k]) if k == "EventPattern" else rule[k]
                 for k in ("Name", "Arn", "EventBusName", "EventPattern", "State", "Description")},
        "targets": events.list_targets_by_rule(Rule=handles.rule_name,
                                               EventBusName=handles.bus_name)["Targets"],
        "buses": sorted(b["Name"] for b in events.list_event_buses()["EventBuses"]),
    }
    if handles.table_name:
        table = aws.client("dynamodb").describe_table(TableName=handles.table_name)["Table"]
        state["table"] = {"KeySchema": table["KeySchema"],
                          "AttributeDefinitions": table["AttributeDefinitions"],
                          "BillingMode": table["BillingModeSummary"]["BillingMode"], "Arn": table["TableArn"]}
    return state


@pytest.mark.parametrize("variant", VARIANTS)
def test_cfn_lint_passes_on_every_variant_of_the_template(variant):
    matches = lint(template_yaml(VARIANTS[variant]), config=ManualArgs(regions=LINT_REGIONS))
    assert [str(m) for m in matches] == []


def test_cfn_lint_would_catch_a_broken_template():
    broken = template(VARIANTS["dynamodb table"])
    broken["Resources"]["Queue"]["Properties"]["VisibilityTimeout"] = 50_000
    broken["Resources"]["Table"]["Properties"]["BillingMode"] = "ON_DEMAND"
    rules = {m.rule.id for m in lint(yaml.safe_dump(broken), config=ManualArgs(regions=LINT_REGIONS))}
    assert {"E3034", "E3030"} <= rules


def test_the_template_writes_the_stack_provision_creates(aws):
    config = _unique(VARIANTS["dynamodb table"])
    handles = provision(aws, config)
    resources = {rid: _resolved(r["Properties"], _references(handles))
                 for rid, r in template(config)["Resources"].items()}
    live, sqs = _live(aws, handles), aws.client("sqs")
    for rid, key in (("Queue", "queue"), ("DeadLetterQueue", "dlq")):
        props = {k: v if isinstance(v, dict) else str(v) for k, v in resources[rid].items()
                 if k != "QueueName"}
        assert {k: live[key].get(k) for k in props} == props
    rule = {k: resources["Rule"][k] for k in live["rule"] if k != "Arn"}
    assert live["rule"] == rule | {"Arn": handles.rule_arn}
    assert live["targets"] == resources["Rule"]["Targets"]
    for rid in ("QueuePolicy", "DeadLetterQueuePolicy"):
        (url,) = resources[rid]["Queues"]
        policy = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"]["Policy"]
        assert json.loads(policy) == resources[rid]["PolicyDocument"]
    table = resources["Table"]
    assert live["table"] == {"KeySchema": table["KeySchema"], "BillingMode": table["BillingMode"],
                             "AttributeDefinitions": table["AttributeDefinitions"], "Arn": handles.table_arn}
    dynamodb = aws.client("dynamodb")
    ttl = dynamodb.describe_time_to_live(TableName=config.table_name)["TimeToLiveDescription"]
    wanted_ttl = table["TimeToLiveSpecification"]
    assert (ttl["AttributeName"], ttl["TimeToLiveStatus"]) == (wanted_ttl["AttributeName"], "ENABLED")
    assert resources["ConsumerPolicy"]["PolicyDocument"] == handles.policies()["consumer"]
    teardown(aws, handles)


def test_provision_leaves_the_template_only_resources_out_and_sizes_the_queue_alike(aws):
    config = _unique(VARIANTS["lambda on dynamodb"])
    handles = provision(aws, config)
    attrs = aws.client("sqs").get_queue_attributes(QueueUrl=handles.queue_url,
                                                   AttributeNames=["VisibilityTimeout"])["Attributes"]
    wanted = template(config)["Resources"]["Queue"]["Properties"]["VisibilityTimeout"]
    assert int(attrs["VisibilityTimeout"]) == wanted == 6 * 60
    assert aws.client("lambda").list_functions()["Functions"] == []
    assert aws.client("iam").list_policies(Scope="Local")["Policies"] == []
    teardown(aws, handles)


def test_the_table_in_the_template_is_the_one_the_dynamodb_store_expects():
    table = template(VARIANTS["dynamodb table"])["Resources"]["Table"]["Properties"]
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert table["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}
    assert table["BillingMode"] == "PAY_PER_REQUEST"


def test_the_queue_policies_let_only_the_exact_rule_send_to_each_queue():
    """Checked on the document: moto's CloudFormation skips AWS::SQS::QueuePolicy (and never
    enforces a policy), so no deployment here can show it."""
    resources = template(VARIANTS["custom bus"])["Resources"]
    for policy_id, queue_id in (("QueuePolicy", "Queue"), ("DeadLetterQueuePolicy", "DeadLetterQueue")):
        props = resources[policy_id]["Properties"]
        assert props["Queues"] == [{"Ref": queue_id}]
        (statement,) = props["PolicyDocument"]["Statement"]
        assert statement["Principal"] == {"Service": "events.amazonaws.com"}
        assert statement["Action"] == "sqs:SendMessage"
        assert statement["Resource"] == {"Fn::GetAtt": [queue_id, "Arn"]}
        assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["Rule", "Arn"]}}}


@pytest.mark.parametrize(("lease_s", "visibility_s", "timeout_s", "wanted_visibility_s"),
                         [(60, 30, 60, 360), (30, 600, 30, 600), (7.5, 0, 8, 48)])
def test_a_lambda_consumer_times_out_at_the_lease_and_the_queue_hides_for_six_times_that(
        lease_s, visibility_s, timeout_s, wanted_visibility_s):
    config = StackConfig(name="t1", table_name="t1-window", visibility_timeout_s=visibility_s,
                         lambda_consumer=LambdaConsumer(HANDLER, lease_s=lease_s))
    resources = template(config)["Resources"]
    assert resources["ConsumerFunction"]["Properties"]["Timeout"] == timeout_s
    assert resources["Queue"]["Properties"]["VisibilityTimeout"] == wanted_visibility_s
    mapping = resources["ConsumerEventSourceMapping"]["Properties"]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BatchSize"] == 10
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["Queue", "Arn"]}
    variables = resources["ConsumerFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["DEDUP_STORE_URL"] == "dynamodb://t1-window"
    assert variables["DEDUP_LEASE_S"] == f"{lease_s:g}" and variables["DEDUP_HANDLER"] == HANDLER


def test_the_lambda_role_may_write_only_its_own_log_group_and_use_the_consumer_policy():
    resources = template(VARIANTS["lambda on dynamodb"])["Resources"]
    role = resources["ConsumerRole"]["Properties"]
    assert role["ManagedPolicyArns"] == [{"Ref": "ConsumerPolicy"}]
    (inline,) = role["Policies"]
    (statement,) = inline["PolicyDocument"]["Statement"]
    assert statement["Resource"]["Fn::Sub"].endswith(":log-group:/aws/lambda/t1-consumer:*")
    assert "*" not in "".join(statement["Action"])


def _deploy(aws, config: StackConfig, **parameters: str) -> dict[str, str]:
    cfn = aws.client("cloudformation")
    cfn.create_stack(StackName=config.name, TemplateBody=template_yaml(config),
                     Capabilities=["CAPABILITY_IAM"],
                     Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()])
    (stack,) = cfn.describe_stacks(StackName=config.name)["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    return {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}


@pytest.mark.filterwarnings("ignore:Tried to parse AWS:UserWarning")
def test_the_deployed_template_equals_the_provisioned_stack(aws):
    config = _unique(VARIANTS["dynamodb table"])
    provisioned = _live(aws, provision(aws, config))
    teardown(aws, config)
    outputs = _deploy(aws, config)
    deployed = find_stack(aws, config)
    assert _live(aws, deployed) == provisioned
    assert (outputs["QueueArn"], outputs["RuleArn"], outputs["TableArn"]) == (
        deployed.queue_arn, deployed.rule_arn, deployed.table_arn)


@pytest.mark.filterwarnings("ignore:Tried to parse AWS:UserWarning")
def test_produce_and_consume_reconcile_on_the_deployed_template(aws, monkeypatch, capsys):
    config = _unique(VARIANTS["dynamodb table"])
    _deploy(aws, config)
    for name, value in aws.environ().items():
        monkeypatch.setenv(name, value)
    store = f"dynamodb://{config.table_name}"
    assert main(["produce", "--name", config.name, "--events", "30", "--publish-retries", "6",
                 "--delivery-duplicates", "4", "--seed", "13"]) == 0
    assert row(capsys.readouterr().out, "messages expected on the queue") == "40"
    assert main(["consume", "--name", config.name, "--store", store, "--max-messages", "40",
                 "--max-idle-s", "2", "--wait-time-s", "1"]) == 0
    out = capsys.readouterr().out
    assert [row(out, label) for label in ("received", "processed", "duplicates", "deleted")] == [
        "40", "30", "10", "40"]
    handles = find_stack(aws, config)
    sqs = aws.client("sqs")
    for url in (handles.queue_url, handles.dlq_url):
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert attrs["ApproximateNumberOfMessages"] == attrs["ApproximateNumberOfMessagesNotVisible"] == "0"


@pytest.mark.filterwarnings("ignore:Tried to parse AWS:UserWarning")
def test_the_lambda_consumer_deploys_with_its_event_source_mapping(aws):
    config = _unique(VARIANTS["lambda on dynamodb"])
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=config.name)
    code = _zip({"app/handlers.py": "def on_event(event):\n    pass\n"})
    s3.put_object(Bucket=config.name, Key="dedup.zip", Body=code)
    outputs = _deploy(aws, config, CodeS3Bucket=config.name, CodeS3Key="dedup.zip")
    lam = aws.client("lambda")
    function = lam.get_function_configuration(FunctionName=f"{config.name}-consumer")
    assert function["Handler"] == "dedup.aws.lambda_handler.handler"
    assert function["Environment"]["Variables"]["DEDUP_STORE_URL"] == f"dynamodb://{config.table_name}"
    mappings = lam.list_event_source_mappings(EventSourceArn=outputs["QueueArn"])["EventSourceMappings"]
    (mapping,) = mappings
    assert mapping["FunctionArn"] == outputs["ConsumerFunctionArn"] == function["FunctionArn"]
    assert (mapping["BatchSize"], mapping["FunctionResponseTypes"]) == (10, ["ReportBatchItemFailures"])


def test_emit_template_writes_the_file_and_calls_no_aws(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: any call would fail
    path = tmp_path / "stack.yaml"
    assert main(["provision", "--name", "t1", "--store", "dynamodb://t1-window", "--lambda-handler", HANDLER,
                 "--emit-template", str(path)]) == 0
    assert str(path) in capsys.readouterr().out
    assert yaml.safe_load(path.read_text()) == template(VARIANTS["lambda on dynamodb"])


@pytest.mark.parametrize(("args", "complaint"), [
    (["--lambda-handler", HANDLER], "add --emit-template"),
    (["--lambda-handler", HANDLER, "--emit-template", "x.yaml"], "dedups within one Lambda container"),
    (["--lambda-handler", "no-function", "--store", "dynamodb://t1-window", "--emit-template", "x.yaml"],
     "package.module:function"),
])
def test_a_lambda_consumer_without_what_it_needs_is_refused(args, complaint, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["provision", *args]) == 2
    assert complaint in capsys.readouterr().err
    assert not (tmp_path / "x.yaml").exists()


def test_provision_with_a_dynamodb_store_creates_the_table_and_teardown_removes_it(aws, monkeypatch, capsys):
    for name, value in aws.environ().items():
        monkeypatch.setenv(name, value)
    name = f"t{uuid.uuid4().hex[:8]}"
    store = f"dynamodb://{name}-window"
    assert main(["provision", "--name", name, "--store", store, "--print-policies"]) == 0
    out = capsys.readouterr().out
    table_arn = row(out, "table_arn")
    assert table_arn.endswith(f":table/{name}-window")
    assert f'"Resource": "{table_arn}"' in out and '"dynamodb:PutItem"' in out
    assert main(["teardown", "--name", name, "--store", store]) == 0
    assert f"table {name}-window" in capsys.readouterr().out
    assert f"{name}-window" not in aws.client("dynamodb").list_tables()["TableNames"]


def _zip(files: dict[str, str]) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()
