"""A window store on Redis (or anything speaking its protocol: fakeredis, ElastiCache).

Each phase of a batch (claim, complete, release) is one Lua script call, so a
batch of ten SQS messages costs one round trip per phase, and each key's
check-and-set is atomic. A record is one string value:

* ``I<deadline_ms>,<token>,<fingerprint>`` while a consumer holds the lease;
* ``D<deadline_ms>,<fingerprint>`` once completed.

Deadlines come from the store's clock and are checked inside the script; every
key is also written with a ``PX`` TTL of the same duration so Redis frees it
(no key is ever left without a TTL).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.exceptions

from dedup.clock import Clock
from dedup.stores.base import DEFAULT_PREFIX, ClaimOutcome, ClaimStatus, WindowStore

# KEYS: storage keys. ARGV: now_ms, lease_ms, slide_ms, then token_i, fp_i per key.
# Returns one string per key: status letter (C/D/I) followed by the fingerprint on record.
CLAIM_LUA = """
local now = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local slide = tonumber(ARGV[3])
local out = {}
for i, key in ipairs(KEYS) do
  local token, fp = ARGV[2 + 2 * i], ARGV[3 + 2 * i]
  local v = redis.call('GET', key)
  local live = false
  local comma
  if v then
    comma = string.find(v, ',', 2, true)
    live = comma ~= nil and tonumber(string.sub(v, 2, comma - 1)) > now
  end
  if live and string.sub(v, 1, 1) == 'D' then
    local rec_fp = string.sub(v, comma + 1)
    if slide > 0 then
      redis.call('SET', key, 'D' .. (now + slide) .. ',' .. rec_fp, 'PX', slide)
    end
    out[i] = 'D' .. rec_fp
  elseif live then
    local rest = string.sub(v, comma + 1)
    out[i] = 'I' .. string.sub(rest, (string.find(rest, ',', 1, true) or #rest) + 1)
  else
    redis.call('SET', key, 'I' .. (now + lease) .. ',' .. token .. ',' .. fp, 'PX', lease)
    out[i] = 'C' .. fp
  end
end
return out
"""

# KEYS: storage keys. ARGV: now_ms, window_ms, then token_i, fp_i per key. Returns 1/0 per key.
COMPLETE_LUA = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local out = {}
for i, key in ipairs(KEYS) do
  local token, fp = ARGV[1 + 2 * i], ARGV[2 + 2 * i]
  local v = redis.call('GET', key)
  local ok = true
  if v then
    local comma = string.find(v, ',', 2, true)
    local live = comma ~= nil and tonumber(string.sub(v, 2, comma - 1)) > now
    if live then
      local rest = string.sub(v, comma + 1)
      local c2 = string.find(rest, ',', 1, true)
      ok = string.sub(v, 1, 1) == 'I' and c2 ~= nil and string.sub(rest, 1, c2 - 1) == token
    end
  end
  if ok then
    redis.call('SET', key, 'D' .. (now + window) .. ',' .. fp, 'PX', window)
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

# KEYS: storage keys. ARGV: now_ms, then token_i per key. Deletes live records still held by the token.
RELEASE_LUA = """
local now = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  out[i] = 0
  if v and string.sub(v, 1, 1) == 'I' then
    local comma = string.find(v, ',', 2, true)
    local rest = string.sub(v, comma + 1)
    local c2 = string.find(rest, ',', 1, true)
    if c2 and tonumber(string.sub(v, 2, comma - 1)) > now and string.sub(rest, 1, c2 - 1) == ARGV[1 + i] then
      redis.call('DEL', key)
      out[i] = 1
    end
  end
end
return out
"""

_STATUS = {"C": ClaimStatus.CLAIMED, "D": ClaimStatus.DUPLICATE, "I": ClaimStatus.IN_FLIGHT}


class RedisStore(WindowStore):
    """A window store on Redis; takes a redis-py client or a ``redis://`` / ``rediss://`` URL.

    A password and TLS are configured in the URL
    (``rediss://:secret@host:6380/0``); the URL is never logged with its password.
    """

    name = "redis"
    unavailable_errors = (
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        redis.exceptions.BusyLoadingError,
        redis.exceptions.AuthenticationError,
        redis.exceptions.AuthorizationError,
    )

    def __init__(
        self,
        client: Any,
        *,
        clock: Clock | None = None,
        prefix: str = DEFAULT_PREFIX,
        socket_timeout_s: float = 5.0,
    ) -> None:
        super().__init__(clock=clock, prefix=prefix)
        self._owns_client = isinstance(client, str)
        self._url = client if isinstance(client, str) else None
        if isinstance(client, str):
            client = redis.Redis.from_url(
                client, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s
            )
        self.client = client
        self._claim_script = client.register_script(CLAIM_LUA)
        self._complete_script = client.register_script(COMPLETE_LUA)
        self._release_script = client.register_script(RELEASE_LUA)

    def describe(self) -> str:
        if self._url:
            return f"redis at {redact_url(self._url)}"
        kwargs = getattr(getattr(self.client, "connection_pool", None), "connection_kwargs", {})
        where = f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}" if kwargs else "client"
        return f"redis at {where}"

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def _claim(self, skeys, tokens, fingerprints, now_ms, lease_ms, slide_ms):
        args: list[Any] = [now_ms, lease_ms, slide_ms]
        for token, fp in zip(tokens, fingerprints, strict=True):
            args += [token, fp]
        raw = self._claim_script(keys=skeys, args=args)
        return [ClaimOutcome(_STATUS[_text(r)[0]], _text(r)[1:]) for r in raw]

    def _complete(self, owned, now_ms, window_ms):
        args: list[Any] = [now_ms, window_ms]
        for _skey, token, fp in owned:
            args += [token, fp]
        return [bool(r) for r in self._complete_script(keys=[o[0] for o in owned], args=args)]

    def _release(self, owned, now_ms):
        raw = self._release_script(keys=[o[0] for o in owned], args=[now_ms, *(o[1] for o in owned)])
        return [bool(r) for r in raw]


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.hostname or ""
    netloc = f"{parts.username}:***@{netloc}" if parts.username else f":***@{netloc}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
