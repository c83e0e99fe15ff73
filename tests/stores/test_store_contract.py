"""The window-store contract, run on every backend (see ``make_store``)."""

from __future__ import annotations

import pytest

from dedup.stores import ClaimStatus
from dedup.stores.base import STORAGE_KEY_DIGEST_BYTES

C, D, I = ClaimStatus.CLAIMED, ClaimStatus.DUPLICATE, ClaimStatus.IN_FLIGHT  # noqa: E741


@pytest.fixture
def store(make_store, clock):
    return make_store(clock)


def statuses(claims):
    return [c.status for c in claims]


def test_first_claim_wins_and_a_second_sees_in_flight(store):
    first = store.claim(["k"], lease_s=30)
    assert statuses(first) == [C]
    assert first[0].token
    assert statuses(store.claim(["k"], lease_s=30)) == [I]


def test_completed_key_is_a_duplicate_within_the_window(store, clock):
    store.complete(store.claim(["k"], lease_s=30), window_s=60)
    clock.advance(59.999)  # the window's last millisecond
    assert statuses(store.claim(["k"], lease_s=30)) == [D]


# ---- deadlines, to the millisecond: live at deadline - 1 ms, over at the deadline and after ----

AROUND_MS = [(-1, True), (0, False), (1, False)]  # offset from the deadline, still live there?


def at(clock, start_s: float, offset_s: float, offset_ms: int) -> None:
    clock.set(start_s + offset_s + offset_ms / 1000)


@pytest.mark.parametrize(("offset_ms", "live"), AROUND_MS)
def test_a_lease_blocks_until_its_deadline_exactly(store, clock, offset_ms, live):
    start = clock.now_s()
    store.claim(["k"], lease_s=10)
    at(clock, start, 10, offset_ms)
    assert statuses(store.claim(["k"], lease_s=10)) == [I if live else C]


@pytest.mark.parametrize(("offset_ms", "live"), AROUND_MS)
def test_a_window_suppresses_until_its_deadline_exactly(store, clock, offset_ms, live):
    start = clock.now_s()
    store.complete(store.claim(["k"], lease_s=10), window_s=60)
    at(clock, start, 60, offset_ms)
    assert statuses(store.claim(["k"], lease_s=10)) == [D if live else C]


@pytest.mark.parametrize(("offset_ms", "live"), AROUND_MS)
def test_a_sliding_sighting_moves_the_window_deadline_exactly(store, clock, offset_ms, live):
    start = clock.now_s()
    store.complete(store.claim(["k"], lease_s=10), window_s=60)
    clock.set(start + 50)
    assert statuses(store.claim(["k"], lease_s=10, slide_s=60)) == [D]
    at(clock, start, 110, offset_ms)
    assert statuses(store.claim(["k"], lease_s=10)) == [D if live else C]


@pytest.mark.parametrize(("offset_ms", "live"), AROUND_MS)
def test_a_release_works_until_the_lease_deadline_exactly(store, clock, offset_ms, live):
    start = clock.now_s()
    claims = store.claim(["k"], lease_s=10)
    at(clock, start, 10, offset_ms)
    assert store.release(claims) == [live]


@pytest.mark.parametrize(("offset_ms", "live"), AROUND_MS)
def test_an_extend_works_until_the_lease_deadline_exactly(store, clock, offset_ms, live):
    start = clock.now_s()
    claims = store.claim(["k"], lease_s=10)
    at(clock, start, 10, offset_ms)
    assert store.extend(claims, lease_s=10) == [live]
    # Extended: blocks for 10 s from the extension; lapsed: claimable at once.
    assert statuses(store.claim(["k"], lease_s=10)) == [I if live else C]


@pytest.mark.parametrize(("offset_ms", "live"), AROUND_MS)
def test_an_extended_lease_blocks_until_its_new_deadline_exactly(store, clock, offset_ms, live):
    start = clock.now_s()
    claims = store.claim(["k"], lease_s=10)
    clock.set(start + 8)
    assert store.extend(claims, lease_s=10) == [True]
    at(clock, start, 18, offset_ms)
    assert statuses(store.claim(["k"], lease_s=10)) == [I if live else C]


def test_a_completion_at_the_lease_deadline_succeeds_when_nobody_took_over(store, clock):
    start = clock.now_s()
    claims = store.claim(["k"], lease_s=10)
    clock.set(start + 10)
    assert store.complete(claims, window_s=60) == [True]
    assert statuses(store.claim(["k"], lease_s=10)) == [D]


# ---- extend --------------------------------------------------------------------------------------


def test_extending_keeps_a_lease_alive_past_its_first_deadline(store, clock):
    claims = store.claim(["a", "b"], lease_s=10)
    for _ in range(5):
        clock.advance(9)
        assert store.extend(claims, lease_s=10) == [True, True]
    assert statuses(store.claim(["a", "b"], lease_s=10)) == [I, I]  # 45 s after a 10 s claim
    assert store.complete(claims, window_s=60) == [True, True]
    assert statuses(store.claim(["a", "b"], lease_s=10)) == [D, D]


def test_an_extend_is_token_fenced(store, clock):
    old = store.claim(["k"], lease_s=10)
    clock.advance(10)
    new = store.claim(["k"], lease_s=10)
    assert store.extend(old, lease_s=10) == [False]  # another consumer holds it now
    clock.advance(9.999)
    assert statuses(store.claim(["k"], lease_s=10)) == [I]  # the new holder's lease was not touched
    assert store.extend(new, lease_s=10) == [True]


def test_an_extend_of_a_completed_or_released_key_reports_false_and_changes_nothing(store, clock):
    done, dropped = store.claim(["done"], lease_s=10), store.claim(["dropped"], lease_s=10)
    store.complete(done, window_s=60)
    store.release(dropped)
    assert store.extend([*done, *dropped], lease_s=10) == [False, False]
    assert statuses(store.claim(["done", "dropped"], lease_s=10)) == [D, C]


def test_an_extend_skips_claims_that_were_not_claimed_and_keeps_fingerprints(store, clock):
    claims = store.claim(["k", "k"], lease_s=10, fingerprints=["fp-1", "fp-2"])
    assert store.extend(claims, lease_s=30) == [True, False]
    clock.advance(20)
    again = store.claim(["k"], lease_s=10, fingerprints=["fp-3"])
    assert (again[0].status, again[0].fingerprint) == (I, "fp-1")
    store.complete(claims, window_s=60)
    assert store.claim(["k"], lease_s=10)[0].fingerprint == "fp-1"


def test_an_empty_extend_is_a_no_op(store):
    assert store.extend([], lease_s=10) == []


def test_settle_completes_some_claims_and_extends_others_in_one_call(store, clock):
    start = clock.now_s()
    done, held = store.claim(["a", "x"], lease_s=10), store.claim(["b", "x"], lease_s=10)
    clock.set(start + 9)
    assert store.settle(done, 60, held, 10) == ([True, True], [True, False])
    clock.set(start + 18.999)  # b's lease, extended at 9 s, still runs
    assert statuses(store.claim(["a", "b", "x"], lease_s=10)) == [D, I, D]
    clock.set(start + 19)
    assert statuses(store.claim(["b"], lease_s=10)) == [C]
    assert store.settle([], 60, [], 10) == ([], [])


def test_fixed_window_expires_and_the_key_is_claimable_again(store, clock):
    store.complete(store.claim(["k"], lease_s=30), window_s=60)
    clock.advance(30)
    assert statuses(store.claim(["k"], lease_s=30)) == [D]  # a sighting does not extend it
    clock.advance(30)
    assert statuses(store.claim(["k"], lease_s=30)) == [C]


def test_sliding_window_is_extended_by_every_duplicate_sighting(store, clock):
    store.complete(store.claim(["k"], lease_s=30), window_s=60)
    for _ in range(3):
        clock.advance(45)
        assert statuses(store.claim(["k"], lease_s=30, slide_s=60)) == [D]
    clock.advance(60)
    assert statuses(store.claim(["k"], lease_s=30, slide_s=60)) == [C]


def test_released_claim_lets_a_redelivery_be_processed(store):
    claims = store.claim(["k"], lease_s=30)
    assert store.release(claims) == [True]
    assert statuses(store.claim(["k"], lease_s=30)) == [C]


def test_an_expired_lease_can_be_taken_over_and_the_old_holder_cannot_complete(store, clock):
    old = store.claim(["k"], lease_s=10)
    clock.advance(10)
    new = store.claim(["k"], lease_s=10)
    assert statuses(new) == [C]
    assert new[0].token != old[0].token
    assert store.complete(old, window_s=60) == [False]
    assert store.release(old) == [False]
    assert statuses(store.claim(["k"], lease_s=10)) == [I]
    assert store.complete(new, window_s=60) == [True]


def test_completion_after_the_lease_ran_out_succeeds_when_nobody_took_over(store, clock):
    claims = store.claim(["k"], lease_s=10)
    clock.advance(11)
    assert store.complete(claims, window_s=60) == [True]
    assert statuses(store.claim(["k"], lease_s=10)) == [D]


def test_only_the_token_holder_can_release(store, clock):
    mine = store.claim(["k"], lease_s=10)
    clock.advance(10)
    store.claim(["k"], lease_s=10)  # someone else now holds it
    assert store.release(mine) == [False]
    assert statuses(store.claim(["k"], lease_s=10)) == [I]


def test_a_batch_claims_each_key_once_and_reports_repeats_in_flight(store):
    claims = store.claim(["a", "b", "a", "c"], lease_s=30)
    assert statuses(claims) == [C, C, I, C]
    assert [c.key for c in claims] == ["a", "b", "a", "c"]


def test_batch_mixes_new_duplicate_and_in_flight_keys(store):
    store.complete(store.claim(["done"], lease_s=30), window_s=60)
    store.claim(["busy"], lease_s=30)
    assert statuses(store.claim(["new", "done", "busy"], lease_s=30)) == [C, D, I]


def test_complete_and_release_skip_claims_that_were_not_claimed(store):
    store.complete(store.claim(["done"], lease_s=30), window_s=60)
    claims = store.claim(["done", "fresh"], lease_s=30)
    assert store.complete(claims, window_s=60) == [False, True]


def test_fingerprints_are_recorded_and_returned_to_later_claims(store):
    store.complete(store.claim(["k"], lease_s=30, fingerprints=["fp-1"]), window_s=60)
    again = store.claim(["k"], lease_s=30, fingerprints=["fp-2"])
    assert again[0].status is D
    assert again[0].fingerprint == "fp-1"


def test_a_batch_mixing_keys_with_and_without_fingerprints_records_each_as_given(store, clock):
    claims = store.claim(["with", "without"], lease_s=30, fingerprints=["fp-1", ""])
    assert [c.fingerprint for c in claims] == ["fp-1", ""]
    assert store.complete(claims, window_s=60) == [True, True]
    again = store.claim(["with", "without", "new"], lease_s=30)
    assert statuses(again) == [D, D, C]
    assert [c.fingerprint for c in again] == ["fp-1", "", ""]


def test_storage_keys_are_namespaced_and_bounded_whatever_the_raw_key(store):
    short, huge = store.storage_key("a"), store.storage_key("x" * 100_000)
    assert short.startswith(store.prefix) and huge.startswith(store.prefix)
    assert len(short) == len(huge) == len(store.prefix) + -(-STORAGE_KEY_DIGEST_BYTES * 4 // 3)
    assert store.storage_key("a\ud800b") != store.storage_key("ab")  # lone surrogates are keyed, not crashed


def test_empty_batch_is_a_no_op(store):
    assert store.claim([], lease_s=30) == []
    assert store.complete([], window_s=30) == []
    assert store.release([]) == []


@pytest.mark.parametrize("lease_s", [0, -1, float("nan"), float("inf"), None, True, "5"])
def test_invalid_durations_are_rejected(store, lease_s):
    with pytest.raises(ValueError, match="lease_s"):
        store.claim(["k"], lease_s=lease_s)


def test_empty_keys_are_rejected(store):
    with pytest.raises(ValueError, match="non-empty string"):
        store.claim([""], lease_s=5)


class _Encodable:
    """Not a string, though it encodes like one."""

    def encode(self, *args: object) -> bytes:
        return b"k"


@pytest.mark.parametrize("key", [b"k", 7, None, _Encodable()], ids=["bytes", "int", "none", "encodable"])
def test_keys_that_are_not_strings_are_rejected(store, key):
    with pytest.raises(ValueError, match="non-empty string"):
        store.claim(["fine", key], lease_s=5)


def test_a_reachable_store_answers_a_ping(store):
    store.ping()  # raises StoreUnavailableError when the backend does not answer
    assert [c.status for c in store.claim(["after-ping"], lease_s=5)] == [C]
