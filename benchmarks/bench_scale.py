"""Window analytics at dump scale (issue 15): keys + a 100-window sweep + the recommendation.

Each row runs in a fresh process on a dump written beforehand (Parquet with
its truth, kept compressed under ``data/cache/scale/``, reused between runs;
writing it is timed apart): wall time and the peak RSS of that process and
its key-derivation workers. Then, keys cached, the one-window recomputation a
slider makes. At 1M events the row stands beside today's path
(:func:`dedup.analysis.sweep` and ``recommend`` on the trace in memory).

Sizes: ``--quick`` 100k; default 1M; ``--full`` adds 10M and 100M (the dump takes
about 96 bytes an event: 10M about 1 GB, written in about a minute; 100M needs about
12 GB of disk and, to generate, about 20 GB of memory: the row says so and is
skipped when the disk or the memory is short).
Targets (2-core machine): 10M in <= 60 s and <= 2 GB; 100M in <= 15 min and
<= 8 GB; a slider window under 100 ms at 10M. Wall time on a shared machine
includes the neighbours' load, which the output reports.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import Comparison, Row
from dedup.analysis import format_bytes
from dedup.traces import TraceConfig, cache_dir

KEY = "auto"
WINDOWS_S = [float(w) for w in np.geomspace(1, 172_800, 100)]
TARGETS = {10_000_000: (60.0, 2e9), 100_000_000: (900.0, 8e9)}
SLIDER_TARGET_MS = 100.0


def run(quick: bool, full: bool = False) -> list[Comparison]:
    sizes = [100_000] if quick else [1_000_000, *([10_000_000, 100_000_000] if full else [])]
    return [scale(n, baseline=n <= 1_000_000) for n in sizes]


def dump_for(n: int) -> Path:
    """The benchmark's dump of ``n`` events (written once, then reused)."""
    from dedup.columnar.write import write_trace

    path = cache_dir() / "scale" / f"trace-mixed-{n}.parquet"
    if not path.exists():
        start = time.perf_counter()
        write_trace(TraceConfig(n_events=n, source="mixed", seed=15), path)
        elapsed = time.perf_counter() - start
        size = path.stat().st_size
        print(f"  wrote {path.name}: {n / elapsed:,.0f} events/s, {format_bytes(size)} "
              f"({size / max(n, 1):.0f} bytes an event)", flush=True)
    return path


def scale(n: int, *, baseline: bool) -> Comparison:
    from dedup.columnar.write import NotEnoughDiskError, NotEnoughMemoryError

    title = f"Dump of {n:,} events: keys ({KEY}) + {len(WINDOWS_S)}-window sweep + recommendation"
    try:
        path = dump_for(n)
    except (NotEnoughDiskError, NotEnoughMemoryError) as exc:
        return Comparison(title + f" -- SKIPPED: {exc}", baseline="-", rows=[Row("-", 0.0)])
    load = os.getloadavg()[0]
    child = _child_run(path)
    rows = [Row("columnar: keys", child["keys_s"], "s", lower_is_better=True),
            Row(f"columnar: sweep of {len(WINDOWS_S)} windows", child["sweep_s"], "s", lower_is_better=True),
            Row("columnar: recommendation (reusing the sweep)", child["recommend_s"], "s",
                lower_is_better=True),
            Row("columnar: total", child["wall_s"], "s", lower_is_better=True)]
    if baseline:
        rows.insert(0, Row("today: analysis sweep + recommend", _today_s(n), "s", lower_is_better=True))
    disk = path.stat().st_size + child["cache_bytes"]
    figures = (f"peak RSS {format_bytes(child['peak_rss_bytes'])}, slider (one window, keys cached) "
               f"{child['slider_ms']:.1f} ms, disk {format_bytes(disk)} (dump + key cache); "
               f"{child['python_rows']:,} messages keyed in Python; load average {load:.1f} on "
               f"{os.cpu_count()} cores")
    comparison = Comparison(f"{title}: {figures}",
                            baseline=rows[0].name if baseline else "columnar: total", rows=rows)
    if n in TARGETS:
        wall_s, rss = TARGETS[n]
        met = child["wall_s"] <= wall_s and child["peak_rss_bytes"] <= rss
        goal = f"<= {wall_s:g} s and <= {format_bytes(rss)}"
        if n == 10_000_000:
            met = met and child["slider_ms"] < SLIDER_TARGET_MS
            goal += f", slider < {SLIDER_TARGET_MS:g} ms"
        _judge(comparison, goal, f"{child['wall_s']:.1f} s, {format_bytes(child['peak_rss_bytes'])}, "
                                 f"slider {child['slider_ms']:.1f} ms", met)
    return comparison


def _judge(comparison: Comparison, goal: str, figure: str, met: bool) -> None:
    """Record the target on either harness (a list of targets, or one target and verdict)."""
    if hasattr(comparison, "targets"):
        from benchmarks import harness

        comparison.targets.append(harness.Target(goal, figure, met))  # type: ignore[attr-defined]
    else:
        comparison.target, comparison.met = f"{goal} (measured {figure})", met


def _child_run(path: Path) -> dict[str, float]:
    code = f"from benchmarks.bench_scale import measure; measure({str(path)!r})"
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=root,
                         env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(path: str) -> None:
    """In a fresh process: derive keys (cache refreshed), sweep, recommend, then time slider windows."""
    from dedup.columnar import ColumnarSweep, Dump, cache_paths, cached_keys, connect

    dump = Dump.of(path)
    start = time.perf_counter()
    keys = cached_keys(dump, KEY, con=connect(), refresh=True)
    keys_s = time.perf_counter() - start
    engine = ColumnarSweep(keys)
    frame = engine.sweep(WINDOWS_S)
    sweep_s = time.perf_counter() - start - keys_s
    engine.recommend(windows=WINDOWS_S, frame=frame)
    wall_s = time.perf_counter() - start
    slider = []
    for window_s in (30.0, 300.0, 3600.0, 7200.0, 86_400.0):
        tick = time.perf_counter()
        engine.metrics(window_s, "fixed")
        slider.append((time.perf_counter() - tick) * 1000)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    data, meta = cache_paths(dump, KEY)
    print(json.dumps({"wall_s": wall_s, "keys_s": keys_s, "sweep_s": sweep_s,
                      "recommend_s": wall_s - keys_s - sweep_s, "slider_ms": float(np.median(slider)),
                      "peak_rss_bytes": rss + workers,
                      "cache_bytes": data.stat().st_size + meta.stat().st_size,
                      "python_rows": keys.python_rows}))


def _today_s(n: int) -> float:
    """Today's path on the same trace in memory: sweep the windows, then recommend (which sweeps again)."""
    from dedup.analysis import recommend, sweep
    from dedup.traces import generate

    trace = generate(n_events=n, source="mixed", seed=15, cache=False)
    start = time.perf_counter()
    sweep(trace, KEY, WINDOWS_S)
    recommend(trace, KEY, windows=WINDOWS_S)
    return time.perf_counter() - start

