"""How often a strategy's keys repeat in a dump and after what gaps, from cached keys (no ground truth)."""

from __future__ import annotations

from typing import Any

import numpy as np

from dedup.columnar import kernels
from dedup.columnar.derive import KeyColumns


def repeat_summary(keys: KeyColumns) -> dict[str, Any]:
    """Messages, unkeyed, distinct and repeated keys, repeats, and gap quantiles (seconds), as one row.

    The columns of :func:`dedup.analysis.repeat_structure` that need no second
    strategy (it compares payloads by a content fingerprint as well).
    """
    codes, t = np.ascontiguousarray(keys.codes), np.ascontiguousarray(keys.arrival_ms, dtype=np.int64)
    distinct, repeated, gaps_ms = kernels.repeat_gaps(np.argsort(codes, kind="stable"), codes, t)
    gaps_s = gaps_ms / 1000.0
    q = np.quantile(gaps_s, [0.5, 0.9, 0.99]) if len(gaps_s) else [np.nan] * 3
    n = len(codes)
    return {
        "key": keys.strategy, "messages": n, "unkeyed": keys.unkeyed,
        "distinct_keys": distinct, "repeated_keys": repeated,
        "repeats": len(gaps_s), "repeat_pct": 100.0 * len(gaps_s) / n if n else 0.0,
        "gap_p50_s": q[0], "gap_p90_s": q[1], "gap_p99_s": q[2],
        "gap_max_s": float(gaps_s.max()) if len(gaps_s) else np.nan,
    }
