"""``dedup explain-key EVENT.json``: why an event's dedup key is what it is.

Prints the strategy applied (and why ``auto`` chose it), the event family,
the fields the key uses and the raw key, or why there is none. EVENT.json is an
EventBridge envelope, an SQS message (``Body``) or a Lambda SQS record
(``body``) carrying one; ``-`` reads standard input.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from dedup.errors import ConfigurationError
from dedup.keys import explain_key, key_strategy


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``explain-key`` to the ``dedup`` parser."""
    parser = subparsers.add_parser(
        "explain-key", help="show the strategy, the fields and the raw dedup key of one event",
        description="Explain an event's dedup key: the strategy applied, the fields used and the raw key. "
                    "Exit status 1 when the strategy yields no key (the message would be retried, then "
                    "dead-lettered).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("event", help="EVENT.json: an envelope, an SQS message or a Lambda SQS record "
                                      "(- reads stdin)")
    parser.add_argument("--key", default="auto", help="key strategy spec (as DEDUP_KEY / --key elsewhere)")
    parser.add_argument("--json", action="store_true", help="print the explanation as JSON")
    parser.set_defaults(func=cmd_explain_key)


def cmd_explain_key(args: argparse.Namespace) -> int:
    strategy = key_strategy(args.key)
    explained = explain_key(strategy, _envelope(_read(args.event), args.event))
    print(json.dumps(asdict(explained), indent=2) if args.json else explained)
    return 0 if explained.key is not None else 1


def _read(path: str) -> Any:
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()  # noqa: SIM115
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{path} is not JSON: {exc}") from None


def _envelope(obj: Any, path: str) -> Any:
    """The envelope an SQS message or Lambda record carries, else ``obj`` itself."""
    if isinstance(obj, dict) and "detail" not in obj:
        body = obj.get("Body", obj.get("body"))
        if isinstance(body, str):
            try:
                return json.loads(body)
            except json.JSONDecodeError as exc:
                raise ConfigurationError(f"{path}: the message body is not JSON: {exc}") from None
    return obj
