"""Fixtures of the reliability tests: moto's HTTP server, a short-fused stack, a throwaway Redis.

The stack helpers come from ``tests/aws/aws_support.py`` (imported as ``aws.aws_support``).
The server here is a second ``EmbeddedAWS`` in the session; moto's state is process-wide,
so the stacks carry unique names and each test resets nothing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from aws.aws_support import Stack

from dedup.aws.embedded import EmbeddedAWS
from dedup.aws.stack import StackConfig, provision
from dedup.localredis import LocalRedis, redis_server_binary

VISIBILITY_TIMEOUT_S = 1
MAX_RECEIVE_COUNT = 2  # poison reaches the DLQ on its third receive


def make_stack(aws: EmbeddedAWS, **options) -> Stack:
    """A fresh, uniquely named stack on ``aws``."""
    options = {"visibility_timeout_s": VISIBILITY_TIMEOUT_S, "max_receive_count": MAX_RECEIVE_COUNT,
               "receive_wait_s": 0, **options}
    config = StackConfig(name=f"r{uuid.uuid4().hex[:10]}", **options)
    return Stack(aws, provision(aws, config), config, aws.client("sqs"), aws.client("events"))


@pytest.fixture
def stack(embedded_aws: EmbeddedAWS) -> Stack:
    """A fresh stack: 1 s visibility timeout, dead-lettered after 2 receives."""
    return make_stack(embedded_aws)


@pytest.fixture
def patient_stack(embedded_aws: EmbeddedAWS) -> Stack:
    """A fresh stack that dead-letters only after 5 receives (for tests that fail on purpose first)."""
    return make_stack(embedded_aws, max_receive_count=5)


@pytest.fixture
def local_redis() -> Iterator[LocalRedis]:
    """A redis-server of this test alone, free to be stopped and restarted."""
    if redis_server_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("real Redis is required under CI: redis-server is not installed")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with LocalRedis() as server:
        yield server
