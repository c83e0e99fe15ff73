"""Stateful property test: MemoryStore and RedisStore against a reference model, on simulated time.

The model is the lifecycle written as plainly as possible (a dict of records
with deadlines); hypothesis drives random claim / complete / release / advance
sequences and every answer must match the model's.
"""

from __future__ import annotations

from dataclasses import dataclass

import fakeredis
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, rule

from dedup.clock import ManualClock
from dedup.stores import ClaimStatus, MemoryStore, RedisStore
from dedup.stores.base import clock_ms

KEYS = st.sampled_from(["a", "b", "c", "d"])
# Simulated durations stay far above the test's real run time, so Redis's own
# PX housekeeping (real time) never fires before the model's deadlines. Few
# durations, and clock steps that are those durations and their sums +- 1 ms,
# so runs land on deadlines exactly (and a millisecond either side) often.
DURATIONS_S = st.sampled_from([10, 30, 60])
STEPS_S = st.sampled_from([0.001, 10, 20, 30, 60]).flatmap(
    lambda base: st.sampled_from([base - 0.001, base, base + 0.001]) if base > 0.001 else st.just(base)
)


@dataclass
class Rec:
    done: bool
    deadline_ms: int
    token: str | None
    fp: str


class Model:
    def __init__(self) -> None:
        self.recs: dict[str, Rec] = {}

    def live(self, key: str, now_ms: int) -> Rec | None:
        rec = self.recs.get(key)
        return rec if rec is not None and rec.deadline_ms > now_ms else None

    def claim(self, keys, tokens, fps, now_ms, lease_ms, slide_ms):
        out = []
        for key, token, fp in zip(keys, tokens, fps, strict=True):
            rec = self.live(key, now_ms)
            if rec is None:
                self.recs[key] = Rec(False, now_ms + lease_ms, token, fp)
                out.append((ClaimStatus.CLAIMED, fp))
            elif rec.done:
                if slide_ms:
                    rec.deadline_ms = now_ms + slide_ms
                out.append((ClaimStatus.DUPLICATE, rec.fp))
            else:
                out.append((ClaimStatus.IN_FLIGHT, rec.fp))
        return out

    def complete(self, key, token, fp, now_ms, window_ms) -> bool:
        rec = self.live(key, now_ms)
        if rec is not None and (rec.done or rec.token != token):
            return False
        self.recs[key] = Rec(True, now_ms + window_ms, None, fp)
        return True

    def release(self, key, token, now_ms) -> bool:
        rec = self.live(key, now_ms)
        if rec is None or rec.done or rec.token != token:
            return False
        del self.recs[key]
        return True

    def extend(self, key, token, now_ms, lease_ms) -> bool:
        rec = self.live(key, now_ms)
        if rec is None or rec.done or rec.token != token:
            return False
        rec.deadline_ms = now_ms + lease_ms
        return True


class StoreMachine(RuleBasedStateMachine):
    make_store = None  # set by subclasses: (clock) -> WindowStore

    claims = Bundle("claims")

    @initialize()
    def setup(self):
        self.clock = ManualClock()
        self.store = type(self).make_store(self.clock)
        self.model = Model()

    def now_ms(self):
        return clock_ms(self.clock)

    @rule(target=claims, keys=st.lists(KEYS, min_size=1, max_size=5), lease_s=DURATIONS_S,
          slide_s=st.none() | DURATIONS_S, fp=st.sampled_from(["", "f1", "f2"]))
    def claim(self, keys, lease_s, slide_s, fp):
        fps = [fp] * len(keys)
        got = self.store.claim(keys, lease_s, fingerprints=fps, slide_s=slide_s)
        tokens = [c.token for c in got]
        want = self.model.claim(keys, tokens, fps, self.now_ms(), lease_s * 1000,
                                slide_s * 1000 if slide_s else 0)
        assert [(c.status, c.fingerprint) for c in got] == want
        held = [c for c in got if c.status is ClaimStatus.CLAIMED]
        return held[0] if held else got[0]

    @rule(claim=claims, window_s=DURATIONS_S)
    def complete(self, claim, window_s):
        got = self.store.complete([claim], window_s)
        want = claim.status is ClaimStatus.CLAIMED and self.model.complete(
            claim.key, claim.token, claim.fingerprint, self.now_ms(), window_s * 1000
        )
        assert got == [want]

    @rule(claim=claims)
    def release(self, claim):
        got = self.store.release([claim])
        want = claim.status is ClaimStatus.CLAIMED and self.model.release(
            claim.key, claim.token, self.now_ms()
        )
        assert got == [want]

    @rule(claim=claims, lease_s=DURATIONS_S)
    def extend(self, claim, lease_s):
        got = self.store.extend([claim], lease_s)
        want = claim.status is ClaimStatus.CLAIMED and self.model.extend(
            claim.key, claim.token, self.now_ms(), lease_s * 1000
        )
        assert got == [want]

    @rule(delta_s=STEPS_S)
    def advance(self, delta_s):
        self.clock.advance(delta_s)

    @rule(key=KEYS, offset_ms=st.sampled_from([-1, 0, 1]))
    def advance_to_a_deadline(self, key, offset_ms):
        """Jump to a record's deadline (lease or window) - 1 ms, exactly, or + 1 ms."""
        rec = self.model.recs.get(key)
        if rec is not None and rec.deadline_ms + offset_ms > self.now_ms():
            self.clock.set((rec.deadline_ms + offset_ms) / 1000)


SETTINGS = settings(max_examples=80, stateful_step_count=30, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def test_memory_store_matches_the_model():
    class Machine(StoreMachine):
        make_store = staticmethod(lambda clock: MemoryStore(clock=clock))

    Machine.TestCase.settings = SETTINGS
    Machine.TestCase().runTest()


def test_memory_store_with_a_key_bound_never_holds_more_than_it(clock):
    store = MemoryStore(clock=clock, max_keys=3)
    for i in range(10):
        store.complete(store.claim([f"k{i}"], lease_s=5), window_s=60)
        clock.advance(1)
    assert len(store) == 3
    assert store.evictions == 7
    # The newest keys survive: the evicted ones were closest to expiry.
    assert [c.status for c in store.claim(["k9", "k0"], lease_s=5)] == [
        ClaimStatus.DUPLICATE, ClaimStatus.CLAIMED
    ]


def test_memory_store_forgets_expired_records_without_a_scan(clock):
    store = MemoryStore(clock=clock)
    store.complete(store.claim([f"k{i}" for i in range(1000)], lease_s=5), window_s=60)
    assert len(store) == 1000
    clock.advance(60)
    assert len(store) == 0


@pytest.mark.parametrize("backend", ["fakeredis", "redis"])
def test_redis_store_matches_the_model(backend, request):
    client = fakeredis.FakeRedis() if backend == "fakeredis" else request.getfixturevalue("redis_client")

    class Machine(StoreMachine):
        @staticmethod
        def make_store(clock):
            client.flushdb()
            return RedisStore(client, clock=clock)

    Machine.TestCase.settings = SETTINGS
    Machine.TestCase().runTest()
