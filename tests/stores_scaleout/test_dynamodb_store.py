"""DynamoDBStore over moto's HTTP server: conditional writes decide, the clock decides expiry.

moto never deletes expired items (DynamoDB does, up to ~48 h late), so every
expiry observed here was decided by the store's conditions against its clock.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError
from botocore.stub import Stubber
from hypothesis import HealthCheck, given, settings
from scaleout_ops import STEPS, check_batch_lifecycle, replay_ops, run_race
from skew_support import copies_while_held_and_after

from dedup.aws.dynamodb_store import TTL_ATTRIBUTE, DynamoDBStore, delete_table, ensure_table
from dedup.clock import ManualClock
from dedup.errors import ConfigurationError, StoreUnavailableError
from dedup.localredis import free_port
from dedup.service import Deduplicator
from dedup.stores import ClaimStatus, MemoryStore, open_store

pytestmark = pytest.mark.aws

CLAIMED, DUPLICATE, IN_FLIGHT = ClaimStatus.CLAIMED, ClaimStatus.DUPLICATE, ClaimStatus.IN_FLIGHT


def item(client, table: str, store: DynamoDBStore, key: str) -> dict | None:
    """The raw item stored for ``key`` (a consistent read), or None."""
    found = client.get_item(TableName=table, Key={"pk": {"S": store.storage_key(key)}}, ConsistentRead=True)
    return found.get("Item")


def test_when_a_batch_runs_the_lifecycle_then_every_phase_decides_per_key(dynamodb_store_factory, clock):
    store = dynamodb_store_factory(clock)
    check_batch_lifecycle(store, clock, [f"evt-{i}" for i in range(12)])


def test_when_a_lease_runs_out_then_another_consumer_takes_the_record_over(
        dynamodb_store_factory, dynamodb_client, dynamodb_table, clock):
    first = dynamodb_store_factory(clock)
    with DynamoDBStore(dynamodb_client, dynamodb_table, clock=clock, prefix=first.prefix,
                       max_clock_skew_s=0) as second:
        [held] = first.claim(["evt"], lease_s=10)
        clock.advance(10)
        assert item(dynamodb_client, dynamodb_table, first, "evt")["state"]["S"] == "I"  # expired, kept

        [taken] = second.claim(["evt"], lease_s=10)
        assert taken.status is CLAIMED
        assert first.complete([held], window_s=60) == [False]  # the new holder decides
        assert first.release([held]) == [False]
        assert second.complete([taken], window_s=60) == [True]
        assert first.claim(["evt"], lease_s=10)[0].status is DUPLICATE


def test_when_a_completed_record_expires_then_it_is_claimed_again_though_still_stored(
        dynamodb_store_factory, dynamodb_client, dynamodb_table, clock):
    store = dynamodb_store_factory(clock)
    store.complete(store.claim(["evt"], lease_s=10), window_s=60)
    clock.advance(59.999)
    assert store.claim(["evt"], lease_s=10)[0].status is DUPLICATE
    clock.advance(0.001)

    stale = item(dynamodb_client, dynamodb_table, store, "evt")
    assert stale["state"]["S"] == "D" and int(stale["deadline_ms"]["N"]) == store._now_ms()
    assert store.claim(["evt"], lease_s=10)[0].status is CLAIMED


def test_when_sliding_then_each_duplicate_sighting_extends_the_window(dynamodb_store_factory, clock):
    store = dynamodb_store_factory(clock)
    store.complete(store.claim(["evt"], lease_s=10), window_s=30)
    clock.advance(20)
    assert store.claim(["evt"], lease_s=10, slide_s=30)[0].status is DUPLICATE  # now ends at 50 s
    clock.advance(20)
    assert store.claim(["evt"], lease_s=10)[0].status is DUPLICATE  # 40 s: past the first window
    clock.advance(10)
    assert store.claim(["evt"], lease_s=10)[0].status is CLAIMED


def test_when_a_record_is_written_then_its_ttl_is_the_deadline_in_epoch_seconds(
        dynamodb_store_factory, dynamodb_client, dynamodb_table):
    clock = ManualClock(1_700_000_000.25)
    store = dynamodb_store_factory(clock)
    store.complete(store.claim(["evt"], lease_s=10, fingerprints=["fp"]), window_s=60)

    record = item(dynamodb_client, dynamodb_table, store, "evt")
    deadline_ms = 1_700_000_060_250
    assert record["deadline_ms"]["N"] == str(deadline_ms)
    assert record[TTL_ATTRIBUTE]["N"] == str(math.ceil(deadline_ms / 1000))
    assert record["fingerprint"]["S"] == "fp" and "token" not in record
    ttl = dynamodb_client.describe_time_to_live(TableName=dynamodb_table)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", TTL_ATTRIBUTE)


def test_when_the_table_is_ensured_twice_then_it_is_one_on_demand_table(dynamodb_client):
    name = f"dedup-test-{uuid.uuid4().hex[:12]}"
    ensure_table(dynamodb_client, name)
    ensure_table(dynamodb_client, name)
    table = dynamodb_client.describe_table(TableName=name)["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert delete_table(dynamodb_client, name) is True
    assert delete_table(dynamodb_client, name) is False
    assert name not in dynamodb_client.list_tables()["TableNames"]


def test_when_a_table_has_another_key_schema_then_ensure_table_refuses_it(dynamodb_client):
    name = f"dedup-test-{uuid.uuid4().hex[:12]}"
    dynamodb_client.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
    )
    try:
        with pytest.raises(ConfigurationError, match="partition key named 'pk'"):
            ensure_table(dynamodb_client, name)
    finally:
        delete_table(dynamodb_client, name)


def test_when_the_table_does_not_exist_then_the_error_names_it(dynamodb_client, clock):
    store = DynamoDBStore(dynamodb_client, "no-such-table", clock=clock)
    with pytest.raises(ConfigurationError, match="no-such-table"):
        store.claim(["evt"], lease_s=10)


def test_when_the_endpoint_is_unreachable_then_claims_fail_closed(dynamodb_aws, clock):
    client = boto3.client(
        "dynamodb", endpoint_url=f"http://127.0.0.1:{free_port()}", region_name=dynamodb_aws.region,
        aws_access_key_id="testing", aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=1),
    )
    store = DynamoDBStore(client, "window", clock=clock)
    handled: list = []
    with pytest.raises(StoreUnavailableError, match=r"dynamodb table window .* is unavailable"):
        Deduplicator(store, key="envelope-id").process_batch([{"id": "e1"}, {"id": "e2"}], handled.append)
    assert handled == []


def test_when_dynamodb_throttles_after_retries_then_the_store_is_unavailable(dynamodb_client, clock):
    store = DynamoDBStore(dynamodb_client, "window", clock=clock, max_workers=1)
    with Stubber(dynamodb_client) as stub:  # moto cannot throttle: the one stubbed response
        stub.add_client_error("put_item", "ProvisionedThroughputExceededException", http_status_code=400)
        with pytest.raises(StoreUnavailableError, match="ProvisionedThroughputExceededException"):
            store.claim(["evt"], lease_s=10)


def test_when_opened_from_a_url_then_the_store_uses_the_environment_endpoint(dynamodb_aws, dynamodb_table,
                                                                            clock):
    with dynamodb_aws.exported(), open_store(f"dynamodb://{dynamodb_table}", clock=clock) as store:
        assert isinstance(store, DynamoDBStore)
        assert store.describe() == (f"dynamodb table {dynamodb_table} (region {dynamodb_aws.region}, "
                                    f"endpoint {dynamodb_aws.endpoint_url})")
        assert [c.status for c in store.claim(["a", "b"], lease_s=5)] == [CLAIMED] * 2
    with pytest.raises(ConfigurationError, match="expected dynamodb://TABLE"):
        open_store("dynamodb://")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_dynamodb_store_matches_the_memory_model(dynamodb_client, dynamodb_table, steps):
    store_clock, model_clock = ManualClock(), ManualClock()
    store = DynamoDBStore(dynamodb_client, dynamodb_table, clock=store_clock, prefix=f"{uuid.uuid4().hex}:",
                          max_clock_skew_s=0)  # one clock: the model takes records over at their deadline
    with store:
        observed = replay_ops(store, store_clock, steps)
    assert observed == replay_ops(MemoryStore(clock=model_clock), model_clock, steps)


@pytest.mark.slow
def test_when_processes_race_for_the_same_keys_then_each_key_is_claimed_once(dynamodb_aws, dynamodb_table):
    keys = [f"evt-{i}" for i in range(120)]

    race = run_race(f"dynamodb://{dynamodb_table}", keys, processes=3, env=dynamodb_aws.environ())

    everything = [k for claimed in race.claimed for k in claimed]
    assert sorted(everything) == sorted(keys)  # each key claimed by exactly one process
    assert all(seen["claimed"] + seen["duplicate"] + seen["in_flight"] == len(keys) for seen in race.seen)
    assert all(seen["duplicate"] + seen["in_flight"] > 0 for seen in race.seen)  # they did contend


def test_when_part_of_a_claim_fails_then_the_claims_granted_are_undone(dynamodb_aws, dynamodb_table, clock):
    client = dynamodb_aws.client("dynamodb")  # its own client: the fault hook stays in this test
    store = DynamoDBStore(client, dynamodb_table, clock=clock)
    victim = store.storage_key("evt-3")

    def unreachable_for_victim(params, **_):
        if params.get("Item", {}).get("pk", {}).get("S") == victim:
            raise EndpointConnectionError(endpoint_url=dynamodb_aws.endpoint_url)

    client.meta.events.register("provide-client-params.dynamodb.PutItem", unreachable_for_victim)
    keys = [f"evt-{i}" for i in range(6)]
    with pytest.raises(StoreUnavailableError, match="Could not connect"):
        store.claim(keys, lease_s=30)

    assert [item(client, dynamodb_table, store, k) for k in keys] == [None] * 6
    client.meta.events.unregister("provide-client-params.dynamodb.PutItem", unreachable_for_victim)
    assert [c.status for c in store.claim(keys, lease_s=30)] == [CLAIMED] * 6
    store.close()


def skewed_consumers(client, table: str, skew_s: float, max_clock_skew_s: float):
    """Two consumers on one table and prefix, one clock ``skew_s`` ahead of the other."""
    prefix = f"{uuid.uuid4().hex}:"
    ahead, behind = ManualClock(1_700_000_000.0 + skew_s), ManualClock(1_700_000_000.0)
    stores = [DynamoDBStore(client, table, clock=c, prefix=prefix, max_clock_skew_s=max_clock_skew_s)
              for c in (ahead, behind)]
    return [Deduplicator(s, key="envelope-id", window_s=20, lease_s=20) for s in stores]


@pytest.mark.parametrize("skew_s", [30.0, -30.0])
def test_consumers_skewed_within_max_clock_skew_process_every_event_once(dynamodb_client, dynamodb_table,
                                                                         skew_s):
    ahead, behind = skewed_consumers(dynamodb_client, dynamodb_table, skew_s, max_clock_skew_s=30)
    effects = copies_while_held_and_after(ahead, behind, 6)
    assert effects == Counter({f"e{i}": 1 for i in range(6)})


@pytest.mark.parametrize("skew_s", [30.0, -30.0])
def test_consumers_skewed_beyond_max_clock_skew_double_events(dynamodb_client, dynamodb_table, skew_s):
    """The control: the same skew with no margin lets copies through."""
    ahead, behind = skewed_consumers(dynamodb_client, dynamodb_table, skew_s, max_clock_skew_s=0)
    effects = copies_while_held_and_after(ahead, behind, 6)
    assert max(effects.values()) == 2


@pytest.mark.parametrize(("offset_ms", "status"), [(-1, IN_FLIGHT), (0, CLAIMED), (1, CLAIMED)])
def test_a_lease_is_taken_over_max_clock_skew_after_its_deadline_to_the_millisecond(
        dynamodb_client, dynamodb_table, clock, offset_ms, status):
    store = DynamoDBStore(dynamodb_client, dynamodb_table, clock=clock, max_clock_skew_s=2.5,
                          prefix=f"{uuid.uuid4().hex}:")
    start_s = clock.now_s()
    held = store.claim(["evt"], lease_s=10)
    clock.set(start_s + 9.999)
    assert store.extend(held, lease_s=10) == [True]  # the holder's own clock: live to its deadline
    clock.set(start_s + 9.999 + 10 + 2.5 + offset_ms / 1000)
    assert store.claim(["evt"], lease_s=10)[0].status is status
    store.close()
