"""The ``dedup`` command (also ``python -m dedup``).

Each area contributes its subcommands from a small module in this package
(``aws``: provision, teardown, produce, consume; ``traces``: trace, sweep,
analyze; ``workbench``: run the notebooks; ``chaos``: the fault-injection run).
A module defines ``register(subparsers)``, adding parsers whose ``func(args)``
returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from dedup.errors import DedupError

COMMAND_MODULES = ("aws", "traces", "workbench", "chaos", "keys")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dedup",
        description="Deduplicate EventBridge events consumed through SQS: provision, produce, "
        "consume, and tune the dedup window on synthetic Genesys / NICE traces.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"dedup.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"dedup.cli.{name}":
                raise
            continue  # that area is not installed in this build
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("botocore", "boto3", "urllib3", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except DedupError as exc:
        print(f"dedup: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
