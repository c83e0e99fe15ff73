"""The connection a RedisStore keeps between requests: what it holds, when it lets go, and that
no request ever lands on a connection another thread, process or failure has touched.

Each test takes ``redis_client`` for its flush of the session's server (keys are reused).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading

import pytest
import redis

from dedup.errors import StoreUnavailableError
from dedup.stores import ClaimStatus, RedisStore


def in_use(pool: redis.ConnectionPool) -> int:
    return len(pool._in_use_connections)


def lifecycle_ok(store: RedisStore, keys: list[str]) -> bool:
    claims = store.claim(keys, lease_s=30)
    return all(c.status is ClaimStatus.CLAIMED for c in claims) and all(store.complete(claims, window_s=60))


def test_a_store_on_a_default_pool_keeps_one_connection_between_requests_and_returns_it_on_close(
        redis_server, redis_client):
    client = redis.Redis.from_url(redis_server.url)
    pool = client.connection_pool
    taken = []
    get_connection = pool.get_connection
    pool.get_connection = lambda *a, **k: taken.append(1) or get_connection(*a, **k)
    store = RedisStore(client, prefix="keep:")

    for i in range(20):
        assert lifecycle_ok(store, [f"k{i}a", f"k{i}b"])

    assert len(taken) == 1  # 40 requests, one connection taken from the pool
    assert in_use(pool) == 1
    client.get("other")  # the client's own commands take another connection meanwhile
    store.close()
    assert in_use(pool) == 0
    client.close()


@pytest.mark.parametrize("make_pool", [
    lambda url: redis.BlockingConnectionPool.from_url(url, max_connections=1, timeout=0.5),
    lambda url: redis.ConnectionPool.from_url(url, max_connections=1),
], ids=["blocking", "one-connection"])
def test_a_store_keeps_no_connection_of_a_pool_the_client_could_run_short_of(redis_server, redis_client,
                                                                            make_pool):
    pool = make_pool(redis_server.url)
    client = redis.Redis(connection_pool=pool)
    store = RedisStore(client, prefix="short:")
    assert lifecycle_ok(store, ["a", "b"])

    assert client.set("mine", 1)  # the pool's only connection is free again (else: no connection)
    client.close()


def test_a_connection_that_failed_mid_request_goes_back_to_the_pool_and_the_next_request_reconnects(
        redis_server, redis_client):
    store = RedisStore(redis_server.url, prefix="failed:")  # no retries: the failure surfaces
    assert lifecycle_ok(store, ["warm"])
    [kept] = store._kept
    host, port = kept._sock.getsockname()[:2]
    assert redis_client.client_kill_filter(addr=f"{host}:{port}") == 1  # the server drops it

    with pytest.raises(StoreUnavailableError):
        store.claim(["lost"], lease_s=30)
    assert store._kept == [] and in_use(store.client.connection_pool) == 0  # given back

    assert lifecycle_ok(store, ["after"])
    assert store._kept[0]._sock.getsockname()[:2] != (host, port)  # a new socket
    store.close()


def test_a_connection_redis_py_marked_for_reconnection_is_not_used_again_as_it_was(redis_server,
                                                                                 redis_client):
    client = redis.Redis.from_url(redis_server.url)
    store = RedisStore(client, prefix="marked:")
    assert lifecycle_ok(store, ["warm"])
    [kept] = store._kept
    old_socket = kept._sock
    kept.mark_for_reconnect()  # as a server's maintenance notification does

    assert lifecycle_ok(store, ["after"])
    assert all(conn._sock is not old_socket for conn in store._kept)
    store.close()
    client.close()


def test_threads_sharing_a_store_each_use_a_connection_of_their_own_and_every_key_is_decided_once(
        redis_server, redis_client):
    client = redis.Redis.from_url(redis_server.url)
    store = RedisStore(client, prefix="threads:")
    barrier = threading.Barrier(8)
    results: list[bool] = []

    def work(t: int) -> None:
        barrier.wait()
        results.extend(lifecycle_ok(store, [f"t{t}-{i}-{j}" for j in range(10)]) for i in range(30))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert results == [True] * 240
    assert len(store._kept) <= 1
    assert in_use(client.connection_pool) == len(store._kept)
    store.close()
    client.close()


def _child_lifecycle(store: RedisStore, out) -> None:
    out.put((os.getpid(), lifecycle_ok(store, [f"child{i}" for i in range(10)]), store._kept[0].pid))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_never_writes_on_the_connection_its_parent_kept(redis_server, redis_client):
    client = redis.Redis.from_url(redis_server.url)
    store = RedisStore(client, prefix="fork:")
    assert lifecycle_ok(store, ["parent-warm"])
    [kept] = store._kept

    ctx = mp.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_child_lifecycle, args=(store, out))
    child.start()
    child_pid, child_ok, child_conn_pid = out.get(timeout=30)
    child.join(timeout=30)

    assert child_ok and child_conn_pid == child_pid  # the child opened a connection of its own
    assert child.exitcode == 0
    assert store._kept == [kept]  # the parent's connection, still in step with the server
    assert lifecycle_ok(store, [f"parent{i}" for i in range(10)])
    store.close()
    client.close()
