"""Shared fixtures: the clock, moto's HTTP server, and a real redis-server this session starts itself.

Under CI (``CI`` set) a missing or unstartable redis-server fails the Redis tests
instead of skipping them, so CI can never pass without exercising real Redis.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from dedup.aws.embedded import EmbeddedAWS
from dedup.clock import ManualClock
from dedup.localredis import LocalRedis, redis_server_binary

pytest_plugins = ["fixtures_cluster", "fixtures_dynamodb"]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"real Redis is required under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="session")
def embedded_aws() -> Iterator[EmbeddedAWS]:
    """moto's HTTP server on a loopback port, one for the whole session.

    moto's state is process-wide, so a second server would share it anyway.
    """
    if os.environ.get("AWS_ENDPOINT_URL"):
        pytest.fail("AWS_ENDPOINT_URL is set: unset it, the tests start their own server")
    with EmbeddedAWS() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    """A redis-server on a free loopback port, started for this session and stopped after."""
    if redis_server_binary() is None:
        _unavailable("redis-server is not installed (apt-get install redis-server)")
    server = LocalRedis()
    try:
        server.start()
    except Exception as exc:
        _unavailable(f"could not start redis-server: {exc}")
    yield server
    server.close()


@pytest.fixture
def redis_client(redis_server: LocalRedis) -> Iterator[redis.Redis]:
    """A client of the session's own server, flushed before each test (it is ours alone)."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield client
    client.close()
