"""The benchmark harness works end to end and reports every target; performance is never asserted."""

from __future__ import annotations

import re
import time

import pytest

from benchmarks.__main__ import main
from benchmarks.bench_redis import Pinger
from benchmarks.harness import Comparison, Row, interleaved
from benchmarks.netdelay import DelayProxy


def test_when_a_ratio_falls_short_then_its_target_is_reported_not_met():
    comparison = Comparison("t", baseline="slow", rows=[Row("slow", 100.0), Row("fast", 350.0)])
    short = comparison.target_ratio("fast", 4)
    enough = comparison.target_ratio("fast", 3)
    assert (short.met, short.figure, enough.met) == (False, "3.50x", True)
    lines = comparison.render().splitlines()
    assert lines[-2].endswith("3.50x  NOT met") and lines[-1].endswith("3.50x  met")


def test_when_rows_have_extra_columns_then_each_is_a_column_and_missing_figures_show_a_dash():
    comparison = Comparison("t", baseline="a", rows=[Row("a", 1000.0, extra={"round trips/event": 1.0}),
                                                     Row("b", 5000.0)])
    header, first, second = comparison.render().splitlines()[1:]
    assert header.endswith("vs baseline  round trips/event")
    assert first.split()[-1] == "1.00" and second.split()[-1] == "-"


def test_interleaved_rounds_rotate_the_order_and_report_each_median():
    calls = []

    def contender(name: str, figures: list[float]):
        values = iter(figures)
        return lambda: calls.append(name) or next(values)

    medians = interleaved({"a": contender("a", [5, 1, 3]), "b": contender("b", [2, 9, 4])}, rounds=3)
    assert medians == {"a": 3, "b": 4}
    assert calls == ["a", "b", "b", "a", "a", "b"]


@pytest.mark.slow
@pytest.mark.redis
def test_quick_run_prints_a_table_per_group_and_a_verdict_per_target(redis_server, capsys):
    # redis_server: the session's skip-or-fail policy when redis-server is missing; the
    # benchmark starts a server of its own.
    assert main(["--quick", "memory", "redis"]) == 0
    out = capsys.readouterr().out
    targets = [line for line in out.splitlines() if line.lstrip().startswith("target:")]
    assert len(targets) >= 7  # 4 Redis, 2 TTLCache, 1 scaling
    assert all(re.search(r": \S.*  (met|NOT met)$", line) for line in targets)
    assert "TTLCache" in out and "two-round-trip limit" in out and "round trips/event" in out
    assert out.rstrip().endswith("all targets met") or "targets not met:" in out


def test_interleaved_runs_the_hook_before_every_round():
    events = []
    interleaved({"a": lambda: events.append("a") or 1.0}, rounds=2,
                before_round=lambda: events.append("hook"))
    assert events == ["hook", "a", "hook", "a"]


@pytest.mark.redis
def test_the_delay_proxy_takes_a_new_delay_while_it_runs(redis_server):
    with DelayProxy(redis_server.port, one_way_us=0) as proxy:
        pinger = Pinger(proxy.port)
        pinger.ping()
        proxy.set_delay(25_000)
        start = time.perf_counter()
        pinger.ping()
        # A sleep never ends early: the round trip now holds both one-way delays.
        assert time.perf_counter() - start >= 0.050
        assert proxy.one_way_us == 25_000
        pinger.close()
