"""RedisStore under the failures a real server produces: every one is an outage, never a crash or a double.

Each failure is produced on a real redis-server this test starts (REPLICAOF for
READONLY, ``maxmemory`` for OOM, a busy script for BUSY, a killed snapshot for
MISCONF, ``DEBUG RELOAD`` for LOADING, ``DEBUG SLEEP`` for a stalled server);
the reply codes a single server cannot produce (cluster and replica states) are
checked on the classifier.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry
from skew_support import copies_while_held_and_after

from dedup import Deduplicator, Outcome
from dedup.clock import ManualClock
from dedup.errors import StoreUnavailableError
from dedup.localredis import LocalRedis, redis_server_binary
from dedup.stores import ClaimStatus, RedisStore

pytestmark = pytest.mark.redis

DEBUG = ("--enable-debug-command", "local")


@pytest.fixture
def server() -> Iterator[LocalRedis]:
    """A redis-server of this test alone (its configuration is changed), DEBUG enabled."""
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed")
    with LocalRedis(extra_args=DEBUG) as local:
        yield local


@pytest.fixture
def admin(server: LocalRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(server.url)
    yield client
    client.close()


def commands(client: redis.Redis, *names: str) -> int:
    stats = client.info("commandstats")
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in names)


# ---- the classifier -------------------------------------------------------------------------------


@pytest.mark.parametrize("reply", [
    "READONLY You can't write against a read only replica.",
    "OOM command not allowed when used memory > 'maxmemory'.",
    "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.",
    "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
    "LOADING Redis is loading the dataset in memory",
    "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
    "TRYAGAIN Multiple keys request during rehashing of slot",
    "CLUSTERDOWN The cluster is down",
    "NOREPLICAS Not enough good replicas to write.",
])
def test_every_reply_that_means_cannot_serve_now_is_an_outage(reply):
    """As redis-py parses it: a class of its own where it has one, else a ResponseError with the code."""
    from redis._parsers.base import BaseParser

    parsed = BaseParser.parse_error(reply)
    assert RedisStore.is_outage(parsed), (type(parsed), parsed)


@pytest.mark.parametrize("reply", [
    "ERR Error running script (call to f_x): @user_script:1: user_script:1: Script attempted to access "
    "a non local key in a cluster node",
    "WRONGTYPE Operation against a key holding the wrong kind of value",
    "NOSCRIPT No matching script. Please use EVAL.",
    "ERR unknown command 'FOO'",
])
def test_a_script_or_usage_error_is_not_hidden_as_an_outage(reply):
    from redis._parsers.base import BaseParser

    assert not RedisStore.is_outage(BaseParser.parse_error(reply))


# ---- real failures ------------------------------------------------------------------------------


def test_a_demoted_primary_is_an_outage_and_a_demotion_mid_handler_escapes_nothing(server, admin, caplog):
    """REPLICAOF turns the store's server into a read-only replica while a handler runs (a failover)."""
    store = RedisStore(server.url)
    dedup = Deduplicator(store, key="envelope-id", store_retry_s=0.3)
    with LocalRedis() as new_primary:

        def demote(_event):
            admin.replicaof("127.0.0.1", new_primary.port)

        with caplog.at_level(logging.ERROR, logger="dedup"):
            results = dedup.process_batch([{"id": "a", "detail": {}}, {"id": "b", "detail": {}}], demote)
        assert [r.outcome for r in results] == [Outcome.PROCESSED] * 2  # effects happened: acknowledge
        assert dedup.stats.completion_failed == 2
        assert any("READONLY" in r.getMessage() or "read only" in r.getMessage() for r in caplog.records)
        with pytest.raises(StoreUnavailableError, match="read only"):
            store.claim(["c"], lease_s=5)
        with pytest.raises(StoreUnavailableError):  # fail closed: nothing decided, nothing run
            dedup.process_batch([{"id": "c", "detail": {}}], demote)
        admin.replicaof("NO", "ONE")
    store.close()


def test_out_of_memory_is_an_outage(server, admin):
    store = RedisStore(server.url)
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", 1)
    with pytest.raises(StoreUnavailableError, match="maxmemory"):
        store.claim(["k"], lease_s=5)
    admin.config_set("maxmemory", 0)
    assert store.claim(["k"], lease_s=5)[0].status is ClaimStatus.CLAIMED
    store.close()


def test_a_server_busy_running_a_script_is_an_outage(server, admin):
    store = RedisStore(server.url)
    admin.config_set("busy-reply-threshold", 50)
    looping = redis.Redis.from_url(server.url)
    ended: list[BaseException] = []

    def run_forever():
        try:
            looping.eval("while true do end", 0)
        except redis.exceptions.ResponseError as exc:
            ended.append(exc)  # SCRIPT KILL ends it

    thread = threading.Thread(target=run_forever)
    thread.start()
    try:
        with pytest.raises(StoreUnavailableError, match="BUSY"):
            for n in range(100_000):  # until a claim meets the script (past busy-reply-threshold)
                store.claim([f"k{n}"], lease_s=5)
    finally:
        with contextlib.suppress(redis.exceptions.ResponseError):
            while thread.is_alive():
                admin.script_kill()
                thread.join(timeout=1)
    assert ended
    store.close()


def test_writes_stopped_by_a_failed_snapshot_are_an_outage(server, admin):
    """MISCONF: a snapshot failed (its child killed) and stop-writes-on-bgsave-error is on."""
    store = RedisStore(server.url)
    admin.set("some", "data")
    admin.config_set("save", "3600 1")
    admin.config_set("rdb-key-save-delay", 10_000_000)  # the snapshot child lingers until killed
    admin.bgsave()
    pid = server._proc.pid  # the redis-server this test started; its snapshot child is the only child
    [child] = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    os.kill(int(child), signal.SIGKILL)
    for _ in range(200):
        if admin.info("persistence")["rdb_last_bgsave_status"] == "err":
            break
        time.sleep(0.01)
    with pytest.raises(StoreUnavailableError, match="MISCONF"):
        store.claim(["k"], lease_s=5)
    admin.config_set("rdb-key-save-delay", 0)
    admin.config_set("save", "")
    store.close()


def test_a_server_loading_its_dataset_is_an_outage(server, admin):
    store = RedisStore(server.url)
    for i in range(40):
        admin.set(f"bulk{i}", "v" * 50_000)
    admin.config_set("key-load-delay", 20_000)
    admin.config_set("loading-process-events-interval-bytes", 1024)
    reloading = admin.connection_pool.get_connection()
    reloading.send_command("DEBUG", "RELOAD")
    outage = None
    for n in range(2000):  # until a claim meets the reload
        try:
            store.claim([f"q{n}"], lease_s=5)
        except StoreUnavailableError as exc:
            outage = exc
            break
    assert outage is not None and "loading" in str(outage).lower()
    assert reloading.read_response() == b"OK"
    admin.connection_pool.release(reloading)
    store.close()


def test_a_stalled_server_with_a_retrying_client_still_answers_claimed(server, admin):
    """The claim script runs twice (redis-py re-sends after a timeout); the second run finds its own token.

    DEBUG SLEEP is queued on the very connection the claim will use, so the first
    send is surely stalled; redis-py times out, reconnects and sends again.
    """
    pool = redis.BlockingConnectionPool.from_url(server.url, max_connections=1, socket_timeout=0.25,
                                                 retry=Retry(NoBackoff(), 5))
    client = redis.Redis(connection_pool=pool)
    store = RedisStore(client)
    store.claim(["warm"], lease_s=5)  # loads the script
    admin.config_resetstat()
    conn = pool.get_connection()
    conn.send_command("DEBUG", "SLEEP", "0.6")  # its reply is never read: the retry drops this socket
    pool.release(conn)

    [claim] = store.claim(["k"], lease_s=30)

    assert commands(admin, "evalsha") >= 2  # the script did run more than once
    assert claim.status is ClaimStatus.CLAIMED
    assert store.complete([claim], window_s=60) == [True]
    client.close()


def test_a_store_built_from_a_url_does_not_retry(server):
    store = RedisStore(server.url)
    assert store.client.get_retry().get_retries() == 0
    store.close()


# ---- store time, not client time --------------------------------------------------------------------


def test_without_an_injected_clock_leases_are_decided_on_the_servers_clock(server, admin):
    store = RedisStore(redis.Redis.from_url(server.url))
    assert store.time_source == "server"
    seconds, micros = admin.time()
    [claim] = store.claim(["k"], lease_s=30)
    deadline_ms = int(admin.get(claim.storage_key).split(b",")[0][1:])
    server_ms = seconds * 1000 + micros // 1000
    assert server_ms + 30_000 <= deadline_ms <= server_ms + 31_000


def skewed_consumers(url: str, time_source: str, skew_s: float) -> tuple[Deduplicator, Deduplicator]:
    """Two consumers on one server, one clock ``skew_s`` ahead of the other (and of the server)."""
    now_s = time.time()
    fast = RedisStore(redis.Redis.from_url(url), clock=ManualClock(now_s + skew_s), time_source=time_source)
    slow = RedisStore(redis.Redis.from_url(url), clock=ManualClock(now_s), time_source=time_source)
    return (Deduplicator(fast, key="envelope-id", window_s=20, lease_s=20),
            Deduplicator(slow, key="envelope-id", window_s=20, lease_s=20))


@pytest.mark.parametrize("skew_s", [30.0, -30.0])
def test_consumers_with_skewed_clocks_process_every_event_once_on_server_time(server, skew_s):
    ahead, behind = skewed_consumers(server.url, "server", skew_s)
    effects = copies_while_held_and_after(ahead, behind, 10)
    assert effects == Counter({f"e{i}": 1 for i in range(10)})


@pytest.mark.parametrize("skew_s", [30.0, -30.0])
def test_on_client_time_the_same_skew_doubles_events(server, skew_s):
    """The control: deciding on the consumers' own clocks, a 30 s skew lets copies through."""
    ahead, behind = skewed_consumers(server.url, "client", skew_s)
    effects = copies_while_held_and_after(ahead, behind, 10)
    assert max(effects.values()) == 2


# ---- durability: WAIT-acknowledged completes ---------------------------------------------------------


def test_wait_acknowledged_completes_reach_the_replica_in_the_same_round_trip(server, admin):
    admin.config_set("repl-diskless-sync-delay", 0)
    with LocalRedis() as replica:
        replica_client = redis.Redis.from_url(replica.url)
        replica_client.replicaof("127.0.0.1", server.port)
        for _ in range(500):  # the replica's initial sync
            if replica_client.info("replication").get("master_link_status") == "up":
                break
            time.sleep(0.01)
        store = RedisStore(server.url, replicas_acked=1, replica_timeout_ms=2000)
        store.complete(store.claim(["warm"], lease_s=30), window_s=60)  # loads the scripts
        claims = store.claim(["a", "b"], lease_s=30)
        admin.config_resetstat()
        assert store.complete(claims, window_s=60) == [True, True]
        assert (commands(admin, "evalsha"), commands(admin, "wait")) == (1, 1)
        assert store.unacked_completes == 0
        assert all(replica_client.get(c.storage_key) is not None for c in claims)  # on the replica now

        store.close()

        replica_client.replicaof("NO", "ONE")  # the replica is gone: WAIT times out short
        store = RedisStore(server.url, replicas_acked=1, replica_timeout_ms=100)
        more = store.claim(["c"], lease_s=30)
        assert store.complete(more, window_s=60) == [True]  # recorded on the primary ...
        assert store.unacked_completes == 1  # ... and counted as not replicated
        store.close()
        replica_client.close()
