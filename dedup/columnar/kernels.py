"""Per-window loops compiled with numba: each window costs one pass over the messages, not a sort.

The sweep's per-window work is sequential by nature (a fixed window's chain of
processed sightings, the live-key count as deadlines pass, which copy of an
event came first), so it is written as plain loops and compiled; every array
they read is precomputed once per dump by :class:`dedup.columnar.sweep.ColumnarSweep`.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def fixed_duplicates(t_m: np.ndarray, first_m: np.ndarray, window_ms: int) -> np.ndarray:
    """Which sightings (grouped by key, each group in arrival order) a fixed window suppresses.

    A sighting is processed when it comes at least a window after the last
    processed sighting of its key; the first of a key always is.
    """
    dup = np.zeros(len(t_m), dtype=np.bool_)
    last = 0
    for j in range(len(t_m)):
        if first_m[j] or t_m[j] - last >= window_ms:
            last = t_m[j]
        else:
            dup[j] = True
    return dup


@njit(cache=True, nogil=True)
def live_keys(t: np.ndarray, start: np.ndarray, end: np.ndarray, window_ms: int) -> tuple[int, int]:
    """Peak and sum over messages of the records live after each message.

    ``start[i]``: message ``i`` writes a record; ``end[i]``: a record's
    deadline is ``t[i] + window_ms``. Deadlines come in row order, so one
    pointer follows them: a record is gone once a message arrives at or after it.
    """
    n = len(t)
    deadlines = np.empty(n + 1, dtype=np.int64)
    m = 0
    for i in range(n):
        deadlines[m] = t[i] + window_ms
        m += end[i]
    deadlines[m] = np.iinfo(np.int64).max  # a sentinel: the scan below needs no bounds check
    started = 0
    peak = 0
    total = 0
    q = 0
    for i in range(n):
        started += start[i]
        ti = t[i]
        while deadlines[q] <= ti:
            q += 1
        live = started - q
        peak = max(peak, live)
        total += live
    return peak, total


@njit(cache=True, nogil=True)
def classify(rows: np.ndarray, first: np.ndarray, keyed: np.ndarray, suppressed: np.ndarray
             ) -> tuple[int, int, int]:
    """Caught, leaked and false drops among messages of events delivered more than once.

    ``rows`` lists those messages grouped by event, each group in arrival
    order (``first`` opens a group). A suppressed copy is caught if its event
    was already processed, else a false drop; a processed copy of an event
    already processed is leaked.
    """
    caught = 0
    leaked = 0
    false_drops = 0
    done = 0
    for j in range(len(rows)):
        if first[j]:
            done = 0
        r = rows[j]
        if suppressed[r]:
            if done > 0:
                caught += 1
            else:
                false_drops += 1
        elif keyed[r]:
            if done > 0:
                leaked += 1
            done += 1
    return caught, leaked, false_drops
