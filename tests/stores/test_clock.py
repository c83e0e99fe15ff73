"""The injectable clock: simulated time whose scheduled callbacks run where a real clock would fire them."""

from __future__ import annotations

import threading

import pytest

from dedup.clock import SYSTEM_CLOCK, ManualClock


def test_callbacks_run_in_time_order_reading_their_own_time_when_the_clock_moves_past_them(clock):
    start = clock.now_s()
    fired: list[tuple[str, float]] = []
    clock.call_at(start + 2, lambda: fired.append(("b", clock.now_s())))
    clock.call_at(start + 1, lambda: fired.append(("a", clock.now_s())))
    clock.call_at(start + 5, lambda: fired.append(("late", clock.now_s())))
    clock.advance(3)
    assert fired == [("a", start + 1), ("b", start + 2)]
    assert clock.now_s() == start + 3


def test_a_callback_may_schedule_the_next_one_and_both_fire_within_one_move(clock):
    start = clock.now_s()
    beats: list[float] = []

    def beat():
        beats.append(clock.now_s() - start)
        clock.call_at(clock.now_s() + 1, beat)

    clock.call_at(start + 1, beat)
    clock.advance(3.5)
    assert beats == [1, 2, 3]


def test_a_cancelled_callback_never_runs(clock):
    fired = []
    timer = clock.call_at(clock.now_s() + 1, lambda: fired.append(1))
    timer.cancel()
    clock.set(clock.now_s() + 2)
    assert fired == []


def test_sleep_advances_a_manual_clock_without_waiting(clock):
    start = clock.now_s()
    clock.sleep(30)
    assert clock.now_s() == start + 30


def test_a_manual_clock_cannot_go_backwards():
    clock = ManualClock(100.0)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="backwards"):
        clock.set(99.0)


def test_the_system_clock_runs_callbacks_on_its_own_thread_in_time_order_skipping_cancelled_ones():
    done = threading.Event()
    fired: list[str] = []
    now_s = SYSTEM_CLOCK.now_s()
    cancelled = SYSTEM_CLOCK.call_at(now_s + 0.02, lambda: fired.append("cancelled"))
    SYSTEM_CLOCK.call_at(now_s + 0.01, lambda: fired.append("first"))
    SYSTEM_CLOCK.call_at(now_s + 0.05, lambda: (fired.append("last"), done.set()))
    cancelled.cancel()
    assert done.wait(timeout=10)
    assert fired == ["first", "last"]  # the cancelled one, due in between, never ran
