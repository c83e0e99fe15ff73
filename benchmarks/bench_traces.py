"""Trace generation speed, and the exact sweep against replaying the trace once per window.

* Generation: a trace of 1M messages as a DataFrame (envelopes left lazy),
  against rendering every envelope as a dict too. Target: >= 200k events/s.
* Sweep vs replay: the metrics of 100 windows over 1M events, by one sweep
  (key derivation included) and by replays through the real Deduplicator and
  MemoryStore. A full replay of 1M events takes about a minute, so only two
  windows (the shortest and the longest) are replayed, each checked equal to
  its sweep row, and the time of 100 replays is that mean per window times 100
  (the title says so).
  Target: identical numbers, sweep >= 50x faster.

Times are this process's CPU time: the work is single-threaded and CPU-bound,
and on a shared machine wall time would mostly measure the neighbours.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.harness import Comparison, Row, Target
from dedup.analysis import replay, sweep
from dedup.traces import generate
from dedup.traces.render import render

KEY = "auto"
WINDOWS = 100
GENERATION_TARGET = 200_000
SPEEDUP_TARGET = 50


def run(quick: bool) -> list[Comparison]:
    return [generation(quick), sweep_vs_replay(quick)]


def _cpu(fn) -> tuple[float, object]:
    start = time.process_time()
    result = fn()
    return time.process_time() - start, result


def generation(quick: bool) -> Comparison:
    n = 50_000 if quick else 1_000_000
    rendered_n = 20_000 if quick else 100_000
    frame_s = min(_cpu(lambda s=s: generate(n_events=n, seed=s, cache=False))[0] for s in range(3))
    rendered_s = min(
        _cpu(lambda s=s: render(generate(n_events=rendered_n, seed=s, cache=False).frame, s))[0]
        for s in range(2)
    )
    rows = [
        Row("generate + render every envelope dict", rendered_n / rendered_s),
        Row("generate a DataFrame (envelopes lazy)", n / frame_s),
    ]
    rate = rows[1].value
    return Comparison(f"Trace generation ({n:,} events; rendering measured on {rendered_n:,})",
                      baseline=rows[0].name, rows=rows,
                      targets=[Target(f">= {GENERATION_TARGET:,} events/s into a DataFrame",
                                      f"{rate:,.0f} events/s", rate >= GENERATION_TARGET)])


def sweep_vs_replay(quick: bool) -> Comparison:
    n = 20_000 if quick else 1_000_000
    replayed = 2  # the shortest and the longest window: a full run stays within ~10 minutes
    trace = generate(n_events=n, seed=0)  # a million events is cached under data/cache/
    windows = np.geomspace(1.0, 172_800.0, WINDOWS).round(3).tolist()
    keying_s, _ = _cpu(lambda: trace.keys(KEY))
    sweep_s, frame = _cpu(lambda: sweep(trace, KEY, windows))
    picks = np.linspace(0, WINDOWS - 1, replayed).round().astype(int)
    replay_s, identical = 0.0, True
    for i in picks:
        seconds, result = _cpu(lambda i=i: replay(trace, KEY, windows[i]))
        replay_s += seconds
        identical &= result.metrics == frame.iloc[i].to_dict()
    per_window_s = replay_s / replayed
    rows = [
        Row(f"{WINDOWS} replays (est. {per_window_s:.1f} s each x {WINDOWS})", per_window_s * WINDOWS,
            unit="s", lower_is_better=True),
        Row(f"sweep of {WINDOWS} windows incl. keying ({keying_s:.1f} s)", keying_s + sweep_s,
            unit="s", lower_is_better=True),
        Row(f"sweep of {WINDOWS} windows, keys derived", sweep_s, unit="s", lower_is_better=True),
    ]
    comparison = Comparison(
        f"Sweep vs replay, {KEY} keys, fixed window, {n:,} events (replays: {replayed} of the {WINDOWS} "
        f"windows run and checked {'equal' if identical else 'NOT EQUAL'} to the sweep; 100-replay time "
        "estimated from them)",
        baseline=rows[0].name, rows=rows,
    )
    speedup = comparison.ratio(rows[1].name)
    comparison.targets.append(Target(
        f"identical numbers, sweep incl. keying >= {SPEEDUP_TARGET}x faster",
        f"{'identical' if identical else 'NOT identical'}, {speedup:.0f}x",
        identical and speedup >= SPEEDUP_TARGET))
    return comparison
