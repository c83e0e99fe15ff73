"""Key strategies on canonical envelopes: the same notification keys identically, distinct ones do not."""

from __future__ import annotations

import copy

import pytest
from samples import load_event

from dedup.errors import ConfigurationError, MissingKeyError
from dedup.keys import (
    AutoKey,
    BusinessKey,
    ContentFingerprint,
    EnvelopeId,
    GenesysKey,
    NiceKey,
    auto,
    derive_key,
    epoch_ms,
    explain_key,
    first_of,
    key_strategy,
)


@pytest.fixture
def start():
    return load_event("envelope_genesys_customer_start.json")


@pytest.fixture
def republished():
    return load_event("envelope_genesys_customer_start_republished.json")


def test_republish_has_a_new_envelope_id_and_time_but_the_same_detail(start, republished):
    assert start["id"] != republished["id"]
    assert start["time"] != republished["time"]
    assert start["detail"] == republished["detail"]


def test_envelope_id_key_does_not_catch_a_republish(start, republished):
    strategy = EnvelopeId()
    assert strategy.key_for(start) != strategy.key_for(republished)


def test_envelope_id_key_catches_a_delivery_duplicate(start):
    strategy = EnvelopeId()
    assert strategy.key_for(start) == strategy.key_for(copy.deepcopy(start))


@pytest.mark.parametrize("strategy", [GenesysKey(), auto(), ContentFingerprint()], ids=lambda s: s.name)
def test_when_genesys_republishes_then_the_key_is_identical(strategy, start, republished):
    assert strategy.key_for(start) == strategy.key_for(republished)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("envelope_genesys_customer_start.json", "envelope_genesys_customer_end.json"),
        ("envelope_genesys_agent_start.json", "envelope_genesys_agent2_start.json"),
        ("envelope_genesys_transcript_utt1.json", "envelope_genesys_transcript_utt2.json"),
        ("envelope_genesys_customer_start.json", "envelope_genesys_acd_start.json"),
    ],
    ids=["start-vs-end", "two-participants", "two-utterances", "customer-vs-acd"],
)
def test_genesys_key_keeps_distinct_notifications_apart(a, b):
    strategy = GenesysKey()
    assert strategy.key_for(load_event(a)) != strategy.key_for(load_event(b))


def test_conversation_id_alone_is_too_coarse(start):
    """The tutorial's Genesys key: every event of a conversation collides with the first."""
    coarse = BusinessKey(["detail.eventBody.conversationId"])
    end = load_event("envelope_genesys_customer_end.json")
    assert coarse.key_for(start) == coarse.key_for(end)
    assert GenesysKey().key_for(start) != GenesysKey().key_for(end)


def test_genesys_event_time_as_epoch_ms_or_iso_text_keys_identically(start):
    as_text = copy.deepcopy(start)
    as_text["detail"]["eventBody"]["eventTime"] = "2026-11-29T09:00:00.123Z"
    assert epoch_ms("2026-11-29T09:00:00.123Z") == start["detail"]["eventBody"]["eventTime"]
    assert GenesysKey().key_for(as_text) == GenesysKey().key_for(start)


def test_genesys_audit_event_keys_on_its_audit_id():
    audit = load_event("envelope_genesys_audit.json")
    other = copy.deepcopy(audit)
    other["detail"]["eventBody"]["id"] = "aud-other"
    assert "aud-7f3e" in GenesysKey().key_for(audit)
    assert GenesysKey().key_for(audit) != GenesysKey().key_for(other)


def test_genesys_key_refuses_a_non_genesys_source():
    nice = load_event("envelope_nice_contact_active.json")
    with pytest.raises(MissingKeyError, match="not a Genesys partner source"):
        derive_key(GenesysKey(), nice, "m-1")


def test_genesys_key_without_event_time_keys_on_a_body_fingerprint_not_on_topic_and_ids(start):
    start["detail"]["eventBody"] = {"conversationId": "c", "participantId": "p"}
    other = copy.deepcopy(start)
    other["detail"]["eventBody"]["mediaType"] = "CHAT"
    explained = explain_key(GenesysKey(), start)
    assert explained.fields[-2:] == ("fingerprint(detail.eventBody)", "detail.timestamp")
    assert "none of eventTime is present" in explained.fallback
    assert GenesysKey().key_for(start) != GenesysKey().key_for(other)


def test_genesys_key_without_an_event_body_object_is_missing(start):
    start["detail"]["eventBody"] = "text"
    with pytest.raises(MissingKeyError, match="eventBody is a string, not an object"):
        derive_key(GenesysKey(), start, "m-2")


def test_nice_republish_keys_identically_and_state_change_does_not():
    active = load_event("envelope_nice_contact_active.json")
    again = load_event("envelope_nice_contact_active_republished.json")
    ended = load_event("envelope_nice_contact_ended.json")
    assert active["id"] != again["id"]
    assert NiceKey().key_for(active) == NiceKey().key_for(again)
    assert NiceKey().key_for(active) != NiceKey().key_for(ended)


def test_nice_key_uses_interaction_id_for_digital_events():
    digital = load_event("envelope_nice_digital_message.json")
    assert "interactionId=int-3f9a" in NiceKey().key_for(digital)


def test_nice_key_prefers_the_bridge_event_id_when_present():
    active = load_event("envelope_nice_contact_active.json")
    later = copy.deepcopy(active)
    active["detail"]["eventId"] = later["detail"]["eventId"] = "evt-1"
    later["detail"]["createdAt"] = "2026-11-29T10:00:00Z"
    assert NiceKey().key_for(active) == NiceKey().key_for(later)


def test_auto_picks_by_source(start):
    nice = load_event("envelope_nice_contact_active.json")
    other = {"source": "com.example.orders", "detail-type": "OrderPlaced", "detail": {"orderId": 1}}
    strategy = AutoKey()
    assert strategy.pick(start).name == "genesys"
    assert strategy.pick(nice).name == "nice"
    assert strategy.pick(other).name == "fingerprint"
    assert strategy.key_for(start).startswith("genesys:")


def test_fingerprint_ignores_named_volatile_fields(start, republished):
    republished["detail"]["timestamp"] = "2026-11-29T09:00:09.000Z"
    assert ContentFingerprint().key_for(start) != ContentFingerprint().key_for(republished)
    tolerant = ContentFingerprint(ignore=["timestamp", "metadata.CorrelationId"])
    republished["detail"]["metadata"]["CorrelationId"] = "different"
    assert tolerant.key_for(start) == tolerant.key_for(republished)


def test_business_key_buckets_time(start):
    minute = BusinessKey(
        ["detail.eventBody.conversationId"], time_expr="detail.eventBody.eventTime", bucket_s=60
    )
    later_same_minute = copy.deepcopy(start)
    later_same_minute["detail"]["eventBody"]["eventTime"] += 20_000
    next_minute = copy.deepcopy(start)
    next_minute["detail"]["eventBody"]["eventTime"] += 60_000
    assert minute.key_for(start) == minute.key_for(later_same_minute)
    assert minute.key_for(start) != minute.key_for(next_minute)


def test_business_key_names_the_missing_expression(start):
    with pytest.raises(MissingKeyError, match=r"detail.eventBody.nope is missing"):
        derive_key(BusinessKey(["detail.eventBody.nope"]), start, "msg-42")


def test_first_of_falls_through_and_lists_every_strategy_tried():
    chain = first_of(GenesysKey(), NiceKey(), EnvelopeId())
    assert chain.key_for({"id": "only-an-id", "source": "x", "detail": {}}) == "id:only-an-id"
    assert explain_key(chain, {"id": "only-an-id", "source": "x", "detail": {}}).strategy == "envelope-id"
    with pytest.raises(MissingKeyError) as info:
        derive_key(chain, {"source": "x", "detail": {}}, "msg-7")
    assert info.value.message_id == "msg-7"
    assert info.value.strategies == ("genesys", "nice", "envelope-id")
    assert "msg-7" in str(info.value)


@pytest.mark.parametrize("event", [[], "text", 5, None], ids=["array", "string", "number", "null"])
def test_non_object_events_raise_missing_key_naming_the_type(event):
    with pytest.raises(MissingKeyError, match="not an object"):
        derive_key(auto(), event, "m")


def test_key_strategy_specs_build_the_named_strategies(start):
    assert isinstance(key_strategy("genesys"), GenesysKey)
    business = key_strategy("business:detail.eventBody.conversationId@detail.eventBody.eventTime/60")
    assert isinstance(business, BusinessKey)
    assert business.bucket_s == 60
    chained = key_strategy("nice|envelope-id")  # a Genesys event is of no NICE family
    assert chained.key_for(start) == f"id:{start['id']}"


@pytest.mark.parametrize("spec", ["nope", "business:", "business:a@b/x", "business:a[["])
def test_bad_key_specs_are_configuration_errors(spec):
    with pytest.raises(ConfigurationError):
        key_strategy(spec)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1795942800, 1795942800000), (1795942800123, 1795942800123), ("2026-11-29T09:00:00Z", 1795942800000),
     ("2026-11-29T10:00:00.123+01:00", 1795942800123), ("2026-11-29T09:00:00.123", 1795942800123)],
)
def test_epoch_ms_normalises_seconds_ms_and_iso(value, expected):
    assert epoch_ms(value) == expected


def test_genesys_presence_keys_on_its_modified_date(start):
    presence = {**start, "detail-type": "v2.users.{id}.presence", "detail": {
        "topicName": "v2.users.u-42.presence", "version": "2", "timestamp": "2026-11-29T09:00:00.000Z",
        "metadata": {"CorrelationId": "c"},
        "eventBody": {"source": "PURECLOUD", "presenceDefinition": {"id": "p-away", "systemPresence": "Away"},
                      "primary": True, "message": "", "modifiedDate": "2026-11-29T09:00:00.412Z"}}}
    later = copy.deepcopy(presence)
    later["detail"]["eventBody"]["modifiedDate"] = "2026-11-29T09:05:00.000Z"
    republished = {**copy.deepcopy(presence), "id": "new-envelope-id", "time": "2026-11-29T09:00:07Z"}
    assert GenesysKey().key_for(presence) == GenesysKey().key_for(republished)
    assert GenesysKey().key_for(presence) != GenesysKey().key_for(later)
