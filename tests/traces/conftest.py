"""Fixtures of the trace tests (the shared helpers are in ``trace_support``)."""

from __future__ import annotations

import pytest

from dedup.traces import Trace, generate


@pytest.fixture(scope="session")
def default_trace() -> Trace:
    """The default Genesys trace (``TraceConfig()``), as the issue's "done when" names it."""
    return generate(cache=False)
