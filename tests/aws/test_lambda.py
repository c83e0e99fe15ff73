"""The Lambda entry point: batchItemFailures for every record that must come back."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass

import aws_lambda_targets
import pytest
from samples import load_event

from dedup.aws import lambda_handler
from dedup.aws.lambda_handler import configured, handle_sqs_event, handler, invocation_deadline_s
from dedup.clock import ManualClock
from dedup.errors import ConfigurationError
from dedup.localredis import LocalRedis, free_port
from dedup.service import Deduplicator
from dedup.stores import MemoryStore, RedisStore
from dedup.stores.base import ClaimStatus

EVENT = "lambda_sqs_event_mixed.json"
# The records of the canonical event, by what they hold.
GENESYS, REPUBLISHED, NOT_JSON, KEYLESS, NICE = (r["messageId"] for r in load_event(EVENT)["Records"])


@pytest.fixture(autouse=True)
def fresh_targets(monkeypatch):
    aws_lambda_targets.handled.clear()
    for name in lambda_handler.SETTINGS:
        monkeypatch.delenv(name, raising=False)


def failures(response: dict) -> list[str]:
    assert set(response) == {"batchItemFailures"}
    assert all(set(item) == {"itemIdentifier"} for item in response["batchItemFailures"])
    return [item["itemIdentifier"] for item in response["batchItemFailures"]]


def test_failed_bad_and_keyless_records_are_reported_and_the_rest_acknowledged():
    dedup = Deduplicator(MemoryStore())
    response = handle_sqs_event(load_event(EVENT), dedup, aws_lambda_targets.fail_on_nice)
    # the republished Genesys copy is a duplicate (acknowledged); NICE failed in the handler
    assert failures(response) == [NOT_JSON, KEYLESS, NICE]
    assert [e["id"] for e in aws_lambda_targets.handled] == [json.loads(
        load_event(EVENT)["Records"][0]["body"])["id"]]


def test_in_flight_records_are_reported_so_that_they_come_back():
    store = MemoryStore()
    dedup = Deduplicator(store)
    genesys = json.loads(load_event(EVENT)["Records"][0]["body"])
    store.claim([dedup.key_of(genesys)], lease_s=60)  # another invocation holds it
    response = handle_sqs_event(load_event(EVENT), dedup, aws_lambda_targets.record)
    assert failures(response) == [GENESYS, REPUBLISHED, NOT_JSON, KEYLESS]
    assert [e["source"] for e in aws_lambda_targets.handled] == ["com.nice.cxone.bridge"]


def test_a_store_outage_reports_every_record():
    down = Deduplicator(RedisStore(f"redis://127.0.0.1:{free_port()}/0", socket_timeout_s=1))
    response = handle_sqs_event(load_event(EVENT), down, aws_lambda_targets.record)
    assert failures(response) == [GENESYS, REPUBLISHED, NOT_JSON, KEYLESS, NICE]
    assert aws_lambda_targets.handled == []


@dataclass
class Context:
    """The part of a Lambda context the entry point reads."""

    remaining_ms: int

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.mark.parametrize("remaining_ms, another_invocation_gets, lost", [
    pytest.param(900_000, ClaimStatus.IN_FLIGHT, 0, id="the invocation outlives the handler: lease kept"),
    pytest.param(2_000, ClaimStatus.CLAIMED, 1, id="the invocation would have timed out: lease lapsed"),
])
def test_a_handler_slower_than_the_lease_keeps_its_lease_for_the_invocation_and_no_longer(
        remaining_ms, another_invocation_gets, lost, caplog):
    clock = ManualClock()
    store = MemoryStore(clock=clock)
    dedup = Deduplicator(store, lease_s=3)
    record = load_event(EVENT)["Records"][0]
    seen: list[ClaimStatus] = []

    def slow(event):
        clock.advance(10)  # more than lease_s, and more than a 2 s invocation has
        seen.append(store.claim([dedup.key_of(event)], lease_s=3)[0].status)  # a copy elsewhere

    deadline_s = invocation_deadline_s(dedup, Context(remaining_ms))
    with caplog.at_level(logging.ERROR):
        response = handle_sqs_event({"Records": [record]}, dedup, slow, deadline_s=deadline_s)
    assert seen == [another_invocation_gets]
    # Acknowledged either way: the effect happened, and running it again could only repeat it.
    assert failures(response) == []
    assert dedup.stats.lease_lost == lost
    assert any("lease lost" in r.getMessage() for r in caplog.records) is bool(lost)


def test_without_a_lambda_context_there_is_no_deadline():
    assert invocation_deadline_s(Deduplicator(MemoryStore()), None) is None


@pytest.mark.redis
def test_a_store_demoted_mid_invocation_fails_no_invocation_and_reports_only_records_that_must_return(
        redis_server):
    with LocalRedis() as primary, LocalRedis() as promoted:
        store = RedisStore(primary.url, clock=ManualClock())  # simulated time: retries do not wait
        dedup = Deduplicator(store, store_retry_s=1.0)

        def demoting(event):
            if not aws_lambda_targets.handled:
                primary.demote(promoted.port)  # a failover mid-handler: every write now gets READONLY
            aws_lambda_targets.fail_on_nice(event)

        response = handle_sqs_event(load_event(EVENT), dedup, demoting)
        store.close()
    # Genesys ran: acknowledged although its completion could not be written (and its republished
    # copy with it); NICE failed and its claim could not be released: reported, like the bad records.
    assert failures(response) == [NOT_JSON, KEYLESS, NICE]
    assert len(aws_lambda_targets.handled) == 1
    assert dedup.stats.completion_failed == 1 and dedup.stats.release_failed == 1


def test_the_entry_point_is_configured_from_the_environment_and_cached(monkeypatch):
    monkeypatch.setenv("DEDUP_HANDLER", "aws_lambda_targets:record")
    monkeypatch.setenv("DEDUP_STORE_URL", "memory")
    monkeypatch.setenv("DEDUP_KEY", "auto")
    monkeypatch.setenv("DEDUP_WINDOW_S", "120")
    monkeypatch.setenv("DEDUP_LEASE_S", "30")
    monkeypatch.setenv("DEDUP_MODE", "sliding")
    monkeypatch.setenv("DEDUP_PREFIX", "app-a:")
    first = handler(load_event(EVENT), None)
    again = handler(load_event(EVENT), None)  # the same batch redelivered to a warm container
    assert failures(first) == failures(again) == [NOT_JSON, KEYLESS]
    assert len(aws_lambda_targets.handled) == 2  # Genesys and NICE once each, across both invocations
    dedup, user_handler = configured()
    assert (dedup.window_s, dedup.lease_s, dedup.mode) == (120.0, 30.0, "sliding")
    assert dedup.store.prefix == "app-a:"
    assert user_handler is aws_lambda_targets.record
    assert configured()[0] is dedup  # cached


@pytest.mark.parametrize(("settings", "complaint"), [
    ({"DEDUP_STORE_URL": "memory"}, "DEDUP_HANDLER is not set"),
    ({"DEDUP_HANDLER": "aws_lambda_targets:record"}, "DEDUP_STORE_URL is not set"),
    ({"DEDUP_HANDLER": "aws_lambda_targets", "DEDUP_STORE_URL": "memory"}, "package.module:function"),
    ({"DEDUP_HANDLER": "aws_lambda_targets:nope", "DEDUP_STORE_URL": "memory"}, "no function 'nope'"),
    ({"DEDUP_HANDLER": "no_such_module:f", "DEDUP_STORE_URL": "memory"}, "cannot import 'no_such_module'"),
    ({"DEDUP_HANDLER": "aws_lambda_targets:record", "DEDUP_STORE_URL": "memory",
      "DEDUP_WINDOW_S": "5m"}, "DEDUP_WINDOW_S must be a number"),
    ({"DEDUP_HANDLER": "aws_lambda_targets:record", "DEDUP_STORE_URL": "memory",
      "DEDUP_MODE": "rolling"}, "mode must be one of"),
])
def test_bad_settings_are_clear_errors(monkeypatch, settings, complaint):
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=complaint):
        handler(load_event(EVENT), None)


def test_an_event_that_is_not_from_sqs_is_refused():
    with pytest.raises(ConfigurationError, match="not an SQS event"):
        handle_sqs_event({"detail-type": "Scheduled Event"}, Deduplicator(MemoryStore()), print)


def test_the_lambda_entry_point_does_not_import_boto3_or_moto():
    code = ("import sys, dedup.aws.lambda_handler; "
            "print(sorted({'boto3', 'botocore', 'moto'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
