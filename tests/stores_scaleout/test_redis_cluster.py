"""RedisStore on a real 3-master Redis Cluster started by this test session.

Batches span every node; the claim scripts are grouped by hash slot and
pipelined per node; an outage (a master stopped or hung) fails closed with
StoreUnavailableError and leaves no key claimed or deleted by the failed call.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from fixtures_cluster import cluster_client, flush_cluster, start_cluster
from hypothesis import HealthCheck, given, settings
from scaleout_ops import STEPS, check_batch_lifecycle, replay_ops, run_race

from dedup.clock import ManualClock
from dedup.errors import StoreUnavailableError
from dedup.localredis import LocalRedisCluster, free_port
from dedup.service import Deduplicator
from dedup.stores import ClaimStatus, MemoryStore, RedisStore, open_store

pytestmark = pytest.mark.redis

CLAIMED, DUPLICATE, IN_FLIGHT = ClaimStatus.CLAIMED, ClaimStatus.DUPLICATE, ClaimStatus.IN_FLIGHT
OUTAGE_TIMEOUT_S = 0.3  # socket timeout of the stores in the outage tests (a hung node)
CLUSTER_FAIL_DEADLINE_S = 15.0  # the survivors mark a stopped master failed after ~2 node timeouts


def node_of(cluster: LocalRedisCluster, store: RedisStore, key: str) -> int:
    """Index in ``cluster.nodes`` of the node serving ``key``'s storage key."""
    port = store.client.get_node_from_key(store.storage_key(key)).port
    return [n.port for n in cluster.nodes].index(port)


# Commands counted by INFO commandstats that are no round trip of the store: the scripts'
# own GET/SET/DEL, and the handshake and INFO of the probe connection itself.
NOT_ROUND_TRIPS = {"get", "set", "del", "hello", "client|setinfo", "info"}


def owner_ports(cluster: LocalRedisCluster, slot: int) -> list[int]:
    """The port of ``slot``'s owner as each node sees it."""
    ports = []
    for node in cluster.nodes:
        with redis.Redis(port=node.port) as client:
            ranges = client.execute_command("CLUSTER SLOTS")
        ports += [int(r[2][1]) for r in ranges if int(r[0]) <= slot <= int(r[1])]
    return ports


def command_calls(cluster: LocalRedisCluster) -> list[dict[str, int]]:
    """Client commands served so far per command name, per running node."""
    calls = []
    for node in cluster.nodes:
        with redis.Redis(port=node.port) as client:
            stats = client.info("commandstats")
        calls.append({name.removeprefix("cmdstat_"): s["calls"] for name, s in stats.items()
                      if name.removeprefix("cmdstat_") not in NOT_ROUND_TRIPS})
    return calls


def script_calls(cluster: LocalRedisCluster) -> list[int]:
    """EVALSHA + EVAL calls served so far, per running node."""
    return [c.get("evalsha", 0) + c.get("eval", 0) for c in command_calls(cluster)]


def stored_keys(cluster: LocalRedisCluster, index: int) -> set[str]:
    """Keys held by node ``index`` (SCAN: served even while the cluster is down)."""
    with redis.Redis(port=cluster.nodes[index].port, decode_responses=True) as client:
        return set(client.scan_iter(count=1000))


@pytest.fixture
def own_cluster(request) -> Iterator[LocalRedisCluster]:
    """A cluster for one test that breaks it; ``indirect`` parameters are LocalRedisCluster options."""
    cluster = start_cluster(**getattr(request, "param", {}))
    yield cluster
    cluster.close()


def test_when_a_batch_spans_every_node_then_the_lifecycle_holds(cluster_store_factory, clock):
    store = cluster_store_factory(clock)
    keys = [f"evt-{i}" for i in range(60)]
    assert len({store.client.get_node_from_key(store.storage_key(k)).name for k in keys}) == 3
    check_batch_lifecycle(store, clock, keys)


def test_when_keys_span_slots_then_each_phase_is_one_script_call_per_slot(redis_cluster, clock):
    store = RedisStore(cluster_client(redis_cluster), clock=clock, prefix=f"{uuid.uuid4().hex}:")
    store.claim([f"warm-{i}" for i in range(30)], lease_s=30)  # every node has the scripts cached
    keys = [f"evt-{i}" for i in range(10)]
    slots_per_node = [0] * 3
    for slot in {store.client.keyslot(store.storage_key(k)) for k in keys}:
        port = store.client.nodes_manager.get_node_from_slot(slot).port
        slots_per_node[[n.port for n in redis_cluster.nodes].index(port)] += 1

    before = command_calls(redis_cluster)
    store.complete(store.claim(keys, lease_s=30), window_s=60)
    after = command_calls(redis_cluster)

    served = [{c: n - b.get(c, 0) for c, n in a.items() if n != b.get(c, 0)}
              for a, b in zip(after, before, strict=True)]
    # Nothing but the scripts: no COMMAND GETKEYS or SCRIPT LOAD round trips on the side.
    assert served == [{"evalsha": 2 * n} if n else {} for n in slots_per_node]


def test_when_the_prefix_pins_one_slot_then_the_batch_is_one_script_call(redis_cluster, clock):
    store = RedisStore(cluster_client(redis_cluster), clock=clock, prefix=f"{{{uuid.uuid4().hex}}}:")
    store.claim(["warm"], lease_s=30)
    before = sum(script_calls(redis_cluster))
    claims = store.claim([f"evt-{i}" for i in range(10)], lease_s=30)
    assert sum(script_calls(redis_cluster)) - before == 1
    assert [c.status for c in claims] == [CLAIMED] * 10


def test_when_nodes_lost_their_scripts_then_claims_still_run(redis_cluster, cluster_store_factory, clock):
    store = cluster_store_factory(clock)
    keys = [f"evt-{i}" for i in range(20)]
    store.complete(store.claim(keys, lease_s=30), window_s=60)
    for node in redis_cluster.nodes:  # as after a restart or a failover
        with redis.Redis(port=node.port) as client:
            client.script_flush()

    assert [c.status for c in store.claim(keys, lease_s=30)] == [DUPLICATE] * 20
    assert [c.status for c in store.claim(["new"], lease_s=30)] == [CLAIMED]


def test_when_a_slot_moves_under_the_client_then_the_scripts_follow_it(redis_cluster, cluster_store_factory,
                                                                      clock):
    store = cluster_store_factory(clock)
    store.claim(["warm"], lease_s=30)  # the client has cached the slot table
    skey = store.storage_key("evt")
    source = node_of(redis_cluster, store, "evt")
    target = (source + 1) % 3
    with redis.Redis(port=redis_cluster.nodes[target].port) as client:
        target_id = client.cluster("MYID")
    slot = store.client.keyslot(skey)
    for index in (target, *(i for i in range(3) if i != target)):  # an empty slot changes owner
        with redis.Redis(port=redis_cluster.nodes[index].port) as client:
            client.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
    # Without a higher config epoch, the old owner's gossip can hand the slot back to it.
    with redis.Redis(port=redis_cluster.nodes[target].port) as client:
        client.execute_command("CLUSTER BUMPEPOCH")
    wanted = redis_cluster.nodes[target].port
    deadline = time.monotonic() + 10
    while sorted(set(owner_ports(redis_cluster, slot))) != [wanted]:
        assert time.monotonic() < deadline, f"the nodes never agreed on slot {slot}'s new owner"
        time.sleep(0.05)

    claims = store.claim(["evt"], lease_s=30)  # sent to the old owner, which answers MOVED
    assert [c.status for c in claims] == [CLAIMED]
    assert store.complete(claims, window_s=60) == [True]
    assert [c.status for c in store.claim(["evt"], lease_s=30)] == [DUPLICATE]
    with redis.Redis(port=redis_cluster.nodes[target].port) as client:
        assert client.exists(skey) == 1


def test_when_opened_from_a_cluster_url_then_it_is_a_cluster_store(redis_cluster, clock):
    with open_store(redis_cluster.url, clock=clock, prefix=f"{uuid.uuid4().hex}:") as store:
        assert isinstance(store, RedisStore) and store.cluster
        assert store.describe().startswith("redis cluster at redis+cluster://127.0.0.1:")
        assert [c.status for c in store.claim(["a", "b", "c"], lease_s=5)] == [CLAIMED] * 3


def test_when_no_cluster_node_answers_then_opening_fails_closed_without_the_password():
    url = f"redis+cluster://:s3cret@127.0.0.1:{free_port()}"
    with pytest.raises(StoreUnavailableError) as err:
        open_store(url)
    assert "s3cret" not in str(err.value)
    assert f"redis cluster at redis+cluster://:***@127.0.0.1:{url.rsplit(':', 1)[1]}" in str(err.value)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_cluster_store_matches_the_memory_model(redis_cluster, steps):
    client = cluster_client(redis_cluster)
    cluster_clock, model_clock = ManualClock(), ManualClock()
    store = RedisStore(client, clock=cluster_clock, prefix=f"{uuid.uuid4().hex}:")
    try:
        observed = replay_ops(store, cluster_clock, steps)
    finally:
        client.close()
    assert observed == replay_ops(MemoryStore(clock=model_clock), model_clock, steps)


@pytest.mark.slow
def test_when_processes_race_for_the_same_keys_then_each_key_is_claimed_once(redis_cluster):
    keys = [f"evt-{i}" for i in range(300)]
    flush_cluster(redis_cluster)  # the workers use the default prefix: start from an empty window

    race = run_race(redis_cluster.url, keys, processes=4)

    everything = [k for claimed in race.claimed for k in claimed]
    assert sorted(everything) == sorted(keys)  # each key claimed by exactly one process
    assert all(seen["claimed"] + seen["duplicate"] + seen["in_flight"] == len(keys) for seen in race.seen)
    assert sum(seen["claimed"] for seen in race.seen) == len(keys)


@pytest.mark.slow
def test_when_a_master_stops_then_claims_fail_closed_and_nothing_is_lost(own_cluster, clock):
    store = RedisStore(own_cluster.url, clock=clock, socket_timeout_s=OUTAGE_TIMEOUT_S)
    done = [f"done-{i}" for i in range(30)]
    assert all(store.complete(store.claim(done, lease_s=30), window_s=600))
    survivors = [1, 2]
    before = {i: stored_keys(own_cluster, i) for i in survivors}
    batch = [f"new-{i}" for i in range(30)]
    assert {node_of(own_cluster, store, k) for k in batch} == {0, 1, 2}
    handled: list[str] = []
    dedup = Deduplicator(store, key="envelope-id")

    own_cluster.stop_node(0)

    with pytest.raises(StoreUnavailableError, match=r"redis cluster at .* is unavailable"):
        store.claim(batch, lease_s=30)
    with pytest.raises(StoreUnavailableError):
        dedup.process_batch([{"id": k} for k in batch], lambda e: handled.append(e["id"]))
    assert handled == []
    assert {i: stored_keys(own_cluster, i) for i in survivors} == before  # none claimed, none deleted

    # Once the survivors mark the master failed, even keys they serve are refused.
    deadline = time.monotonic() + CLUSTER_FAIL_DEADLINE_S
    while own_cluster.cluster_states() != ["fail", "fail"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert own_cluster.cluster_states() == ["fail", "fail"]
    on_survivors = [k for k in batch if node_of(own_cluster, store, k) in survivors]
    with pytest.raises(StoreUnavailableError, match=r"CLUSTERDOWN|cluster is down|not covered"):
        store.claim(on_survivors, lease_s=30)
    assert {i: stored_keys(own_cluster, i) for i in survivors} == before
    store.close()


@pytest.mark.slow
# The others must not mark the hung node failed (cluster down) before the claim is undone.
@pytest.mark.parametrize("own_cluster", [{"node_timeout_ms": 15_000}], indirect=True)
def test_when_a_master_hangs_then_claims_granted_elsewhere_are_undone(own_cluster, clock):
    store = RedisStore(own_cluster.url, clock=clock, socket_timeout_s=OUTAGE_TIMEOUT_S)
    store.claim([f"warm-{i}" for i in range(30)], lease_s=30)  # connections open, scripts cached
    survivors = [0, 2]
    before = {i: stored_keys(own_cluster, i) for i in survivors}
    batch = [f"new-{i}" for i in range(12)]
    assert {node_of(own_cluster, store, k) for k in batch} == {0, 1, 2}
    calls_before = script_calls(own_cluster)

    own_cluster.pause_node(1)
    with pytest.raises(StoreUnavailableError, match="Timeout"):
        store.claim(batch, lease_s=30)
    own_cluster.resume_node(1)

    calls = [a - b for a, b in zip(script_calls(own_cluster), calls_before, strict=True)]
    assert calls[0] >= 2 and calls[2] >= 2  # the survivors granted claims, then released them
    assert {i: stored_keys(own_cluster, i) for i in survivors} == before
    store.close()
