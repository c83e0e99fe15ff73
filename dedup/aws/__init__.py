"""The AWS path: embedded moto server, provisioning and its CloudFormation template, producer, SQS
consumer, Lambda entry and its deployment zip.

Names are loaded on first use, so importing ``dedup.aws.lambda_handler`` (which
needs only the core) does not pull in boto3 or moto.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EmbeddedAWS": "dedup.aws.embedded",
    "AwsSession": "dedup.aws.session",
    "aws_session": "dedup.aws.session",
    "StackConfig": "dedup.aws.stack",
    "StackHandles": "dedup.aws.stack",
    "provision": "dedup.aws.stack",
    "find_stack": "dedup.aws.stack",
    "teardown": "dedup.aws.stack",
    "queue_url_for": "dedup.aws.stack",
    "queue_depth": "dedup.aws.stack",
    "LambdaConsumer": "dedup.aws.resources",
    "stack_resources": "dedup.aws.resources",
    "template": "dedup.aws.template",
    "write_template": "dedup.aws.template",
    "build_lambda_zip": "dedup.aws.lambda_zip",
    "consumer_policy": "dedup.aws.iam",
    "producer_policy": "dedup.aws.iam",
    "queue_policy": "dedup.aws.iam",
    "Backoff": "dedup.aws.backoff",
    "put_events": "dedup.aws.producer",
    "to_entry": "dedup.aws.producer",
    "PublishReport": "dedup.aws.producer",
    "DuplicateInjector": "dedup.aws.producer",
    "SQSConsumer": "dedup.aws.consumer",
    "ConsumerStats": "dedup.aws.consumer",
    "BatchReport": "dedup.aws.consumer",
    "parse_body": "dedup.aws.messages",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dedup.aws' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
