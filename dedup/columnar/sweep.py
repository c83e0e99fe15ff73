"""Window metrics from cached keys: the numbers of :func:`dedup.analysis.sweep`, a window at a time.

:class:`ColumnarSweep` prepares a dump's keys once (grouping sightings by key
and copies by event: two sorts), after which a window costs a pass over the
sightings of repeated keys and one over the messages for the live keys, in
compiled loops (:mod:`dedup.columnar.kernels`) that a slider's window splits
over every core and a sweep runs a window per core. Every metric equals
:class:`dedup.analysis.SweepEngine`'s and a replay through the
:class:`~dedup.service.Deduplicator` (the tests check both, and a plain model).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
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

_ORIGINAL = KINDS.index("original")
#: Row positions are int32 (:mod:`dedup.columnar.kernels`).
MAX_MESSAGES = np.iinfo(np.int32).max


class ColumnarSweep:
    """One dump's keys under one strategy, prepared for many windows.

    Preparing groups sightings by key and copies by event (two sorts); it
    keeps, beside the arrival times, a byte per message and about 17 bytes
    per sighting of a repeated key (plus 5 per copy of an event delivered
    more than once, with ground truth). A window then allocates two bytes per
    repeated-key sighting, nothing per message.
    """

    def __init__(self, keys: KeyColumns, *, memory_store: str = "redis", workers: int | None = None) -> None:
        _add_memory({"peak_live_keys": None, "mean_live_keys": None}, memory_store)  # refuses unknown stores
        self.keys = keys
        self.memory_store = memory_store
        #: Threads a sweep runs windows on (default: one per core).
        self.workers = workers or os.cpu_count() or 1
        t = np.ascontiguousarray(keys.arrival_ms, dtype=np.int64)
        if len(t) > MAX_MESSAGES:
            raise ValueError(f"at most {MAX_MESSAGES:,} messages per sweep, got {len(t):,}")
        if len(t) > 1 and (t[1:] < t[:-1]).any():
            raise ValueError("messages must be in arrival order (arrival_ms non-decreasing)")
        codes = np.ascontiguousarray(keys.codes)
        self.n = len(t)
        self.t = t
        self.keyed = codes >= 0
        self.n_keyed = int(self.keyed.sum())
        order = np.argsort(codes, kind="stable")  # by key, then arrival; unkeyed (-1) first
        self.t_m, self.first_m, self.pos_m, self.rows_r, slot = kernels.key_groups(order, codes, t)
        self.m = len(self.t_m)  # sightings of repeated keys (rows_r has a sentinel more)
        del order
        self._truth(keys, slot)

    def _truth(self, keys: KeyColumns, slot: np.ndarray) -> None:
        self.has_truth = keys.has_truth
        if not self.has_truth:
            return
        duplicate = keys.kind != _ORIGINAL
        self.duplicates = int(duplicate.sum())
        self.keyed_duplicates = int((duplicate & self.keyed).sum())
        del duplicate
        logical = np.ascontiguousarray(keys.logical_id)
        order = np.argsort(logical, kind="stable")  # by event, then arrival
        self.truth_slot, self.truth_first, self.single_r = kernels.truth_groups(order, logical, slot,
                                                                                self.m)

    # ---- per window -------------------------------------------------------------

    def _flags(self, window_ms: int, mode: WindowMode) -> np.ndarray:
        if mode not in ("fixed", "sliding"):
            raise ValueError(f"mode must be 'fixed' or 'sliding', got {mode!r}")
        return kernels.duplicates(self.t_m, self.first_m, self.pos_m, window_ms, mode == "sliding")

    def outcomes(self, window_s: float, mode: WindowMode = "fixed") -> np.ndarray:
        """Per-message outcome codes (into :data:`dedup.analysis.OUTCOMES`) under one window."""
        out = np.where(self.keyed, PROCESSED, MISSING_KEY).astype(np.int8)
        flags_r = self._flags(duration_ms(window_s, "window_s"), mode)
        out[self.rows_r[np.flatnonzero(flags_r & kernels.DUP)]] = DUPLICATE
        return out

    def _live_keys(self, flags_r: np.ndarray, window_ms: int, chunks: int) -> tuple[int, int]:
        """Peak and sum over messages of the live records: ``chunks`` runs of rows on as many threads."""
        bounds = np.linspace(0, self.n, max(1, min(chunks, self.n)) + 1).astype(np.int64)

        def run(lo: int, hi: int) -> tuple[int, int, int, int, int]:
            return kernels.live_keys(self.t, self.keyed, self.rows_r, flags_r, window_ms, int(lo), int(hi))

        if len(bounds) == 2:
            parts = [run(0, self.n)]
        else:
            with ThreadPoolExecutor(len(bounds) - 1) as pool:
                parts = list(pool.map(run, bounds[:-1], bounds[1:]))
        # A run counts from zero; before it, ``started`` records began and ``ended`` deadlines passed
        # (all deadlines of rows before its first row's window start, and none after).
        peak = total = started = ended = 0
        for (lo, hi), (run_peak, run_total, run_started, ends_in_window, ends) in zip(
                itertools.pairwise(bounds), parts, strict=True):
            offset = started - (ended - ends_in_window)
            if hi > lo:
                peak = max(peak, run_peak + offset)
            total += run_total + (hi - lo) * offset
            started += run_started
            ended += ends
        return peak, total

    def metrics(self, window_s: float, mode: WindowMode = "fixed", *, live: bool = True,
                chunks: int | None = None) -> dict[str, Any]:
        """The row :func:`dedup.analysis.sweep` gives this window (memory priced by the store).

        ``live=False`` leaves the live keys and memory out (None): the outcome
        counts alone cost a pass over repeated keys only, not over every message.
        The live keys are counted over ``chunks`` runs of messages on as many
        threads (default :attr:`workers`: a slider's one window uses every core).
        """
        chunks = chunks or self.workers
        window_ms = duration_ms(window_s, "window_s")
        flags_r = self._flags(window_ms, mode)
        n_dup = int(np.count_nonzero(flags_r & kernels.DUP))
        metrics: dict[str, Any] = {
            "key": self.keys.strategy, "mode": mode, "window_s": float(window_s),
            "messages": self.n, "unkeyed": self.n - self.n_keyed,
            "processed": self.n_keyed - n_dup, "suppressed": n_dup,
        }
        if self.has_truth:
            caught, leaked, false_drops = kernels.classify(flags_r, self.single_r, self.truth_slot,
                                                           self.truth_first)
            metrics.update(duplicates=self.duplicates, keyed_duplicates=self.keyed_duplicates, caught=caught,
                           leaked=leaked, false_drops=false_drops,
                           caught_pct=_pct(caught, self.keyed_duplicates))
        metrics["peak_live_keys"] = metrics["mean_live_keys"] = None
        if live:
            peak, total = self._live_keys(flags_r, window_ms, chunks)
            metrics["peak_live_keys"] = int(peak)
            metrics["mean_live_keys"] = int(total) / self.n if self.n else 0.0
        _add_memory(metrics, self.memory_store)
        return metrics

    def sweep(self, windows: Sequence[float] = DEFAULT_WINDOWS_S, mode: WindowMode = "fixed", *,
              progress: bool = False, live: bool = True) -> pd.DataFrame:
        """One row per window, as :func:`dedup.analysis.sweep` (``live``: see :meth:`metrics`).

        Windows run on :attr:`workers` threads; rows come in the order of ``windows``.
        """
        bar = progress_bar(len(windows), progress, f"sweep {self.keys.strategy[:30]}", unit="window")
        rows = []
        with ThreadPoolExecutor(min(self.workers, max(1, len(windows)))) as pool:  # the kernels drop the GIL
            for row in pool.map(lambda window_s: self.metrics(window_s, mode, live=live, chunks=1), windows):
                rows.append(row)
                bar.update(1)  # here, in order: the bar is not shared between threads
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
