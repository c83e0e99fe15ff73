"""The chaos run's reconciliation on a hand-written ledger: each failure it must catch, caught."""

from __future__ import annotations

import json

import pytest

from dedup.chaos import ChaosConfig
from dedup.chaos.ledger import Call, Fault, Ledger, Receive
from dedup.chaos.report import (
    CAUSE_CRASH,
    CAUSE_FAILOVER,
    CAUSE_NONE,
    CAUSE_REDIS,
    Failover,
    Published,
    Restart,
    analyse,
)
from dedup.chaos.workload import build_workload

CONFIG = ChaosConfig.small(events=6, transient=0, slow=1, poison_per_kind=1)
RESTART = Restart(stop_begin_s=100.0, stop_end_s=100.1, restart_s=103.0, up_s=103.1)
FAILOVER = Failover(begin_s=200.0, demoted_s=200.1, flipped_s=201.0)


@pytest.fixture
def workload():
    return build_workload(CONFIG)


@pytest.fixture
def ledger(tmp_path):
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        yield ledger


def effect(key: str, *, pid: int = 1, claim_s: float, envelope_id: str | None = None,
           end_s: float | None = None) -> Call:
    return Call(key, envelope_id, pid, "effect", claim_s, claim_s + 0.01, claim_s + 0.02,
                end_s if end_s is not None else claim_s + 0.03)


def dead_letter(body: str, message_id: str, receive_count: int = CONFIG.max_receive_count + 1) -> dict:
    attributes = {"ApproximateReceiveCount": str(receive_count)}
    return {"MessageId": message_id, "Body": body, "Attributes": attributes}


def reconcile(workload, ledger, *, published: Published | None = None, dead: list[dict] | None = None,
              config: ChaosConfig = CONFIG, failovers: tuple[Failover, ...] = ()):
    if published is None:
        published = Published()
        published.poison_message_ids["not_json"].append("poison-msg")
    if dead is None:
        dead = [dead_letter(workload.not_json[0], "poison-msg")]
    return analyse(config=config, workload=workload, ledger=ledger, published=published, dead_letters=dead,
                   restarts=(RESTART,), failovers=failovers, unexpected_exits=(), settled=True,
                   left_on_queue=0, wall_time_s=1.0, work_dir=None)


def test_a_clean_ledger_reconciles(workload, ledger):
    for i, key in enumerate(workload.good_keys):
        ledger.record_call(effect(key, claim_s=10.0 + i))
    report = reconcile(workload, ledger)
    assert report.ok, report.failures
    assert report.effects == report.processed_events == len(workload.good_keys)


def test_a_second_effect_nothing_explains_is_a_failure_and_explained_ones_are_not(workload, ledger):
    twice, after_restart, after_crash, *rest = workload.good_keys
    for i, key in enumerate(rest):
        ledger.record_call(effect(key, claim_s=10.0 + i))
    ledger.record_call(effect(twice, claim_s=20.0))
    ledger.record_call(effect(twice, claim_s=30.0))  # same Redis, no crash: the window should have caught it
    ledger.record_call(effect(after_restart, claim_s=99.0))
    ledger.record_call(effect(after_restart, claim_s=104.0))  # claimed on the restarted, empty server
    ledger.record_call(effect(after_crash, pid=7, claim_s=50.0))
    # killed right after that effect, before completing it
    ledger.record_fault(Fault(7, "mid_batch", after_crash, 50.5, 50.0, 50.01))
    ledger.record_call(effect(after_crash, pid=8, claim_s=60.0))
    config = CONFIG.replace(redis_persistence="none", kills_mid_batch=1)
    report = reconcile(workload, ledger, config=config)
    assert report.extra_effects == {CAUSE_NONE: 1, CAUSE_REDIS: 1, CAUSE_CRASH: 1}
    assert report.double_processed == 3 and report.doubles_allowed == 2
    assert report.failures == ["1 extra effects of duplicates within the window",
                               "3 events processed twice, more than the 2 the faults explain"]


def test_with_aof_a_double_across_the_redis_restart_is_unexplained(workload, ledger):
    after_restart, *rest = workload.good_keys
    for i, key in enumerate(rest):
        ledger.record_call(effect(key, claim_s=10.0 + i))
    ledger.record_call(effect(after_restart, claim_s=99.0))
    ledger.record_call(effect(after_restart, claim_s=104.0))  # the restarted server must still know it
    report = reconcile(workload, ledger)  # CONFIG: appendfsync always
    assert CONFIG.redis_persistence == "aof-always"
    assert report.extra_effects == {CAUSE_NONE: 1} and report.doubles_allowed == 0
    assert not report.ok


def test_a_mid_batch_kill_explains_its_own_event_only_not_the_batch_before_it(workload, ledger):
    earlier, trigger, *rest = workload.good_keys
    for i, key in enumerate(rest):
        ledger.record_call(effect(key, claim_s=10.0 + i))
    for key in (earlier, trigger):  # one batch (claimed at 50.0), killed after the trigger's effect
        ledger.record_call(effect(key, pid=7, claim_s=50.0))
        ledger.record_call(effect(key, pid=8, claim_s=60.0))
    ledger.record_fault(Fault(7, "mid_batch", trigger, 50.5, 50.0, 50.01))
    report = reconcile(workload, ledger, config=CONFIG.replace(kills_mid_batch=1))
    # The earlier event was completed when its handler returned: running it again is unexplained.
    assert report.extra_effects == {CAUSE_CRASH: 1, CAUSE_NONE: 1}
    assert "2 events processed twice, more than the 1 the faults explain" in report.failures


def test_a_double_across_a_failover_is_counted_apart_and_others_are_not(workload, ledger):
    across, later, *rest = workload.good_keys
    for i, key in enumerate(rest):
        ledger.record_call(effect(key, claim_s=10.0 + i))
    ledger.record_call(effect(across, claim_s=199.5))  # recorded on the old primary, not yet replicated
    ledger.record_call(effect(across, claim_s=202.0))  # claimed on the promoted replica
    ledger.record_call(effect(later, claim_s=205.0))
    ledger.record_call(effect(later, claim_s=206.0))  # both on the new primary: the window must catch it
    config = CONFIG.replace(failovers=1, redis_restarts=0)
    report = reconcile(workload, ledger, config=config, failovers=(FAILOVER,))
    assert report.extra_effects == {CAUSE_FAILOVER: 1, CAUSE_NONE: 1}
    assert report.faults["failovers"] == 1 and report.doubles_allowed == 1
    assert "Redis failover (replica lag" in str(report) and "Redis crash + restart" not in str(report)
    assert report.failures == ["1 extra effects of duplicates within the window",
                               "2 events processed twice, more than the 1 the faults explain"]


def test_an_event_neither_processed_nor_dead_lettered_is_lost_and_one_in_the_dlq_is_not(workload, ledger):
    lost, dead_lettered, *rest = workload.good_keys
    for i, key in enumerate(rest):
        ledger.record_call(effect(key, claim_s=10.0 + i))
    index = workload.good_keys.index(dead_lettered)
    dead = [dead_letter(workload.not_json[0], "poison-msg"),
            dead_letter(json.dumps(workload.good[index]), "good-msg")]
    report = reconcile(workload, ledger, dead=dead)
    assert report.lost == (lost,)
    assert report.dead_letters == {"not_json": 1, "good": 1}
    assert report.failures == [f"1 events lost: {[lost]}"]


def test_poison_missing_from_the_dlq_or_dead_lettered_too_early_is_a_failure(workload, ledger):
    for i, key in enumerate(workload.good_keys):
        ledger.record_call(effect(key, claim_s=10.0 + i))
    published = Published()
    published.poison_message_ids["not_json"].append("poison-msg")
    published.poison_envelope_ids["handler"].append("never-dead-lettered")
    early = [dead_letter(workload.not_json[0], "poison-msg", receive_count=2)]
    failures = reconcile(workload, ledger, published=published, dead=early).failures
    assert failures[0] == "poison not dead-lettered: ['handler event never-dead-lettered']"
    assert failures[1].startswith("poison dead-lettered after 2 receives")


def test_a_message_deleted_without_being_checked_is_a_failure(workload, ledger):
    for i, key in enumerate(workload.good_keys):
        ledger.record_call(effect(key, claim_s=10.0 + i))
    ledger.record_dispositions([("m1", workload.good_keys[0], "processed", True, 1, 11.0),
                                ("m2", None, "bad_input", True, 1, 11.0),  # a poison message deleted
                                ("m3", None, "bad_input", False, 1, 11.0)])
    report = reconcile(workload, ledger)
    assert report.deleted_unchecked == 1
    assert report.failures == ["1 messages deleted without being processed or found a duplicate: "
                               "{'bad_input': 1, 'processed': 1}"]


def every_good_event_handled_once(workload, ledger) -> tuple[int, float]:
    """Record one effect per good event, the slow one's handler running until 40 s.

    Returns the slow event's index and when its message was first taken.
    """
    (slow,) = workload.slow_keys
    for i, key in enumerate(workload.good_keys):
        ledger.record_call(effect(key, claim_s=10.0 + i, envelope_id=f"env-{i}",
                                  end_s=40.0 if key == slow else None))
    index = workload.good_keys.index(slow)
    return index, 9.0 + index


def test_a_slow_message_received_again_while_its_handler_ran_means_the_heartbeat_failed(workload, ledger):
    index, taken_s = every_good_event_handled_once(workload, ledger)
    ledger.record_receives([Receive("m-slow", f"env-{index}", 1, 1, taken_s),  # taken by pid 1
                            Receive("m-slow", f"env-{index}", 2, 2, 30.0)])  # seen by pid 2 mid-handler
    report = reconcile(workload, ledger)
    assert report.slow_calls == 1 and report.slow_rereceived == 1
    assert report.failures == ["1 slow messages were received again while their handler ran"]


def test_a_copy_handed_to_two_consumers_at_once_is_a_concurrent_delivery_not_a_heartbeat_failure(
        workload, ledger):
    index, taken_s = every_good_event_handled_once(workload, ledger)
    ledger.record_receives([Receive("m-slow", f"env-{index}", 2, 1, taken_s),  # moto sometimes hands
                            Receive("m-slow", f"env-{index}", 2, 2, taken_s + 0.01)])  # one message to two
    report = reconcile(workload, ledger)
    assert report.slow_rereceived == 0 and report.concurrent_deliveries == 1
    assert report.ok


def test_each_trigger_kills_once_whichever_process_reaches_it_first(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as first, Ledger(tmp_path / "l.sqlite") as second:
        assert first.record_fault(Fault(1, "after_claim", "k", 1.0, 0.5, 0.6))
        assert not second.record_fault(Fault(2, "after_claim", "k", 2.0, 1.5, 1.6))  # a redelivery
        assert second.record_fault(Fault(2, "before_delete", "k", 3.0, 2.5, 2.6))  # another point
        assert first.fault_pids() == {1, 2}


def test_the_workload_gives_every_planned_kill_its_own_good_event():
    config = ChaosConfig.small(kills_mid_batch=2)
    workload = build_workload(config)
    triggers = [k for keys in workload.kill_keys.values() for k in keys]
    assert {p: len(k) for p, k in workload.kill_keys.items()} == config.kills
    assert len(set(triggers)) == len(triggers) and set(triggers) <= set(workload.good_keys)
    assert not set(triggers) & set(workload.slow_keys + workload.transient_keys)
