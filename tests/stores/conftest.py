"""The ``make_store`` fixture: one factory per backend, so every contract test runs on each store."""

from __future__ import annotations

import itertools

import fakeredis
import pytest

from dedup.stores import MemoryStore, RedisStore

BACKENDS = ["memory", "fakeredis", "redis", "cluster", "dynamodb"]


@pytest.fixture(params=BACKENDS)
def make_store(request):
    """``make_store(clock)`` -> a fresh, empty store of the parametrised backend."""
    backend = request.param
    if backend == "memory":
        return lambda clock: MemoryStore(clock=clock)
    if backend == "fakeredis":
        return lambda clock: RedisStore(fakeredis.FakeRedis(), clock=clock)
    if backend == "redis":
        client = request.getfixturevalue("redis_client")
        prefixes = (f"t{n}:" for n in itertools.count())  # stores made in one test stay apart
        return lambda clock: RedisStore(client, clock=clock, prefix=next(prefixes))
    return request.getfixturevalue(f"{backend}_store_factory")
