"""Window analytics at the scale of a real dump: tens of millions of events, out of core.

The same numbers as :mod:`dedup.analysis` (checked by the tests), for dumps too
large for a :class:`~dedup.traces.Trace` in memory:

* :class:`Dump` names a dump on disk: JSONL (plain, ``.gz``, ``.zst``) or
  Parquet, with its ground truth when it has one.
* :func:`cached_keys` derives each message's key once per (dump, strategy) in
  a streamed DuckDB scan on all cores (:mod:`~dedup.columnar.derive`), and
  caches arrival times, key codes and ground truth beside the dump.
* :class:`ColumnarSweep` turns those into every window's metrics, a window at a
  time in compiled loops; ``recommend`` reuses a sweep already made.
* :func:`analyze` does all three for several strategies;
  :func:`write_trace` writes large synthetic traces straight to disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dedup.analysis import DEFAULT_WINDOWS_S, Recommendation, WindowMode
from dedup.columnar.cache import cache_paths, cached_keys
from dedup.columnar.derive import KeyColumns, derive_keys
from dedup.columnar.dump import Dump
from dedup.columnar.engine import connect
from dedup.columnar.sweep import ColumnarSweep
from dedup.columnar.write import NotEnoughDiskError, NotEnoughMemoryError, write_trace
from dedup.keys import KeyStrategy

__all__ = [
    "Analysis",
    "ColumnarSweep",
    "Dump",
    "KeyColumns",
    "NotEnoughDiskError",
    "NotEnoughMemoryError",
    "analyze",
    "cache_paths",
    "cached_keys",
    "connect",
    "derive_keys",
    "write_trace",
]


@dataclass
class Analysis:
    """Per strategy: the keys, the sweep over every window, and the recommendation (None without truth)."""

    dump: Dump
    keys: dict[str, KeyColumns]
    sweeps: pd.DataFrame
    recommendations: dict[str, Recommendation | None]
    engines: dict[str, ColumnarSweep]


def analyze(path: str | Path | Dump, keys: Sequence[KeyStrategy | str] = ("auto",), *,
            windows: Sequence[float] = DEFAULT_WINDOWS_S, mode: WindowMode = "fixed",
            target_caught_pct: float = 99.9, max_false_drops: int = 0, memory_store: str = "redis",
            progress: bool = False) -> Analysis:
    """Keys (cached), a sweep over ``windows`` and, with ground truth, the recommended window per strategy."""
    dump = path if isinstance(path, Dump) else Dump.of(path)
    con = connect()
    derived, engines, frames, recs = {}, {}, [], {}
    for key in keys:
        columns = cached_keys(dump, key, progress=progress, con=con)
        engine = ColumnarSweep(columns, memory_store=memory_store)
        frame = engine.sweep(windows, mode, progress=progress)
        recs[columns.strategy] = (engine.recommend(mode, target_caught_pct=target_caught_pct,
                                                   max_false_drops=max_false_drops, windows=windows,
                                                   frame=frame)
                                  if engine.has_truth else None)
        derived[columns.strategy], engines[columns.strategy] = columns, engine
        frames.append(frame)
    return Analysis(dump, derived, pd.concat(frames, ignore_index=True), recs, engines)
