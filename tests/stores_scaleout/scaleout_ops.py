"""What the scale-out store tests share: a batch lifecycle, a race between processes and a model check.

``check_batch_lifecycle`` runs one batch through claim, complete, duplicate,
expiry and release on a ManualClock, asserting each key's outcome. ``run_race``
starts several processes (spawned: each opens its own store and client) that
claim and complete the same keys in different orders at the same moment.
``replay_ops`` drives a store through a scripted claim/complete/release sequence
on a ManualClock and returns everything observable, so a backend can be compared
with :class:`~dedup.stores.MemoryStore`, the reference model.
"""

from __future__ import annotations

import multiprocessing
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hypothesis import strategies as st

from dedup.clock import ManualClock
from dedup.stores import Claim, ClaimStatus, WindowStore, open_store

RACE_BATCH = 10
RACE_TIMEOUT_S = 60.0


def race_worker(spec: str, env: Mapping[str, str], keys: list[str], seed: int, barrier, results) -> None:
    """Claim ``keys`` (shuffled by ``seed``) in batches and complete what was claimed."""
    os.environ.update(env)
    claimed: list[str] = []
    seen: dict[str, int] = {s.value: 0 for s in ClaimStatus}
    try:
        store = open_store(spec)
        order = keys[:]
        random.Random(seed).shuffle(order)
        barrier.wait(timeout=RACE_TIMEOUT_S)
        for start in range(0, len(order), RACE_BATCH):
            claims = store.claim(order[start:start + RACE_BATCH], lease_s=120)
            mine = [c for c in claims if c.status is ClaimStatus.CLAIMED]
            if not all(store.complete(mine, window_s=600)):
                raise AssertionError("a completion was refused while the lease was live")
            claimed += [c.key for c in mine]
            for c in claims:
                seen[c.status.value] += 1
        store.close()
        results.put((seed, claimed, seen, None))
    except BaseException as exc:  # reported to the parent, which fails the test with it
        results.put((seed, claimed, seen, repr(exc)))


@dataclass
class RaceResult:
    """Per process: the keys it claimed and how many claims found each status."""

    claimed: list[list[str]]
    seen: list[dict[str, int]]


def run_race(spec: str, keys: list[str], *, processes: int = 4, env: Mapping[str, str] | None = None
             ) -> RaceResult:
    """Run ``processes`` spawned workers over the same ``keys`` on the store ``spec``."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    results = ctx.Queue()
    workers = [
        ctx.Process(target=race_worker, args=(spec, dict(env or {}), keys, seed, barrier, results))
        for seed in range(processes)
    ]
    for w in workers:
        w.start()
    try:
        reports = sorted(results.get(timeout=RACE_TIMEOUT_S) for _ in workers)
    finally:
        for w in workers:
            w.join(timeout=RACE_TIMEOUT_S)
            if w.is_alive():
                w.kill()
    errors = [err for *_rest, err in reports if err]
    if errors:
        raise AssertionError(f"race workers failed: {errors}")
    return RaceResult([r[1] for r in reports], [r[2] for r in reports])


@dataclass(frozen=True)
class Step:
    """One round: claim ``keys``, then ``complete``, ``release``, ``extend`` or ``hold`` a batch of claims.

    The batch acted on is the one just claimed, or with ``late`` the oldest batch
    still held (whose lease may have run out and been taken over meanwhile); an
    extended batch stays held.
    """

    keys: tuple[str, ...]
    then: str
    late: bool
    slide: bool
    advance_s: float


def replay_ops(store: WindowStore, clock: ManualClock, steps: Sequence[Step], *, lease_s: float = 10.0,
               window_s: float = 30.0) -> list[tuple]:
    """Everything observable from running ``steps`` on ``store``: statuses, fingerprints, booleans."""
    observed: list[tuple] = []
    held: list[list[Claim]] = []
    for n, step in enumerate(steps):
        fps = [f"fp-{key}-{n}" for key in step.keys]
        held.append(store.claim(list(step.keys), lease_s, fingerprints=fps,
                                slide_s=window_s if step.slide else None))
        observed.append(tuple((c.status.value, c.fingerprint) for c in held[-1]))
        if step.then == "extend":
            observed.append(("extend", *store.extend(held[0 if step.late else -1], lease_s)))
        elif step.then != "hold":
            batch = held.pop(0 if step.late else -1)
            done = store.complete(batch, window_s) if step.then == "complete" else store.release(batch)
            observed.append((step.then, *done))
        clock.advance(step.advance_s)
    return observed


MODEL_KEYS = ("a", "b", "c", "d")
# Durations on the lease (10 s) and window (30 s) boundaries and a millisecond either side, where
# "expired" must agree exactly.
STEPS = st.lists(
    st.builds(
        Step,
        keys=st.lists(st.sampled_from(MODEL_KEYS), min_size=1, max_size=5).map(tuple),
        then=st.sampled_from(["complete", "release", "extend", "hold"]),
        late=st.booleans(),
        slide=st.booleans(),
        advance_s=st.sampled_from([0.0, 0.001, 5.0, 9.999, 10.0, 10.001, 15.0, 29.999, 30.0, 30.001, 45.0]),
    ),
    min_size=1,
    max_size=10,
)


def check_batch_lifecycle(store: WindowStore, clock: ManualClock, keys: Sequence[str]) -> None:
    """One batch of ``keys`` (a copy of ``keys[3]`` appended) through every phase, decided per key."""
    claimed, duplicate, in_flight = ClaimStatus.CLAIMED, ClaimStatus.DUPLICATE, ClaimStatus.IN_FLIGHT
    n = len(keys)
    fps = [f"fp-{k}" for k in keys]
    claims = store.claim([*keys, keys[3]], lease_s=30, fingerprints=[*fps, "fp-copy"])
    assert [(c.status, c.fingerprint) for c in claims] == [
        *((claimed, fp) for fp in fps), (in_flight, fps[3])]
    assert [c.status for c in store.claim(keys[:2], lease_s=30)] == [in_flight] * 2
    assert store.complete(claims, window_s=60) == [True] * n + [False]

    again = store.claim(keys, lease_s=30, fingerprints=["other"] * n)
    assert [(c.status, c.fingerprint) for c in again] == [(duplicate, fp) for fp in fps]

    clock.advance(60)  # the window has just ended
    fresh = store.claim(keys, lease_s=30)
    assert [c.status for c in fresh] == [claimed] * n
    assert store.release(fresh) == [True] * n
    assert [c.status for c in store.claim(keys, lease_s=30)] == [claimed] * n
