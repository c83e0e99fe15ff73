"""Traces shared by the trace and analysis tests (generated once per session: they are pure functions)."""

from __future__ import annotations

import functools

import pytest

from dedup.traces import Trace, generate

#: The key strategies the issue asks about: envelope id, the default, and a conversationId-only key.
KEYS = {
    "envelope-id": "envelope-id",
    "auto": "auto",
    "conversationId": "business:detail.eventBody.conversationId",
}


@functools.cache
def small_trace(source: str = "genesys", seed: int = 0, n_events: int = 3000) -> Trace:
    """A small generated trace; cached, so its keys are derived once per session."""
    return generate(n_events=n_events, source=source, seed=seed, cache=False)


@pytest.fixture(scope="session")
def default_trace() -> Trace:
    """The default Genesys trace (``TraceConfig()``), as the issue's "done when" names it."""
    return generate(cache=False)
