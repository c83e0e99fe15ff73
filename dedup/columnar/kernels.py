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


@njit(cache=True, nogil=True)
def key_groups(order: np.ndarray, codes: np.ndarray, t: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sightings of keys seen more than once, by key (each key's in arrival order) and by row.

    ``order`` sorts ``codes`` stably (unkeyed rows, code -1, first). Returns
    ``t_m``, ``first_m`` (a key's first sighting) and ``pos_m`` (the sighting's
    rank in row order) by key; ``rows_r``, those rows in row order; and
    ``slot``, per message its rank in ``rows_r``, else :data:`UNKEYED` or :data:`SINGLE`.
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
        k = j + 1
        while k < n and codes[order[k]] == codes[order[j]]:
            k += 1
        if k - j > 1:
            m += k - j
            for g in range(j, k):
                slot[order[g]] = 0  # marked; numbered in row order below
        j = k
    rows_r = np.empty(m, dtype=np.int32)
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
        k = j + 1
        while k < n and logical[order[k]] == logical[order[j]]:
            k += 1
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
        k = j + 1
        while k < n and logical[order[k]] == logical[order[j]]:
            k += 1
        if k - j > 1:
            for g in range(j, k):
                truth_slot[c] = slot[order[g]]
                truth_first[c] = g == j
                c += 1
        j = k
    return truth_slot, truth_first, single_r


@njit(cache=True, nogil=True)
def duplicates(t_m: np.ndarray, first_m: np.ndarray, pos_m: np.ndarray, window_ms: int, sliding: bool
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per repeated-key sighting, in row order: suppressed, and whether its record's deadline counts.

    Fixed: a sighting is processed when it comes at least a window after the
    last processed sighting of its key (the first of a key always is), and
    each processed sighting writes a record expiring a window later. Sliding:
    a sighting is suppressed when it comes within a window of the previous
    one; a record ends at a key's last sighting before a gap of a window or more.
    """
    m = len(t_m)
    dup = np.empty(m, dtype=np.bool_)
    end = np.empty(m, dtype=np.bool_)
    last = 0
    for j in range(m):
        p = pos_m[j]
        if sliding:
            dup[p] = not first_m[j] and t_m[j] - t_m[j - 1] < window_ms
            end[p] = j + 1 == m or first_m[j + 1] or t_m[j + 1] - t_m[j] >= window_ms
        else:
            processed = first_m[j] or t_m[j] - last >= window_ms
            if processed:
                last = t_m[j]
            dup[p] = not processed
            end[p] = processed
    return dup, end


@njit(cache=True, nogil=True)
def live_keys(t: np.ndarray, keyed: np.ndarray, rows_r: np.ndarray, dup_r: np.ndarray, end_r: np.ndarray,
              window_ms: int) -> tuple[int, int]:
    """Peak and sum over messages of the records live after each message.

    A keyed message writes a record unless suppressed (``dup_r``, for the rows
    ``rows_r``); a record's deadline is its message's time plus the window,
    counted for every keyed message outside ``rows_r`` and where ``end_r`` says
    so inside. Deadlines come in row order, so a second cursor follows them: a
    record is gone once a message arrives at or after its deadline.
    """
    n = len(t)
    m = len(rows_r)
    started = 0
    ended = 0
    peak = 0
    total = 0
    p = 0  # next repeated-key sighting, for the message i
    j = 0  # next message whose deadline may not have passed
    q = 0  # next repeated-key sighting at or after j
    for i in range(n):
        if p < m and rows_r[p] == i:
            started += not dup_r[p]
            p += 1
        else:
            started += keyed[i]
        ti = t[i]
        while j < n:
            repeated = q < m and rows_r[q] == j
            counts = end_r[q] if repeated else keyed[j]
            if counts and t[j] + window_ms > ti:
                break
            ended += counts
            q += repeated
            j += 1
        live = started - ended
        peak = max(peak, live)
        total += live
    return peak, total


@njit(cache=True, nogil=True)
def classify(dup_r: np.ndarray, single_r: np.ndarray, truth_slot: np.ndarray, truth_first: np.ndarray
             ) -> tuple[int, int, int]:
    """Caught, leaked and false drops under the suppressions ``dup_r``.

    ``truth_slot`` lists the copies of events delivered more than once,
    grouped by event, each group in arrival order (``truth_first`` opens a
    group). A suppressed copy is caught if its event was already processed,
    else a false drop; a processed copy of an event already processed is
    leaked. A suppressed event delivered once (``single_r``) is a false drop.
    """
    caught = 0
    leaked = 0
    false_drops = 0
    for j in range(len(dup_r)):
        false_drops += dup_r[j] and single_r[j]
    done = 0
    for j in range(len(truth_slot)):
        if truth_first[j]:
            done = 0
        s = truth_slot[j]
        if s >= 0 and dup_r[s]:
            if done > 0:
                caught += 1
            else:
                false_drops += 1
        elif s != UNKEYED:
            if done > 0:
                leaked += 1
            done += 1
    return caught, leaked, false_drops
