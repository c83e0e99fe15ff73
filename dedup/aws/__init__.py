"""The AWS path: embedded moto server, provisioning, producer, SQS consumer, Lambda entry.

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
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dedup.aws' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
