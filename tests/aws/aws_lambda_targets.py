"""User handlers for the Lambda tests, importable by ``DEDUP_HANDLER=aws_lambda_targets:NAME``."""

from __future__ import annotations

from typing import Any

handled: list[dict[str, Any]] = []


def record(event: dict[str, Any]) -> None:
    """Remember the event."""
    handled.append(event)


def fail_on_nice(event: dict[str, Any]) -> None:
    """Remember Genesys events; fail on NICE ones (a downstream outage)."""
    if "nice" in event["source"]:
        raise RuntimeError("the NICE downstream is unavailable")
    handled.append(event)
