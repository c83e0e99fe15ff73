"""Window metrics from cached keys: the numbers of :func:`dedup.analysis.sweep`, a window at a time.

:class:`ColumnarSweep` prepares a dump's keys once (grouping sightings by key
and copies by event: two sorts), after which a window costs a pass over the
messages in compiled loops (:mod:`dedup.columnar.kernels`): tens of
milliseconds at ten million messages, which is what a slider needs. Every
metric equals :class:`dedup.analysis.SweepEngine`'s and a replay through the
:class:`~dedup.service.Deduplicator` (the tests check both).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from dedup.analysis import (
    DEFAULT_WINDOWS_S,
    DUPLICATE,
    MISSING_KEY,
    PROCESSED,
    Recommendation,
    WindowMode,
    _add_memory,
    _pct,
    meets,
    recommendation,
    smallest_window_of,
)
from dedup.columnar import kernels
from dedup.columnar.derive import KeyColumns
from dedup.stores.base import duration_ms
from dedup.traces.catalogue import KINDS
from dedup.traces.trace import progress_bar

_NEVER = np.iinfo(np.int64).max
_ORIGINAL = KINDS.index("original")


def _groups(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows ordered by value (stably: in row order within a value), where each value's run starts,
    and which of them belong to values occurring more than once."""
    order = np.argsort(values, kind="stable")
    v = values[order]
    first = np.r_[True, v[1:] != v[:-1]] if len(v) else np.zeros(0, bool)
    sizes = np.diff(np.r_[np.flatnonzero(first), len(v)])
    return order, first, np.repeat(sizes > 1, sizes)


class ColumnarSweep:
    """One dump's keys under one strategy, prepared for many windows."""

    def __init__(self, keys: KeyColumns, *, memory_store: str = "redis") -> None:
        _add_memory({"peak_live_keys": None, "mean_live_keys": None}, memory_store)  # refuses unknown stores
        self.keys = keys
        self.memory_store = memory_store
        t = np.ascontiguousarray(keys.arrival_ms, dtype=np.int64)
        if len(t) > 1 and (t[1:] < t[:-1]).any():
            raise ValueError("messages must be in arrival order (arrival_ms non-decreasing)")
        codes = keys.codes
        self.n = len(t)
        self.t = t
        self.keyed = codes >= 0
        self.n_keyed = int(self.keyed.sum())
        keyed_rows = np.flatnonzero(self.keyed)
        order, first, multi = _groups(codes[keyed_rows])  # by key, then arrival
        rows = keyed_rows[order]
        self.rows_m = rows[multi]  # only keys seen twice can suppress anything
        self.first_m = first[multi]
        self.t_m = t[self.rows_m]
        last_m = np.r_[self.first_m[1:], True] if len(self.rows_m) else np.zeros(0, bool)
        gap_m = np.diff(self.t_m, prepend=0)
        self.prev_gap_m = np.where(self.first_m, _NEVER, gap_m)
        self.next_gap_m = np.where(last_m, _NEVER, np.r_[gap_m[1:], 0] if len(gap_m) else gap_m)
        self._truth(keys)

    def _truth(self, keys: KeyColumns) -> None:
        self.has_truth = keys.has_truth
        if not self.has_truth:
            return
        logical = keys.logical_id
        duplicate = keys.kind != _ORIGINAL
        self.duplicates = int(duplicate.sum())
        self.keyed_duplicates = int((duplicate & self.keyed).sum())
        order, first, multi = _groups(logical)
        self.truth_rows = order[multi]  # copies of events delivered more than once, by event
        self.truth_first = first[multi]
        single = np.zeros(self.n, dtype=bool)
        single[order[~multi]] = True
        self.single_m = single[self.rows_m]  # a suppressed single-copy event is a false drop

    # ---- per window -------------------------------------------------------------

    def _duplicates_m(self, window_ms: int, mode: WindowMode) -> np.ndarray:
        if mode == "sliding":
            return self.prev_gap_m < window_ms
        if mode == "fixed":
            return kernels.fixed_duplicates(self.t_m, self.first_m, window_ms)
        raise ValueError(f"mode must be 'fixed' or 'sliding', got {mode!r}")

    def outcomes(self, window_s: float, mode: WindowMode = "fixed") -> np.ndarray:
        """Per-message outcome codes (into :data:`dedup.analysis.OUTCOMES`) under one window."""
        out = np.where(self.keyed, PROCESSED, MISSING_KEY).astype(np.int8)
        out[self.rows_m[self._duplicates_m(duration_ms(window_s, "window_s"), mode)]] = DUPLICATE
        return out

    def metrics(self, window_s: float, mode: WindowMode = "fixed", *, live: bool = True) -> dict[str, Any]:
        """The row :func:`dedup.analysis.sweep` gives this window (memory priced by the store).

        ``live=False`` leaves the live keys and memory out (None): the outcome
        counts alone cost a pass over repeated keys only, not over every message.
        """
        window_ms = duration_ms(window_s, "window_s")
        dup_m = self._duplicates_m(window_ms, mode)
        suppressed = np.zeros(self.n, dtype=bool)
        suppressed[self.rows_m[dup_m]] = True
        n_dup = int(dup_m.sum())
        metrics: dict[str, Any] = {
            "key": self.keys.strategy, "mode": mode, "window_s": float(window_s),
            "messages": self.n, "unkeyed": self.n - self.n_keyed,
            "processed": self.n_keyed - n_dup, "suppressed": n_dup,
        }
        if self.has_truth:
            caught, leaked, false_drops = kernels.classify(self.truth_rows, self.truth_first, self.keyed,
                                                           suppressed)
            false_drops += int((dup_m & self.single_m).sum())
            metrics.update(duplicates=self.duplicates, keyed_duplicates=self.keyed_duplicates, caught=caught,
                           leaked=leaked, false_drops=false_drops,
                           caught_pct=_pct(caught, self.keyed_duplicates))
        metrics["peak_live_keys"] = metrics["mean_live_keys"] = None
        if live:
            start = self.keyed & ~suppressed
            if mode == "sliding":  # a record ends at its last sighting before a gap of a window or more
                end = self.keyed.copy()
                end[self.rows_m] = self.next_gap_m >= window_ms
            else:
                end = start
            peak, total = kernels.live_keys(self.t, start, end, window_ms)
            metrics["peak_live_keys"] = int(peak)
            metrics["mean_live_keys"] = int(total) / self.n if self.n else 0.0
        _add_memory(metrics, self.memory_store)
        return metrics

    def sweep(self, windows: Sequence[float] = DEFAULT_WINDOWS_S, mode: WindowMode = "fixed", *,
              progress: bool = False, live: bool = True) -> pd.DataFrame:
        """One row per window, as :func:`dedup.analysis.sweep` (``live``: see :meth:`metrics`)."""
        bar = progress_bar(len(windows), progress, f"sweep {self.keys.strategy[:30]}", unit="window")
        rows = []
        for window_s in windows:
            rows.append(self.metrics(window_s, mode, live=live))
            bar.update(1)
        bar.close()
        return pd.DataFrame(rows)

    def smallest_window(self, windows: Sequence[float], mode: WindowMode,
                        ok: Callable[[pd.DataFrame], pd.Series], *, frame: pd.DataFrame | None = None,
                        progress: bool = False) -> tuple[pd.DataFrame, dict[str, Any] | None]:
        """:func:`dedup.analysis.smallest_window_of` on these keys (``frame``: a sweep over ``windows``).

        ``ok`` may read outcome counts only: the windows it is asked about are
        swept without live keys, and the row found is completed after.
        """
        def sweep_at(ws: list[float], progress: bool = False) -> pd.DataFrame:
            return self.sweep(ws, mode, progress=progress, live=False)

        found_frame, row = smallest_window_of(sweep_at, windows, ok, frame=frame, progress=progress)
        if row is not None and row["peak_live_keys"] is None:
            row = self.metrics(row["window_s"], mode)
        return found_frame, row

    def recommend(self, mode: WindowMode = "fixed", *, target_caught_pct: float = 99.9,
                  max_false_drops: int = 0, windows: Sequence[float] = DEFAULT_WINDOWS_S,
                  frame: pd.DataFrame | None = None, progress: bool = False) -> Recommendation:
        """:func:`dedup.analysis.recommend` on these keys; ``frame``, a sweep over ``windows``, is reused."""
        if not self.has_truth:
            raise ValueError("recommend needs ground truth (a generated trace or a truth sidecar)")
        found_frame, row = self.smallest_window(windows, mode, lambda f: meets(f, target_caught_pct,
                                                                               max_false_drops),
                                                frame=frame, progress=progress)
        return recommendation(self.keys.strategy, mode, found_frame, row, target_caught_pct, max_false_drops)
