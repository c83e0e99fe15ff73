"""``dedup workbench``: execute the notebooks headless and print what they found."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "workbench",
        help="execute the workbench notebooks headless (papermill) and print a summary",
        description="Execute every notebooks/NN_*.ipynb with papermill into OUT/notebooks, save their "
        "figures as PNG into OUT/figures and print a summary table (notebook, status, seconds, figures, "
        "headline numbers). Exits 1 when any notebook fails.",
    )
    parser.add_argument("--only", action="append", default=[], metavar="NN",
                        help="run only this notebook (number such as 04, or file stem); repeatable")
    parser.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
                        help="override a notebook parameter, e.g. -p window_s=600 -p cache=fakeredis; "
                        "applied to every selected notebook that declares it; repeatable")
    parser.add_argument("--out", type=Path, default=Path("build"),
                        help="output directory (default: build)")
    parser.add_argument("--notebooks", type=Path, default=Path("notebooks"),
                        help="directory holding the notebooks (default: notebooks)")
    parser.add_argument("--cell-timeout-s", type=float, default=300.0,
                        help="fail a cell that runs longer than this (default: 300)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dedup.workbench import (
        parse_parameters,
        run_notebooks,
        summary_table,
        window_notes,
        write_summary_json,
    )

    runs = run_notebooks(
        args.notebooks, args.out, only=args.only, parameters=parse_parameters(args.parameter),
        cell_timeout_s=args.cell_timeout_s, echo=lambda line: print(line, file=sys.stderr, flush=True),
    )
    write_summary_json(runs, args.out / "workbench.json")
    print()
    print(summary_table(runs))
    for line in window_notes(runs):
        print(line)
    print(f"executed notebooks: {args.out / 'notebooks'}   figures: {args.out / 'figures'}")
    failed = [r for r in runs if not r.ok]
    for r in failed:
        print(f"\n{r.notebook} failed (executed copy: {r.output}):\n{r.error}", file=sys.stderr)
    return 1 if failed else 0
