"""Helpers for the AWS tests: a stack handle, bounded polling, and client wrappers that inject faults.

The wrappers forward every call to a real boto3 client on moto's server and change
only what a test names, so the rest of the path stays real.
"""

from __future__ import annotations

import copy
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from samples import load_event

from dedup.aws.embedded import EmbeddedAWS
from dedup.aws.stack import StackConfig, StackHandles

DEADLINE_S = 20.0
VISIBILITY_TIMEOUT_S = 1  # of the test stacks: redeliveries come quickly
MAX_RECEIVE_COUNT = 3  # of the test stacks: poison reaches the DLQ on the 4th receive


@dataclass
class Stack:
    """A provisioned stack and clients on it."""

    aws: EmbeddedAWS
    handles: StackHandles
    config: StackConfig
    sqs: Any
    events: Any

    def depth(self, queue_url: str | None = None) -> int:
        """Messages on the queue (default: the work queue), visible or not."""
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        attrs = self.sqs.get_queue_attributes(QueueUrl=queue_url or self.handles.queue_url,
                                              AttributeNames=names)["Attributes"]
        return sum(int(attrs[n]) for n in names)

    def dlq_depth(self) -> int:
        return self.depth(self.handles.dlq_url)

    def send_raw(self, body: str) -> str:
        """Put a body straight on the work queue; return its message id."""
        return self.sqs.send_message(QueueUrl=self.handles.queue_url, MessageBody=body)["MessageId"]

    def drain(self, queue_url: str | None = None) -> list[dict[str, Any]]:
        """Receive and delete everything visible on a queue (default: the work queue)."""
        url = queue_url or self.handles.queue_url
        taken: list[dict[str, Any]] = []
        while True:
            batch = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                             MessageAttributeNames=["All"]).get("Messages", [])
            if not batch:
                return taken
            self.sqs.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])
            taken += batch


def until(condition: Callable[[], bool], step: Callable[[], object], *,
          deadline_s: float = DEADLINE_S) -> None:
    """Run ``step`` until ``condition`` holds; fail after ``deadline_s`` (bounded, no fixed sleeps)."""
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"condition not reached within {deadline_s} s")
        step()


@dataclass
class Proxy:
    """Forwards attribute access to ``client``; ``overrides`` replace named methods."""

    client: Any
    overrides: dict[str, Callable[..., Any]] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        if name in self.overrides:
            def recorded(**kwargs: Any) -> Any:
                self.calls.append((name, kwargs))
                return self.overrides[name](**kwargs)
            return recorded
        return getattr(self.client, name)


@dataclass
class RecordingSleep:
    """An injectable ``sleep`` that records the delays instead of waiting."""

    delays_s: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.delays_s.append(seconds)


def distinct_events(n: int) -> list[dict[str, Any]]:
    """``n`` envelopes with distinct ``auto()`` keys from the canonical samples (Genesys, NICE alternate)."""
    genesys = load_event("envelope_genesys_customer_start.json")
    nice = load_event("envelope_nice_contact_active.json")
    out = []
    for i in range(n):
        event = copy.deepcopy(genesys if i % 2 == 0 else nice)
        event["id"] = str(uuid.UUID(int=i + 1))
        if i % 2 == 0:
            event["detail"]["eventBody"]["eventTime"] += i
        else:
            event["detail"]["payload"]["ContactID"] += i
        out.append(event)
    return out


def row(output: str, label: str) -> str:
    """The value printed after ``label`` in a command's summary table."""
    match = re.search(rf"^{re.escape(label)}\s+(.+)$", output, re.MULTILINE)
    assert match, f"no row {label!r} in:\n{output}"
    return match.group(1).strip()
