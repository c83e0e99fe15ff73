"""RedisStore on a real redis-server started by the test session."""

from __future__ import annotations

import multiprocessing as mp

import pytest
import redis

from dedup import Deduplicator, Outcome
from dedup.clock import ManualClock
from dedup.errors import StoreUnavailableError
from dedup.localredis import LocalRedis
from dedup.stores import ClaimStatus, RedisStore, open_store


def evalsha_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(stats.get(name, {}).get("calls", 0) for name in ("cmdstat_evalsha", "cmdstat_eval"))


def test_every_key_written_has_a_ttl(redis_client, clock):
    store = RedisStore(redis_client, clock=clock)
    keys = [f"k{i}" for i in range(30)]
    claims = store.claim(keys, lease_s=30)
    store.complete(claims[:10], window_s=600)
    store.claim(keys[:5], lease_s=30, slide_s=900)  # sliding sightings rewrite records
    store.release(claims[20:])
    stored = redis_client.keys(store.prefix + "*")
    assert len(stored) == 20
    ttls_ms = [redis_client.pttl(k) for k in stored]
    assert all(ttl > 0 for ttl in ttls_ms), ttls_ms  # -1 would be a key that never expires
    assert max(ttls_ms) <= 900_000


def test_a_batch_costs_one_round_trip_per_phase(redis_server, clock):
    client = redis.Redis.from_url(redis_server.url)
    store = RedisStore(client, clock=clock, prefix="rt:")
    store.complete(store.claim(["warm"], lease_s=5), window_s=5)  # loads the scripts (a fresh server
    store.release(store.claim(["warm2"], lease_s=5))  # has none: each would cost a NOSCRIPT first)
    client.config_resetstat()
    claims = store.claim([f"k{i}" for i in range(10)], lease_s=30)
    store.complete(claims[:7], window_s=60)
    store.release(claims[7:])
    assert evalsha_calls(client) == 3


class CountingConnection(redis.Connection):
    """A connection counting what it sends: one send is one round trip (a pipeline sends once)."""

    sends = 0

    def send_packed_command(self, command, check_health=True):
        CountingConnection.sends += 1
        super().send_packed_command(command, check_health)


def lifecycle(redis_server, clock, prefix: str) -> tuple[redis.Redis, Deduplicator]:
    pool = redis.ConnectionPool.from_url(redis_server.url, connection_class=CountingConnection)
    client = redis.Redis(connection_pool=pool)
    dedup = Deduplicator(RedisStore(client, clock=clock, prefix=prefix), key="envelope-id", lease_s=3)
    dedup.process_batch([{"id": "warm", "detail": {}}], lambda e: None)  # connects, loads two scripts
    dedup.store.settle(dedup.store.claim(["w1"], 3), 60, dedup.store.claim(["w2"], 3), 3)  # and the rest
    dedup.store.release(dedup.store.claim(["w3"], 3))
    client.config_resetstat()
    CountingConnection.sends = 0
    return client, dedup


def trips(client: redis.Redis) -> tuple[int, int]:
    """(round trips, script calls) since the last look; then starts counting afresh."""
    sent = CountingConnection.sends
    calls = evalsha_calls(client)
    client.config_resetstat()
    CountingConnection.sends = 0
    return sent, calls


def test_a_deduplicator_batch_costs_one_round_trip_per_phase(redis_server, clock):
    client, dedup = lifecycle(redis_server, clock, "trips-fast:")
    batch = [{"id": f"e{i}", "detail": {}} for i in range(10)]

    def fail_three(event):
        if event["id"] in ("e1", "e4", "e7"):
            raise RuntimeError("downstream down")

    dedup.process_batch(batch[:5], lambda e: None)
    assert trips(client) == (2, 2)  # claim, complete
    dedup.process_batch([*batch[5:], {"id": "e1", "detail": {}}], fail_three)
    assert trips(client) == (3, 3)  # claim, complete, release


def test_a_slow_batch_adds_one_round_trip_per_beat_and_completes_on_the_beats(redis_server, clock):
    """10 handlers of 0.5 s under lease_s=3 (a beat a second): claim, 5 beats, the last complete.

    Each beat is one pipeline: the completions due and the extension of the leases still held.
    """
    client, dedup = lifecycle(redis_server, clock, "trips-slow:")
    batch = [{"id": f"e{i}", "detail": {}} for i in range(10)]
    dedup.process_batch(batch, lambda e: clock.advance(0.5))
    assert trips(client) == (1 + 5 + 1, 1 + 5 * 2 + 1)


def test_the_url_form_opens_the_same_store_and_hides_the_password():
    with LocalRedis(password="s3cret-pw") as server:
        store = open_store(server.url)
        assert [c.status for c in store.claim(["k"], lease_s=5)] == [ClaimStatus.CLAIMED]
        assert "s3cret-pw" not in store.describe()
        store.close()


def test_a_wrong_password_is_a_clear_store_unavailable_error():
    with LocalRedis(password="right-pw") as server:
        store = open_store(server.url.replace("right-pw", "wrong-pw"))
        with pytest.raises(StoreUnavailableError) as info:
            store.claim(["k"], lease_s=5)
        assert "right-pw" not in str(info.value) and "wrong-pw" not in str(info.value)
        assert "password" in str(info.value).lower() or "auth" in str(info.value).lower()


def test_a_stopped_server_is_a_store_outage_and_fail_closed_decides_nothing(clock):
    server = LocalRedis().start()
    try:
        store = RedisStore(redis.Redis.from_url(server.url, socket_timeout=1), clock=clock)
        dedup = Deduplicator(store)
        server.stop()
        with pytest.raises(StoreUnavailableError):
            store.ping()
        handled = []
        with pytest.raises(StoreUnavailableError, match="unavailable"):
            dedup.process_batch([{"id": "a", "source": "x", "detail": {"n": 1}}], handled.append)
        assert handled == []
        server.start()
        results = dedup.process_batch([{"id": "a", "source": "x", "detail": {"n": 1}}], handled.append)
        assert [r.outcome for r in results] == [Outcome.PROCESSED]
    finally:
        server.close()


def test_fail_open_processes_without_dedup_when_the_store_is_down(clock, caplog):
    server = LocalRedis().start()
    store = RedisStore(redis.Redis.from_url(server.url, socket_timeout=1), clock=clock)
    server.close()
    dedup = Deduplicator(store, on_store_down="fail_open")
    handled = []
    results = dedup.process_batch([{"source": "x", "detail": {"n": 1}}] * 2, handled.append)
    assert [r.outcome for r in results] == [Outcome.PROCESSED, Outcome.PROCESSED]
    assert len(handled) == 2 and dedup.stats.passed_store_down == 2
    assert "fail_open" in caplog.text


def _race_worker(url: str, keys: list[str], barrier, out) -> None:
    store = RedisStore(url, clock=ManualClock())
    barrier.wait()
    claimed = []
    for i in range(0, len(keys), 10):
        batch = store.claim(keys[i : i + 10], lease_s=60)
        claimed += [c.key for c in batch if c.status is ClaimStatus.CLAIMED]
    out.put(claimed)


@pytest.mark.slow
def test_eight_processes_racing_for_the_same_keys_claim_each_exactly_once(redis_server, redis_client):
    keys = [f"race-{i}" for i in range(1000)]
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(8), ctx.Queue()
    procs = [
        ctx.Process(target=_race_worker, args=(redis_server.url, keys[::step], barrier, out))
        for step in (1, -1, 1, -1, 1, -1, 1, -1)
    ]
    for p in procs:
        p.start()
    claimed = [k for _ in procs for k in out.get(timeout=60)]
    for p in procs:
        p.join(timeout=30)
    assert sorted(claimed) == sorted(keys)


def test_a_complete_that_is_not_ours_leaves_the_holders_record_and_its_expiry_as_they_were(redis_client):
    clock = ManualClock(1_000.0)
    store = RedisStore(redis_client, clock=clock, prefix="notours:")
    stale = store.claim(["k"], lease_s=10)
    clock.advance(11)  # our lease lapsed; another consumer claims the key
    holder = store.claim(["k"], lease_s=30, fingerprints=["ab12"])
    skey = holder[0].storage_key
    record, ttl_ms = redis_client.get(skey), redis_client.pttl(skey)
    clock.advance(4)
    assert store.complete(stale, window_s=600) == [False]
    assert redis_client.get(skey) == record
    assert 25_000 - 100 <= redis_client.pttl(skey) <= 26_000  # what was left of the holder's lease
    assert ttl_ms > redis_client.pttl(skey)
    assert store.complete(holder, window_s=600) == [True]


def test_a_fingerprint_with_a_comma_is_refused_before_anything_is_written(redis_client, clock):
    store = RedisStore(redis_client, clock=clock, prefix="comma:")
    with pytest.raises(ValueError, match="without commas"):
        store.claim(["a", "b"], lease_s=10, fingerprints=["ok", "not,ok"])
    assert redis_client.keys("comma:*") == []


def test_a_server_that_lost_its_scripts_still_claims_and_completes_once_each(redis_client, clock):
    store = RedisStore(redis_client, clock=clock, prefix="flushed:")
    store.complete(store.claim(["warm"], lease_s=5), window_s=5)  # the scripts are cached
    redis_client.script_flush()  # as after a restart or a failover
    redis_client.config_resetstat()
    claims = store.claim(["a", "b"], lease_s=30)
    assert [c.status for c in claims] == [ClaimStatus.CLAIMED] * 2
    assert store.complete(claims, window_s=60) == [True, True]
    assert [c.status for c in store.claim(["a", "b"], lease_s=30)] == [ClaimStatus.DUPLICATE] * 2
    stats = redis_client.info("commandstats")
    assert stats["cmdstat_eval"]["calls"] == 2  # each script re-sent once in full, then cached
    assert stats["cmdstat_evalsha"]["calls"] == 3


def test_a_prefix_beyond_ascii_names_the_keys_as_the_client_encodes_them(redis_client, clock):
    store = RedisStore(redis_client, clock=clock, prefix="dédup→")
    claims = store.claim(["k"], lease_s=30)
    assert store.complete(claims, window_s=60) == [True]
    assert redis_client.keys("*") == [claims[0].storage_key.encode()]


def test_a_prefix_beyond_ascii_is_encoded_with_the_clients_own_encoding(redis_server, redis_client, clock):
    latin = redis.Redis.from_url(redis_server.url, encoding="latin-1")
    store = RedisStore(latin, clock=clock, prefix="dédup:")
    claims = store.claim(["k"], lease_s=30)
    assert store.complete(claims, window_s=60) == [True]
    assert redis_client.keys("*") == [claims[0].storage_key.encode("latin-1")]
    store.close()
    latin.close()
