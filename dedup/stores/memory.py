"""An in-process window store: the embedded default and the replay engine's store.

Records live in a dict. Expiry needs no scan: every record's deadline is also
appended to a FIFO queue per duration (lease, window), and since time only moves
forward each queue is ordered by deadline, so expired records are dropped from
the queue heads in amortised O(1) per operation (the tutorial's cache scanned
every key on every call).
"""

from __future__ import annotations

import threading
from collections import deque

from dedup.clock import Clock
from dedup.stores.base import DEFAULT_PREFIX, ClaimOutcome, ClaimStatus, WindowStore

_IN_FLIGHT = 0
_DONE = 1

# A record is a small list, mutated in place: [state, deadline_ms, token, fingerprint, version].
_STATE, _DEADLINE, _TOKEN, _FP, _VERSION = range(5)


class MemoryStore(WindowStore):
    """A thread-safe in-memory window store with amortised O(1) expiry.

    ``max_keys`` bounds the number of live records: past it, the record closest
    to expiry is evicted (counted in ``evictions``; an evicted completed record
    can let a later duplicate through).
    """

    name = "memory"

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        prefix: str = DEFAULT_PREFIX,
        max_keys: int | None = None,
    ) -> None:
        super().__init__(clock=clock, prefix=prefix)
        if max_keys is not None and max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, got {max_keys}")
        self.max_keys = max_keys
        self.evictions = 0
        self._records: dict[str, list] = {}
        self._queues: dict[int, deque[tuple[int, str, int]]] = {}
        self._version = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Live records (expired ones not yet collected are excluded)."""
        with self._lock:
            self._expire(self._now_ms())
            return len(self._records)

    def _claim(self, skeys, tokens, fingerprints, now_ms, lease_ms, slide_ms):
        out = []
        records = self._records
        with self._lock:
            self._expire(now_ms)
            for skey, token, fp in zip(skeys, tokens, fingerprints, strict=True):
                rec = records.get(skey)
                if rec is not None and rec[_DEADLINE] > now_ms:
                    if rec[_STATE] == _DONE:
                        if slide_ms:
                            self._schedule(skey, rec, now_ms + slide_ms, slide_ms)
                        out.append(ClaimOutcome(ClaimStatus.DUPLICATE, rec[_FP]))
                    else:
                        out.append(ClaimOutcome(ClaimStatus.IN_FLIGHT, rec[_FP]))
                    continue
                rec = [_IN_FLIGHT, 0, token, fp, 0]
                records[skey] = rec
                self._schedule(skey, rec, now_ms + lease_ms, lease_ms)
                out.append(ClaimOutcome(ClaimStatus.CLAIMED, fp))
            self._bound()
        return out

    def _complete(self, owned, now_ms, window_ms):
        out = []
        records = self._records
        with self._lock:
            self._expire(now_ms)
            for skey, token, fp in owned:
                rec = records.get(skey)
                if rec is not None and rec[_DEADLINE] > now_ms and not (
                    rec[_STATE] == _IN_FLIGHT and rec[_TOKEN] == token
                ):
                    out.append(False)  # someone else holds or completed it
                    continue
                if rec is None or rec[_DEADLINE] <= now_ms:
                    rec = [_DONE, 0, "", fp, 0]
                    records[skey] = rec
                rec[_STATE] = _DONE
                rec[_TOKEN] = ""
                self._schedule(skey, rec, now_ms + window_ms, window_ms)
                out.append(True)
            self._bound()
        return out

    def _release(self, owned, now_ms):
        out = []
        with self._lock:
            for skey, token, _fp in owned:
                rec = self._records.get(skey)
                mine = (
                    rec is not None
                    and rec[_STATE] == _IN_FLIGHT
                    and rec[_DEADLINE] > now_ms
                    and rec[_TOKEN] == token
                )
                if mine:
                    del self._records[skey]
                out.append(mine)
        return out

    def _schedule(self, skey: str, rec: list, deadline_ms: int, duration_ms: int) -> None:
        self._version += 1
        rec[_DEADLINE] = deadline_ms
        rec[_VERSION] = self._version
        queue = self._queues.get(duration_ms)
        if queue is None:
            queue = self._queues[duration_ms] = deque()
        queue.append((deadline_ms, skey, self._version))

    def _expire(self, now_ms: int) -> None:
        records = self._records
        for queue in self._queues.values():
            while queue and queue[0][0] <= now_ms:
                _deadline, skey, version = queue.popleft()
                rec = records.get(skey)
                if rec is not None and rec[_VERSION] == version:
                    del records[skey]

    def _bound(self) -> None:
        if self.max_keys is None:
            return
        while len(self._records) > self.max_keys:
            # Evict the live record closest to its deadline: the head of some queue.
            head_queue = min(
                (q for q in self._queues.values() if q), key=lambda q: q[0][0], default=None
            )
            if head_queue is None:
                return
            _deadline, skey, version = head_queue.popleft()
            rec = self._records.get(skey)
            if rec is not None and rec[_VERSION] == version:
                del self._records[skey]
                self.evictions += 1
