"""An in-process window store: the embedded default and the replay engine's store.

Records live in dicts. Expiry needs no scan: every record's deadline is also
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

# Layout, chosen for throughput at a million live keys, where memory traffic and
# the cyclic garbage collector, not bytecode, set the pace:
#
# * Leases in flight and completed records live in separate dicts. Leases are
#   few (bounded by the consumers' concurrency), so a lease check is a hit in a
#   small hot dict; the large dict holds completed records only.
# * A completed record is its deadline (an int, shared by the batch completed
#   together), or ``(deadline_ms, fingerprint)`` under payload validation. A
#   dict of strings to ints is never tracked by the garbage collector, so a
#   million completed keys add nothing to its passes.
# * Queues hold one entry per batch. A completed-record entry is
#   ``(deadline_ms, storage_keys)``; a key whose record no longer has that
#   deadline is stale (slid, or replaced), and a later entry covers it. A lease
#   entry is ``[deadline_ms, storage_keys, held]``, ``held`` counting the
#   batch's leases not yet completed or released, so a batch whose leases all
#   ended is dropped at its deadline without looking a key up.
_Lease = tuple[int, str, str, list]  # (deadline_ms, token, fingerprint, its lease-queue entry)
_Done = int | tuple[int, str]  # deadline_ms, or (deadline_ms, fingerprint)
_Queue = deque[tuple[int, tuple[str, ...]]]
_LeaseQueue = deque[list]
_HELD = 2  # index of ``held`` in a lease-queue entry

_CLAIMED, _DUPLICATE, _BUSY = ClaimStatus.CLAIMED, ClaimStatus.DUPLICATE, ClaimStatus.IN_FLIGHT
# Outcomes without a fingerprint (no payload validation) are shared: they are immutable.
_CLAIMED_BLANK, _DUPLICATE_BLANK, _BUSY_BLANK = (ClaimOutcome(s) for s in (_CLAIMED, _DUPLICATE, _BUSY))


class MemoryStore(WindowStore):
    """A thread-safe in-memory window store with amortised O(1) expiry.

    ``max_keys`` bounds the number of completed records: past it, the completed
    record closest to expiry is evicted (counted in ``evictions``: an evicted
    record can let a later duplicate through). Claims in flight are never evicted.
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
        self._leases: dict[str, _Lease] = {}
        self._done: dict[str, _Done] = {}
        self._lease_queues: dict[int, _LeaseQueue] = {}
        self._done_queues: dict[int, _Queue] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Live records (expired ones not yet collected are excluded)."""
        with self._lock:
            self._expire(self._now_ms())
            return len(self._leases) + len(self._done)

    def _claim(self, skeys, tokens, fingerprints, now_ms, lease_ms, slide_ms):
        out = []
        append = out.append
        leases, done = self._leases, self._done
        claimed: list[str] = []
        slid: list[str] = []
        with self._lock:
            self._expire(now_ms)
            lease_deadline = now_ms + lease_ms
            entry = [lease_deadline, (), 0]
            slide_deadline = now_ms + slide_ms
            for skey, token, fp in zip(skeys, tokens, fingerprints, strict=True):
                # ``in`` first: most keys are new, and a miss costs least that way.
                if skey in done:
                    rec = done[skey]
                    deadline, rec_fp = (rec, "") if rec.__class__ is int else rec
                    if deadline > now_ms:
                        if slide_ms:
                            done[skey] = (slide_deadline, rec_fp) if rec_fp else slide_deadline
                            slid.append(skey)
                        append(ClaimOutcome(_DUPLICATE, rec_fp) if rec_fp else _DUPLICATE_BLANK)
                        continue
                if skey in leases:
                    lease = leases[skey]
                    if lease[0] > now_ms:
                        append(ClaimOutcome(_BUSY, lease[2]) if lease[2] else _BUSY_BLANK)
                        continue
                leases[skey] = (lease_deadline, token, fp, entry)
                claimed.append(skey)
                append(ClaimOutcome(_CLAIMED, fp) if fp else _CLAIMED_BLANK)
            if claimed:
                entry[1], entry[_HELD] = tuple(claimed), len(claimed)
                _queue(self._lease_queues, lease_ms).append(entry)
            if slid:
                _queue(self._done_queues, slide_ms).append((slide_deadline, tuple(slid)))
            if self.max_keys is not None:
                self._bound()
        return out

    def _complete(self, owned, now_ms, window_ms):
        out = []
        append = out.append
        leases, done = self._leases, self._done
        completed: list[str] = []
        with self._lock:
            self._expire(now_ms)
            deadline = now_ms + window_ms
            for skey, token, fp in owned:
                lease = leases.get(skey)
                # Our live lease, the usual case: no live completed record exists beside a live
                # lease (a claim that finds one reports DUPLICATE), so none is looked up.
                mine = lease is not None and lease[1] == token and lease[0] > now_ms
                if not mine:
                    rec = done.get(skey)
                    if rec is not None and (rec if rec.__class__ is int else rec[0]) > now_ms:
                        append(False)  # someone else completed it
                        continue
                    if lease is not None and lease[0] > now_ms:
                        append(False)  # someone else holds it
                        continue
                if lease is not None:
                    del leases[skey]
                    lease[3][_HELD] -= 1
                    if mine:
                        fp = lease[2]
                done[skey] = (deadline, fp) if fp else deadline
                completed.append(skey)
                append(True)
            if completed:
                _queue(self._done_queues, window_ms).append((deadline, tuple(completed)))
            if self.max_keys is not None:
                self._bound()
        return out

    def _extend(self, owned, now_ms, lease_ms):
        out = []
        leases = self._leases
        extended: list[str] = []
        with self._lock:
            deadline = now_ms + lease_ms
            entry = [deadline, (), 0]
            for skey, token, _fp in owned:
                lease = leases.get(skey)
                mine = lease is not None and lease[0] > now_ms and lease[1] == token
                if mine:
                    lease[3][_HELD] -= 1  # its old queue entry no longer covers it
                    leases[skey] = (deadline, token, lease[2], entry)
                    extended.append(skey)
                out.append(mine)
            if extended:
                entry[1], entry[_HELD] = tuple(extended), len(extended)
                _queue(self._lease_queues, lease_ms).append(entry)
        return out

    def _release(self, owned, now_ms):
        out = []
        leases = self._leases
        with self._lock:
            for skey, token, _fp in owned:
                lease = leases.get(skey)
                mine = lease is not None and lease[0] > now_ms and lease[1] == token
                if mine:
                    del leases[skey]
                    lease[3][_HELD] -= 1
                out.append(mine)
        return out

    def _expire(self, now_ms: int) -> None:
        leases, done = self._leases, self._done
        for queue in self._lease_queues.values():
            while queue and queue[0][0] <= now_ms:
                _deadline, skeys, held = queue.popleft()
                if not held:
                    continue  # every lease of that batch was completed or released
                for skey in skeys:
                    lease = leases.get(skey)
                    if lease is not None and lease[0] <= now_ms:
                        del leases[skey]
        pop = done.pop
        for queue in self._done_queues.values():
            while queue and queue[0][0] <= now_ms:
                for skey in queue.popleft()[1]:
                    # One lookup for the usual expired record; a live one (slid, or completed
                    # again since) goes back.
                    rec = pop(skey, None)
                    if rec is not None and (rec if rec.__class__ is int else rec[0]) > now_ms:
                        done[skey] = rec

    def _bound(self) -> None:
        done = self._done
        while len(done) + len(self._leases) > self.max_keys:
            # Evict the completed record closest to its deadline; leases in flight are never
            # evicted (their number is bounded by the consumers' concurrency).
            heads = [q for q in self._done_queues.values() if self._trim(q)]
            if not heads:
                return
            queue = min(heads, key=lambda q: q[0][0])
            deadline_ms, skeys = queue[0]
            del done[skeys[0]]
            self.evictions += 1
            if len(skeys) > 1:
                queue[0] = (deadline_ms, skeys[1:])
            else:
                queue.popleft()

    def _trim(self, queue: _Queue) -> bool:
        """Drop stale keys from the head of ``queue``; whether a live record heads it now."""
        done = self._done
        while queue:
            deadline_ms, skeys = queue[0]
            for i, skey in enumerate(skeys):
                rec = done.get(skey)
                if rec is not None and (rec if rec.__class__ is int else rec[0]) == deadline_ms:
                    if i:
                        queue[0] = (deadline_ms, skeys[i:])
                    return True
            queue.popleft()
        return False


def _queue(queues: dict, duration_ms: int) -> deque:
    queue = queues.get(duration_ms)
    if queue is None:
        queue = queues[duration_ms] = deque()
    return queue
