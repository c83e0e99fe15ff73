"""What each Redis setting keeps through a crash or a failover, on real redis-servers (the table of
README's "Durability" section): the dedup store's records are ordinary writes, so this is what they get."""

from __future__ import annotations

import pytest
import redis

from dedup.localredis import LocalRedis, LocalRedisFailover

pytestmark = pytest.mark.redis


@pytest.mark.parametrize("persistence, kept", [
    ("none", False),
    ("aof-everysec", True),  # a process crash: the write was already handed to the OS
    ("aof-always", True),
])
def test_what_a_crash_and_restart_keeps_by_persistence_setting(redis_server, persistence, kept):
    with LocalRedis(persistence=persistence) as server:
        with server.client() as c:
            c.set("completed", "1")
        server.kill()  # SIGKILL: no shutdown save, no final fsync
        server.start()
        with server.client() as c:
            assert (c.get("completed") == b"1") is kept


def test_a_failover_loses_unreplicated_writes_keeps_wait_acknowledged_ones_and_demotes_with_readonly(
        redis_server):
    with LocalRedisFailover(replication_delay_ms=300) as pair:
        client = redis.Redis.from_url(pair.url)
        client.set("acked", "1")
        assert client.execute_command("WAIT", 1, 5000) == 1  # the replica has it
        client.set("unacked", "1")  # acknowledged by the primary only, still on the lagging link
        old = pair.primary
        pair.demote_primary()
        with old.client() as demoted, pytest.raises(redis.exceptions.ReadOnlyError):
            demoted.set("late", "1")  # a client still on the old primary: READONLY, not lost silently
        pair.flip()
        after = redis.Redis.from_url(pair.url)
        assert after.get("acked") == b"1" and after.get("unacked") is None
        after.set("new", "1")  # the promoted replica takes writes
        client.close()
        after.close()
