"""Reimplemented baselines the in-process store is measured against.

* :class:`TutorialCache`: the tutorial's ``SimpleCache`` plus its
  ``DeduplicationService.is_duplicate``: an ``OrderedDict`` whose ``cleanup()``
  scans every key on every call (O(live keys) per event), marking an event seen
  before it is processed. Rebuilt here on the injectable clock (the original
  reads ``time.time()``, so nothing would expire in simulated time); its
  per-event logging is left out, which only flatters it.
* :class:`SeenSet`: the least a correct in-process windowed seen-set can do: a
  dict of key to deadline, and a deque of ``(deadline, key)`` whose head is
  expired on each call. No lifecycle, no key hashing, no thread safety.
* :class:`TTLSeenSet`: ``cachetools.TTLCache`` used as a seen-set, the library a
  user would pick: ``key in cache``, else ``cache[key] = True``. No lifecycle,
  no key hashing, no thread safety.
* :class:`StepClock`: simulated time without a lock, so that a timer read on
  every insert (as ``TTLCache`` does) costs what ``time.monotonic`` would.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence

from cachetools import TTLCache

from dedup.clock import Clock


class StepClock:
    """Simulated time for one thread: :meth:`now_s` is a plain attribute read."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._now_s = start_s

    def now_s(self) -> float:
        return self._now_s

    def advance(self, delta_s: float) -> None:
        self._now_s += delta_s


class TutorialCache:
    """The tutorial's O(n) cache and its mark-first ``is_duplicate``."""

    def __init__(self, ttl_seconds: float, clock: Clock) -> None:
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self.cache: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def set(self, key: str, value: str, nx: bool = False, ex: float = 0.0) -> bool | None:
        """Redis-like SET: ``None`` when ``nx`` and the key exists (expired or not)."""
        if key in self.cache:
            if nx:
                return None
            self.cache[key] = (value, self.clock.now_s() + ex)
            return True
        self.cache[key] = (value, self.clock.now_s() + ex)
        return True

    def cleanup(self) -> None:
        """Remove expired keys: a scan of every key."""
        now = self.clock.now_s()
        expired_keys = [k for k, (_v, exp) in self.cache.items() if now > exp]
        for k in expired_keys:
            del self.cache[k]

    def is_duplicate(self, event_id: str) -> bool:
        """The tutorial's check: scan, then mark the event seen (before any processing)."""
        self.cleanup()
        return self.set(f"event:{event_id}", "1", nx=True, ex=self.ttl_seconds) is None


class SeenSet:
    """A bare windowed seen-set: dict + deque, expiry from the deque head."""

    def __init__(self, window_s: float, clock: Clock) -> None:
        self.window_ms = round(window_s * 1000)
        self.clock = clock
        self._seen: dict[str, int] = {}
        self._queue: deque[tuple[int, str]] = deque()

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_add(self, keys: Sequence[str]) -> list[bool]:
        """Per key, whether it was seen within the window; unseen keys are added."""
        now_ms = int(self.clock.now_s() * 1000)
        seen, queue = self._seen, self._queue
        while queue and queue[0][0] <= now_ms:
            del seen[queue.popleft()[1]]
        deadline_ms = now_ms + self.window_ms
        out = []
        for key in keys:
            if key in seen:
                out.append(True)
                continue
            seen[key] = deadline_ms
            queue.append((deadline_ms, key))
            out.append(False)
        return out


class TTLSeenSet:
    """``cachetools.TTLCache`` as a windowed seen-set; ``max_keys`` above the live keys (no evictions)."""

    def __init__(self, window_s: float, clock: Clock, max_keys: int) -> None:
        self.cache: TTLCache[str, bool] = TTLCache(maxsize=max_keys, ttl=window_s, timer=clock.now_s)

    def __len__(self) -> int:
        return len(self.cache)

    def check_and_add(self, keys: Sequence[str]) -> list[bool]:
        """Per key, whether it was seen within the window; unseen keys are added."""
        cache = self.cache
        out = []
        for key in keys:
            if key in cache:
                out.append(True)
                continue
            cache[key] = True
            out.append(False)
        return out
