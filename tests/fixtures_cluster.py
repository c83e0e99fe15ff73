"""Fixtures for a real Redis Cluster that this test session starts on loopback ports.

``redis_cluster`` is one 3-master :class:`~dedup.localredis.LocalRedisCluster`
for the whole session; ``cluster_store_factory`` builds stores over it with
every node flushed first (the cluster is ours alone). Under ``CI`` a cluster
that cannot start fails the tests instead of skipping them.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from dedup.clock import Clock
from dedup.localredis import LocalRedisCluster, redis_cli_binary, redis_server_binary
from dedup.stores import RedisStore, WindowStore


def cluster_or_skip(reason: str) -> NoReturn:
    """Skip for ``reason``, or fail under CI, where the cluster tests must run."""
    if os.environ.get("CI"):
        pytest.fail(f"a local Redis Cluster is required under CI: {reason}")
    pytest.skip(reason)


def start_cluster(**options: Any) -> LocalRedisCluster:
    """A started ``LocalRedisCluster(**options)``, or a skip (a failure under CI) saying why not."""
    if redis_server_binary() is None or redis_cli_binary() is None:
        cluster_or_skip("redis-server and redis-cli are needed (apt-get install redis-server redis-tools)")
    try:
        return LocalRedisCluster(**options).start()
    except Exception as exc:
        cluster_or_skip(f"could not start a local Redis Cluster: {exc}")


def cluster_client(cluster: LocalRedisCluster, **kwargs: Any) -> RedisCluster:
    """A RedisCluster client of ``cluster``."""
    return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in cluster.startup_nodes], **kwargs)


def flush_cluster(cluster: LocalRedisCluster) -> None:
    """FLUSHALL on every running node of ``cluster`` (a cluster this session started)."""
    for node in cluster.nodes:
        if node.running:
            with redis.Redis(host="127.0.0.1", port=node.port) as client:
                client.flushall()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalRedisCluster]:
    """A 3-master Redis Cluster on free loopback ports, for this session only."""
    cluster = start_cluster()
    yield cluster
    cluster.close()


@pytest.fixture
def cluster_store_factory(redis_cluster: LocalRedisCluster) -> Iterator[Callable[[Clock], WindowStore]]:
    """``factory(clock) -> RedisStore`` over the session cluster, emptied before the test.

    Each store gets its own prefix, so the stores made in one test are apart, as
    fresh stores are (consumers sharing a window share one store's prefix).
    """
    flush_cluster(redis_cluster)
    prefixes = (f"t{n}:" for n in itertools.count())
    stores: list[WindowStore] = []

    def factory(clock: Clock) -> WindowStore:
        store = RedisStore(redis_cluster.url, clock=clock, prefix=next(prefixes))
        stores.append(store)
        return store

    yield factory
    for store in stores:
        store.close()
