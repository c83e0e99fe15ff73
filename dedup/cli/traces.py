"""``dedup trace | sweep | analyze``: synthetic traces and window tuning from a shell.

* ``dedup trace``: generate a seeded Genesys / NICE trace to JSONL (plus its
  ground-truth sidecar) or a readable CSV.
* ``dedup sweep``: exact dedup metrics over many windows for several key
  strategies, the recommended window per strategy, optional CSV and figures.
* ``dedup analyze DUMP``: bring your own trace (envelopes, an SQS dump, gzip):
  how often each strategy's keys repeat and after what gaps, ending with the
  recommended key, mode and window without ground truth (``--json`` for one
  JSON object).

A file that is missing or cannot be read is one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from collections.abc import Callable
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
    trace.set_defaults(func=_file_errors(cmd_trace))

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
    sweep.set_defaults(func=_file_errors(cmd_sweep))

    analyze = subparsers.add_parser(
        "analyze", help="your own dump: key repeats, gaps, and the recommended key, mode and window",
        description="Load DUMP (EventBridge envelopes as JSONL, SQS messages or Lambda records wrapping "
                    "them, `aws sqs receive-message` output, optionally gzipped) and report, per key "
                    "strategy, how often keys repeat, with what payload and after what gaps; then "
                    "recommend a key strategy, window mode and window with its live keys and memory, "
                    "without ground truth. With a NAME.truth.csv sidecar, also the exact windows.",
        formatter_class=fmt)
    analyze.add_argument("file", type=Path, metavar="DUMP",
                         help="a JSONL / JSON file, or the same gzipped (.gz)")
    _key_options(analyze, ["auto", "auto|fingerprint", "envelope-id", "a conversationId key",
                           "(dedup.analysis.DUMP_CANDIDATES)"])
    analyze.add_argument("--errors", choices=("raise", "collect"), default="raise",
                         help="on a line that is not an envelope: stop (raise) or list it and go on")
    analyze.add_argument("--target", type=float, default=99.9,
                         help="share of the chosen key's observed repeats (%%) the window must cover")
    analyze.add_argument("--store", choices=("redis", "memory"), default="redis",
                         help="store whose bytes per key price the memory")
    analyze.add_argument("--ignore-truth", action="store_true",
                         help="read DUMP as your own dump would be: ignore a NAME.truth.csv sidecar")
    analyze.add_argument("--json", action="store_true",
                         help="print one JSON object (repeats per key, candidates, recommendation) instead")
    analyze.add_argument("--plot", type=Path, help="write the repeat-gap figure to this PNG")
    analyze.add_argument("--engine", choices=("auto", "memory", "columnar"), default="auto",
                         help="columnar: out of core, keys cached beside the dump "
                              "(auto: for Parquet, zstd and dumps of 256 MB or more)")
    analyze.set_defaults(func=_file_errors(cmd_analyze))


def _generator_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("generated trace")
    group.add_argument("-n", "--events", type=int, default=100_000, help="messages in the trace")
    group.add_argument("--source", choices=("genesys", "nice", "mixed"), default="genesys",
                       help="platform whose events the trace holds")
    group.add_argument("--seed", type=int, default=0, help="random seed: the same seed, the same trace")
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
    from dedup.traces import generate

    trace = read_dump(args.trace) if args.trace else generate(_config(args))
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


def read_dump(path: Path, **options: Any) -> Any:
    """:func:`dedup.traces.read_jsonl`, with an unreadable file turned into a one-line error."""
    import gzip
    import zlib

    from dedup.traces import read_jsonl

    try:
        return read_jsonl(path, **options)
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise ConfigurationError(f"cannot read {path}: not UTF-8 JSON text or gzip of it ({exc})") from None
    except ValueError as exc:  # a truth sidecar that does not fit
        raise ConfigurationError(f"cannot read {path}: {exc}") from None


def _file_errors(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``command`` with a file it cannot open, read or write turned into a one-line error (exit 2)."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except OSError as exc:
            what = exc.strerror or str(exc)
            raise ConfigurationError(f"{exc.filename}: {what}" if exc.filename else what) from None

    return run


def cmd_analyze(args: argparse.Namespace) -> int:
    from dedup import analysis
    from dedup.cli.scale import analyze_columnar, use_columnar

    if use_columnar(args.file, args.engine):
        return analyze_columnar(args)

    options: dict[str, Any] = {"errors": args.errors}
    if args.ignore_truth:
        options["truth"] = False
    trace = read_dump(args.file, **options)
    if len(trace) == 0:
        raise ConfigurationError(f"{args.file} holds no messages")
    keys = args.keys or list(analysis.DUMP_CANDIDATES)
    progress = _show_progress(len(trace))
    table = analysis.repeat_structure(trace, keys, progress=progress)
    advice = analysis.recommend_for_dump(trace, keys, target_pct=args.target, memory_store=args.store,
                                         progress=progress)
    exact = [analysis.recommend(trace, key) for key in keys] if trace.has_truth else []
    if args.json:
        print(json.dumps(_analysis_json(args.file, trace, table, advice, exact), allow_nan=False))
    else:
        _print_analysis(args.file, trace, keys, table, advice, exact)
    if args.plot:
        from dedup import plots

        plots.repeat_gaps({k: analysis.repeat_gaps(trace, k) for k in keys}).savefig(args.plot, dpi=110)
        print(f"wrote {args.plot}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _print_analysis(path: Path, trace: Any, keys: list[str], table: Any, advice: Any, exact: list) -> None:
    from dedup.analysis import duration_label

    print(f"{path}: {len(trace):,} messages over {duration_label(advice.span_s)}, arrival times from "
          f"{advice.arrival_from}" + (f", {len(trace.rejected)} lines rejected" if trace.rejected else ""))
    for where, reason in trace.rejected[:10]:
        print(f"  line {where}: {reason}")
    print()
    print("Key repeats (a message whose key was seen before; gaps between consecutive sightings):")
    print(_repeat_table(table))
    unkeyed = {k.strategy: k.unkeyed_reasons for k in trace.keys(*keys) if k.unkeyed_reasons}
    for strategy, reasons in unkeyed.items():
        top = sorted(reasons.items(), key=lambda kv: -kv[1])[:3]
        print(f"  {strategy}: no key for " + "; ".join(f"{n:,} × {r}" for r, n in top))
    if exact:
        print()
        print("Ground truth found: recommended windows (caught >= 99.9%, no false drops):")
        for rec in exact:
            print(f"  {rec}")
    print()
    print(advice)


def _analysis_json(path: Path, trace: Any, table: Any, advice: Any, exact: list) -> dict[str, Any]:
    def records(frame: Any) -> list[dict[str, Any]]:
        return json.loads(frame.to_json(orient="records"))  # NaN -> null, numpy -> plain numbers

    return {
        "file": str(path), "messages": len(trace), "span_s": advice.span_s,
        "arrival_from": advice.arrival_from,
        "rejected": [{"line": where, "reason": reason} for where, reason in trace.rejected],
        "repeats": records(table), "candidates": records(advice.candidates),
        "recommendation": advice.as_dict(),
        "ground_truth": [{"key": r.key, "mode": r.mode, "window_s": r.window_s} for r in exact],
    }


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
