"""RedisStore judged where users run it: behind a network round trip, against Powertools
idempotency, per-event SET NX and its own two-round-trip limit.

The benchmark starts its own ``redis-server`` on a free loopback port
(:class:`dedup.localredis.LocalRedis`, never a server already running) and a
delaying proxy in front of it (:class:`benchmarks.netdelay.DelayProxy`),
calibrated until a PING through it takes about 0.4 ms, as an ElastiCache node
does from a client in another zone of the region, and calibrated again before
each round, as a virtual machine's round trips drift with its neighbours' load
(PINGs go over a bare socket: the round trip, not a client's work around it;
see :class:`Pinger`). The targets are judged
there; the same contenders on loopback, where a round trip costs about what the
client's own work costs and ratios swing between runs, are shown for context.
Every event is new (distinct keys), so every contender does its full write path.

* ``RedisStore claim+complete``: the store's lifecycle on ready keys, a batch of
  10 per call: one Lua script call to claim, one to complete.
* ``Deduplicator.process_batch``: the same plus what a consumer does around it
  (``envelope-id`` key from the envelope, a no-op handler, per-event results),
  without and with payload validation (a fingerprint of each ``detail`` on record).
* ``SET NX EX per event``: redis-py ``SET key 1 NX EX 300``, one round trip per
  event, no lifecycle (a failed handler would lose the event).
* Powertools for AWS Lambda idempotency, ``RedisCachePersistenceLayer``:
  ``idempotent_function`` on a no-op function keyed by the envelope ``id``
  (``event_key_jmespath="id"``), as its users call it: per event, one SET NX
  (in progress) and one SET (completed). Its persistence layer's
  ``save_inprogress`` + ``save_success`` called directly is shown as well
  (the same two round trips without the decorator). It has no batch API.
* The two-round-trip limit: a batch of 10 through the store can take no less
  than two round trips (the mean bare-socket PING through the proxy, measured in
  every round) plus the server's execution time of the two scripts (``INFO
  commandstats`` usec of EVALSHA over the store's own timed runs): the rate of a
  client that cost nothing.

Contenders are timed in interleaved rounds (each round runs each once, the
order rotated between rounds) and the median round is reported, so a busy
machine hurts them alike. Over the same timed runs behind the proxy, each
contender's columns count what it cost per event: requests its clients wrote
(round trips; a pipeline is one), the server's CPU time (``INFO cpu``
``used_cpu_sys`` + ``used_cpu_user``) and commands (``INFO commandstats``
calls, a script's own commands included). Bytes per key are measured apart on
an emptied server: ``MEMORY USAGE`` averaged over every key a contender wrote,
and the growth of ``used_memory`` per key (which also counts the key-space and
expiry entries).
"""

from __future__ import annotations

import itertools
import socket
import statistics
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import redis
from aws_lambda_powertools.shared.version import VERSION as powertools_version
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.persistence.redis import RedisCachePersistenceLayer

from benchmarks.harness import Comparison, Row, Target, interleaved, run_for
from benchmarks.netdelay import DelayProxy
from dedup.localredis import LocalRedis
from dedup.service import Deduplicator
from dedup.stores.redis import RedisStore

WINDOW_S = 300
LEASE_S = 60
BATCH = 10
# The round trip the proxy is calibrated to: a client and an ElastiCache node in two zones.
TARGET_PING_US = 400
# A completed key of the store (default prefix, no fingerprint), as Redis counts it.
MAX_BYTES_PER_KEY = 90
# How many PINGs each calibration step of the proxy sends through it.
CALIBRATION_PINGS = 400
# Commands whose server time is a script's execution.
SCRIPT_COMMANDS = ("eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro")
# Commands the benchmark itself sends to the server between timed runs.
ADMIN_COMMANDS = ("info",)

SET_NX = "redis-py SET NX EX, per event"
STORE = "RedisStore claim+complete, batches of 10"
DEDUP = "Deduplicator.process_batch on RedisStore, batches of 10"
DEDUP_CHECKED = "  same, payload validation on"
POWERTOOLS = "Powertools idempotent_function (Redis layer), per event"
POWERTOOLS_DIRECT = "Powertools save_inprogress+save_success, per event"

ROUND_TRIPS = "round trips/event"
SERVER_CPU = "server CPU us/event"
SERVER_CALLS = "server cmds/event"
MEMORY_USAGE = "MEMORY USAGE B/key"
USED_MEMORY = "used_memory B/key"


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


@dataclass
class Contender:
    """One way of deduplicating: ``step`` handles a batch of new events and returns how many.

    ``requests[0]`` counts the requests its clients wrote to the server: round trips.
    """

    name: str
    step: Callable[[], int]
    requests: list[int]


def _client(url: str, requests: list[int], **kwargs: object) -> redis.Redis:
    """A redis-py client on ``url`` adding one to ``requests[0]`` per request it writes.

    redis-py writes a command, or a whole pipeline, with one ``send_packed_command``
    and then waits for the replies: one round trip each.
    """

    class Counting(redis.Connection):
        def send_packed_command(self, command, check_health=True):
            requests[0] += 1
            return super().send_packed_command(command, check_health)

    return redis.Redis.from_url(url, connection_class=Counting, **kwargs)


def _contenders(url: str, tag: str) -> list[Contender]:
    """The contenders, each on clients of its own to ``url``; keys unique per ``tag``."""
    counters = {name: [0] for name in (SET_NX, STORE, DEDUP, DEDUP_CHECKED, POWERTOOLS, POWERTOOLS_DIRECT)}
    feeds = {name: Feed(f"{tag}{i}") for i, name in enumerate(counters)}
    setnx_client = _client(url, counters[SET_NX])
    store = RedisStore(_client(url, counters[STORE]))
    dedup, checked = (
        Deduplicator(RedisStore(_client(url, counters[name])), key="envelope-id", window_s=WINDOW_S,
                     lease_s=LEASE_S, validate_payload=name == DEDUP_CHECKED)
        for name in (DEDUP, DEDUP_CHECKED)
    )
    # Powertools' own connection code opens its client with decode_responses=True.
    config = IdempotencyConfig(event_key_jmespath="id", expires_after_seconds=WINDOW_S)
    layer = RedisCachePersistenceLayer(client=_client(url, counters[POWERTOOLS], decode_responses=True))
    handler = idempotent_function(_noop, data_keyword_argument="event", persistence_store=layer,
                                  config=config)
    direct = RedisCachePersistenceLayer(
        client=_client(url, counters[POWERTOOLS_DIRECT], decode_responses=True))
    direct.configure(config, function_name="direct")

    def set_nx() -> int:
        for key in feeds[SET_NX].key_batch():
            setnx_client.set(f"setnx:{key}", 1, nx=True, ex=WINDOW_S)
        return BATCH

    def store_lifecycle() -> int:
        store.complete(store.claim(feeds[STORE].key_batch(), LEASE_S), WINDOW_S)
        return BATCH

    def through(dedup: Deduplicator, feed: Feed) -> Callable[[], int]:
        def step() -> int:
            dedup.process_batch(feed.event_batch(), _noop)
            return BATCH
        return step

    def powertools() -> int:
        for event in feeds[POWERTOOLS].event_batch():
            handler(event=event)
        return BATCH

    def powertools_direct() -> int:
        for event in feeds[POWERTOOLS_DIRECT].event_batch():
            direct.save_inprogress(data=event)
            direct.save_success(data=event, result={})
        return BATCH

    steps = {SET_NX: set_nx, STORE: store_lifecycle, DEDUP: through(dedup, feeds[DEDUP]),
             DEDUP_CHECKED: through(checked, feeds[DEDUP_CHECKED]), POWERTOOLS: powertools,
             POWERTOOLS_DIRECT: powertools_direct}
    return [Contender(name, steps[name], counters[name]) for name in counters]


@dataclass
class Meter:
    """What a contender cost over its timed runs: events, round trips, server CPU and commands."""

    events: int = 0
    round_trips: int = 0
    cpu_s: float = 0.0
    calls: Counter = field(default_factory=Counter)
    usec: Counter = field(default_factory=Counter)

    def columns(self) -> dict[str, float | None]:
        commands = sum(n for name, n in self.calls.items() if name not in ADMIN_COMMANDS)
        return {ROUND_TRIPS: self.round_trips / self.events, SERVER_CPU: self.cpu_s * 1e6 / self.events,
                SERVER_CALLS: commands / self.events}

    def script_us_per_batch(self) -> float:
        return sum(self.usec[name] for name in SCRIPT_COMMANDS) / (self.events / BATCH)


def _server_stats(admin: redis.Redis) -> tuple[float, Counter, Counter]:
    """The server's CPU seconds so far, and its calls and usec per command."""
    info = admin.info("cpu", "commandstats")
    stats = {k.removeprefix("cmdstat_"): v for k, v in info.items() if k.startswith("cmdstat_")}
    return (info["used_cpu_sys"] + info["used_cpu_user"], Counter({k: v["calls"] for k, v in stats.items()}),
            Counter({k: v["usec"] for k, v in stats.items()}))


def _metered(contender: Contender, meter: Meter, admin: redis.Redis, min_time_s: float
             ) -> Callable[[], float]:
    """One timed run of ``contender`` (events/s), its costs added to ``meter``."""

    def timed() -> float:
        cpu, calls, usec = _server_stats(admin)
        requests = contender.requests[0]
        events, seconds = run_for(contender.step, min_time_s=min_time_s)
        cpu_after, calls_after, usec_after = _server_stats(admin)
        meter.events += events
        meter.round_trips += contender.requests[0] - requests
        meter.cpu_s += cpu_after - cpu
        meter.calls.update(calls_after - calls)
        meter.usec.update(usec_after - usec)
        return events / seconds

    return timed


class Pinger:
    """PINGs over a bare socket: the round trip itself, with next to no client work around it.

    The limit is the rate of a client that cost nothing, so its round trip must
    not carry redis-py's own cost per command (packing, parsing, taking and
    giving back a pooled connection), which the store's requests now skip.
    """

    REQUEST, REPLY = b"*1\r\n$4\r\nPING\r\n", b"+PONG\r\n"

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def ping(self) -> None:
        self.sock.sendall(self.REQUEST)
        reply = self.sock.recv(64)
        while len(reply) < len(self.REPLY):
            reply += self.sock.recv(64)
        if reply != self.REPLY:
            raise RuntimeError(f"unexpected PING reply {reply!r}")

    def close(self) -> None:
        self.sock.close()


def _round_trip_us(pinger: Pinger, min_time_s: float) -> float:
    """Mean PING round trip through ``pinger`` over ``min_time_s``, in microseconds.

    A mean, as the contenders' rates are: on a busy machine some round trips wait
    for a core, and a median would leave those out of the limit but not of the rates.
    """

    def ping() -> int:
        pinger.ping()
        return 1

    pings, seconds = run_for(ping, min_time_s=min_time_s)
    return seconds / pings * 1e6


PING = "PING"


def _throughput(url: str, tag: str, admin: redis.Redis, rounds: int, min_time_s: float,
                before_round: Callable[[], object] | None = None
                ) -> tuple[dict[str, float], dict[str, Meter]]:
    """Median events/s of every contender on ``url`` (and of its mean PING in us), and their meters."""
    contenders = _contenders(url, tag)
    for c in contenders:  # warm up: connections, script loading
        c.step()
    meters = {c.name: Meter() for c in contenders}
    timed = {c.name: _metered(c, meters[c.name], admin, min_time_s) for c in contenders}
    pinger = Pinger(urlsplit(url).port)
    timed[PING] = lambda: _round_trip_us(pinger, min_time_s)
    return interleaved(timed, rounds, before_round=before_round), meters


def _footprint(url: str, admin: redis.Redis, n_keys: int) -> dict[str, tuple[float, float]]:
    """Per contender: mean MEMORY USAGE of the keys it writes, and used_memory growth per key."""
    out = {}
    for contender in _contenders(url, "bytes"):
        admin.flushdb()
        before = admin.info("memory")["used_memory"]
        for _ in range(n_keys // BATCH):
            contender.step()
        after = admin.info("memory")["used_memory"]
        keys = list(admin.scan_iter(count=1000))
        pipe = admin.pipeline(transaction=False)
        for key in keys:
            pipe.memory_usage(key, samples=0)
        out[contender.name] = sum(pipe.execute()) / len(keys), (after - before) / len(keys)
    admin.flushdb()
    return out


def _calibrate(proxy: DelayProxy, ping_us: float, tries: int) -> float:
    """Set ``proxy``'s delay until a PING through it takes about ``ping_us``; the last median PING.

    The proxy's own forwarding costs differ between machines and drift with a
    machine's load, so the delay is set from a measured round trip, corrected up
    to ``tries`` times (to within 5%), before the timed rounds and again before
    each. It reads the median of many PINGs: one stalled PING in a mean would
    move the delay by far more than the machine's typical round trip does.
    """
    pinger = Pinger(proxy.port)
    try:
        for _ in range(tries):
            measured = _median_round_trip_us(pinger, CALIBRATION_PINGS)
            if abs(measured - ping_us) <= 0.05 * ping_us:
                break
            proxy.set_delay(max(0, round(proxy.one_way_us + (ping_us - measured) / 2)))
        return measured
    finally:
        pinger.close()


def _median_round_trip_us(pinger: Pinger, pings: int) -> float:
    """The median of ``pings`` PING round trips through ``pinger``, in microseconds."""
    times = []
    for _ in range(pings):
        start = time.perf_counter()
        pinger.ping()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def run(quick: bool) -> list[Comparison]:
    rounds, min_time_s, n_keys = (3, 0.05, 1_000) if quick else (9, 0.3, 20_000)
    with LocalRedis() as server, warnings.catch_warnings():
        # Powertools warns on every call outside Lambda (no remaining-time context)
        # and flags its Redis layer's name as deprecated (the class is unchanged).
        warnings.simplefilter("ignore")
        admin = redis.Redis.from_url(server.url)
        version = admin.info("server")["redis_version"]
        with DelayProxy(server.port, one_way_us=0) as proxy:
            _calibrate(proxy, TARGET_PING_US, tries=8)
            proxied = f"redis://127.0.0.1:{proxy.port}/0"
            delayed, meters = _throughput(proxied, "proxied", admin, rounds, min_time_s,
                                          before_round=lambda: _calibrate(proxy, TARGET_PING_US, tries=3))
        loopback, _ = _throughput(server.url, "loopback", admin, rounds, min_time_s)
        footprint = _footprint(server.url, admin, n_keys)

    ping_us, script_us = delayed[PING], meters[STORE].script_us_per_batch()
    limit = (f"two-round-trip limit: 2 x {ping_us:.0f} us PING + {script_us:.0f} us of scripts "
             "per batch of 10")
    rows = [Row(name, delayed[name], extra={**meters[name].columns(), MEMORY_USAGE: footprint[name][0],
                                            USED_MEMORY: footprint[name][1]})
            for name in (SET_NX, POWERTOOLS, POWERTOOLS_DIRECT, DEDUP, DEDUP_CHECKED, STORE)]
    rows.append(Row(limit, BATCH * 1e6 / (2 * ping_us + script_us)))
    judged = Comparison(
        f"Redis behind a delaying proxy, {ping_us:.0f} us PING (redis-server {version}, redis-py "
        f"{redis.__version__}, Powertools {powertools_version}; medians of "
        f"{rounds} interleaved rounds; bytes over {n_keys:,} keys)",
        baseline=SET_NX, rows=rows)
    judged.target_ratio(STORE, 10, POWERTOOLS, goal="RedisStore claim+complete >= 10x Powertools")
    judged.target_ratio(STORE, 4, SET_NX, goal="RedisStore claim+complete >= 4x per-event SET NX")
    judged.target_ratio(STORE, 0.85, limit, goal="RedisStore claim+complete >= 0.85x the 2-round-trip limit")
    store_bytes = footprint[STORE][0]
    judged.targets.append(Target(f"a completed RedisStore key <= {MAX_BYTES_PER_KEY} bytes (MEMORY USAGE)",
                                 f"{store_bytes:.0f} B", store_bytes <= MAX_BYTES_PER_KEY))
    context = Comparison(
        f"For context, no target: the same on loopback, {loopback[PING]:.0f} us PING (round trips cost "
        "about what the client's own work costs; ratios swing between runs)",
        baseline=SET_NX,
        rows=[Row(name, loopback[name]) for name in (SET_NX, POWERTOOLS, POWERTOOLS_DIRECT, DEDUP,
                                                     DEDUP_CHECKED, STORE)])
    return [judged, context]
