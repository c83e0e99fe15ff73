"""The stack as a CloudFormation template: ``dedup provision --emit-template FILE``.

Written from :func:`dedup.aws.resources.stack_resources`, the definitions
:func:`~dedup.aws.stack.provision` creates, so the template and ``provision``
describe the same stack. References become ``Ref`` / ``Fn::GetAtt`` / ``Fn::Sub``;
a Lambda consumer adds the parameters ``CodeS3Bucket`` and ``CodeS3Key``, where the
zip that ``dedup lambda-zip`` builds (with your handler module added) is uploaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dedup.aws.resources import GetAtt, Ref, Sub, resolve, stack_resources
from dedup.extras import require

if TYPE_CHECKING:
    from dedup.aws.stack import StackConfig

FORMAT_VERSION = "2010-09-09"
LAMBDA_CODE_PARAMETERS = {
    "CodeS3Bucket": "S3 bucket holding the Lambda deployment package (`dedup lambda-zip`)",
    "CodeS3Key": "S3 key of the Lambda deployment package",
}
_OUTPUTS = {  # output -> (resource, attribute or None for its Ref)
    "QueueUrl": ("Queue", None),
    "QueueArn": ("Queue", "Arn"),
    "DeadLetterQueueUrl": ("DeadLetterQueue", None),
    "DeadLetterQueueArn": ("DeadLetterQueue", "Arn"),
    "RuleArn": ("Rule", "Arn"),
    "BusArn": ("Bus", "Arn"),
    "TableArn": ("Table", "Arn"),
    "ConsumerPolicyArn": ("ConsumerPolicy", None),
    "ConsumerFunctionArn": ("ConsumerFunction", "Arn"),
}


def template(config: StackConfig) -> dict[str, Any]:
    """The CloudFormation template of the stack ``config`` describes, as a document."""
    resources = stack_resources(config)
    ids = {r.logical_id for r in resources}
    doc: dict[str, Any] = {
        "AWSTemplateFormatVersion": FORMAT_VERSION,
        "Description": f"dedup stack {config.name}: EventBridge rule (Genesys Cloud, NICE CXone) to an SQS "
                       "queue with a dead-letter queue, written by `dedup provision --emit-template`",
    }
    if config.lambda_consumer is not None:
        doc["Parameters"] = {name: {"Type": "String", "Description": text}
                             for name, text in LAMBDA_CODE_PARAMETERS.items()}
    doc["Resources"] = {r.logical_id: {"Type": r.type, "Properties": resolve(r.properties, intrinsic)}
                        for r in resources}
    doc["Outputs"] = {name: {"Value": intrinsic(GetAtt(rid, attr) if attr else Ref(rid))}
                      for name, (rid, attr) in _OUTPUTS.items() if rid in ids}
    return doc


def template_yaml(config: StackConfig) -> str:
    """:func:`template` as YAML (intrinsic functions in their long form, no custom tags)."""
    yaml = require("yaml")
    return yaml.safe_dump(template(config), sort_keys=False, width=110)


def write_template(config: StackConfig, path: str | Path) -> Path:
    """Write :func:`template_yaml` to ``path``; return it."""
    path = Path(path)
    path.write_text(template_yaml(config))
    return path


def intrinsic(ref: Ref | GetAtt | Sub) -> dict[str, Any]:
    """A reference as CloudFormation writes it."""
    if isinstance(ref, Ref):
        return {"Ref": ref.logical_id}
    if isinstance(ref, GetAtt):
        return {"Fn::GetAtt": [ref.logical_id, ref.attribute]}
    return {"Fn::Sub": ref.text}
