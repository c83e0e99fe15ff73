"""A window store on Redis or Redis Cluster (or anything speaking their protocol: fakeredis,
ElastiCache with or without cluster mode).

Each phase of a batch (claim, complete, release) is one Lua script call, so a
batch of ten SQS messages costs one round trip per phase, and each key's
check-and-set is atomic. On a cluster a script may only touch one hash slot, so
a phase is one script call per slot, pipelined: one round trip per node. A
record is one string value:

* ``I<deadline_ms>,<token>,<fingerprint>`` while a consumer holds the lease;
* ``<deadline_ms>`` once completed (an integer to Redis: the smallest encoding),
  or ``D<deadline_ms>,<fingerprint>`` when payload validation records a fingerprint.

Deadlines are checked inside the scripts against the *server's* clock
(``TIME``), so consumers whose clocks disagree still agree on every lease and
window; an injected clock (tests, replays) is used instead when one is given
(``time_source``). Every key is also written with a ``PX`` TTL of the same
duration so Redis frees it (no key is ever left without a TTL).

Every Redis failure class that means "cannot serve now" is an outage
(:meth:`RedisStore.is_outage`): connection loss and timeouts, and the error
replies READONLY (a demoted primary), OOM, MISCONF, BUSY, LOADING, MASTERDOWN,
TRYAGAIN, CLUSTERDOWN and NOREPLICAS.

Claim, extend and release are safe to re-send (a client retry after a lost
reply): a claim that finds its own token answers CLAIMED, an extend re-extends,
a release finds nothing left to drop. A complete re-sent after it took effect
finds a completed record it cannot tell from another consumer's and reports
``False`` (the Deduplicator then reports a lease lost: a false alarm on the
safe side). So a store built from a URL never retries (redis-py would re-send
after a timeout); a client passed in keeps its own retry settings.

On a batch of ten, the client's work around a script call, not the round trip,
was most of a phase's cost on a loopback server, so each script answers with one
string, and on one server the request is packed by the store as one string and
sent on a connection of the client's pool that the store keeps between requests
(see ``RedisStore._request``): redis-py's ``execute_command``, and the pool's
checks when a connection is taken and given back, cost more than the store's own
work. A script's arguments
(now, durations, tokens, fingerprints) are one argument each, which Redis hands
to the script already split. Inside the scripts, numbers are formatted once per
call (Lua formats a number through printf; Redis converts a number argument of
``redis.call`` the same way), so durations reach ``PX`` as the text they came in.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.exceptions
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script
from redis.retry import Retry

from dedup.clock import Clock
from dedup.errors import ConfigurationError
from dedup.stores.base import DEFAULT_PREFIX, ClaimOutcome, ClaimStatus, WindowStore

log = logging.getLogger("dedup")

# This process's id, kept current in a forked child: a connection a store kept is used only by
# the process that opened it (redis-py records that process in ``Connection.pid``).
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)

# Shared by the scripts: parse a record into kind ('I' or 'D'), deadline, token, fingerprint;
# encode a completed one (``at``: its deadline as decimal text); the fingerprint of a live lease
# a token still holds (else nil); "now" from an argument or the server's clock. A completed
# record without a fingerprint is the bare decimal deadline, which Redis stores as an integer
# (72 bytes a key instead of 104).
_RECORD_LUA = """
local function parse(v)
  local c = string.byte(v, 1)
  if c >= 48 and c <= 57 then return 'D', tonumber(v), nil, '' end
  local comma = string.find(v, ',', 2, true)
  if not comma then return nil end
  local kind, rest = string.sub(v, 1, 1), string.sub(v, comma + 1)
  local deadline = tonumber(string.sub(v, 2, comma - 1))
  if kind == 'D' then return kind, deadline, nil, rest end
  local c2 = string.find(rest, ',', 1, true)
  if not c2 then return nil end
  return kind, deadline, string.sub(rest, 1, c2 - 1), string.sub(rest, c2 + 1)
end
local function done(at, fp)
  if fp == '' then return at end
  return 'D' .. at .. ',' .. fp
end
local function held_by(key, token, now)
  local v = redis.call('GET', key)
  if not v then return nil end
  local kind, deadline, rec_token, rec_fp = parse(v)
  if kind == 'I' and deadline > now and rec_token == token then return rec_fp end
  return nil
end
local function clock_ms(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# Every script's arguments: first now_ms ('' for the server's clock, TIME), then the script's
# durations, then its per-key columns (one argument per key each). The fingerprints column is
# left out when every fingerprint is empty (no payload validation). Separate arguments reach
# the script as Redis built them, in C; the single comma-joined argument they replaced cost the
# server more to split in Lua than their extra packing costs the client (see RedisStore._run).
# KEYS: storage keys. ARGV: now_ms, lease_ms, slide_ms, the tokens, the fingerprints (if
# any). Returns the comma-joined status letter (C/D/I) of each key followed by the fingerprint
# on record. A fresh key costs one SET NX; a live lease held by the key's own token (the same
# call sent again) is CLAIMED.
CLAIM_LUA = _RECORD_LUA + """
local call, n = redis.call, #KEYS
local fps_at = #ARGV > 3 + n and 3 + n
local now, lease_px, slide_px = clock_ms(ARGV[1]), ARGV[2], ARGV[3]
local slide = tonumber(slide_px)
local lease_head = 'I' .. (now + tonumber(lease_px)) .. ','
local out = {}
for i = 1, n do
  local key, token, fp = KEYS[i], ARGV[3 + i], fps_at and ARGV[fps_at + i] or ''
  local fresh = lease_head .. token .. ',' .. fp
  if call('SET', key, fresh, 'PX', lease_px, 'NX') then
    out[i] = fps_at and 'C' .. fp or 'C'
  else
    local kind, deadline, rec_token, rec_fp = parse(call('GET', key) or '0')
    if kind == 'D' and deadline > now then
      if slide > 0 then
        call('SET', key, done(string.format('%d', now + slide), rec_fp), 'PX', slide_px)
      end
      out[i] = 'D' .. rec_fp
    elseif kind == 'I' and deadline > now then
      if rec_token == token then out[i] = 'C' .. rec_fp else out[i] = 'I' .. rec_fp end
    else
      call('SET', key, fresh, 'PX', lease_px)
      out[i] = 'C' .. fp
    end
  end
end
return table.concat(out, ',')
"""

# KEYS: storage keys. ARGV: now_ms, window_ms, the tokens, the fingerprints (if any).
# Returns one character per key: '1' completed, '0' not.
COMPLETE_LUA = _RECORD_LUA + """
local call, n = redis.call, #KEYS
local fps_at = #ARGV > 2 + n and 2 + n
local now, window_px = clock_ms(ARGV[1]), ARGV[2]
local at = string.format('%d', now + tonumber(window_px))
local out = {}
for i = 1, n do
  local key = KEYS[i]
  local v = call('SET', key, fps_at and done(at, ARGV[fps_at + i]) or at, 'PX', window_px, 'GET')
  out[i] = '1'
  -- The token between commas is only ever a lease's token field: our own lease needs no parse.
  if v and not string.find(v, ',' .. ARGV[2 + i] .. ',', 3, true) then
    local kind, deadline = parse(v)
    if kind ~= nil and deadline > now then
      -- Not ours to complete: put it back. Its TTL is housekeeping (the deadline decides), at
      -- least a second, so a record put back in its last milliseconds of an injected clock's
      -- time is not swept by the server's real-time TTL before that clock reaches its deadline.
      call('SET', key, v, 'PX', math.max(deadline - now, 1000))
      out[i] = '0'
    end
  end
end
return table.concat(out)
"""

# KEYS: storage keys. ARGV: now_ms, lease_ms, the tokens. Moves the live leases still held by
# the token to now + lease; returns one character per key: '1' extended, '0' not.
EXTEND_LUA = _RECORD_LUA + """
local now, lease_px = clock_ms(ARGV[1]), ARGV[2]
local lease_head = 'I' .. (now + tonumber(lease_px)) .. ','
local out = {}
for i, key in ipairs(KEYS) do
  local token = ARGV[2 + i]
  local fp = held_by(key, token, now)
  out[i] = '0'
  if fp then
    redis.call('SET', key, lease_head .. token .. ',' .. fp, 'PX', lease_px)
    out[i] = '1'
  end
end
return table.concat(out)
"""

# KEYS: storage keys. ARGV: now_ms, the tokens. Deletes live records still held by the token;
# returns one character per key: '1' released, '0' not.
RELEASE_LUA = _RECORD_LUA + """
local now = clock_ms(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = '0'
  if held_by(key, ARGV[1 + i], now) then
    redis.call('DEL', key)
    out[i] = '1'
  end
end
return table.concat(out)
"""

# Query parameters of a Redis URL that carry a secret (redis-py passes them on as connection kwargs).
_SECRET_QUERY_PARAM = re.compile(r"(?<![^&])((?:ssl_)?password)=[^&]*", re.IGNORECASE)

_STATUS = {"C": ClaimStatus.CLAIMED, "D": ClaimStatus.DUPLICATE, "I": ClaimStatus.IN_FLIGHT}
# The outcomes of a claim reply without a fingerprint (no payload validation), built once.
_BLANK_OUTCOMES = {letter: ClaimOutcome(status) for letter, status in _STATUS.items()}

# The RESP length header of each argument shorter than 256 bytes (keys, tokens, numbers).
_LENGTH_HEADS = [f"${n}" for n in range(256)]
_ASCII = "".join(map(chr, range(128)))
# The smallest max_connections of a pool the store keeps a connection of between requests:
# holding one of a pool of, say, one would starve the client's other callers.
MIN_POOL_TO_KEEP_CONNECTION = 8
# URL schemes of a Redis Cluster, mapped to the scheme redis-py parses.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
# Retries of a client the store builds from a URL (see _client_from_url).
URL_CLIENT_RETRIES = 0
# Error reply codes (the reply's first word) that mean "this server cannot serve now": a demoted
# primary, out of memory, a failed snapshot blocking writes, a busy script, a loading dataset,
# a replica without its primary, a resharding or failing cluster, too few replicas for writes,
# a blocked WAIT cut short because its primary was demoted.
OUTAGE_REPLY_CODES = frozenset({
    "READONLY", "OOM", "MISCONF", "BUSY", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN",
    "NOREPLICAS", "UNBLOCKED",
})

TimeSource = Literal["server", "client"]


class RedisStore(WindowStore):
    """A window store on Redis or Redis Cluster.

    ``client`` is a ``redis.Redis`` or ``redis.cluster.RedisCluster`` client, or
    a URL: ``redis://`` / ``rediss://`` (one server) or ``redis+cluster://`` /
    ``rediss+cluster://`` (a cluster, discovered from that node). A password and
    TLS are configured in the URL (``rediss://:secret@host:6380/0``); the URL is
    never logged with its password.

    On a cluster, a script may only touch keys of one hash slot, so each phase
    groups the batch by slot (keys of a batch usually land in distinct slots)
    and sends one script call per group, pipelined: one round trip per node,
    nodes written to before any reply is read. A key's check-and-set stays
    atomic (all copies of a key share a slot, so one call). A prefix holding a
    ``{hash tag}`` would pin every key to one node: leave it out.

    Any failure of the cluster (a node down, slots not covered, the cluster
    marked down) raises :class:`~dedup.errors.StoreUnavailableError`: nothing
    is decided. A claim that reached only some nodes releases what it claimed
    on them first, so no key is left held by a batch that was never decided.
    A client built from a URL does not retry (see ``_client_from_url``): a dead
    node fails a phase at once, a hung one after about (1 + its script calls) x
    ``socket_timeout_s``. A client passed in keeps its own retry settings, which
    multiply that stall (its re-sends are safe, see the module docstring); pass
    ``retry=Retry(NoBackoff(), 0)`` to avoid both.

    ``time_source``: ``"server"`` decides leases and windows on the server's
    clock (``TIME`` inside the scripts), so consumers with skewed clocks agree;
    ``"client"`` on ``clock``. The default is ``"server"`` unless a ``clock`` is
    given (tests and replays drive simulated time). On a cluster each key is
    decided on its node's clock: keep the nodes NTP-synced.

    On one server, the store keeps a connection of the client's pool between
    requests when the pool is a plain ``redis.ConnectionPool`` of at least
    ``MIN_POOL_TO_KEEP_CONNECTION`` connections (redis-py's default is 100), and
    gives it back on :meth:`close`; with a blocking, Sentinel or smaller pool it
    takes and gives back a connection per request. Threads sharing a store each
    take their own, and a forked child opens its own.

    ``replicas_acked`` (with ``replica_timeout_ms``): every complete is followed,
    in the same round trip, by ``WAIT replicas_acked replica_timeout_ms``, so a
    completion reported recorded has reached that many replicas and survives a
    failover to one of them. A WAIT that times out short is counted in
    ``unacked_completes`` and logged (the completion stands on the primary).
    Single server only.
    """

    name = "redis"
    unavailable_errors = (
        redis.exceptions.ConnectionError,  # also MaxConnectionsError
        redis.exceptions.TimeoutError,
        redis.exceptions.BusyLoadingError,
        redis.exceptions.AuthenticationError,
        redis.exceptions.AuthorizationError,
        # Cluster trouble: ClusterDownError, MasterDownError, TRYAGAIN during a reshard, and
        # the client's own topology failures (SlotNotCoveredError, "All slots are not
        # covered", "cannot be connected"). The store's own calls never raise the
        # RedisClusterException of a misuse (multi-slot scripts, blocked commands).
        redis.exceptions.ClusterError,
        redis.exceptions.TryAgainError,
        redis.exceptions.RedisClusterException,
        redis.exceptions.ReadOnlyError,
        redis.exceptions.OutOfMemoryError,
    )

    def __init__(
        self,
        client: Any,
        *,
        clock: Clock | None = None,
        prefix: str = DEFAULT_PREFIX,
        socket_timeout_s: float = 5.0,
        time_source: TimeSource | None = None,
        replicas_acked: int = 0,
        replica_timeout_ms: int = 1000,
    ) -> None:
        super().__init__(clock=clock, prefix=prefix)
        if time_source not in (None, "server", "client"):
            raise ConfigurationError(f"time_source must be 'server' or 'client', got {time_source!r}")
        self.time_source: TimeSource = time_source or ("client" if clock is not None else "server")
        self._owns_client = isinstance(client, str)
        self._url = client if isinstance(client, str) else None
        self.cluster = isinstance(client, RedisCluster) or _scheme(self._url) in CLUSTER_SCHEMES
        if replicas_acked < 0 or replica_timeout_ms < 0:
            raise ConfigurationError("replicas_acked and replica_timeout_ms must not be negative")
        if replicas_acked and self.cluster:
            raise ConfigurationError("replicas_acked (WAIT after complete) needs a single server")
        self.replicas_acked = replicas_acked
        self.replica_timeout_ms = replica_timeout_ms
        self.unacked_completes = 0
        if isinstance(client, str):
            client = self._call(_client_from_url, client, socket_timeout_s)
        self.client = client
        encoder = client.get_encoder()
        self._encoding = (encoder.encoding, encoder.encoding_errors)
        self._pool = None if self.cluster else _direct_pool(client)
        # A plain pool (not blocking, not Sentinel's) with room to spare: the store may keep one.
        self._keeps_connection = (type(self._pool) is redis.ConnectionPool
                                  and self._pool.max_connections >= MIN_POOL_TO_KEEP_CONNECTION)
        self._kept: list[Any] = []  # at most one connection, idle between requests
        self._ascii_encoding = _ASCII.encode(*self._encoding) == _ASCII.encode("ascii")
        self._claim_script = client.register_script(CLAIM_LUA)
        self._complete_script = client.register_script(COMPLETE_LUA)
        self._extend_script = client.register_script(EXTEND_LUA)
        self._release_script = client.register_script(RELEASE_LUA)

    @classmethod
    def is_outage(cls, exc: BaseException) -> bool:
        """Connection trouble, or an error reply whose code says the server cannot serve now."""
        if isinstance(exc, cls.unavailable_errors):
            return True
        if not isinstance(exc, redis.exceptions.ResponseError):
            return False
        code = getattr(exc, "status_code", None) or str(exc).split(" ", 1)[0]
        return code in OUTAGE_REPLY_CODES

    def describe(self) -> str:
        if self._url:
            return f"{'redis cluster' if self.cluster else 'redis'} at {redact_url(self._url)}"
        if self.cluster:
            nodes = sorted(node.name for node in self.client.get_primaries())
            return f"redis cluster at {', '.join(nodes) or '?'}"
        kwargs = getattr(getattr(self.client, "connection_pool", None), "connection_kwargs", {})
        where = f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}" if kwargs else "client"
        return f"redis at {where}"

    def close(self) -> None:
        while self._kept:
            self._pool.release(self._kept.pop())
        if self._owns_client:
            self.client.close()

    def _ping(self) -> None:
        if self.cluster:
            self.client.ping(target_nodes=RedisCluster.PRIMARIES)
        else:
            self.client.ping()

    def _now_ms(self) -> int | str:  # type: ignore[override]
        return "" if self.time_source == "server" else super()._now_ms()

    def _claim(self, skeys, tokens, fingerprints, now_ms, lease_ms, slide_ms):
        replies, failure = self._eval_groups(self._claim_script, [now_ms, lease_ms, slide_ms], skeys,
                                             _token_columns(tokens, fingerprints), split=_split_claims)
        if failure is not None:
            # Undo what the reachable nodes granted, so a redelivery is not held IN_FLIGHT
            # for a lease by a batch that was never decided; best effort, the lease bounds it.
            granted = [(sk, tok, fp)
                       for sk, tok, fp, r in zip(skeys, tokens, fingerprints, replies, strict=True)
                       if r is not None and r.startswith("C")]
            with contextlib.suppress(redis.exceptions.RedisError, redis.exceptions.RedisClusterException):
                if granted:
                    self._release(granted, now_ms)
            raise failure
        return [_BLANK_OUTCOMES.get(r) or ClaimOutcome(_STATUS[r[0]], r[1:]) for r in replies]

    def _complete(self, owned, now_ms, window_ms):
        if self.replicas_acked:
            return self._settle(owned, [], now_ms, window_ms, 0)[0]
        skeys, tokens, fps = zip(*owned, strict=True)
        columns = _token_columns(tokens, fps)
        return self._eval(self._complete_script, [now_ms, window_ms], list(skeys), columns)

    def _settle(self, done, held, now_ms, window_ms, lease_ms):
        """Complete and extend (and WAIT, with ``replicas_acked``) in one pipeline: one round trip."""
        if self.cluster or not ((done and held) or self.replicas_acked):
            return super()._settle(done, held, now_ms, window_ms, lease_ms)
        calls = []
        if done:
            skeys, tokens, fps = zip(*done, strict=True)
            args = _args((now_ms, window_ms), _token_columns(tokens, fps))
            calls.append((self._complete_script, skeys, args))
        if held:
            skeys, tokens, _fps = zip(*held, strict=True)
            calls.append((self._extend_script, skeys, _args((now_ms, lease_ms), (tokens,))))
        acked = done and self.replicas_acked
        wait = ("WAIT", self.replicas_acked, self.replica_timeout_ms) if acked else None
        replies = _pipelined_scripts(self.client, calls, wait)
        if wait is not None:
            acked = replies.pop()
            if int(acked) < self.replicas_acked:
                self.unacked_completes += 1
                log.warning("complete reached %s of %d replicas within %d ms: a failover now could lose it",
                            acked, self.replicas_acked, self.replica_timeout_ms)
        flags = [_split_flags(_text(r)) for r in replies]
        return (flags.pop(0) if done else []), (flags.pop(0) if held else [])

    def _extend(self, owned, now_ms, lease_ms):
        skeys, tokens, _fps = zip(*owned, strict=True)
        return self._eval(self._extend_script, [now_ms, lease_ms], list(skeys), (tokens,))

    def _release(self, owned, now_ms):
        skeys, tokens, _fps = zip(*owned, strict=True)
        return self._eval(self._release_script, [now_ms], list(skeys), (tokens,))

    def _eval(self, script: Script, head: list[Any], keys: list[str], columns: tuple[Sequence[str], ...]
              ) -> list[bool]:
        """Run ``script`` over ``keys`` (its argument: ``head``, then each column); a flag per key."""
        replies, failure = self._eval_groups(script, head, keys, columns, split=_split_flags)
        if failure is not None:
            raise failure
        return replies

    def _eval_groups(
        self, script: Script, head: list[Any], keys: list[str], columns: tuple[Sequence[str], ...],
        *, split: Callable[[str], list[Any]],
    ) -> tuple[list[Any], BaseException | None]:
        """``_eval`` that reports a failure instead of raising it, after every slot group ran.

        ``split`` turns one call's reply into the per-key replies. The replies of keys
        whose group failed are ``None``; on one server there are no groups, so it
        either fully succeeds or raises.
        """
        if not self.cluster:
            return split(self._run(script, keys, _args(head, columns))), None
        groups: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(self.client.keyslot(key), []).append(i)
        calls = [
            (self.client.get_node_from_key(keys[idx[0]]), [keys[i] for i in idx],
             _args(head, [[c[i] for i in idx] for c in columns]))
            for idx in groups.values()
        ]
        replies: list[Any] = [None] * len(keys)
        failure = None
        for idx, reply in zip(groups.values(), _pipelined(self.client, script, calls), strict=True):
            if isinstance(reply, BaseException):
                failure = failure or reply
                continue
            for i, r in zip(idx, split(_text(reply)), strict=True):
                replies[i] = r
        return replies, failure

    def _run(self, script: Script, keys: Sequence[str], args: list[str]) -> str:
        """One call of ``script`` on a single server, its reply as text.

        A server that lost its script cache (restart, failover) answers
        NOSCRIPT, and the call is sent again as EVAL, which runs and caches it
        (safe: NOSCRIPT means it did not run).
        """
        items = [str(len(keys)), *keys, *args]
        try:
            reply = self._request("EVALSHA", script.sha, items)
        except redis.exceptions.NoScriptError:
            reply = self._request("EVAL", script.script, items)
        return _text(reply)

    def _request(self, command: str, body: str, items: list[str]) -> Any:
        """``command body *items`` on the single server: its reply, or the error it raises.

        redis-py's ``execute_command`` around the same request cost more client
        CPU than the store's own work (its per-argument packing, observability
        hooks and wrappers), so on a pooled ``redis.Redis`` the request is packed
        here (:meth:`_pack`) and sent on a connection of the client's pool,
        through the connection's ``retry`` (connection errors and timeouts
        disconnect and re-send as often as the client is configured to; error
        replies raise at once). A client holding one connection of its own
        (``single_connection_client``) goes through ``execute_command``.

        The connection of a request that succeeded is kept for the next one
        when the pool allows it (see ``_keeps_connection``): taking one from
        the pool and giving it back cost five system calls (the pool checks the
        socket for stray data) and the pool's bookkeeping, per request. A kept
        connection is not used in a forked child or once redis-py has marked it
        for reconnection; a request that failed without a whole error reply (a
        lost connection, a timeout, an interrupt) gives its connection back to
        the pool, which disconnects or drops it as it would any other.
        """
        pool = self._pool
        if pool is None:
            return self.client.execute_command(command, body, *items)
        request = self._pack(command, body, items)
        kept = self._kept
        try:
            conn = kept.pop()
        except IndexError:
            conn = pool.get_connection()
        else:
            if conn.pid != _pid or getattr(conn, "should_reconnect", _never)():
                pool.release(conn)
                conn = pool.get_connection()
        in_step = False
        try:
            reply = conn.retry.call_with_retry(lambda: _exchange(conn, request),
                                               lambda _error: conn.disconnect())
            in_step = True
        except redis.exceptions.ResponseError:
            in_step = True  # a whole error reply was read: the connection is in step
            raise
        finally:
            if in_step and self._keeps_connection and not kept:
                kept.append(conn)
            else:
                pool.release(conn)
        return reply

    def _pack(self, command: str, body: str, items: list[str]) -> bytes:
        """The RESP request of ``command body *items``.

        Keys, tokens, numbers and hex fingerprints are ASCII, so the request is
        built as one string (each argument's length in characters is then its
        length in bytes) and encoded once. Anything else, or a client encoding
        that does not keep ASCII as it is, is encoded argument by argument first
        (each byte a character of a Latin-1 string, so the same lengths hold).
        """
        text = _resp((command, body, *items))
        if self._ascii_encoding and text.isascii():
            return text.encode("ascii")
        encoding, errors = self._encoding
        return _resp([arg.encode(encoding, errors).decode("latin-1") for arg in (command, body, *items)]
                     ).encode("latin-1")


def _resp(args: Sequence[str]) -> str:
    """The RESP request of ``args`` as a string whose length headers count characters."""
    heads = _LENGTH_HEADS
    parts: list[str] = [""] * (2 * len(args))
    parts[::2] = [heads[n] if n < len(heads) else f"${n}" for n in map(len, args)]
    parts[1::2] = args
    return f"*{len(args)}\r\n" + "\r\n".join(parts) + "\r\n"


def _never() -> bool:
    return False


def _exchange(conn: redis.Connection, request: bytes) -> Any:
    """Send ``request`` on ``conn`` and read its reply (an error reply raises)."""
    conn.send_packed_command((request,))
    return conn.read_response()


def _direct_pool(client: Any) -> Any | None:
    """The connection pool :meth:`RedisStore._request` may take connections from, or ``None``.

    A ``redis.Redis`` on a pool (not holding one connection of its own), from a
    redis-py whose pools hand out connections without a command name (5.3+).
    """
    if not isinstance(client, redis.Redis) or getattr(client, "connection", None) is not None:
        return None
    pool = getattr(client, "connection_pool", None)
    get_connection = getattr(pool, "get_connection", None)
    if get_connection is None:
        return None
    name = inspect.signature(get_connection).parameters.get("command_name")
    return pool if name is None or name.default is not inspect.Parameter.empty else None


def _token_columns(tokens: Sequence[str], fingerprints: Sequence[str]) -> tuple[Sequence[str], ...]:
    """The per-key columns of a claim or complete: the tokens, and the fingerprints unless all are empty."""
    return (tokens, fingerprints) if any(fingerprints) else (tokens,)


def _args(head: Sequence[Any], columns: Sequence[Sequence[str]]) -> list[str]:
    """A script's arguments: the fields of ``head``, then each column in turn."""
    fields = [str(h) for h in head]
    for column in columns:
        fields += column
    return fields


def _pipelined_scripts(client: redis.Redis, calls: list[tuple[Script, Sequence[str], list[Any]]],
                       then: tuple[Any, ...] | None) -> list[Any]:
    """Each ``(script, keys, args)`` call, then the command ``then``, in one pipeline; their replies.

    A call answered NOSCRIPT (the server lost its script cache) is sent again as
    EVAL, with ``then`` after it (safe: NOSCRIPT means it did not run). The first
    error reply is raised.
    """
    replies: list[Any] = [None] * len(calls)
    pending = list(range(len(calls)))
    tail: Any = None
    for command in ("EVALSHA", "EVAL"):
        pipe = client.pipeline(transaction=False)
        for i in pending:
            script, keys, args = calls[i]
            pipe.execute_command(command, script.sha if command == "EVALSHA" else script.script,
                                 len(keys), *keys, *args)
        if then is not None:
            pipe.execute_command(*then)
        got = pipe.execute(raise_on_error=False)
        tail = got.pop() if then is not None else None
        for i, reply in zip(pending, got, strict=True):
            replies[i] = reply
        pending = [i for i in pending if isinstance(replies[i], redis.exceptions.NoScriptError)]
        if not pending:
            break
    for reply in (*replies, tail):
        if isinstance(reply, BaseException):
            raise reply
    return [*replies, tail] if then is not None else replies


def _pipelined(client: RedisCluster, script: Script, calls: list[tuple[ClusterNode, list[str], list[Any]]]
               ) -> list:
    """One EVALSHA per ``(node, keys, args)`` call, pipelined per node; each call's reply or exception.

    redis-py blocks the ``evalsha`` method of cluster pipelines but routes the
    raw command. Naming the node (from the client's slot table) keeps redis-py
    from asking a node for the command's keys (``COMMAND GETKEYS``, one extra
    round trip per call); a MOVED or ASK reply is still followed. A node that
    lost its script cache (restart, failover) answers NOSCRIPT: those calls
    are sent again as EVAL, which runs and caches the script (safe: NOSCRIPT
    means the script did not run).
    """
    replies: list[Any] = [None] * len(calls)
    pending = list(range(len(calls)))
    for command, body in (("EVALSHA", script.sha), ("EVAL", script.script)):
        pipe = client.pipeline()
        for i in pending:
            node, keys, args = calls[i]
            pipe.execute_command(command, body, len(keys), *keys, *args, target_nodes=node)
        for i, reply in zip(pending, pipe.execute(raise_on_error=False), strict=True):
            replies[i] = reply
        pending = [i for i in pending if isinstance(replies[i], redis.exceptions.NoScriptError)]
        if not pending:
            break
    failed = next((r for r in replies if isinstance(r, redis.exceptions.ResponseError)
                   and not RedisStore.is_outage(r)), None)
    if failed is not None:
        raise failed  # a script or usage error, not an outage: never hide it as one
    return replies


def _scheme(url: str | None) -> str:
    return url.partition("://")[0] if url else ""


def _client_from_url(url: str, socket_timeout_s: float) -> redis.Redis | RedisCluster:
    scheme, _, rest = url.partition("://")
    timeouts = {"socket_timeout": socket_timeout_s, "socket_connect_timeout": socket_timeout_s}
    if scheme in CLUSTER_SCHEMES:
        # No retries (redis-py's default is three): the cluster client re-sends each command
        # of a failed node one by one, so a hung node would stall a batch for
        # (retries + 1) x calls x timeout. Failing closed at once lets the queue redeliver;
        # MOVED and ASK redirections are followed regardless.
        return RedisCluster.from_url(
            f"{CLUSTER_SCHEMES[scheme]}://{rest}", retry=Retry(NoBackoff(), URL_CLIENT_RETRIES), **timeouts
        )
    # No retries either: redis-py re-sends a command whose reply timed out, and the Deduplicator
    # retries what it must itself (complete, release); a failed claim fails closed, redelivered.
    return redis.Redis.from_url(url, retry=Retry(NoBackoff(), URL_CLIENT_RETRIES), **timeouts)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``: in the userinfo, and in the query
    parameters redis-py also accepts (``?password=…``, ``?ssl_password=…``)."""
    parts = urlsplit(url)
    query = _SECRET_QUERY_PARAM.sub(r"\1=***", parts.query)
    if parts.password is None and query == parts.query:
        return url
    netloc = parts.netloc
    if parts.password is not None:
        netloc = parts.hostname or ""
        netloc = f"{parts.username}:***@{netloc}" if parts.username else f":***@{netloc}"
        if parts.port:
            netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _split_claims(reply: str) -> list[str]:
    return reply.split(",")


def _split_flags(reply: str) -> list[bool]:
    return [c == "1" for c in reply]
