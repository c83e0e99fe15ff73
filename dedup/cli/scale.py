"""``dedup analyze`` on dumps too large for memory: the columnar path (:mod:`dedup.columnar`).

Chosen for Parquet and zstd dumps, for dumps of :data:`COLUMNAR_MIN_BYTES` or
more, or with ``--engine columnar``. Keys are derived once per strategy and
cached beside the dump; the report is the repeat structure per strategy and,
per strategy and window mode, the smallest window covering the target share of
the repeats (with ground truth, the exact recommendation instead).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

#: Dumps at least this large go through the columnar path under ``--engine auto``.
COLUMNAR_MIN_BYTES = 256 * 1024 * 1024
#: The strategies a large dump is analysed with when none are given (content keys run in Python).
COLUMNAR_DEFAULT_KEYS = ["auto", "envelope-id"]


def use_columnar(path: Path, engine: str) -> bool:
    """Whether ``dedup analyze`` takes the columnar path for ``path``."""
    if engine != "auto":
        return engine == "columnar"
    large = path.exists() and path.stat().st_size >= COLUMNAR_MIN_BYTES
    return path.name.endswith((".parquet", ".zst")) or large


def analyze_columnar(args: argparse.Namespace) -> int:
    """The ``dedup analyze`` report of a large dump, through the cached keys and the columnar sweep."""
    import pandas as pd

    from dedup import analysis
    from dedup.columnar import ColumnarSweep, Dump, cached_keys, connect
    from dedup.columnar.repeats import repeat_summary

    dump = Dump.of(args.file)
    keys = args.keys or COLUMNAR_DEFAULT_KEYS
    progress = sys.stderr.isatty()
    con = connect()
    summaries, results = [], []
    for spec in keys:
        columns = cached_keys(dump, spec, progress=progress, con=con)
        if args.ignore_truth:
            columns.logical_id = columns.kind = None
        summary = repeat_summary(columns)
        summaries.append(summary)
        engine = ColumnarSweep(columns, memory_store=args.store)
        for mode in ("fixed", "sliding"):
            frame = engine.sweep(analysis.DEFAULT_WINDOWS_S, mode, progress=progress)
            if engine.has_truth:
                rec = engine.recommend(mode, target_caught_pct=args.target, frame=frame)
                results.append({"key": spec, "mode": mode, "window_s": rec.window_s, "ground_truth": True,
                                "peak_memory_bytes": (rec.metrics or {}).get("peak_memory_bytes"),
                                "text": str(rec)})
                continue
            row = None
            if summary["repeats"]:
                _, row = engine.smallest_window(analysis.DEFAULT_WINDOWS_S, mode,
                                                analysis._covers(summary["repeats"], args.target),
                                                frame=frame)
            results.append(_covering(spec, mode, row, summary["repeats"], args.target))
    table = pd.DataFrame(summaries)
    if args.json:
        messages = int(table["messages"].iloc[0])
        print(json.dumps({"file": str(args.file), "engine": "columnar", "messages": messages,
                          "repeats": json.loads(table.to_json(orient="records")), "windows": results},
                         allow_nan=False, default=float))
        return 0
    print(f"{args.file}: {int(table['messages'].iloc[0]):,} messages "
          "(columnar engine; keys cached beside the dump)")
    print()
    print("Key repeats (a message whose key was seen before; gaps between consecutive sightings):")
    print(table.to_string(index=False, float_format=lambda x: f"{x:,.2f}"))
    print()
    print(f"Windows (target {args.target:g}%):")
    for result in results:
        print(f"  {result['text']}")
    return 0


def _covering(spec: str, mode: str, row: dict[str, Any] | None, repeats: int, target: float
              ) -> dict[str, Any]:
    from dedup.analysis import duration_label, format_bytes

    if row is None:
        text = f"{spec} ({mode}): no window up to 2 d covers {target:g}% of {repeats:,} repeats"
        return {"key": spec, "mode": mode, "window_s": None, "ground_truth": False, "peak_memory_bytes": None,
                "text": text}
    text = (f"{spec} ({mode}): {duration_label(row['window_s'])} covers {target:g}% of {repeats:,} repeats; "
            f"peak {row['peak_live_keys']:,} live keys ≈ {format_bytes(row['peak_memory_bytes'])}")
    return {"key": spec, "mode": mode, "window_s": float(row["window_s"]), "ground_truth": False,
            "peak_memory_bytes": int(row["peak_memory_bytes"]), "text": text}
