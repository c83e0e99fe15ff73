"""The in-process store: MemoryStore's lifecycle against cachetools.TTLCache, a bare seen-set, the tutorial.

Every contender sees the same workload: batches of 10 distinct keys (never
seen before, so every event is claimed, processed and completed), and a
simulated clock (:class:`benchmarks.baselines.StepClock`) advanced after each
batch by ``window / (live_keys / 10)``, so records expire at the rate they
arrive and the live-key count holds at the target; expiry work is inside the
measurement. A contender is filled to its live-key count before it is timed,
and contenders of one comparison are timed in interleaved rounds (the order
rotated between rounds; the median round is reported). Contenders of different
sizes are measured apart, and the large ones dropped before the next group, so
one's garbage (a million ``TTLCache`` links the collector tracks) does not slow
another. Time is this process's CPU time: the work is single-threaded and
CPU-bound, and on a shared machine wall time would mostly measure the neighbours.

* MemoryStore lifecycle: ``claim(batch, lease_s)`` then ``complete(claims, window_s)``.
* ``cachetools.TTLCache`` as a seen-set (:class:`benchmarks.baselines.TTLSeenSet`),
  the library a user would pick: judged at 1k and 1M live keys.
* A bare dict + deque seen-set (:class:`benchmarks.baselines.SeenSet`): one
  check-and-add call per batch; for context, as the least any seen-set does.
* The tutorial's cache (:class:`benchmarks.baselines.TutorialCache`): its
  per-event ``is_duplicate``, which scans every live key.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.baselines import SeenSet, StepClock, TTLSeenSet, TutorialCache
from benchmarks.harness import Comparison, Row, interleaved
from dedup.clock import ManualClock
from dedup.service import Deduplicator
from dedup.stores.memory import MemoryStore

WINDOW_S = 300.0
LEASE_S = 60.0
BATCH = 10


@dataclass
class Contender:
    """One thing being timed: ``step`` handles a batch; the clock advances after each."""

    name: str
    live_keys: int
    step: Callable[[tuple], object]
    clock: StepClock | ManualClock
    batches: list[tuple]
    live: Callable[[], int]
    fill_step: Callable[[tuple], object] | None = None
    pos: int = 0

    def run(self, count: int) -> float:
        """Handle the next ``count`` batches; return the CPU seconds spent."""
        step, advance, dt_s = self.step, self.clock.advance, WINDOW_S / (self.live_keys / BATCH)
        todo = self.batches[self.pos:self.pos + count]
        if len(todo) < count:
            raise RuntimeError(f"{self.name}: key pool exhausted")
        self.pos += count
        start = time.process_time()
        for batch in todo:
            step(batch)
            advance(dt_s)
        return time.process_time() - start

    def fill(self) -> None:
        """Bring the live-key count up to ``live_keys`` (untimed), with ``fill_step`` if set."""
        step = self.step
        self.step = self.fill_step or step
        try:
            self.run(self.live_keys // BATCH)
        finally:
            self.step = step


def _batches(tag: str, count: int, *, events: bool = False) -> list[tuple]:
    """``count`` batches of fresh keys (or ``{"id": key}`` envelopes), unique per tag.

    Tuples of strings drop out of the garbage collector's tracking, so the key
    pools of large contenders do not slow the others' collections.
    """
    keys = [f"{tag}-{i:010d}" for i in range(count * BATCH)]
    items = [{"id": k} for k in keys] if events else keys
    return [tuple(items[i:i + BATCH]) for i in range(0, len(items), BATCH)]


def memory_store(live_keys: int, timed_batches: int) -> Contender:
    clock = StepClock()
    store = MemoryStore(clock=clock)

    def step(keys: tuple[str, ...]) -> None:
        store.complete(store.claim(keys, LEASE_S), WINDOW_S)

    return Contender(f"MemoryStore claim+complete @ {live_keys:,} live", live_keys, step, clock,
                     _batches(f"m{live_keys}", live_keys // BATCH + timed_batches), lambda: len(store))


def deduplicator(live_keys: int, timed_batches: int) -> Contender:
    # The Deduplicator schedules its lease beats on the store's clock: a ManualClock runs them.
    clock = ManualClock(0.0)
    store = MemoryStore(clock=clock)
    dedup = Deduplicator(store, key="envelope-id", window_s=WINDOW_S, lease_s=LEASE_S)

    def step(events: tuple[dict, ...]) -> None:
        dedup.process_batch(events, _noop)

    return Contender(f"Deduplicator.process_batch on MemoryStore @ {live_keys:,} live", live_keys, step,
                     clock, _batches(f"d{live_keys}", live_keys // BATCH + timed_batches, events=True),
                     lambda: len(store))


def seen_set(live_keys: int, timed_batches: int) -> Contender:
    clock = StepClock()
    seen = SeenSet(WINDOW_S, clock)
    return Contender(f"bare dict+deque seen-set @ {live_keys:,} live", live_keys, seen.check_and_add, clock,
                     _batches(f"s{live_keys}", live_keys // BATCH + timed_batches), lambda: len(seen))


def seen_set_hashed(live_keys: int, timed_batches: int) -> Contender:
    """The bare seen-set over the store's storage keys: shows what hashing alone costs."""
    clock = StepClock()
    seen = SeenSet(WINDOW_S, clock)
    storage_key = MemoryStore().storage_key

    def step(keys: tuple[str, ...]) -> None:
        seen.check_and_add([storage_key(k) for k in keys])

    return Contender(f"bare seen-set on storage keys (hashed as the store does) @ {live_keys:,} live",
                     live_keys, step, clock, _batches(f"h{live_keys}", live_keys // BATCH + timed_batches),
                     lambda: len(seen))


def ttl_seen_set(live_keys: int, timed_batches: int) -> Contender:
    clock = StepClock()
    seen = TTLSeenSet(WINDOW_S, clock, max_keys=2 * live_keys)
    return Contender(f"cachetools.TTLCache seen-set @ {live_keys:,} live", live_keys, seen.check_and_add,
                     clock, _batches(f"c{live_keys}", live_keys // BATCH + timed_batches), lambda: len(seen))


def tutorial(live_keys: int, timed_batches: int) -> Contender:
    clock = StepClock()
    cache = TutorialCache(WINDOW_S, clock)

    def step(keys: tuple[str, ...]) -> None:
        for key in keys:
            cache.is_duplicate(key)

    def fill_step(keys: tuple[str, ...]) -> None:
        # Filling through is_duplicate would cost O(n^2); set() alone leaves the same state.
        for key in keys:
            cache.set(f"event:{key}", "1", nx=True, ex=WINDOW_S)

    return Contender(f"tutorial O(n) cache @ {live_keys:,} live", live_keys, step, clock,
                     _batches(f"t{live_keys}", live_keys // BATCH + timed_batches), lambda: len(cache.cache),
                     fill_step)


def _noop(event: object) -> None:
    return None


def measure(contenders: list[Contender], timed_batches: dict[str, int], rounds: int) -> dict[str, float]:
    """Median events/s of each contender over interleaved rounds (filled first, checked at the end)."""
    for c in contenders:
        c.fill()

    def timed(c: Contender) -> Callable[[], float]:
        n = timed_batches[c.name]
        return lambda: n * BATCH / c.run(n)

    rates = interleaved({c.name: timed(c) for c in contenders}, rounds)
    for c in contenders:
        live = c.live()
        if not 0.95 * c.live_keys <= live <= c.live_keys + BATCH:
            raise RuntimeError(f"{c.name}: {live:,} live keys, expected {c.live_keys:,}")
    return rates


def run(quick: bool) -> list[Comparison]:
    small, mid, large = (1_000, 10_000, 20_000) if quick else (1_000, 100_000, 1_000_000)
    rounds = 3 if quick else 7
    # Batches per timed round: about 0.1-0.3 s each on a 2-core machine.
    store_n, bare_n = (1_500, 5_000) if quick else (8_000, 30_000)
    tut_small_n, tut_mid_n = (20, 1) if quick else (150, 1)

    def plan(factory, live, n):
        return factory(live, rounds * n), n

    def compare(title: str, planned: list, **kwargs) -> Comparison:
        rates = measure([c for c, _ in planned], {c.name: n for c, n in planned}, rounds)
        return Comparison(title, rows=[Row(c.name, rates[c.name]) for c, _ in planned], **kwargs)

    out = []

    # 1. Judged against cachetools.TTLCache at a small and a large live-key count; the bare
    #    seen-set (and, at the small count, the same set over hashed keys and the whole
    #    Deduplicator) for scale. Each group is dropped before the next is built.
    for live, extras in ((small, (seen_set_hashed, memory_store, deduplicator)), (large, (memory_store,))):
        planned = [plan(ttl_seen_set, live, store_n), plan(seen_set, live, bare_n),
                   *(plan(f, live, store_n) for f in extras)]
        ttl, mem = planned[0][0].name, next(c.name for c, _ in planned if c.name.startswith("MemoryStore"))
        comparison = compare(f"MemoryStore lifecycle vs cachetools.TTLCache as a seen-set at {live:,} live "
                             "keys (batches of 10)", planned, baseline=ttl)
        comparison.target_ratio(mem, 0.5, goal=f"MemoryStore claim+complete @ {live:,} live >= 0.5x TTLCache")
        out.append(comparison)
        del planned
        gc.collect()  # a TTLCache's links form cycles: free them before the next group

    # 2. Scaling: the same lifecycle at 1k, 100k and 1M live keys (the bare set alongside).
    stores = [plan(memory_store, live, store_n) for live in (small, mid, large)]
    bares = [plan(seen_set, live, bare_n) for live in (small, large)]
    everyone = stores + bares
    rates = measure([c for c, _ in everyone], {c.name: n for c, n in everyone}, rounds)
    first, last = stores[0][0].name, stores[-1][0].name
    scale_cmp = Comparison(f"MemoryStore lifecycle at {large:,} vs {small:,} live keys",
                           baseline=first, rows=[Row(c.name, rates[c.name]) for c, _ in stores])
    scale_cmp.target_ratio(last, 0.8, goal=f"MemoryStore @ {large:,} live >= 0.8x its speed @ {small:,}")
    out.append(scale_cmp)
    out.append(Comparison(
        f"For context: the bare seen-set at {large:,} vs {small:,} live keys (no target)",
        baseline=bares[0][0].name, rows=[Row(c.name, rates[c.name]) for c, _ in bares],
    ))
    del stores, bares, everyone
    gc.collect()

    # 3. For context: the tutorial's O(n) cache, at a small and a larger live-key count.
    for live, tut_n in ((small, tut_small_n), (mid, tut_mid_n)):
        planned = [plan(tutorial, live, tut_n), plan(memory_store, live, store_n)]
        out.append(compare(f"For context: MemoryStore lifecycle vs the tutorial's O(n) cache at {live:,} "
                           "live keys (batches of 10)", planned, baseline=planned[0][0].name))
    return out
