"""The fault-injection run, small: consumer processes, SIGKILLs at every point, a Redis crash, poison.

Redis runs with AOF ``appendfsync always``, so its crash and restart must cost no
double effect at all; the one mid-batch kill may repeat its own event, no other.
"""

from __future__ import annotations

import pytest

from dedup.chaos import ChaosConfig, run_chaos
from dedup.chaos.report import CAUSE_CRASH, CAUSE_FAILOVER, CAUSE_NONE, CAUSE_REDIS

pytestmark = [pytest.mark.slow, pytest.mark.aws, pytest.mark.redis]


@pytest.fixture(scope="module")
def report(embedded_aws):
    # One kill at every point (mid_batch included, to show the gap is measured, not hidden).
    return run_chaos(ChaosConfig.small(kills_mid_batch=1), aws=embedded_aws)


def test_under_every_fault_no_event_is_lost_and_no_duplicate_within_the_window_runs_twice(report):
    assert report.ok, "\n".join(report.failures) + f"\n{report}"
    assert report.lost == () and report.processed_events == report.unique_events == 200
    assert report.extra_effects.get(CAUSE_NONE, 0) == 0
    # The Redis crash lost nothing (AOF always): no double is put down to it.
    assert report.config.redis_persistence == "aof-always" and report.extra_effects.get(CAUSE_REDIS, 0) == 0
    assert report.unexpected_effects == 0
    # Only processed messages and completed duplicates were deleted (a batch killed before its
    # delete comes back and is deleted as a duplicate).
    assert report.deleted_unchecked == 0 and set(report.deletions) == {"processed", "duplicate"}


def test_every_planned_fault_was_injected(report):
    faults = report.faults
    assert {point: faults.get(f"kill_{point}", 0) for point in report.kills_planned} == report.kills_planned
    assert faults["respawns"] == sum(report.kills_planned.values())
    assert faults["redis_restarts"] == 1 and faults["outage_batches"] + faults["outage_checks"] >= 1
    assert faults["transient_failures"] >= report.config.transient
    assert report.published.publish_retries == 20 and report.published.delivery_duplicates > 0
    assert report.decisions["duplicate"] > 0  # the duplicates were met, and dropped


def test_every_poison_message_is_dead_lettered_after_max_receive_count_and_nothing_else_is(report):
    assert report.dead_letters == {"not_json": 1, "keyless": 1, "handler": 1}
    assert report.poison_missing == ()
    assert report.poison_min_receive_count >= report.config.max_receive_count


def test_the_heartbeat_covers_handlers_slower_than_the_visibility_timeout(report):
    assert report.slow_calls >= report.config.slow
    assert report.slow_rereceived == 0


def test_a_crash_between_effect_and_completion_reruns_that_effect_only(report):
    # The inherent gap: the effect happened, the kill came before its completion, the lease lapsed.
    # Every event the batch had finished before was completed already: one kill, one double.
    assert report.extra_effects.get(CAUSE_CRASH, 0) == 1
    assert report.double_processed == 1 == report.config.kills_mid_batch
    assert sum(report.extra_effects.values()) == report.effects - report.processed_events


def test_the_report_names_every_figure_of_the_issue(report):
    text = str(report)
    for label in ("unique logical events (N)", "consumer processes (K)", "effects recorded", "lost",
                  "double-processed events", CAUSE_REDIS, CAUSE_FAILOVER, "in the DLQ", "SIGKILL after claim",
                  "SIGKILL before delete", "Redis crash + restart (persistence aof-always)", "wall time"):
        assert label in text, label
    assert text.rstrip().endswith("OK: every asserted property holds")
