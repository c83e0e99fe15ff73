"""AWS fixtures: one moto HTTP server per test session (``EmbeddedAWS``), reset before each test.

Tests talk to it through boto3 exactly as to AWS. They never enter ``moto.mock_aws``
(its process-wide state would wipe the server's), and they keep queues drained.
"""

from __future__ import annotations

import uuid

import pytest
from aws_support import MAX_RECEIVE_COUNT, VISIBILITY_TIMEOUT_S, Stack

from dedup.aws.embedded import EmbeddedAWS
from dedup.aws.stack import StackConfig, provision


@pytest.fixture
def aws(embedded_aws: EmbeddedAWS) -> EmbeddedAWS:
    """The session's server, emptied (POST /moto-api/reset) before the test."""
    embedded_aws.reset()
    return embedded_aws


@pytest.fixture
def stack(aws: EmbeddedAWS) -> Stack:
    """A fresh stack: 1 s visibility timeout, dead-lettered after 3 receives."""
    config = StackConfig(name=f"t{uuid.uuid4().hex[:10]}", visibility_timeout_s=VISIBILITY_TIMEOUT_S,
                         max_receive_count=MAX_RECEIVE_COUNT, receive_wait_s=0)
    return Stack(aws, provision(aws, config), config, aws.client("sqs"), aws.client("events"))
