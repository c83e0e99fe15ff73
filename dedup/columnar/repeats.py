"""How often a strategy's keys repeat in a dump and after what gaps, from cached keys (no ground truth)."""

from __future__ import annotations

from typing import Any

import numpy as np

from dedup.columnar.derive import KeyColumns


def repeat_summary(keys: KeyColumns) -> dict[str, Any]:
    """Messages, unkeyed, distinct and repeated keys, repeats, and gap quantiles (seconds), as one row.

    The columns of :func:`dedup.analysis.repeat_structure` that need no second
    strategy (it compares payloads by a content fingerprint as well).
    """
    codes, t = keys.codes, keys.arrival_ms
    rows = np.flatnonzero(codes >= 0)
    rows = rows[np.argsort(codes[rows], kind="stable")]
    c = codes[rows]
    repeat = np.r_[False, c[1:] == c[:-1]] if len(c) else np.zeros(0, bool)
    gaps_s = (t[rows][1:] - t[rows][:-1])[repeat[1:]] / 1000.0 if len(c) else np.zeros(0)
    q = np.quantile(gaps_s, [0.5, 0.9, 0.99]) if len(gaps_s) else [np.nan] * 3
    n = len(codes)
    return {
        "key": keys.strategy, "messages": n, "unkeyed": keys.unkeyed,
        "distinct_keys": int((~repeat).sum()), "repeated_keys": int(np.unique(c[repeat]).size),
        "repeats": int(repeat.sum()), "repeat_pct": 100.0 * repeat.sum() / n if n else 0.0,
        "gap_p50_s": q[0], "gap_p90_s": q[1], "gap_p99_s": q[2],
        "gap_max_s": float(gaps_s.max()) if len(gaps_s) else np.nan,
    }
