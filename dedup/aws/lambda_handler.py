"""AWS Lambda entry point for an SQS event source mapping: ``dedup.aws.lambda_handler.handler``.

Configured from environment variables, read once per container (the Deduplicator
and its store connection are cached at module level across invocations):

=====================  ===========================================================
``DEDUP_HANDLER``      required: your function, ``package.module:function``; it gets
                       each new event (an EventBridge envelope, ``detail`` an object)
``DEDUP_STORE_URL``    required: ``redis://…``, ``rediss://…``, ``dynamodb://TABLE``,
                       or ``memory`` (dedups within one container only)
``DEDUP_KEY``          key strategy spec (default ``auto``)
``DEDUP_WINDOW_S``     dedup window in seconds (default 300)
``DEDUP_LEASE_S``      how long a crashed (timed-out) invocation's claims block the events
                       (default 60); a live invocation keeps its leases alive
``DEDUP_MODE``         ``fixed`` or ``sliding`` (default ``fixed``)
``DEDUP_PREFIX``       storage-key namespace, to share one store between
                       applications (default ``dedup:``)
=====================  ===========================================================

It returns ``{"batchItemFailures": [{"itemIdentifier": messageId}, ...]}`` naming
every record that must not be deleted: handler failures, IN_FLIGHT copies (also
those whose lease was lost before their handler ran), bodies that are not JSON
objects and events without a key. The mapping must enable
``FunctionResponseTypes=["ReportBatchItemFailures"]``, or Lambda retries the whole
batch. Imports only the core: no boto3 needed here.

While the batch runs, its leases are kept alive, but never past the invocation's
end (``context.get_remaining_time_in_millis()``, less :data:`DEADLINE_MARGIN_S`):
an invocation that times out is a crashed holder, whose claims lapse ``lease_s``
later. Store errors never fail the invocation: a store that cannot be reached to
claim reports every record; once handlers ran, a record whose completion could
not be written is still acknowledged (its effect happened), one whose claim
could not be released is reported, and a record whose handler ran after its
lease was lost is acknowledged and logged at ERROR (running it again could only
repeat the effect).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping
from typing import Any

from dedup.aws.messages import Message, decide
from dedup.defaults import DEFAULT_KEY, DEFAULT_LEASE_S, DEFAULT_MODE, DEFAULT_PREFIX, DEFAULT_WINDOW_S
from dedup.errors import ConfigurationError, StoreUnavailableError
from dedup.service import Deduplicator, Handler
from dedup.stores import open_store

log = logging.getLogger(__name__)

SETTINGS = ("DEDUP_HANDLER", "DEDUP_STORE_URL", "DEDUP_KEY", "DEDUP_WINDOW_S", "DEDUP_LEASE_S", "DEDUP_MODE",
            "DEDUP_PREFIX")

DEADLINE_MARGIN_S = 1.0
"""Leases are not kept alive in the invocation's last second (or last tenth, if shorter)."""

_cached: tuple[tuple[str | None, ...], Deduplicator, Handler] | None = None


def handler(event: Mapping[str, Any], context: Any = None) -> dict[str, list[dict[str, str]]]:
    """The Lambda entry point."""
    dedup, user_handler = configured()
    return handle_sqs_event(event, dedup, user_handler, deadline_s=invocation_deadline_s(dedup, context))


def invocation_deadline_s(dedup: Deduplicator, context: Any) -> float | None:
    """When this invocation ends, on the store's clock (``None`` without a Lambda context)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    remaining_s = max(0.0, remaining() / 1000)
    return dedup.store.clock.now_s() + remaining_s - min(DEADLINE_MARGIN_S, remaining_s / 10)


def handle_sqs_event(
    event: Mapping[str, Any], dedup: Deduplicator, user_handler: Handler, *, deadline_s: float | None = None
) -> dict[str, list[dict[str, str]]]:
    """Dedup and handle one SQS event; report the records that must come back.

    ``deadline_s`` (the store clock's time) is when the invocation ends: no lease is
    kept alive past it.
    """
    records = event.get("Records") if isinstance(event, Mapping) else None
    if not isinstance(records, list):
        raise ConfigurationError("not an SQS event (no 'Records' list): is the function triggered by an "
                                 "SQS event source mapping?")
    messages = [_message(record) for record in records]
    try:
        dispositions = decide(dedup, user_handler, messages, deadline_s=deadline_s)
    except StoreUnavailableError as exc:  # at claim: no handler ran
        log.error("%s: all %d records reported failed; SQS delivers them again", exc, len(messages))
        return {"batchItemFailures": [{"itemIdentifier": m.message_id} for m in messages]}
    return {"batchItemFailures": [{"itemIdentifier": d.message.message_id}
                                  for d in dispositions if not d.acknowledge]}


def configured(environ: Mapping[str, str] | None = None) -> tuple[Deduplicator, Handler]:
    """The Deduplicator and user handler for the environment, built once and cached."""
    global _cached
    env = os.environ if environ is None else environ
    settings = tuple(env.get(name) for name in SETTINGS)
    if _cached is None or _cached[0] != settings:
        dedup, user_handler = from_environment(env)
        if _cached is not None:
            _cached[1].store.close()  # settings changed: do not leak the old connections
        _cached = (settings, dedup, user_handler)
    return _cached[1], _cached[2]


def from_environment(env: Mapping[str, str]) -> tuple[Deduplicator, Handler]:
    """Build a Deduplicator and load the user handler from ``DEDUP_*`` variables."""
    user_handler = load_handler(_required(env, "DEDUP_HANDLER"))
    store_url = _required(env, "DEDUP_STORE_URL")
    if store_url == "memory":
        log.warning("DEDUP_STORE_URL=memory dedups within one Lambda container only")
    dedup = Deduplicator(
        open_store(store_url, prefix=env.get("DEDUP_PREFIX", DEFAULT_PREFIX)),
        key=env.get("DEDUP_KEY", DEFAULT_KEY),
        window_s=_seconds(env, "DEDUP_WINDOW_S", DEFAULT_WINDOW_S),
        lease_s=_seconds(env, "DEDUP_LEASE_S", DEFAULT_LEASE_S),
        mode=env.get("DEDUP_MODE", DEFAULT_MODE),  # type: ignore[arg-type]
    )
    return dedup, user_handler


def load_handler(spec: str) -> Handler:
    """Import ``package.module:function``."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(f"a handler must be named 'package.module:function', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"handler {spec!r}: cannot import {module_name!r}: {exc}") from exc
    function = getattr(module, attr, None)
    if not callable(function):
        raise ConfigurationError(f"handler {spec!r}: {module_name} has no function {attr!r}")
    return function


def _message(record: Any) -> Message:
    if not isinstance(record, Mapping) or not record.get("messageId"):
        raise ConfigurationError(f"an SQS record without a messageId: {str(record)[:120]!r}")
    count = (record.get("attributes") or {}).get("ApproximateReceiveCount")
    return Message(str(record["messageId"]), record.get("body", ""), int(count) if count else None)


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigurationError(f"environment variable {name} is not set (see dedup.aws.lambda_handler)")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name)
    if text is None or not text.strip():
        return default
    try:
        return float(text)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number of seconds, got {text!r}") from None
