"""``dedup trace | sweep | analyze``: synthetic traces and window tuning from a shell.

* ``dedup trace``: generate a seeded Genesys / NICE trace to JSONL (plus its
  ground-truth sidecar) or a readable CSV.
* ``dedup sweep``: exact dedup metrics over many windows for several key
  strategies, the recommended window per strategy, optional CSV and figures.
* ``dedup analyze FILE.jsonl``: bring your own trace (envelopes or an SQS dump):
  how often each strategy's keys repeat and after what gaps.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from dedup.errors import ConfigurationError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, None: 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86_400.0}
_PROGRESS_MIN_EVENTS = 50_000
#: Windows the sweep table shows (besides the recommended ones) when no --windows are given.
_SHOWN_WINDOWS_S = (1.0, 10.0, 60.0, 300.0, 3600.0, 6 * 3600.0, 86_400.0)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``trace``, ``sweep`` and ``analyze`` to the ``dedup`` parser."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    trace = subparsers.add_parser(
        "trace", help="generate a synthetic Genesys / NICE trace with duplicate ground truth",
        description="Generate a seeded trace: contact-centre events with a daily profile, delivered with "
                    "SQS redeliveries, producer re-publishes and late copies. JSONL output (one envelope a "
                    "line) comes with NAME.truth.csv; CSV output is the readable table.",
        formatter_class=fmt)
    _generator_options(trace)
    trace.add_argument("-o", "--output", required=True, type=Path, help="FILE.jsonl or FILE.csv")
    trace.add_argument("--no-truth", action="store_true", help="JSONL only: do not write NAME.truth.csv")
    trace.set_defaults(func=cmd_trace)

    sweep = subparsers.add_parser(
        "sweep", help="exact dedup metrics over many windows; the recommended window per key strategy",
        description="Sweep windows for each key strategy on a generated trace (or --trace FILE.jsonl with "
                    "its truth sidecar) and recommend the smallest window meeting the target.",
        formatter_class=fmt)
    _generator_options(sweep)
    sweep.add_argument("--trace", type=Path, help="analyse FILE.jsonl (needs FILE.truth.csv) instead")
    _key_options(sweep, ["envelope-id", "auto", "business:detail.eventBody.conversationId"])
    sweep.add_argument("--mode", choices=("fixed", "sliding"), default="fixed", help="window mode")
    sweep.add_argument("--windows", help="comma-separated windows such as 1s,30s,5m,1h,1d "
                                         "(default: 60 log-spaced windows from 1 s to 2 d)")
    sweep.add_argument("--target", type=float, default=99.9, help="caught %% the recommendation must reach")
    sweep.add_argument("--max-false-drops", type=int, default=0, help="false drops the recommendation allows")
    sweep.add_argument("--store", choices=("redis", "memory"), default="redis",
                       help="store whose bytes per key price the memory")
    sweep.add_argument("--csv", type=Path, help="write every sweep row to this CSV")
    sweep.add_argument("--plots", type=Path, help="write PNG figures into this directory")
    sweep.set_defaults(func=cmd_sweep)

    analyze = subparsers.add_parser(
        "analyze", help="duplicate structure of your own JSONL trace, per key strategy",
        description="Load FILE.jsonl (EventBridge envelopes, or SQS messages / Lambda records wrapping them) "
                    "and report, per key strategy, how often keys repeat and after what gaps. With a "
                    "FILE.truth.csv sidecar, also the recommended window per strategy.",
        formatter_class=fmt)
    analyze.add_argument("file", type=Path, help="a JSONL file")
    _key_options(analyze, ["envelope-id", "auto", "fingerprint", "business:detail.eventBody.conversationId"])
    analyze.add_argument("--errors", choices=("raise", "collect"), default="raise",
                         help="on a line that is not an envelope: stop (raise) or list it and go on")
    analyze.add_argument("--plot", type=Path, help="write the repeat-gap figure to this PNG")
    analyze.set_defaults(func=cmd_analyze)


def _generator_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("generated trace")
    group.add_argument("-n", "--events", type=int, default=100_000, help="messages in the trace")
    group.add_argument("--source", choices=("genesys", "nice", "mixed"), default="genesys")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--delivery-p", type=float, help="chance an SQS delivery is redelivered (0.01)")
    group.add_argument("--publish-p", type=float, help="chance a PutEvents call is retried (0.012)")
    group.add_argument("--late-p", type=float, help="chance of a late copy, 1 min to 1 day later (0.0005)")


def _key_options(parser: argparse.ArgumentParser, default: list[str]) -> None:
    parser.add_argument("--key", action="append", dest="keys", metavar="SPEC",
                        help="key strategy spec, repeatable: auto, envelope-id, genesys, nice, fingerprint, "
                             f"business:EXPR[,EXPR][@TIME/BUCKET_S] (default: {' '.join(default)})")
    parser.set_defaults(default_keys=default)


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``30``, ``30s``, ``250ms``, ``5m``, ``1.5h``, ``2d``."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigurationError(f"not a duration: {text!r} (use e.g. 30s, 5m, 1h, 2d)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def _config(args: argparse.Namespace) -> Any:
    from dedup.traces import Duplicates, TraceConfig

    changes = {name: getattr(args, arg) for name, arg in
               (("delivery_p", "delivery_p"), ("publish_p", "publish_p"), ("late_p", "late_p"))
               if getattr(args, arg) is not None}
    return TraceConfig(n_events=args.events, source=args.source, seed=args.seed,
                       duplicates=Duplicates(**changes))


# ---- commands ------------------------------------------------------------------


def cmd_trace(args: argparse.Namespace) -> int:
    from dedup.traces import generate, write_csv, write_jsonl

    trace = generate(_config(args))
    output: Path = args.output
    if output.suffix == ".csv":
        write_csv(trace, output)
        written = [output]
    elif output.suffix == ".jsonl":
        sidecar = write_jsonl(trace, output, truth=not args.no_truth, progress=_show_progress(len(trace)))
        written = [output, *([sidecar] if sidecar else [])]
    else:
        raise ConfigurationError(f"output must end in .jsonl or .csv, got {output.name!r}")
    print(_trace_summary(trace))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    import pandas as pd

    from dedup import analysis
    from dedup.traces import generate, read_jsonl

    trace = read_jsonl(args.trace) if args.trace else generate(_config(args))
    if not trace.has_truth:
        raise ConfigurationError(f"{args.trace} has no ground truth ({args.trace.stem}.truth.csv); "
                                 "use `dedup analyze` for a trace without it")
    keys = args.keys or args.default_keys
    if args.windows:
        windows = shown = sorted({parse_duration(w) for w in args.windows.split(",")})
    else:
        windows, shown = sorted({*analysis.DEFAULT_WINDOWS_S, *_SHOWN_WINDOWS_S}), list(_SHOWN_WINDOWS_S)
    progress = _show_progress(len(trace))
    trace.keys(*keys, progress=progress)
    frames, recs = [], []
    for key in keys:
        frames.append(analysis.sweep(trace, key, windows, args.mode, memory_store=args.store,
                                     progress=progress))
        recs.append(analysis.recommend(trace, key, mode=args.mode, target_caught_pct=args.target,
                                       max_false_drops=args.max_false_drops, windows=windows,
                                       memory_store=args.store))
    sweeps = pd.concat(frames, ignore_index=True)
    print(_trace_summary(trace))
    print()
    print(f"Sweep ({args.mode} window, memory priced as {args.store}):")
    print(_sweep_table(sweeps, shown, recs))
    print()
    print(f"Recommendation (caught >= {args.target:g}%, false drops <= {args.max_false_drops}):")
    for rec in recs:
        print(f"  {rec}")
    if args.csv:
        sweeps.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    if args.plots:
        _write_sweep_plots(args.plots, trace, sweeps, recs, keys, windows, args)
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from dedup import analysis
    from dedup.traces import read_jsonl

    trace = read_jsonl(args.file, errors=args.errors)
    keys = args.keys or args.default_keys
    table = analysis.repeat_structure(trace, keys, progress=_show_progress(len(trace)))
    print(f"{args.file}: {len(trace):,} messages"
          + (f", {len(trace.rejected)} lines rejected" if trace.rejected else ""))
    for where, reason in trace.rejected[:10]:
        print(f"  line {where}: {reason}")
    print()
    print("Key repeats (a message whose key was seen before; gaps between consecutive sightings):")
    print(_repeat_table(table))
    unkeyed = {k.strategy: k.unkeyed_reasons for k in trace.keys(*keys) if k.unkeyed_reasons}
    for strategy, reasons in unkeyed.items():
        top = sorted(reasons.items(), key=lambda kv: -kv[1])[:3]
        print(f"  {strategy}: no key for " + "; ".join(f"{n:,} × {r}" for r, n in top))
    if trace.has_truth:
        print()
        print("Ground truth found: recommended windows (caught >= 99.9%, no false drops):")
        for key in keys:
            print(f"  {analysis.recommend(trace, key)}")
    if args.plot:
        from dedup import plots

        plots.repeat_gaps({k: analysis.repeat_gaps(trace, k) for k in keys}).savefig(args.plot, dpi=110)
        print(f"wrote {args.plot}")
    return 0


# ---- output --------------------------------------------------------------------


def _show_progress(events: int) -> bool:
    return events >= _PROGRESS_MIN_EVENTS and sys.stderr.isatty()


def _trace_summary(trace: Any) -> str:
    f = trace.frame
    hours = (f["arrival_ms"].iloc[-1] - f["arrival_ms"].iloc[0]) / 3.6e6 if len(f) else 0.0
    lines = [f"{len(f):,} messages over {hours:.1f} h"]
    if trace.has_truth:
        kinds = f["kind"].value_counts()
        lines.append("  " + ", ".join(f"{k}: {int(kinds.get(k, 0)):,}" for k in kinds.index))
    return "\n".join(lines)


def _sweep_table(sweeps: Any, windows_s: list[float], recs: list) -> str:
    import pandas as pd

    from dedup.analysis import format_bytes
    from dedup.plots import duration_label

    recommended = pd.DataFrame([{**r.metrics, "note": "<- recommended"} for r in recs if r.met])
    rows = pd.concat([sweeps[sweeps["window_s"].isin(windows_s)].assign(note=""), recommended])
    order = {k: i for i, k in enumerate(sweeps["key"].unique())}
    rows = rows.sort_values(["key", "window_s"], key=lambda c: c.map(order) if c.name == "key" else c)
    rows["window"] = rows["window_s"].map(duration_label)
    rows["peak memory"] = rows["peak_memory_bytes"].map(format_bytes)
    columns = ["key", "window", "caught_pct", "caught", "leaked", "false_drops", "unkeyed",
               "peak_live_keys", "peak memory", "note"]
    return rows[columns].to_string(index=False, float_format=lambda x: f"{x:.3f}")


def _repeat_table(table: Any) -> str:
    shown = table.copy()
    for column in ("gap_p50_s", "gap_p90_s", "gap_p99_s", "gap_max_s"):
        shown[column] = shown[column].map(lambda s: "-" if s != s else f"{s:,.1f}")
    return shown.to_string(index=False, float_format=lambda x: f"{x:.2f}")


def _write_sweep_plots(directory: Path, trace: Any, sweeps: Any, recs: list, keys: list[str],
                       windows: list[float], args: argparse.Namespace) -> None:
    from dedup import analysis, plots

    directory.mkdir(parents=True, exist_ok=True)
    figures = {
        "caught_leaked.png": plots.caught_and_leaked(sweeps, target_caught_pct=args.target),
        "memory.png": plots.memory(sweeps, store=args.store),
        "duplicate_delays.png": plots.duplicate_delays(
            analysis.duplicate_delays(trace), windows_s=[r.window_s for r in recs if r.met]),
        "strategies.png": plots.strategy_comparison(analysis.compare_strategies(
            trace, keys, mode=args.mode, target_caught_pct=args.target,
            max_false_drops=args.max_false_drops, windows=windows, memory_store=args.store)),
    }
    for name, figure in figures.items():
        figure.savefig(directory / name, dpi=110)
    print(f"wrote {', '.join(str(directory / n) for n in figures)}")
