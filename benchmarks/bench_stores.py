"""Choosing a store: lifecycle speed of every backend, Redis memory per key, DynamoDB capacity per event.

* Events/s of the full lifecycle (``claim`` then ``complete``, batches of 10
  fresh keys; the median of interleaved rounds) on memory, fakeredis, a real
  Redis, a real 3-master Redis Cluster (all started here on loopback ports)
  and DynamoDB on moto's HTTP server.
  Loopback has no network latency: against a remote Redis, count one round
  trip per phase (per node on a cluster) on top. moto is a simulator, far
  slower than DynamoDB, so its row says nothing about DynamoDB's speed; the
  DynamoDB comparison that matters is the capacity it consumes.
* Bytes per completed key on Redis and the cluster: ``MEMORY USAGE`` of the
  keys, and the growth of ``used_memory`` per key (which adds the key-space
  overhead), without and with payload fingerprints.
* DynamoDB write units per event, counted from the calls the store made
  (after-call hooks on the boto3 client) and the size of what each wrote: on
  demand, a write of an item up to 1 KB costs one write request unit, a failed
  conditional write costs the same, and the store reads nothing.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import statistics
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import redis

from benchmarks.harness import Comparison, Row, interleaved, rate
from dedup.aws.embedded import EmbeddedAWS
from dedup.clock import ManualClock
from dedup.errors import ConfigurationError
from dedup.keys import fingerprint
from dedup.localredis import LocalRedis, LocalRedisCluster
from dedup.stores import MemoryStore, RedisStore, WindowStore, open_store
from dedup.stores.dynamodb import DynamoDBStore, delete_table, ensure_table

BATCH = 10
LEASE_S = 60.0
WINDOW_S = 300.0
WRITE_UNIT_BYTES = 1024
WRITE_OPERATIONS = ("PutItem", "UpdateItem", "DeleteItem")


def _fresh_batches(tag: str) -> Iterator[list[str]]:
    counter = itertools.count()
    while True:
        yield [f"{tag}-{next(counter)}" for _ in range(BATCH)]


def _lifecycle(store: WindowStore, tag: str) -> Callable[[], int]:
    """One batch of fresh keys through claim + complete; returns the events handled."""
    batches = _fresh_batches(tag)

    def step() -> int:
        store.complete(store.claim(next(batches), LEASE_S), WINDOW_S)
        return BATCH

    return step


@contextlib.contextmanager
def _servers(notes: list[str]) -> Iterator[dict[str, Any]]:
    """Start what can be started (Redis, the cluster, moto); note what could not, and why."""
    with contextlib.ExitStack() as stack:
        started: dict[str, Any] = {}
        for name, make in (("redis", LocalRedis), ("cluster", LocalRedisCluster)):
            try:
                started[name] = stack.enter_context(make())
            except ConfigurationError as exc:
                notes.append(f"{name} skipped: {exc}")
        started["aws"] = stack.enter_context(EmbeddedAWS())
        yield started


def _stores(servers: dict[str, Any], table: str) -> list[tuple[str, WindowStore]]:
    aws = servers["aws"]
    stores: list[tuple[str, WindowStore]] = [
        ("memory", MemoryStore()),
        ("fakeredis", open_store("fakeredis")),
    ]
    if "redis" in servers:
        stores.append(("redis (loopback)", RedisStore(servers["redis"].url)))
    if "cluster" in servers:
        stores.append(("redis cluster, 3 masters (loopback)", RedisStore(servers["cluster"].url)))
    stores.append(("dynamodb on moto (a simulator)", DynamoDBStore(aws.client("dynamodb"), table)))
    return stores


def lifecycle_rates(servers: dict[str, Any], table: str, quick: bool, notes: list[str]) -> Comparison:
    min_time_s, rounds = (0.1, 1) if quick else (0.5, 3)
    with contextlib.ExitStack() as stack:
        steps = {name: _lifecycle(stack.enter_context(store), name)
                 for name, store in _stores(servers, table)}
        rates = interleaved({name: functools.partial(rate, step, min_time_s=min_time_s)
                             for name, step in steps.items()}, rounds)
    rows = [Row(name, value) for name, value in rates.items()]
    title = ("Lifecycle events/s per store (claim+complete, batches of 10); moto's speed is not "
             "DynamoDB's: see its capacity units per event instead")
    if notes:
        title += f" [{'; '.join(notes)}]"
    return Comparison(title, baseline="memory", rows=rows)


def _redis_bytes_per_key(url: str, nodes: list[int], keys: int, with_fingerprints: bool
                         ) -> tuple[float, float]:
    """(mean MEMORY USAGE, used_memory growth) per completed key, over ``keys`` fresh keys."""
    clients = [redis.Redis(port=port) for port in nodes]
    try:
        for client in clients:
            client.flushall()
        used_before = sum(c.info("memory")["used_memory"] for c in clients)
        with RedisStore(url) as store:
            batches = _fresh_batches("mem")
            storage_keys = []
            for _ in range(keys // BATCH):
                batch = next(batches)
                fps = [fingerprint({"key": k}) for k in batch] if with_fingerprints else None
                claims = store.claim(batch, LEASE_S, fingerprints=fps)
                store.complete(claims, WINDOW_S)
                storage_keys += [c.storage_key for c in claims]
            used_after = sum(c.info("memory")["used_memory"] for c in clients)
            # The store's client routes each key to its node on a cluster.
            usage = [store.client.memory_usage(key, samples=0)
                     for key in storage_keys[:: max(1, len(storage_keys) // 500)]]
        return statistics.mean(usage), (used_after - used_before) / len(storage_keys)
    finally:
        for client in clients:
            client.close()


def redis_memory(servers: dict[str, Any], quick: bool) -> Comparison | None:
    keys = 2_000 if quick else 20_000
    targets = []
    if "redis" in servers:
        targets.append(("redis", servers["redis"].url, [servers["redis"].port]))
    if "cluster" in servers:
        cluster = servers["cluster"]
        targets.append(("cluster", cluster.url, [n.port for n in cluster.nodes]))
    if not targets:
        return None
    rows = []
    for name, url, ports in targets:
        for with_fp in (False, True):
            usage, growth = _redis_bytes_per_key(url, ports, keys, with_fp)
            label = f"{name}, {'with' if with_fp else 'no'} fingerprint"
            rows.append(Row(f"{label}: MEMORY USAGE", usage, unit="bytes/key", lower_is_better=True))
            rows.append(Row(f"{label}: used_memory growth", growth, unit="bytes/key", lower_is_better=True))
    return Comparison(f"Redis memory per completed key ({keys:,} keys; MEMORY USAGE and used_memory growth)",
                      baseline=rows[0].name, rows=rows)


class _WriteMeter:
    """Counts the writes a boto3 DynamoDB client makes, checking each item is under 1 KB.

    Items of at most 1 KB cost one write request unit per write, a failed
    conditional write included; a bigger PutItem item would fail the check.
    """

    def __init__(self, client: Any) -> None:
        self.writes: Counter[str] = Counter()
        client.meta.events.register("provide-client-params.dynamodb", self._count)

    def _count(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name not in WRITE_OPERATIONS:
            return
        item = params.get("Item", {})
        size = sum(len(name) + len(str(next(iter(value.values())))) for name, value in item.items())
        if size > WRITE_UNIT_BYTES:
            raise AssertionError(f"a {size}-byte item costs more than one write unit: {item}")
        self.writes[model.name] += 1


def dynamodb_capacity(servers: dict[str, Any], table: str, quick: bool) -> Comparison:
    events = 100 if quick else 500
    client = servers["aws"].client("dynamodb")
    meter = _WriteMeter(client)
    scenarios: list[tuple[str, str, bool, Callable[[WindowStore, list[str]], object]]] = [
        ("fresh event: claim + complete", "fresh", False,
         lambda s, b: s.complete(s.claim(b, LEASE_S), WINDOW_S)),
        ("duplicate, fixed window: claim", "dup", True, lambda s, b: s.claim(b, LEASE_S)),
        ("duplicate, sliding window: claim + extend", "slide", True,
         lambda s, b: s.claim(b, LEASE_S, slide_s=WINDOW_S)),
        ("failed handler: claim + release", "failed", False, lambda s, b: s.release(s.claim(b, LEASE_S))),
    ]
    rows = []
    for name, tag, seen_before, handle in scenarios:
        with DynamoDBStore(client, table, clock=ManualClock(), prefix=f"{tag}:") as store:
            batches = [[f"e{b}-{i}" for i in range(BATCH)] for b in range(events // BATCH)]
            if seen_before:
                for batch in batches:
                    store.complete(store.claim(batch, LEASE_S), WINDOW_S)
            meter.writes.clear()
            for batch in batches:
                handle(store, batch)
        rows.append(Row(name, sum(meter.writes.values()) / events, unit="WRU/event", lower_is_better=True))
    return Comparison("DynamoDB write request units per event, counted from the calls made (reads: none; "
                      "on demand, 1 WRU per write of an item up to 1 KB, failed conditions included)",
                      baseline=rows[0].name, rows=rows)


def run(quick: bool) -> list[Comparison]:
    notes: list[str] = []
    with _servers(notes) as servers:
        client = servers["aws"].client("dynamodb")
        table = "bench-window"
        ensure_table(client, table)
        try:
            out = [lifecycle_rates(servers, table, quick, notes)]
            memory = redis_memory(servers, quick)
            if memory is not None:
                out.append(memory)
            out.append(dynamodb_capacity(servers, table, quick))
        finally:
            delete_table(client, table)
    return out
