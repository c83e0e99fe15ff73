"""RedisStore on a real redis-server: throughput against per-event SET NX and Powertools, and bytes per key.

The benchmark starts its own ``redis-server`` on a free loopback port
(:class:`dedup.localredis.LocalRedis`, never a server already running) and
every contender talks to it through its own redis-py client. Every event is
new (distinct keys), so every contender does its full write path. Contenders
are timed in interleaved rounds of wall time (best round wins), so a busy
machine hurts them alike.

* ``RedisStore claim+complete``: the store's lifecycle on ready keys, a batch of
  10 per call: one Lua script call to claim, one to complete.
* ``Deduplicator.process_batch``: the same plus what a consumer does around it
  (``envelope-id`` key from the envelope, a no-op handler, per-event results).
* ``SET NX EX per event``: redis-py ``SET key 1 NX EX 300``, one round trip per
  event, no lifecycle (a failed handler would lose the event).
* Powertools for AWS Lambda idempotency, ``RedisCachePersistenceLayer``:
  ``idempotent_function`` on a no-op function keyed by the envelope ``id``
  (``event_key_jmespath="id"``), as its users call it: per event, one SET NX
  (in progress) and one SET (completed). Its persistence layer's
  ``save_inprogress`` + ``save_success`` called directly is shown as well
  (the same two round trips without the decorator). It has no batch API.

Bytes per completed key is ``MEMORY USAGE`` averaged over every key written
(default prefix; no fingerprint, then with payload validation), next to the
server's ``used_memory`` growth per key, which also counts the expiry entry.

The full run also times the contenders through :class:`benchmarks.netdelay.DelayProxy`
(a loopback proxy that delays each hop), since on loopback a round trip costs no
more than the work around it and the ratios depend on that (no target there).
"""

from __future__ import annotations

import itertools
import statistics
import time
import warnings
from collections.abc import Callable

import redis
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.persistence.redis import RedisCachePersistenceLayer

from benchmarks.harness import Comparison, Row, rate
from benchmarks.netdelay import DelayProxy
from dedup.localredis import LocalRedis
from dedup.service import Deduplicator
from dedup.stores.redis import RedisStore

WINDOW_S = 300
LEASE_S = 60
BATCH = 10
# Added each way by the proxy (plus its own forwarding cost): about a 0.5 ms round trip
# here, as between zones of one AWS region.
NETWORK_ONE_WAY_US = 100


def _noop(event: object) -> None:
    return None


class Feed:
    """Batches of envelopes with ids never used before."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self._seq = itertools.count()

    def event_batch(self) -> list[dict]:
        return [
            {"id": f"{self.tag}-{n:012d}", "source": "bench", "detail-type": "bench", "detail": {"n": n}}
            for n in itertools.islice(self._seq, BATCH)
        ]

    def key_batch(self) -> list[str]:
        return [f"{self.tag}-{n:012d}" for n in itertools.islice(self._seq, BATCH)]


def _powertools(url: str) -> tuple[Callable[..., object], RedisCachePersistenceLayer]:
    """A no-op function made idempotent by Powertools on ``url``, and a configured layer of its own.

    Powertools' own connection code opens its client with ``decode_responses=True``.
    """
    config = IdempotencyConfig(event_key_jmespath="id", expires_after_seconds=WINDOW_S)
    layer = RedisCachePersistenceLayer(client=redis.Redis.from_url(url, decode_responses=True))
    handler = idempotent_function(_noop, data_keyword_argument="event", persistence_store=layer,
                                  config=config)
    direct = RedisCachePersistenceLayer(client=redis.Redis.from_url(url, decode_responses=True))
    direct.configure(config, function_name="direct")
    return handler, direct


def _contenders(url: str) -> dict[str, Callable[[], int]]:
    """name -> a function that handles one batch of 10 new events and returns 10."""
    setnx_client = redis.Redis.from_url(url)
    store = RedisStore(redis.Redis.from_url(url))
    dedup = Deduplicator(RedisStore(redis.Redis.from_url(url)), key="envelope-id",
                         window_s=WINDOW_S, lease_s=LEASE_S)
    handler, direct = _powertools(url)
    feeds = {name: Feed(name) for name in ("setnx", "store", "dedup", "pt", "ptdirect")}

    def set_nx() -> int:
        for key in feeds["setnx"].key_batch():
            setnx_client.set(f"setnx:{key}", 1, nx=True, ex=WINDOW_S)
        return BATCH

    def store_lifecycle() -> int:
        store.complete(store.claim(feeds["store"].key_batch(), LEASE_S), WINDOW_S)
        return BATCH

    def deduplicator() -> int:
        dedup.process_batch(feeds["dedup"].event_batch(), _noop)
        return BATCH

    def powertools() -> int:
        for event in feeds["pt"].event_batch():
            handler(event=event)
        return BATCH

    def powertools_direct() -> int:
        for event in feeds["ptdirect"].event_batch():
            direct.save_inprogress(data=event)
            direct.save_success(data=event, result={})
        return BATCH

    return {
        SET_NX: set_nx,
        STORE: store_lifecycle,
        DEDUP: deduplicator,
        POWERTOOLS: powertools,
        POWERTOOLS_DIRECT: powertools_direct,
    }


SET_NX = "redis-py SET NX EX, per event"
STORE = "RedisStore claim+complete, batches of 10"
DEDUP = "Deduplicator.process_batch on RedisStore, batches of 10"
POWERTOOLS = "Powertools idempotent_function (Redis layer), per event"
POWERTOOLS_DIRECT = "Powertools save_inprogress+save_success, per event"


def _throughput(url: str, rounds: int, min_time_s: float) -> dict[str, float]:
    contenders = _contenders(url)
    best = dict.fromkeys(contenders, 0.0)
    for fn in contenders.values():  # warm up: connections, script loading
        fn()
    for _ in range(rounds):
        for name, fn in contenders.items():
            best[name] = max(best[name], rate(fn, min_time_s=min_time_s, repeat=1))
    return best


def _bytes_per_key(client: redis.Redis, fill: Callable[[], None], pattern: str) -> tuple[float, float]:
    """Average MEMORY USAGE of the keys ``fill`` writes, and used_memory growth per key."""
    client.flushdb()
    before = client.info("memory")["used_memory"]
    fill()
    after = client.info("memory")["used_memory"]
    keys = list(client.scan_iter(match=pattern, count=1000))
    if not keys:
        raise RuntimeError(f"no keys matched {pattern!r}")
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    usage = pipe.execute()
    return sum(usage) / len(keys), (after - before) / len(keys)


def _footprint(url: str, n_keys: int) -> dict[str, float]:
    client = redis.Redis.from_url(url)
    plain = Deduplicator(RedisStore(redis.Redis.from_url(url)), key="envelope-id",
                         window_s=WINDOW_S, lease_s=LEASE_S)
    checked = Deduplicator(RedisStore(redis.Redis.from_url(url)), key="envelope-id",
                           window_s=WINDOW_S, lease_s=LEASE_S, validate_payload=True)
    handler, _direct = _powertools(url)

    def through(dedup: Deduplicator, tag: str) -> Callable[[], None]:
        feed = Feed(tag)
        return lambda: [dedup.process_batch(feed.event_batch(), _noop) for _ in range(n_keys // BATCH)]

    def through_powertools() -> None:
        feed = Feed("ptbytes")
        for _ in range(n_keys // BATCH):
            for event in feed.event_batch():
                handler(event=event)

    out = {}
    out[PLAIN_USAGE], out[PLAIN_USED] = _bytes_per_key(client, through(plain, "plain"), "dedup:*")
    out[CHECKED_USAGE], _ = _bytes_per_key(client, through(checked, "checked"), "dedup:*")
    out[PT_USAGE], _ = _bytes_per_key(client, through_powertools, "*")
    client.flushdb()
    return out


PLAIN_USAGE = "RedisStore completed key: default prefix, no fingerprint"
PLAIN_USED = "  same, used_memory growth per key (incl. expiry entry)"
CHECKED_USAGE = "RedisStore completed key: payload validation on"
PT_USAGE = "Powertools completed record"


def _round_trip_us(url: str, pings: int = 200) -> float:
    """Median PING round trip to ``url``, in microseconds."""
    client = redis.Redis.from_url(url)
    times = []
    for _ in range(pings):
        start = time.perf_counter()
        client.ping()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def _vs_setnx(rates: dict[str, float], where: str) -> Comparison:
    return Comparison(f"RedisStore lifecycle vs per-event SET NX ({where})",
                      baseline=SET_NX, rows=[Row(n, rates[n]) for n in (SET_NX, STORE, DEDUP)])


def _vs_powertools(rates: dict[str, float], where: str) -> Comparison:
    return Comparison(f"RedisStore and Deduplicator vs Powertools idempotency ({where})",
                      baseline=POWERTOOLS,
                      rows=[Row(n, rates[n]) for n in (POWERTOOLS, POWERTOOLS_DIRECT, DEDUP, STORE)])


def run(quick: bool) -> list[Comparison]:
    rounds, min_time_s, n_keys = (2, 0.05, 1_000) if quick else (5, 0.3, 20_000)
    with LocalRedis() as server, warnings.catch_warnings():
        # Powertools warns on every call outside Lambda (no remaining-time context)
        # and flags its Redis layer's name as deprecated (the class is unchanged).
        warnings.simplefilter("ignore")
        version = redis.Redis.from_url(server.url).info("server")["redis_version"]
        where = f"redis-server {version}, loopback, {_round_trip_us(server.url):.0f} us PING"
        rates = _throughput(server.url, rounds, min_time_s)
        footprint = _footprint(server.url, n_keys)
        if not quick:
            # The same contenders behind network latency: batching pays per round trip saved.
            with DelayProxy(server.port, one_way_us=NETWORK_ONE_WAY_US) as proxy:
                proxy_url = f"redis://127.0.0.1:{proxy.port}/0"
                delayed_where = f"behind a delaying proxy, {_round_trip_us(proxy_url):.0f} us PING; no target"
                delayed = _throughput(proxy_url, 3, min_time_s)

    vs_setnx = _vs_setnx(rates, where)
    vs_setnx.target = "RedisStore claim+complete (batches of 10) >= 3x per-event SET NX"
    vs_setnx.met = vs_setnx.ratio(STORE) >= 3
    vs_powertools = _vs_powertools(rates, where)
    vs_powertools.target = "RedisStore claim+complete (batches of 10) >= 10x Powertools idempotent_function"
    vs_powertools.met = vs_powertools.ratio(STORE) >= 10
    memory = Comparison(
        f"Bytes per completed key (MEMORY USAGE, mean of {n_keys:,} keys, redis-server {version})",
        baseline=PT_USAGE,
        rows=[Row(n, footprint[n], "bytes", lower_is_better=True)
              for n in (PT_USAGE, PLAIN_USAGE, PLAIN_USED, CHECKED_USAGE)],
        target="<= 90 bytes per completed key (default prefix, no fingerprint)",
    )
    memory.met = footprint[PLAIN_USAGE] <= 90
    out = [vs_setnx, vs_powertools, memory]
    if not quick:
        out += [_vs_setnx(delayed, delayed_where), _vs_powertools(delayed, delayed_where)]
    return out
