"""Traces shared by the trace and analysis tests (generated once per session: they are pure functions).

A helper module, not a ``conftest``: test files import it by name, which a
``conftest`` cannot be once another directory's ``conftest`` was imported
first (``pytest tests/traces tests/reliability`` failed at collection).
The ``default_trace`` fixture lives in this directory's ``conftest.py``.
"""

from __future__ import annotations

import functools

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
