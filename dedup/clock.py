"""The one injectable clock.

Every component that reads time takes a ``Clock`` so that tests, replays and the
window-tuning analytics can run on simulated time instead of sleeping. Besides
reading the time, a clock can wait (``sleep``: retry backoff) and run a callback
at a time (``call_at``: the lease keeper's background beat). :class:`ManualClock`
does both deterministically: ``sleep`` advances it, and callbacks run inline, in
time order, in the thread that moves it past their time.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("dedup")


class Timer(Protocol):
    """A callback scheduled with :meth:`Clock.call_at`."""

    def cancel(self) -> None:
        """Stop the callback from running (a no-op once it ran)."""
        ...


class Clock(Protocol):
    """A source of wall-clock time in seconds since the epoch."""

    def now_s(self) -> float:
        """Return the current time in seconds."""
        ...

    def sleep(self, delay_s: float) -> None:
        """Wait ``delay_s`` seconds of this clock's time."""
        ...

    def call_at(self, when_s: float, fn: Callable[[], None]) -> Timer:
        """Run ``fn`` once this clock reaches ``when_s`` (in another thread, or inline on a ManualClock)."""
        ...


class _Timer:
    """A scheduled callback; cancelling (or running) drops ``fn``, so no cycle outlives it."""

    __slots__ = ("_owner", "cancelled", "fn")

    def __init__(self, fn: Callable[[], None], owner: _Scheduler | None = None) -> None:
        self.fn: Callable[[], None] | None = fn
        self.cancelled = False
        self._owner = owner

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self.fn = None
            if self._owner is not None:
                self._owner.forget_one()

    def take(self) -> Callable[[], None] | None:
        """Mark it run and hand out its callback (None when it was cancelled)."""
        fn, self.fn, self.cancelled = self.fn, None, True
        return fn


class _Scheduler:
    """One daemon thread per process running real-time callbacks.

    Scheduling costs a heap push (the thread is woken only when the new callback is
    the earliest); a cancelled callback stays in the heap until its time or until
    cancelled ones are the majority, so a batch that arms and cancels a beat costs
    no thread wake-up.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Timer]] = []
        self._seq = itertools.count()
        self._cancelled = 0
        self._thread: threading.Thread | None = None

    def call_at(self, when_s: float, fn: Callable[[], None]) -> _Timer:
        timer = _Timer(fn, self)
        with self._cond:
            heapq.heappush(self._heap, (when_s, next(self._seq), timer))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="dedup-clock", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is timer:
                self._cond.notify()
        return timer

    def forget_one(self) -> None:
        with self._cond:
            self._cancelled += 1
            if self._cancelled > 64 and self._cancelled * 2 > len(self._heap):
                self._heap = [e for e in self._heap if not e[2].cancelled]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def _run(self) -> None:
        with self._cond:
            while True:
                heap = self._heap
                while heap and heap[0][2].cancelled:
                    heapq.heappop(heap)
                    self._cancelled = max(0, self._cancelled - 1)
                if not heap:
                    self._cond.wait()
                    continue
                delay_s = heap[0][0] - time.time()
                if delay_s > 0:
                    self._cond.wait(delay_s)
                    continue
                fn = heapq.heappop(heap)[2].take()  # ran: a later cancel() is a no-op
                self._cond.release()
                try:
                    if fn is not None:
                        fn()
                except Exception:  # a callback's failure must not stop the others
                    log.exception("scheduled callback failed")
                finally:
                    self._cond.acquire()


_SCHEDULER = _Scheduler()


class SystemClock:
    """Real wall-clock time (``time.time``)."""

    def now_s(self) -> float:
        return time.time()

    def sleep(self, delay_s: float) -> None:
        if delay_s > 0:
            time.sleep(delay_s)

    def call_at(self, when_s: float, fn: Callable[[], None]) -> Timer:
        return _SCHEDULER.call_at(when_s, fn)

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """Simulated time that only moves when told to; thread-safe.

    Used by tests (instead of ``sleep``) and by trace replays. Callbacks scheduled
    with :meth:`call_at` run inline when :meth:`advance`, :meth:`set` or
    :meth:`sleep` moves the clock past their time, in time order, with the clock
    reading their time while they run: a test that advances through a slow
    handler sees every beat a real clock would have caused, at the same instants.
    """

    def __init__(self, start_s: float = 1_700_000_000.0) -> None:
        self._now_s = float(start_s)
        self._lock = threading.Lock()
        self._timers: list[tuple[float, int, _Timer]] = []
        self._seq = itertools.count()

    def now_s(self) -> float:
        return self._now_s  # one attribute read: atomic, no lock needed

    def advance(self, delta_s: float) -> float:
        """Move time forward by ``delta_s`` seconds and return the new time."""
        if delta_s < 0:
            raise ValueError(f"a clock cannot go backwards (delta_s={delta_s})")
        with self._lock:
            target_s = self._now_s + delta_s
        return self._move(target_s)

    def set(self, now_s: float) -> None:
        """Jump to ``now_s``; it may not be earlier than the current time."""
        with self._lock:
            if now_s < self._now_s:
                raise ValueError(f"a clock cannot go backwards ({now_s} < {self._now_s})")
        self._move(float(now_s))

    def sleep(self, delay_s: float) -> None:
        """Advance by ``delay_s`` (no real waiting)."""
        if delay_s > 0:
            self.advance(delay_s)

    def call_at(self, when_s: float, fn: Callable[[], None]) -> Timer:
        timer = _Timer(fn)
        with self._lock:
            heapq.heappush(self._timers, (when_s, next(self._seq), timer))
        return timer

    def _move(self, target_s: float) -> float:
        timers = self._timers
        while True:
            with self._lock:
                while timers and timers[0][2].cancelled:
                    heapq.heappop(timers)
                if not timers or timers[0][0] > target_s:
                    self._now_s = max(self._now_s, target_s)
                    return self._now_s
                when_s, _, timer = heapq.heappop(timers)
                self._now_s = max(self._now_s, when_s)
                fn = timer.take()
            if fn is not None:
                fn()

    def __repr__(self) -> str:
        return f"ManualClock(now_s={self._now_s})"


SYSTEM_CLOCK = SystemClock()
