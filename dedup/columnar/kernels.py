"""Loops compiled with numba: a dump's keys grouped once, then each window in passes without a sort.

The sweep's per-window work is sequential by nature (a fixed window's chain of
processed sightings, the live-key count as deadlines pass, which copy of an
event came first), so it is written as plain loops and compiled. They hold no
lock (``nogil``), so windows run in parallel threads, and allocate nothing the
size of the dump per window: only the sightings of repeated keys (the rows
that can be suppressed) get a per-window flag; every other message is read
from arrays :class:`dedup.columnar.sweep.ColumnarSweep` prepares once.

Row positions are int32: a dump holds fewer than 2**31 messages (the sweep checks).
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: ``slot`` of a message without a key, and of a keyed message whose key is seen once.
UNKEYED = -2
SINGLE = -1
#: Per-window flag bits of a repeated-key sighting: suppressed; its record's deadline counts.
DUP = 1
END = 2
_NEVER = np.iinfo(np.int64).max
# The state of :func:`live_keys` between runs of :func:`_run` (indices into one int64 array).
_I, _P, _HEAD, _TAIL, _DROPPED, _STARTED, _PEAK, _TOTAL, _STATE = range(9)


@njit(cache=True, nogil=True, inline="always")
def _run_end(order: np.ndarray, values: np.ndarray, j: int) -> int:
    """The end of the run of equal ``values`` that starts at sorted position ``j`` (``order`` sorts them)."""
    k = j + 1
    while k < len(order) and values[order[k]] == values[order[j]]:
        k += 1
    return k


@njit(cache=True, nogil=True)
def key_groups(order: np.ndarray, codes: np.ndarray, t: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sightings of keys seen more than once, by key (each key's in arrival order) and by row.

    ``order`` sorts ``codes`` stably (unkeyed rows, code -1, first). Returns
    ``t_m``, ``first_m`` (a key's first sighting) and ``pos_m`` (the sighting's
    rank in row order) by key; ``rows_r``, those rows in row order followed
    by a sentinel ``n`` (no row); and ``slot``, per message its rank in
    ``rows_r``, else :data:`UNKEYED` or :data:`SINGLE`.
    """
    n = len(codes)
    slot = np.empty(n, dtype=np.int32)
    for i in range(n):
        slot[i] = UNKEYED if codes[i] < 0 else SINGLE
    j = 0
    while j < n and codes[order[j]] < 0:
        j += 1
    m = 0
    while j < n:
        k = _run_end(order, codes, j)
        if k - j > 1:
            m += k - j
            for g in range(j, k):
                slot[order[g]] = 0  # marked; numbered in row order below
        j = k
    rows_r = np.empty(m + 1, dtype=np.int32)
    rows_r[m] = n
    c = 0
    for i in range(n):
        if slot[i] >= 0:
            slot[i] = c
            rows_r[c] = i
            c += 1
    t_m = np.empty(m, dtype=np.int64)
    first_m = np.empty(m, dtype=np.bool_)
    pos_m = np.empty(m, dtype=np.int32)
    c = 0
    previous = -1
    for j in range(n):
        r = order[j]
        s = slot[r]
        if s >= 0:
            t_m[c] = t[r]
            first_m[c] = c == 0 or codes[r] != previous
            pos_m[c] = s
            previous = codes[r]
            c += 1
    return t_m, first_m, pos_m, rows_r, slot


@njit(cache=True, nogil=True)
def digests_collide(order: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> bool:
    """Whether two keyed rows (``hi`` >= 0) share ``hi`` but not ``lo``; ``order`` sorts ``hi``.

    Reads through ``order`` rather than gathering sorted copies of both halves
    (at 100M messages, 1.6 GB of temporaries less).
    """
    for j in range(1, len(order)):
        a, b = order[j - 1], order[j]
        if hi[b] >= 0 and hi[a] == hi[b] and lo[a] != lo[b]:
            return True
    return False


@njit(cache=True, nogil=True)
def repeat_gaps(order: np.ndarray, codes: np.ndarray, t: np.ndarray) -> tuple[int, int, np.ndarray]:
    """Distinct keys, keys seen more than once, and each repeat's gap (ms) to its key's previous sighting.

    ``order`` sorts ``codes`` stably (unkeyed rows, code -1, first).
    """
    n = len(codes)
    j = 0
    while j < n and codes[order[j]] < 0:
        j += 1
    distinct = 0
    repeated = 0
    for g in range(j, n):
        if g == j or codes[order[g]] != codes[order[g - 1]]:
            distinct += 1
            repeated += g + 1 < n and codes[order[g + 1]] == codes[order[g]]
    gaps = np.empty(n - j - distinct, dtype=np.int64)
    c = 0
    for g in range(j + 1, n):
        if codes[order[g]] == codes[order[g - 1]]:
            gaps[c] = t[order[g]] - t[order[g - 1]]
            c += 1
    return distinct, repeated, gaps


@njit(cache=True, nogil=True)
def truth_groups(order: np.ndarray, logical: np.ndarray, slot: np.ndarray, m: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Copies of events delivered more than once, by event, and which repeated-key sightings are lone events.

    ``order`` sorts ``logical`` stably. Returns ``truth_slot`` (each copy's
    ``slot``) and ``truth_first`` (an event's first copy), and ``single_r``
    per sighting in ``rows_r``: its event was delivered once (suppressing it is a false drop).
    """
    n = len(logical)
    single_r = np.zeros(m, dtype=np.bool_)
    size = 0
    j = 0
    while j < n:
        k = _run_end(order, logical, j)
        if k - j > 1:
            size += k - j
        elif slot[order[j]] >= 0:
            single_r[slot[order[j]]] = True
        j = k
    truth_slot = np.empty(size, dtype=np.int32)
    truth_first = np.empty(size, dtype=np.bool_)
    c = 0
    j = 0
    while j < n:
        k = _run_end(order, logical, j)
        if k - j > 1:
            for g in range(j, k):
                truth_slot[c] = slot[order[g]]
                truth_first[c] = g == j
                c += 1
        j = k
    return truth_slot, truth_first, single_r


@njit(cache=True, nogil=True)
def duplicates(t_m: np.ndarray, first_m: np.ndarray, pos_m: np.ndarray, window_ms: int, sliding: bool
               ) -> np.ndarray:
    """Per repeated-key sighting, in row order: :data:`DUP` if suppressed, :data:`END` if its deadline counts.

    Fixed: a sighting is processed when it comes at least a window after the
    last processed sighting of its key (the first of a key always is), and
    each processed sighting writes a record expiring a window later. Sliding:
    a sighting is suppressed when it comes within a window of the previous
    one; a record ends at a key's last sighting before a gap of a window or
    more. One flag more, 0, follows as a sentinel (see :func:`key_groups`).
    """
    m = len(t_m)
    flags = np.zeros(m + 1, dtype=np.uint8)
    last = 0
    for j in range(m):
        if sliding:
            dup = not first_m[j] and t_m[j] - t_m[j - 1] < window_ms
            end = j + 1 == m or first_m[j + 1] or t_m[j + 1] - t_m[j] >= window_ms
        else:
            end = first_m[j] or t_m[j] - last >= window_ms
            if end:
                last = t_m[j]
            dup = not end
        flags[pos_m[j]] = DUP * dup + END * end
    return flags


@njit(cache=True, nogil=True)
def _first_after(t: np.ndarray, x: int) -> int:
    """The first row whose time is after ``x`` (binary search)."""
    lo, hi = 0, len(t)
    while lo < hi:
        mid = (lo + hi) // 2
        if t[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, nogil=True)
def _flags(keyed: np.ndarray, rows_r: np.ndarray, flags_r: np.ndarray, i: int, p: int) -> tuple[int, int]:
    """Message ``i``'s :data:`DUP` / :data:`END` bits and whether it is ``rows_r[p]`` (without a branch)."""
    repeated = np.int64(rows_r[p] == i)
    return repeated * flags_r[p] + (1 - repeated) * END * np.int64(keyed[i]), repeated


@njit(cache=True, nogil=True)
def live_keys(t: np.ndarray, keyed: np.ndarray, rows_r: np.ndarray, flags_r: np.ndarray, window_ms: int,
              lo: int, hi: int, buffer_rows: int = 0) -> tuple[int, int, int, int, int]:
    """The live records after each message of rows ``lo``..``hi``-1, up to an offset the caller adds.

    A keyed message writes a record unless it is flagged :data:`DUP`; a
    record's deadline is its message's time plus the window, counted for
    keyed messages outside ``rows_r`` and for those flagged :data:`END`. A
    record is gone once a message arrives at or after its deadline; deadlines
    come in row order, so they queue in a buffer as small as the records pending.

    Rows before ``k`` (the first row within a window before message ``lo``)
    have passed their deadlines by ``lo``; this counts records started from
    ``lo`` minus deadlines passed from ``k``, so the true count after message
    ``i`` is this plus (records started before ``lo``) minus (deadlines before
    ``k``). Returns the peak and sum of the counts here, the records started,
    the deadlines among rows ``k``..``lo``-1 and among ``lo``..``hi``-1.
    ``buffer_rows``: the buffer's first size (0: enough for the deadlines a
    window holds on average).
    """
    k = _first_after(t, t[lo] - window_ms) if lo < hi else lo
    n = len(t)
    span_ms = t[n - 1] - t[0] + 1 if n else 1
    pending = n if window_ms >= span_ms else n * (window_ms / span_ms)  # deadlines pending, about
    buffer_rows = buffer_rows or min(n, int(1.25 * pending) + 65_536)  # grown if need be
    buffer = np.empty(buffer_rows + 2, dtype=np.int64)
    state = np.zeros(_STATE, dtype=np.int64)
    state[_P] = np.searchsorted(rows_r, k)
    state[_I] = k
    while state[_I] < lo:  # rows k..lo-1: deadlines pending at lo, no message counted
        _queue(t, keyed, rows_r, flags_r, window_ms, lo, buffer, state)
        buffer = _room(buffer, state)
    ends_before = state[_TAIL] + state[_DROPPED]
    state[_PEAK] = -_NEVER
    while state[_I] < hi:
        _run(t, keyed, rows_r, flags_r, window_ms, hi, buffer, state)
        buffer = _room(buffer, state)
    return (state[_PEAK], state[_TOTAL], state[_STARTED], ends_before,
            state[_TAIL] + state[_DROPPED] - ends_before)


@njit(cache=True, nogil=True)
def _run(t: np.ndarray, keyed: np.ndarray, rows_r: np.ndarray, flags_r: np.ndarray, window_ms: int, stop: int,
         buffer: np.ndarray, state: np.ndarray) -> None:
    """Messages from ``state[_I]`` up to ``stop`` or until ``buffer`` is full (its last cell: the sentinel).

    Deadlines ``buffer[head:tail]`` are pending. The loop keeps ``buffer``
    fixed (growing it is :func:`_room`'s), which keeps it fast.
    """
    i0, p, head, tail = state[_I], state[_P], state[_HEAD], state[_TAIL]
    started, peak, total, dropped = state[_STARTED], state[_PEAK], state[_TOTAL], state[_DROPPED]
    end = min(stop, i0 + len(buffer) - 1 - tail)  # a message queues one deadline at most
    buffer[tail] = _NEVER  # the scan for passed deadlines stops there without a bounds check
    for i in range(i0, end):
        f, repeated = _flags(keyed, rows_r, flags_r, i, p)
        p += repeated
        ti = t[i]
        started += keyed[i] & (1 - (f & DUP))
        head += buffer[head] <= ti  # most messages pass a deadline or two: no branch to mispredict
        head += buffer[head] <= ti
        while buffer[head] <= ti:
            head += 1
        live = started - dropped - head
        peak = max(peak, live)
        total += live
        buffer[tail] = ti + window_ms
        tail += f >> 1
        buffer[tail] = _NEVER
    state[_I], state[_P], state[_HEAD], state[_TAIL] = end, p, head, tail
    state[_STARTED], state[_PEAK], state[_TOTAL] = started, peak, total


@njit(cache=True, nogil=True)
def _queue(t: np.ndarray, keyed: np.ndarray, rows_r: np.ndarray, flags_r: np.ndarray, window_ms: int,
           stop: int, buffer: np.ndarray, state: np.ndarray) -> None:
    """:func:`_run` without counting: only the deadlines of rows up to ``stop`` join the buffer."""
    i0, p, tail = state[_I], state[_P], state[_TAIL]
    end = min(stop, i0 + len(buffer) - 1 - tail)
    for i in range(i0, end):
        f, repeated = _flags(keyed, rows_r, flags_r, i, p)
        p += repeated
        buffer[tail] = t[i] + window_ms
        tail += f >> 1
    state[_I], state[_P], state[_TAIL] = end, p, tail


@njit(cache=True, nogil=True)
def _room(buffer: np.ndarray, state: np.ndarray) -> np.ndarray:
    """``buffer`` with room for a quarter of it: as is, its pending deadlines moved down, or twice as large.

    Moving down happens once at least half the deadlines queued have passed,
    so each deadline is copied a bounded number of times on average.
    """
    head, tail = state[_HEAD], state[_TAIL]
    if tail < len(buffer) - 1 - len(buffer) // 4:
        return buffer
    pending = tail - head
    grown = buffer if head >= pending else np.empty(2 * len(buffer), dtype=buffer.dtype)
    for x in range(pending):  # forward: in place, the pending move down
        grown[x] = buffer[head + x]
    state[_DROPPED] += head
    state[_HEAD] = 0
    state[_TAIL] = pending
    return grown


@njit(cache=True, nogil=True)
def classify(flags_r: np.ndarray, single_r: np.ndarray, truth_slot: np.ndarray, truth_first: np.ndarray
             ) -> tuple[int, int, int]:
    """Caught, leaked and false drops under the suppressions (:data:`DUP`) of ``flags_r``.

    ``truth_slot`` lists the copies of events delivered more than once,
    grouped by event, each group in arrival order (``truth_first`` opens a
    group). A suppressed copy is caught if its event was already processed,
    else a false drop; a processed copy of an event already processed is
    leaked. A suppressed event delivered once (``single_r``) is a false drop.
    """
    caught = 0
    leaked = 0
    false_drops = 0
    for j in range(len(single_r)):
        false_drops += (flags_r[j] & DUP) * single_r[j]
    done = 0
    for j in range(len(truth_slot)):
        if truth_first[j]:
            done = 0
        s = truth_slot[j]
        if s >= 0 and flags_r[s] & DUP:
            if done > 0:
                caught += 1
            else:
                false_drops += 1
        elif s != UNKEYED:
            if done > 0:
                leaked += 1
            done += 1
    return caught, leaked, false_drops
