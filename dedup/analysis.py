"""Which key and which window: exact dedup metrics of a trace, by replay and by sweep.

* :func:`replay` pushes a trace through the real :class:`~dedup.service.Deduplicator`
  and a window store under a :class:`~dedup.clock.ManualClock`, one message at a
  time in arrival order, the handler succeeding instantly: per-message outcomes.
* :func:`sweep` computes the same metrics for many windows at once from the
  gaps between sightings of each key, without replaying. It equals
  :func:`replay` exactly on every metric (the tests check it over seeds, key
  strategies and both window modes).
* :func:`recommend` picks the smallest window meeting a target and prices it;
  :func:`compare_strategies` puts key strategies side by side.
* :func:`repeat_structure` analyses a trace without ground truth (bring your
  own): how often each strategy's keys repeat, and after what gaps.

Metrics (one row per window):

``messages``, ``unkeyed`` (no key: retried, then dead-lettered in production),
``processed`` (handler runs), ``suppressed`` (answered as duplicates),
``peak_live_keys`` and ``mean_live_keys`` (records live in the store, sampled
after each message), ``peak_memory_bytes`` and ``mean_memory_bytes`` (live keys
times the store's bytes per key, :data:`STORE_BYTES_PER_KEY`).

With ground truth also ``duplicates`` (messages that are not the original),
``keyed_duplicates`` (those the strategy gives a key), ``caught`` (suppressed,
and the event was already processed), ``leaked`` (processed again: an event
handled twice), ``false_drops`` (suppressed although the event had not been
processed: the key is too coarse) and ``caught_pct`` = caught / keyed
duplicates. Unkeyed messages are neither caught nor leaked: they fail with
MISSING_KEY and end in the dead-letter queue.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from dedup.extras import needs_extras

with needs_extras():  # the analytics need dedup[workbench]; say so in one line
    import numpy as np
    import pandas as pd

from dedup.clock import ManualClock
from dedup.keys import ContentFingerprint, KeyStrategy
from dedup.service import Deduplicator, Outcome
from dedup.stores.base import WindowStore, duration_ms
from dedup.stores.memory import MemoryStore
from dedup.traces import Keys, Trace, TraceConfig, generate
from dedup.traces.trace import progress_bar

WindowMode = Literal["fixed", "sliding"]
#: A key strategy, its spec, or keys already derived (e.g. :func:`truth_keys`).
KeySpec = KeyStrategy | str | Keys

#: Bytes one live key costs in each store, to turn live keys into memory.
#: redis: measured by `python -m benchmarks redis` on redis-server 7.0.15 as the growth of
#:   `used_memory` per completed key (default prefix, no fingerprint): ≈ 167-171 B. That counts
#:   the expiry-table entry, which `MEMORY USAGE` (72 B for the same key) leaves out.
#: memory: measured with tracemalloc on CPython 3.11: 100k keys claimed and completed in batches
#:   of 10 (an SQS receive) in a MemoryStore, once their lease-queue entries had expired, divided
#:   by 100k: ≈ 138 B (≈ 162 B while the lease entries are still queued).
STORE_BYTES_PER_KEY: dict[str, int] = {"redis": 170, "memory": 140}

#: Windows swept by default: 1 s to 2 days, log-spaced, rounded to whole seconds.
DEFAULT_WINDOWS_S: tuple[float, ...] = tuple(
    float(w) for w in sorted({round(x) for x in np.geomspace(1, 172_800, 60)})
)

PROCESSED, DUPLICATE, MISSING_KEY, OTHER = 0, 1, 2, 3
OUTCOMES = ("processed", "duplicate", "missing_key", "other")
_OUTCOME_CODE = {Outcome.PROCESSED: PROCESSED, Outcome.DUPLICATE: DUPLICATE, Outcome.MISSING_KEY: MISSING_KEY}


def key_label(key: KeySpec) -> str:
    """How a key strategy is named in tables: its spec string, or its ``name``."""
    if isinstance(key, Keys):
        return key.strategy
    return key if isinstance(key, str) else key.name


def _keys_of(trace: Trace, key: KeySpec, progress: bool = False) -> Keys:
    return key if isinstance(key, Keys) else trace.keys(key, progress=progress)[0]


def truth_keys(trace: Trace) -> Keys:
    """A perfect key, from the ground truth: one key per logical event, none shared between events.

    What no real strategy can beat; on a generated trace the window it needs
    is the window the duplicate processes themselves call for.
    """
    if not trace.has_truth:
        raise ValueError("a truth key needs ground truth")
    codes, uniques = pd.factorize(trace.frame["logical_id"])
    return Keys("logical event (ground truth)", codes.astype(np.int64), [str(u) for u in uniques])


# ---- replay ----------------------------------------------------------------------


@dataclass
class Replay:
    """A replay's per-message outcomes (codes into :data:`OUTCOMES`), live keys, and metrics."""

    outcomes: np.ndarray
    live_keys: np.ndarray | None
    metrics: dict[str, Any]

    def outcome_names(self) -> pd.Series:
        """The outcomes as a categorical series of names."""
        return pd.Series(pd.Categorical.from_codes(self.outcomes, OUTCOMES))


def replay(
    trace: Trace,
    key: KeySpec = "auto",
    window_s: float = 300.0,
    mode: WindowMode = "fixed",
    *,
    store: WindowStore | None = None,
    memory_store: str = "redis",
    progress: bool = False,
) -> Replay:
    """Run ``trace`` through the real :class:`Deduplicator`, one message at a time in arrival order.

    The store (default a fresh :class:`MemoryStore`) must read a
    :class:`ManualClock`, which is set to each message's arrival time (whole
    milliseconds, as the stores count). The handler succeeds instantly. Live
    keys are sampled after each message when the store can count them.
    """
    if len(trace) == 0:
        raise ValueError("cannot replay an empty trace")
    arrival = trace.arrival_ms
    if store is None:
        store = MemoryStore(clock=ManualClock(_clock_s(arrival[0])))
    clock = store.clock
    if not isinstance(clock, ManualClock):
        raise ValueError(
            f"replay drives the store's clock; {store.describe()} reads {clock!r}, not a ManualClock"
        )
    if clock.now_s() > _clock_s(arrival[0]):
        raise ValueError("the store's clock is past the trace's first arrival")
    dedup = Deduplicator(store, key=key, window_s=window_s, mode=mode)
    counts_live = isinstance(store, MemoryStore)
    outcomes = np.empty(len(trace), dtype=np.int8)
    live = np.empty(len(trace), dtype=np.int64) if counts_live else None
    bar = progress_bar(len(trace), progress, f"replay {key_label(key)} {window_s:g}s")
    with _quiet_dedup_log():  # one error line per unkeyed message would flood the output
        for i, event in enumerate(trace.envelopes()):
            clock.set(_clock_s(arrival[i]))
            outcome = dedup.process_batch([event], _succeed)[0].outcome
            outcomes[i] = _OUTCOME_CODE.get(outcome, OTHER)
            if live is not None:
                live[i] = len(store)
            if i % 10_000 == 9_999:
                bar.update(10_000)
    bar.close()
    metrics = _replay_metrics(trace, outcomes, live)
    metrics = {"key": key_label(key), "mode": mode, "window_s": float(window_s), **metrics}
    _add_memory(metrics, memory_store)
    return Replay(outcomes, live, metrics)


def _succeed(_event: Mapping[str, Any]) -> None:
    return None


@contextlib.contextmanager
def _quiet_dedup_log() -> Iterator[None]:
    log = logging.getLogger("dedup")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def _clock_s(ms: int) -> float:
    # Half a millisecond in, so int(now_s * 1000) == ms despite binary floating point.
    return (int(ms) + 0.5) / 1000.0


def _replay_metrics(trace: Trace, outcomes: np.ndarray, live: np.ndarray | None) -> dict[str, Any]:
    """Metrics from per-message outcomes, counted message by message (independent of the sweep)."""
    metrics: dict[str, Any] = {
        "messages": len(outcomes),
        "unkeyed": int((outcomes == MISSING_KEY).sum()),
        "processed": int((outcomes == PROCESSED).sum()),
        "suppressed": int((outcomes == DUPLICATE).sum()),
    }
    if trace.has_truth:
        done: set[int] = set()
        caught = leaked = false_drops = 0
        duplicate = (trace.frame["kind"] != "original").to_numpy()
        for logical, outcome in zip(trace.frame["logical_id"].tolist(), outcomes.tolist(), strict=True):
            if outcome == PROCESSED:
                leaked += logical in done
                done.add(logical)
            elif outcome == DUPLICATE:
                if logical in done:
                    caught += 1
                else:
                    false_drops += 1
        keyed_duplicates = int((duplicate & (outcomes != MISSING_KEY)).sum())
        metrics.update(
            duplicates=int(duplicate.sum()), keyed_duplicates=keyed_duplicates,
            caught=caught, leaked=leaked, false_drops=false_drops,
            caught_pct=_pct(caught, keyed_duplicates),
        )
    metrics["peak_live_keys"] = int(live.max()) if live is not None else None
    metrics["mean_live_keys"] = int(live.sum()) / len(live) if live is not None else None
    return metrics


def _pct(caught: int, keyed_duplicates: int) -> float:
    return 100.0 * caught / keyed_duplicates if keyed_duplicates else 100.0


def _add_memory(metrics: dict[str, Any], memory_store: str) -> None:
    if memory_store not in STORE_BYTES_PER_KEY:
        known = ", ".join(STORE_BYTES_PER_KEY)
        raise ValueError(f"no bytes-per-key figure for store {memory_store!r} (known: {known})")
    per_key = STORE_BYTES_PER_KEY[memory_store]
    peak, mean = metrics["peak_live_keys"], metrics["mean_live_keys"]
    metrics["peak_memory_bytes"] = peak * per_key if peak is not None else None
    metrics["mean_memory_bytes"] = mean * per_key if mean is not None else None


# ---- sweep ---------------------------------------------------------------------------


def sweep(
    trace: Trace,
    key: KeySpec = "auto",
    windows: Sequence[float] = DEFAULT_WINDOWS_S,
    mode: WindowMode = "fixed",
    *,
    memory_store: str = "redis",
    progress: bool = False,
) -> pd.DataFrame:
    """Exact replay metrics for every window in ``windows``, one row each, from the sighting gaps.

    ``fixed``: a record lives until processing time + window; a sighting is a
    duplicate when it comes before that. ``sliding``: every sighting moves the
    deadline to sighting + window, so a sighting is a duplicate when the
    previous sighting of its key is less than a window ago.
    """
    if mode not in ("fixed", "sliding"):
        raise ValueError(f"mode must be 'fixed' or 'sliding', got {mode!r}")
    engine = SweepEngine(trace, _keys_of(trace, key, progress))
    rows = []
    bar = progress_bar(len(windows), progress, f"sweep {key_label(key)}", unit="window")
    for window_s in windows:
        metrics = engine.metrics(window_s, mode)
        metrics = {"key": key_label(key), "mode": mode, "window_s": float(window_s), **metrics}
        _add_memory(metrics, memory_store)
        rows.append(metrics)
        bar.update(1)
    bar.close()
    return pd.DataFrame(rows)


def outcomes(trace: Trace, key: KeySpec, window_s: float, mode: WindowMode = "fixed") -> np.ndarray:
    """Per-message outcome codes (into :data:`OUTCOMES`) of one window, computed like :func:`sweep`."""
    return SweepEngine(trace, _keys_of(trace, key)).outcomes(window_s, mode)


class SweepEngine:
    """Precomputes a trace's sightings per key once; then each window costs a few vector passes.

    Messages are grouped by key, each group in arrival order. Only keys seen
    more than once can suppress anything; for them:

    * sliding: a sighting is a duplicate iff the gap to the previous sighting
      is below the window;
    * fixed: the processed sightings are a chain, each the first sighting at
      least a window after the previous processed one. The chain is followed
      for all keys at once by pointer doubling (log2 of the longest group
      steps), so a key seen a million times costs no more than many keys.

    Live keys after message i = records started so far minus records whose
    deadline has passed, both counted with binary searches over times.
    """

    def __init__(self, trace: Trace, keys: Keys) -> None:
        t = trace.arrival_ms.astype(np.int64)
        codes = keys.codes
        self.n = len(t)
        self.t = t
        self.keyed = codes >= 0
        self.keyed_cum = np.cumsum(self.keyed)
        self.keyed_times = t[self.keyed]
        rows = np.flatnonzero(self.keyed)
        rows = rows[np.argsort(codes[rows], kind="stable")]  # by key, then arrival
        c = codes[rows]
        first = np.r_[True, c[1:] != c[:-1]] if len(c) else np.zeros(0, bool)
        starts = np.flatnonzero(first)
        sizes = np.diff(np.r_[starts, len(c)])
        # Keep only keys sighted more than once: nothing else can be suppressed.
        multi = np.repeat(sizes > 1, sizes)
        self.rows_m = rows[multi]
        t_m = t[rows[multi]]
        first_m = first[multi]
        self.first_m = first_m
        self.gap_m = np.where(first_m, -1, t_m - np.r_[0, t_m[:-1]]) if len(t_m) else t_m
        group = np.cumsum(first_m) - 1
        ends = np.r_[np.flatnonzero(first_m)[1:], len(t_m)]
        self.end_m = ends[group] if len(t_m) else np.zeros(0, np.int64)
        self.longest = int(sizes.max()) if len(sizes) else 0
        # Sortable (key, time) composite for the fixed chain's "first sighting >= t + window".
        self.t_range = int(t.max() - t.min()) + 1 if self.n else 1
        span = 2 * self.t_range + 1
        dense = np.cumsum(first_m) - 1
        self.composite_m = dense * span + (t_m - (t.min() if self.n else 0))
        # For sliding live keys: rows with a later sighting of their key, and the gap to it.
        not_last = ~np.r_[first_m[1:], True] if len(t_m) else np.zeros(0, bool)
        order = np.argsort(self.rows_m[not_last], kind="stable")
        self.continued_rows = self.rows_m[not_last][order]
        self.continued_gap = (np.r_[self.gap_m[1:], 0][not_last])[order]
        self._truth(trace)

    def _truth(self, trace: Trace) -> None:
        self.has_truth = trace.has_truth
        if not self.has_truth:
            return
        logical = trace.frame["logical_id"].to_numpy()
        duplicate = (trace.frame["kind"] != "original").to_numpy()
        self.duplicates = int(duplicate.sum())
        self.keyed_duplicates = int((duplicate & self.keyed).sum())
        order = np.argsort(logical, kind="stable")
        lg = logical[order]
        first = np.r_[True, lg[1:] != lg[:-1]] if len(lg) else np.zeros(0, bool)
        sizes = np.diff(np.r_[np.flatnonzero(first), len(lg)])
        multi = np.repeat(sizes > 1, sizes)
        self.single_logical = np.zeros(self.n, dtype=bool)
        self.single_logical[order[~multi]] = True
        self.truth_rows = order[multi]  # messages of events delivered more than once, by event
        self.truth_first = first[multi]

    # ---- per window ------------------------------------------------------------

    def duplicate_rows(self, window_s: float, mode: WindowMode) -> np.ndarray:
        """Rows (sorted) answered as duplicates under ``window_s`` and ``mode``."""
        window_ms = duration_ms(window_s, "window_s")
        if mode == "sliding":
            dup = ~self.first_m & (self.gap_m < window_ms)
        else:
            dup = ~self.first_m & ~self._fixed_chain(window_ms)
        return np.sort(self.rows_m[dup])

    def _fixed_chain(self, window_ms: int) -> np.ndarray:
        """Which sightings (of keys seen more than once) a fixed window processes."""
        m = len(self.composite_m)
        step = min(window_ms, self.t_range)  # beyond the trace's span every window acts alike
        nxt = np.searchsorted(self.composite_m, self.composite_m + step, side="left")
        nxt[nxt >= self.end_m] = m
        jump = np.r_[nxt, m]  # m: "no further processed sighting", a fixed point
        reached = np.r_[self.first_m, False]
        hops = 1
        while hops < self.longest:
            reached[jump[reached]] = True
            jump = jump[jump]
            hops *= 2
        return reached[:m]

    def outcomes(self, window_s: float, mode: WindowMode) -> np.ndarray:
        out = np.where(self.keyed, PROCESSED, MISSING_KEY).astype(np.int8)
        out[self.duplicate_rows(window_s, mode)] = DUPLICATE
        return out

    def metrics(self, window_s: float, mode: WindowMode) -> dict[str, Any]:
        window_ms = duration_ms(window_s, "window_s")
        dup_rows = self.duplicate_rows(window_s, mode)
        processed_cum = self.keyed_cum - np.searchsorted(dup_rows, np.arange(self.n), side="right")
        # Records whose deadline is at or before each arrival: started <= arrival - window and,
        # fixed, processed then; sliding, not sighted again within the window.
        cutoff = self.t - window_ms
        ended = np.searchsorted(self.keyed_times, cutoff, side="right")
        gone = self.continued_rows[self.continued_gap < window_ms] if mode == "sliding" else dup_rows
        ended -= np.searchsorted(self.t[gone], cutoff, side="right")
        live = processed_cum - ended
        metrics: dict[str, Any] = {
            "messages": self.n,
            "unkeyed": int(self.n - self.keyed_cum[-1]) if self.n else 0,
            "processed": int(self.keyed_cum[-1] - len(dup_rows)) if self.n else 0,
            "suppressed": len(dup_rows),
        }
        if self.has_truth:
            metrics.update(self._classify(dup_rows))
        metrics["peak_live_keys"] = int(live.max()) if self.n else 0
        metrics["mean_live_keys"] = int(live.sum()) / self.n if self.n else 0.0
        return metrics

    def _classify(self, dup_rows: np.ndarray) -> dict[str, Any]:
        suppressed = np.zeros(self.n, dtype=bool)
        suppressed[dup_rows] = True
        rows = self.truth_rows
        done = self.keyed[rows] & ~suppressed[rows]
        cum = np.cumsum(done)
        before = cum - done  # processings of the same event earlier (exclusive), per event group
        group_base = np.maximum.accumulate(np.where(self.truth_first, before, 0))
        seen = (before - group_base) > 0
        caught = int((suppressed[rows] & seen).sum())
        leaked = int((done & seen).sum())
        false_drops = int((suppressed[rows] & ~seen).sum() + (suppressed & self.single_logical).sum())
        return {"duplicates": self.duplicates, "keyed_duplicates": self.keyed_duplicates, "caught": caught,
                "leaked": leaked, "false_drops": false_drops,
                "caught_pct": _pct(caught, self.keyed_duplicates)}


# ---- recommendation and comparison -------------------------------------------------------


@dataclass(frozen=True)
class Recommendation:
    """The smallest window meeting a target, with the metrics there (``window_s`` None if none does)."""

    key: str
    mode: str
    window_s: float | None
    target_caught_pct: float
    max_false_drops: int
    metrics: dict[str, Any] | None
    reason: str

    @property
    def met(self) -> bool:
        return self.window_s is not None

    def __str__(self) -> str:
        if not self.met:
            return f"{self.key} ({self.mode}): no window meets the target: {self.reason}"
        m = self.metrics or {}
        text = (f"{self.key} ({self.mode}): window {self.window_s:g} s catches {m['caught_pct']:.3f}% "
                f"of keyed duplicates with {m['false_drops']} false drops; peak {m['peak_live_keys']:,} "
                f"live keys ≈ {format_bytes(m['peak_memory_bytes'])}")
        if m["unkeyed"]:
            text += f"; {m['unkeyed']:,} messages have no key (MISSING_KEY, dead-lettered)"
        return text


def duration_label(seconds: float) -> str:
    """A short human label for a duration: ``45 s``, ``10 min``, ``6 h``, ``2 d``."""
    for unit, size in (("d", 86_400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            value = seconds / size
            return f"{value:.0f} {unit}" if value == round(value) else f"{value:.1f} {unit}"
    if seconds >= 1 or seconds == 0:
        return f"{seconds:g} s"
    return f"{seconds * 1000:g} ms"


def format_bytes(n: float) -> str:
    """``n`` bytes in decimal units: ``950 B``, ``31.7 kB``, ``3.4 MB``."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def meets(frame: pd.DataFrame, target_caught_pct: float, max_false_drops: int) -> pd.Series:
    """Which sweep rows meet the target."""
    return (frame["caught_pct"] >= target_caught_pct) & (frame["false_drops"] <= max_false_drops)


def recommend(
    trace: Trace,
    key: KeySpec = "auto",
    *,
    mode: WindowMode = "fixed",
    target_caught_pct: float = 99.9,
    max_false_drops: int = 0,
    windows: Sequence[float] = DEFAULT_WINDOWS_S,
    memory_store: str = "redis",
    progress: bool = False,
) -> Recommendation:
    """The smallest window of ``windows`` meeting the target, refined to whole seconds below it."""
    if not trace.has_truth:
        raise ValueError("recommend needs ground truth (a generated trace or a truth sidecar)")
    frame, row = smallest_window(trace, key, windows, mode,
                                 lambda f: meets(f, target_caught_pct, max_false_drops),
                                 memory_store=memory_store, progress=progress)
    return recommendation(key_label(key), mode, frame, row, target_caught_pct, max_false_drops)


def recommendation(label: str, mode: WindowMode, frame: pd.DataFrame, row: dict[str, Any] | None,
                   target_caught_pct: float, max_false_drops: int) -> Recommendation:
    """The :class:`Recommendation` for the row :func:`smallest_window_of` found in ``frame`` (or None)."""
    if row is None:
        best = frame.loc[frame["caught_pct"].idxmax()]
        reason = (f"best caught {best['caught_pct']:.3f}% at {best['window_s']:g} s "
                  f"with {best['false_drops']} false drops")
        return Recommendation(label, mode, None, target_caught_pct, max_false_drops, None, reason)
    return Recommendation(label, mode, float(row["window_s"]), target_caught_pct, max_false_drops, row,
                          "smallest window meeting the target")


def smallest_window(
    trace: Trace,
    key: KeySpec,
    windows: Sequence[float],
    mode: WindowMode,
    ok: Callable[[pd.DataFrame], pd.Series],
    *,
    memory_store: str = "redis",
    progress: bool = False,
) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    """The sweep over ``windows`` and the row of the smallest window where ``ok`` holds (or None).

    Between the first window that is ``ok`` and the one below it, whole-second
    windows are swept too, so the answer is not just the next grid point.
    """
    def sweep_at(ws: list[float], progress: bool = False) -> pd.DataFrame:
        return sweep(trace, key, ws, mode, memory_store=memory_store, progress=progress)

    return smallest_window_of(sweep_at, windows, ok, progress=progress)


def smallest_window_of(
    sweep_at: Callable[..., pd.DataFrame],
    windows: Sequence[float],
    ok: Callable[[pd.DataFrame], pd.Series],
    *,
    frame: pd.DataFrame | None = None,
    progress: bool = False,
) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    """:func:`smallest_window` for any sweep engine: ``sweep_at(windows, progress=...)`` gives sweep rows.

    ``frame``, a sweep already made over ``windows``, is reused instead of sweeping again.
    """
    windows = sorted(windows)
    if frame is None:
        frame = sweep_at(windows, progress=progress)
    else:
        frame = frame.sort_values("window_s", kind="stable").reset_index(drop=True)
    good = ok(frame).to_numpy()
    if not good.any():
        return frame, None
    k = int(np.argmax(good))
    row = frame.iloc[k].to_dict()
    if k > 0:
        lo, hi = windows[k - 1], windows[k]
        finer = np.unique(np.ceil(np.linspace(lo, hi, 65)[1:-1]))
        finer = finer[(finer > lo) & (finer < hi)]
        if len(finer):
            fine = sweep_at(finer.tolist())
            fine_ok = ok(fine).to_numpy()
            if fine_ok.any():
                row = fine.iloc[int(np.argmax(fine_ok))].to_dict()
    return frame, row


def window_sensitivity(
    config: TraceConfig,
    late_ps: Sequence[float],
    late_max_ss: Sequence[float],
    *,
    mode: WindowMode = "fixed",
    target_caught_pct: float = 99.9,
    memory_store: str = "redis",
) -> pd.DataFrame:
    """How the recommended window moves with the assumed late tail: one row per (late_p, late_max_s).

    Each cell generates ``config`` with that late-duplicate share and longest
    delay and recommends for a perfect key (:func:`truth_keys`), so the answer
    is the duplicate processes' own, not a key strategy's; ``None`` when no
    swept window meets the target.
    """
    rows = []
    for late_p in late_ps:
        for late_max_s in late_max_ss:
            late_min_s = min(config.duplicates.late_min_s, late_max_s)
            duplicates = dataclasses.replace(config.duplicates, late_p=late_p, late_min_s=late_min_s,
                                             late_max_s=late_max_s)
            trace = generate(config.replace(duplicates=duplicates), cache=False)
            rec = recommend(trace, truth_keys(trace), mode=mode, target_caught_pct=target_caught_pct,
                            memory_store=memory_store)
            rows.append({"late_p": late_p, "late_max_s": late_max_s, "recommended_window_s": rec.window_s,
                         "peak_memory_bytes": rec.metrics["peak_memory_bytes"] if rec.met else None})
    return pd.DataFrame(rows)


def compare_strategies(
    trace: Trace,
    keys: Sequence[KeySpec] | Mapping[str, KeySpec],
    *,
    mode: WindowMode = "fixed",
    window_s: float | None = None,
    target_caught_pct: float = 99.9,
    max_false_drops: int = 0,
    windows: Sequence[float] = DEFAULT_WINDOWS_S,
    memory_store: str = "redis",
    progress: bool = False,
) -> pd.DataFrame:
    """One row per key strategy: metrics at a common window, and each strategy's own recommendation.

    The common window is ``window_s``, else the first strategy's recommended
    window (else 300 s).
    """
    labelled = dict(keys) if isinstance(keys, Mapping) else {key_label(k): k for k in keys}
    trace.keys(*labelled.values(), progress=progress)  # render once for all strategies
    recs = {
        label: recommend(trace, k, mode=mode, target_caught_pct=target_caught_pct,
                         max_false_drops=max_false_drops, windows=windows, memory_store=memory_store)
        for label, k in labelled.items()
    }
    if window_s is None:
        first = next(iter(recs.values()))
        window_s = first.window_s if first.met else 300.0
    rows = []
    for label, k in labelled.items():
        at = sweep(trace, k, [window_s], mode, memory_store=memory_store).iloc[0].to_dict()
        rec = recs[label]
        rows.append({
            **at, "key": label,
            "recommended_window_s": rec.window_s,
            "recommended_memory_bytes": rec.metrics["peak_memory_bytes"] if rec.metrics else None,
        })
    return pd.DataFrame(rows)


# ---- bring your own trace --------------------------------------------------------------


def repeat_structure(trace: Trace, keys: Sequence[KeySpec], *, progress: bool = False) -> pd.DataFrame:
    """How often each strategy's keys repeat and after what gaps (no ground truth needed).

    ``repeats`` are messages whose key was seen before; ``same_payload`` of
    them carry the same ``source``, ``detail-type`` and ``detail`` as the
    previous sighting (true copies), the rest share a key with a different
    event (the key is too coarse, or the platform re-sent changed content).
    Gaps are between consecutive sightings of a key, in seconds.
    """
    derived = trace.keys(*keys, ContentFingerprint(), progress=progress)
    payload = derived[-1].codes
    t = trace.arrival_ms
    rows = []
    for spec, k in zip(keys, derived[:-1], strict=True):
        rows_k = np.flatnonzero(k.codes >= 0)
        rows_k = rows_k[np.argsort(k.codes[rows_k], kind="stable")]
        c = k.codes[rows_k]
        repeat = np.r_[False, c[1:] == c[:-1]] if len(c) else np.zeros(0, bool)
        prev = np.r_[0, rows_k[:-1]] if len(c) else rows_k
        gaps_s = (t[rows_k] - t[prev])[repeat] / 1000.0
        same = int((payload[rows_k] == payload[prev])[repeat].sum())
        q = np.quantile(gaps_s, [0.5, 0.9, 0.99]) if len(gaps_s) else [np.nan] * 3
        rows.append({
            "key": key_label(spec),
            "messages": len(trace),
            "unkeyed": k.unkeyed,
            "distinct_keys": len(k.raw),
            "repeated_keys": int(np.unique(c[repeat]).size),
            "repeats": int(repeat.sum()),
            "repeat_pct": 100.0 * repeat.sum() / len(trace) if len(trace) else 0.0,
            "same_payload": same,
            "other_payload": int(repeat.sum()) - same,
            "gap_p50_s": q[0], "gap_p90_s": q[1], "gap_p99_s": q[2],
            "gap_max_s": float(gaps_s.max()) if len(gaps_s) else np.nan,
        })
    return pd.DataFrame(rows)


#: A conversationId-only key, as the tutorial uses: every event of a conversation collides.
CONVERSATION_ID_KEY = "business:detail.eventBody.conversationId"
#: Key strategies a dump is judged with when none are named: the platform key, the platform key
#: with a content fallback for what it cannot key, the tutorial's envelope id, and its
#: conversationId key (to show what a key joining different payloads looks like).
DUMP_CANDIDATES: tuple[str, ...] = ("auto", "auto|fingerprint", "envelope-id", CONVERSATION_ID_KEY)
#: Repeats with a different payload a key may show and still count as trusted (share of its repeats).
_OTHER_PAYLOAD_TOLERANCE = 0.001


@dataclass(frozen=True)
class DumpRecommendation:
    """Key, mode and window for a dump without ground truth, what they cost, and why.

    Without ground truth a repeat of a key stands in for a duplicate: the
    window is the smallest that covers ``target_pct`` of the chosen key's
    repeats (suppresses them, in ``mode``). ``live_keys`` and ``memory_bytes``
    are at the dump's message rate. ``candidates`` has one row per key
    strategy: its repeats (same or other payload), its own smallest window, and
    ``covered_pct``, the share of its repeats the recommended window covers.
    """

    key: str
    mode: str
    window_s: float | None
    target_pct: float
    covered_pct: float | None
    live_keys: int | None
    memory_bytes: int | None
    memory_store: str
    messages: int
    span_s: float
    arrival_from: str
    candidates: pd.DataFrame
    why: tuple[str, ...]
    warnings: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """The recommendation as JSON-ready values (without the candidates table)."""
        return {"key": self.key, "mode": self.mode, "window_s": self.window_s, "target_pct": self.target_pct,
                "covered_pct": self.covered_pct, "live_keys": self.live_keys,
                "memory_bytes": self.memory_bytes, "memory_store": self.memory_store,
                "why": list(self.why), "warnings": list(self.warnings)}

    def headline(self) -> str:
        """One sentence: key, mode, window, live keys and memory."""
        if self.window_s is None:
            return f"key {self.key}: no window to recommend ({self.warnings[0] if self.warnings else ''})"
        shown = f"{self.window_s:g} s"
        if _duration(self.window_s) != shown:
            shown += f" ({_duration(self.window_s)})"
        return (f"key {self.key}, {self.mode} window {shown}: "
                f"covers {self.covered_pct:.2f}% of its repeats; ≈ {self.live_keys:,} live keys, "
                f"≈ {format_bytes(self.memory_bytes or 0)} in {self.memory_store}")

    def __str__(self) -> str:
        lines = [f"Recommendation: {self.headline()}", "Why:"]
        lines += [f"  - {line}" for line in self.why]
        if self.warnings:
            lines.append("Warnings:")
            lines += [f"  ! {line}" for line in self.warnings]
        return "\n".join(lines)


def recommend_for_dump(
    trace: Trace,
    keys: Sequence[KeySpec] = DUMP_CANDIDATES,
    *,
    target_pct: float = 99.9,
    windows: Sequence[float] = DEFAULT_WINDOWS_S,
    memory_store: str = "redis",
    progress: bool = False,
) -> DumpRecommendation:
    """Recommend key strategy, window mode and window for a dump of your traffic, without ground truth.

    The key: of the strategies whose repeats (nearly) all carry the same
    payload, the one that sees the most such repeats (fewest unkeyed messages
    on a tie, then the order of ``keys``). The window: per mode, the smallest
    covering ``target_pct`` of that key's repeats; the mode needing less
    memory wins (fixed on a tie). Warnings say what the dump cannot show: a
    span shorter than the window, a key joining different payloads, arrival
    times taken from envelope ``time``, few repeats.
    """
    if len(trace) == 0:
        raise ValueError("the dump holds no messages")
    if memory_store not in STORE_BYTES_PER_KEY:
        raise ValueError(f"no bytes-per-key figure for store {memory_store!r}")
    specs = {key_label(k): k for k in keys}
    structure = repeat_structure(trace, list(specs.values()), progress=progress).set_index("key")
    arrival = trace.arrival_ms
    span_s = float(arrival[-1] - arrival[0]) / 1000.0
    arrival_from = str(trace.frame.attrs.get("arrival_from", "arrival_ms"))
    chosen = _trusted_key(structure)
    row = structure.loc[chosen]
    repeats = int(row["repeats"])
    warnings = _dump_warnings(structure, chosen, arrival_from, len(trace.rejected), target_pct)
    if repeats == 0:
        warnings.insert(0, f"no key of {', '.join(specs)} repeats in this dump: it shows no duplicates, "
                           "so there is no window to tune (dump a longer or busier period)")
        return DumpRecommendation(chosen, "fixed", None, target_pct, None, None, None, memory_store,
                                  len(trace), span_s, arrival_from, structure.reset_index(), (),
                                  tuple(warnings))
    found = {m: smallest_window(trace, specs[chosen], windows, m, _covers(repeats, target_pct),
                                memory_store=memory_store)[1] for m in ("fixed", "sliding")}
    if not any(found.values()):  # some gap exceeds the longest window: take the longest
        longest = max(windows)
        found = {m: sweep(trace, specs[chosen], [longest], m, memory_store=memory_store).iloc[0].to_dict()
                 for m in ("fixed", "sliding")}
        warnings.append(f"no window up to {_duration(longest)} covers {target_pct:g}% of the repeats: "
                        f"the longest was taken")
    mode = min((m for m in found if found[m]),
               key=lambda m: (found[m]["peak_memory_bytes"], found[m]["window_s"], m != "fixed"))
    at = found[mode]
    window_s = float(at["window_s"])
    covered = _covered_pct(at["suppressed"], repeats)
    candidates = _candidate_table(trace, specs, structure, window_s, mode, target_pct, windows, memory_store)
    live = int(at["peak_live_keys"])
    rate_per_s = at["processed"] / span_s if span_s > 0 else 0.0
    if span_s < window_s:
        live = max(live, round(rate_per_s * window_s))
        warnings.insert(0, f"the dump spans {_duration(span_s)}, less than the {_duration(window_s)} window: "
                           "repeats later than the span cannot show up, and live keys are extrapolated from "
                           "the dump's rate; dump a period longer than the window")
    per_key = STORE_BYTES_PER_KEY[memory_store]
    other_mode = "sliding" if mode == "fixed" else "fixed"
    why = [_why_key(chosen, structure), *_why_others(chosen, candidates),
           f"{mode} window {_duration(window_s)}: the smallest covering ≥ {target_pct:g}% of the "
           f"{repeats:,} observed repeat gaps of {chosen} ({covered:.2f}%); median gap "
           f"{_duration(row['gap_p50_s'])}, 99th percentile {_duration(row['gap_p99_s'])}, "
           f"longest {_duration(row['gap_max_s'])}",
           _why_mode(mode, other_mode, found, memory_store),
           f"≈ {live:,} live keys × {per_key} B per key ({memory_store}) ≈ {format_bytes(live * per_key)}, "
           f"at the dump's rate of {rate_per_s:.3g} processed messages/s"]
    return DumpRecommendation(chosen, mode, window_s, target_pct, covered, live, live * per_key, memory_store,
                              len(trace), span_s, arrival_from, candidates, tuple(why), tuple(warnings))


def _covers(repeats: int, target_pct: float) -> Callable[[pd.DataFrame], pd.Series]:
    return lambda frame: 100.0 * frame["suppressed"] / repeats >= target_pct


def _covered_pct(suppressed: float, repeats: int) -> float:
    return 100.0 * float(suppressed) / repeats if repeats else 100.0


def _trusted_key(structure: pd.DataFrame) -> str:
    """The key with the most same-payload repeats among those (nearly) never joining different payloads."""
    s = structure.assign(order=np.arange(len(structure)),
                         other_share=structure["other_payload"] / structure["repeats"].clip(lower=1))
    trusted = s[s["other_share"] <= _OTHER_PAYLOAD_TOLERANCE]
    pool = trusted if len(trusted) else s[s["other_share"] == s["other_share"].min()]
    return str(pool.sort_values(["same_payload", "unkeyed", "order"], ascending=[False, True, True]).index[0])


def _candidate_table(trace: Trace, specs: Mapping[str, KeySpec], structure: pd.DataFrame, window_s: float,
                     mode: WindowMode, target_pct: float, windows: Sequence[float],
                     memory_store: str) -> pd.DataFrame:
    rows = []
    for label, spec in specs.items():
        s = structure.loc[label]
        repeats = int(s["repeats"])
        at = sweep(trace, spec, [window_s], mode, memory_store=memory_store).iloc[0]
        own = (smallest_window(trace, spec, windows, mode, _covers(repeats, target_pct),
                               memory_store=memory_store)[1] if repeats else None)
        rows.append({"key": label, "unkeyed": int(s["unkeyed"]), "repeats": repeats,
                     "same_payload": int(s["same_payload"]), "other_payload": int(s["other_payload"]),
                     "covered_pct": round(_covered_pct(at["suppressed"], repeats), 3),
                     "own_window_s": float(own["window_s"]) if own else None,
                     "gap_p50_s": s["gap_p50_s"], "gap_p99_s": s["gap_p99_s"], "gap_max_s": s["gap_max_s"]})
    return pd.DataFrame(rows)


def _why_key(chosen: str, structure: pd.DataFrame) -> str:
    s = structure.loc[chosen]
    text = (f"key {chosen}: it sees {int(s['repeats']):,} repeats, {int(s['same_payload']):,} of them with "
            f"the same payload (source, detail-type, detail) as the previous sighting")
    if s["unkeyed"]:
        text += f"; {int(s['unkeyed']):,} messages get no key (they would be dead-lettered)"
    return text


def _why_others(chosen: str, candidates: pd.DataFrame) -> list[str]:
    mine = candidates.set_index("key").loc[chosen]
    lines = []
    for _, c in candidates[candidates["key"] != chosen].iterrows():
        if not c["repeats"]:
            lines.append(f"{c['key']}: no repeats ({c['unkeyed']:,} messages unkeyed)")
            continue
        text = (f"{c['key']}: {c['repeats']:,} repeats ({c['other_payload']:,} with a different payload), "
                f"{c['unkeyed']:,} unkeyed; the recommended window covers {c['covered_pct']:.2f}% of them")
        if c["same_payload"] < mine["same_payload"]:
            text += f"; it misses {int(mine['same_payload'] - c['same_payload']):,} same-payload repeats"
        elif c["other_payload"] > mine["other_payload"]:
            text += " and it would drop distinct events"
        lines.append(text)
    return lines


def _why_mode(mode: str, other: str, found: Mapping[str, Any], memory_store: str) -> str:
    mine, theirs = found[mode], found[other]
    if not theirs:
        return f"{mode} rather than {other}: {other} reaches the target with no swept window"
    if (theirs["window_s"], theirs["peak_memory_bytes"]) == (mine["window_s"], mine["peak_memory_bytes"]):
        return (f"{mode} (the default) or {other}: the same window and memory here; sliding would also keep "
                "a key alive while its duplicates keep coming")
    return (f"{mode} rather than {other}: {other} needs {_duration(theirs['window_s'])} and "
            f"{format_bytes(theirs['peak_memory_bytes'])} at peak ({memory_store}), {mode} "
            f"{format_bytes(mine['peak_memory_bytes'])}")


def _dump_warnings(structure: pd.DataFrame, chosen: str, arrival_from: str, rejected: int,
                   target_pct: float) -> list[str]:
    s = structure.loc[chosen]
    warnings = []
    if s["other_payload"]:
        warnings.append(f"key {chosen} joins {int(s['other_payload']):,} messages whose payload differs from "
                        "the previous sighting of their key: either the key is too coarse (distinct events "
                        "would be dropped) or the platform re-sent changed content; look at a few")
    if 0 < s["repeats"] * (1 - target_pct / 100) < 1:
        warnings.append(f"only {int(s['repeats']):,} repeats: covering {target_pct:g}% of them means "
                        "covering the longest gap seen; how far the tail reaches beyond it is unknown")
    if arrival_from == "envelope time":
        warnings.append("arrival times are the envelopes' `time` (whole seconds, stamped at publication, "
                        "identical on a redelivery): gaps are approximate; dump SQS messages with their "
                        "SentTimestamp attribute for exact gaps")
    if rejected:
        warnings.append(f"{rejected:,} lines were not envelopes and are left out")
    return warnings


def _duration(seconds: float) -> str:
    if seconds != seconds:
        return "-"
    return duration_label(round(float(seconds), 1) if seconds < 60 else float(seconds))


def repeat_gaps(trace: Trace, key: KeySpec) -> np.ndarray:
    """Seconds between consecutive sightings of the same key, over all keys."""
    (k,) = trace.keys(key)
    rows = np.flatnonzero(k.codes >= 0)
    rows = rows[np.argsort(k.codes[rows], kind="stable")]
    c, t = k.codes[rows], trace.arrival_ms[rows]
    repeat = np.r_[False, c[1:] == c[:-1]] if len(c) else np.zeros(0, bool)
    return (t - np.r_[0, t[:-1]])[repeat] / 1000.0 if len(c) else np.zeros(0)


def duplicate_delays(trace: Trace) -> pd.DataFrame:
    """Every duplicate message's kind and delay after its original's arrival (seconds)."""
    if not trace.has_truth:
        raise ValueError("duplicate delays need ground truth")
    f = trace.frame
    dup = f["kind"] != "original"
    return pd.DataFrame({
        "kind": f.loc[dup, "kind"].cat.remove_unused_categories(),
        "delay_s": (f.loc[dup, "arrival_ms"] - f.loc[dup, "original_arrival_ms"]) / 1000.0,
    }).reset_index(drop=True)


#: The key strategies the workbench compares, by label.
STANDARD_KEYS: dict[str, str] = {
    "envelope-id": "envelope-id",
    "auto": "auto",
    "conversationId": CONVERSATION_ID_KEY,
}


__all__ = [
    "CONVERSATION_ID_KEY",
    "DEFAULT_WINDOWS_S",
    "DUMP_CANDIDATES",
    "OUTCOMES",
    "STANDARD_KEYS",
    "STORE_BYTES_PER_KEY",
    "DumpRecommendation",
    "Recommendation",
    "Replay",
    "SweepEngine",
    "compare_strategies",
    "duplicate_delays",
    "duration_label",
    "format_bytes",
    "meets",
    "outcomes",
    "recommend",
    "recommend_for_dump",
    "recommendation",
    "repeat_gaps",
    "repeat_structure",
    "replay",
    "smallest_window",
    "smallest_window_of",
    "sweep",
    "truth_keys",
    "window_sensitivity",
]
