"""The one injectable clock.

Every component that reads time takes a ``Clock`` so that tests, replays and the
window-tuning analytics can run on simulated time instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """A source of wall-clock time in seconds since the epoch."""

    def now_s(self) -> float:
        """Return the current time in seconds."""
        ...


class SystemClock:
    """Real wall-clock time (``time.time``)."""

    def now_s(self) -> float:
        return time.time()

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """Simulated time that only moves when told to; thread-safe.

    Used by tests (instead of ``sleep``) and by trace replays.
    """

    def __init__(self, start_s: float = 1_700_000_000.0) -> None:
        self._now_s = float(start_s)
        self._lock = threading.Lock()

    def now_s(self) -> float:
        with self._lock:
            return self._now_s

    def advance(self, delta_s: float) -> float:
        """Move time forward by ``delta_s`` seconds and return the new time."""
        if delta_s < 0:
            raise ValueError(f"a clock cannot go backwards (delta_s={delta_s})")
        with self._lock:
            self._now_s += delta_s
            return self._now_s

    def set(self, now_s: float) -> None:
        """Jump to ``now_s``; it may not be earlier than the current time."""
        with self._lock:
            if now_s < self._now_s:
                raise ValueError(f"a clock cannot go backwards ({now_s} < {self._now_s})")
            self._now_s = float(now_s)

    def __repr__(self) -> str:
        return f"ManualClock(now_s={self._now_s})"


SYSTEM_CLOCK = SystemClock()
