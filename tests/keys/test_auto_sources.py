"""``auto`` picks the vendor key by configured sources; it never dead-letters an object ``detail``."""

from __future__ import annotations

import copy
import json
import logging
import pickle

import pytest
from samples import load_event

from dedup import Deduplicator, ManualClock, MemoryStore, Outcome
from dedup.cli import main
from dedup.errors import ConfigurationError, MissingKeyError
from dedup.keys import (
    NICE_BRIDGE_SOURCE,
    AutoKey,
    BusinessKey,
    ContentFingerprint,
    GenesysKey,
    auto,
    derive_key,
    explain_key,
    key_strategy,
)


@pytest.mark.parametrize("source", ["com.acme.clinicevents", "com.unicef.donations",
                                    "com.acme.mechanicevents", "com.nice.cxone.bridge.eu",
                                    "aws.partner/genesys.comx/x"])
def test_sources_that_merely_contain_a_vendor_name_are_keyed_by_content(source):
    event = {"source": source, "detail-type": "Something", "detail": {"id": 7, "state": "open"}}
    strategy = auto()
    assert strategy.pick(event).name == "fingerprint"
    assert strategy.key_for(event).startswith("fp:")
    assert strategy.fallbacks == {}  # an unknown source's fingerprint is its key, not a fallback


def test_nice_by_configured_names_and_prefixes_only():
    contact = load_event("envelope_nice_contact_active.json")
    eu = {**copy.deepcopy(contact), "source": "com.acme.cxone.eu"}
    assert auto().pick(contact).name == "nice"
    assert auto().pick(eu).name == "fingerprint"
    configured = key_strategy("auto:nice=com.nice.cxone.bridge,com.acme.cxone.*")
    assert configured.pick(eu).name == "nice"
    assert configured.key_for(eu).startswith("nice:ContactStateChanged|")
    assert auto(nice_sources=["com.acme.cxone.eu"]).pick(contact).name == "fingerprint"


@pytest.mark.parametrize("spec", ["auto:nice=", "auto:genesys=x", "auto:nice=*"])
def test_bad_auto_specs_are_configuration_errors(spec):
    with pytest.raises(ConfigurationError):
        key_strategy(spec)


def test_the_bridge_source_is_defined_once_at_the_core_floor():
    from dedup.traces import NICE_SOURCE

    assert NICE_SOURCE == NICE_BRIDGE_SOURCE == "com.nice.cxone.bridge"


def test_a_known_source_with_an_unknown_shape_is_keyed_by_content_counted_and_logged_once(caplog):
    session = load_event("envelope_nice_agent_session_start.json")
    odd = copy.deepcopy(session)
    odd["detail"] = {"Type": "SkillChanged", "SkillId": 1212, "Priority": 3}
    odd2 = copy.deepcopy(odd)
    odd2["detail"]["Priority"] = 4
    strategy = auto()
    with caplog.at_level(logging.WARNING, logger="dedup.keys"):
        first, again, other = (strategy.key_for(e) for e in (odd, copy.deepcopy(odd), odd2))
    assert first == again != other
    assert first == ContentFingerprint().key_for(odd)
    assert strategy.fallbacks == {NICE_BRIDGE_SOURCE: 3}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and NICE_BRIDGE_SOURCE in warnings[0].getMessage()
    explained = explain_key(strategy, odd)
    assert explained.strategy == "fingerprint" and "no field of a catalogued NICE" in explained.fallback
    assert strategy.fallbacks == {NICE_BRIDGE_SOURCE: 3}  # explaining counts nothing


def test_an_uncatalogued_genesys_topic_keys_on_its_body_and_counts_as_a_fallback():
    event = load_event("envelope_genesys_presence.json")
    event["detail"]["topicName"] = event["detail"]["topicName"].replace(".presence", ".geolocation")
    other = copy.deepcopy(event)
    other["detail"]["eventBody"]["message"] = "moved"
    strategy = auto()
    assert strategy.key_for(event) != strategy.key_for(other)
    assert strategy.key_for(event).startswith("genesys:v2.users.")
    assert sum(strategy.fallbacks.values()) == 3


def test_fallback_counts_stay_bounded_by_source(monkeypatch):
    monkeypatch.setattr("dedup.keys.MAX_FALLBACK_SOURCES", 2)
    strategy = auto(nice_prefixes=["com.x."])
    for i in range(5):
        strategy.key_for({"source": f"com.x.{i}", "detail": {"n": i}})
    assert strategy.fallbacks == {"com.x.0": 1, "com.x.1": 1, "(other sources)": 3}


def test_only_a_detail_that_is_not_an_object_gets_no_key():
    event = {"source": NICE_BRIDGE_SOURCE, "detail": "text"}
    with pytest.raises(MissingKeyError, match="'detail' is a string"):
        derive_key(auto(), event, "m-9")


def test_a_cxone_agent_session_bridged_as_detail_is_keyed_by_its_session_not_dead_lettered():
    start = load_event("envelope_nice_agent_session_start.json")
    key = auto().key_for(start)
    assert key.startswith("nice:AgentSessionStart|AgentId=4100217|SessionId=b2a9d4e0")
    assert "StartTimeUTC=" in key


@pytest.mark.parametrize("mode", ["fixed", "sliding"])
def test_thirty_activity_changes_two_minutes_apart_all_reach_the_handler(mode):
    """The issue's reproduction: topic + user id alone let 10 (fixed) or 1 (sliding) of 30 through."""
    clock = ManualClock(1_795_942_800.0)
    dedup = Deduplicator(MemoryStore(clock=clock), window_s=300, mode=mode)
    base = load_event("envelope_genesys_user_activity.json")
    handled = []
    for i in range(30):
        event = copy.deepcopy(base)
        event["detail"]["eventBody"]["routingStatus"] = {
            "status": ("IDLE", "INTERACTING")[i % 2], "startTime": 1_795_942_800_000 + i * 120_000}
        result = dedup.process(event, handled.append)
        assert result.outcome is Outcome.PROCESSED
        again = dedup.process(copy.deepcopy(event), handled.append)  # a re-publish is still caught
        assert again.outcome is Outcome.DUPLICATE
        clock.advance(120)
    assert len(handled) == 30


def test_deduplicator_explains_its_key():
    dedup = Deduplicator(MemoryStore(), key="auto")
    explained = dedup.explain(load_event("envelope_genesys_routing_status.json"))
    assert explained.family == "user routing status"
    assert explained.fields == ("detail.topicName", "detail.eventBody.routingStatus.status",
                                "detail.eventBody.routingStatus.startTime")
    assert explained.key == dedup.key_of(load_event("envelope_genesys_routing_status.json"))


def test_explain_key_cli_prints_strategy_fields_and_key(tmp_path, capsys):
    path = tmp_path / "event.json"
    event = load_event("envelope_genesys_user_activity.json")
    path.write_text(json.dumps({"Body": json.dumps(event)}))
    assert main(["explain-key", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["strategy"] == "genesys" and out["family"] == "user activity"
    assert "detail.eventBody.routingStatus.startTime" in out["fields"]
    assert out["key"] == auto().key_for(event)
    path.write_text(json.dumps(event))
    assert main(["explain-key", str(path), "--key", "business:detail.eventBody.nope"]) == 1
    assert "no key: detail.eventBody.nope is missing" in capsys.readouterr().out


def test_explain_key_cli_lists_the_catalogue(capsys):
    from dedup.key_catalogue import GENESYS_FAMILIES, NICE_FAMILIES

    assert main(["explain-key", "--catalogue"]) == 0
    out = capsys.readouterr().out
    for family in (*GENESYS_FAMILIES, *NICE_FAMILIES):
        assert f"{family.name} ({family.pattern}):\n    {family.describe()}" in out
    assert "routingStatus.startTime (epoch ms)" in out
    assert main(["explain-key"]) == 2
    assert "explain-key needs EVENT.json (or --catalogue)" in capsys.readouterr().err


# ---- tests that kill the mutations the old suite let survive ------------------------------------


def test_two_participants_that_differ_only_by_participant_id_key_differently():
    a = load_event("envelope_genesys_agent_start.json")
    b = copy.deepcopy(a)
    b["detail"]["eventBody"]["participantId"] = "a1b2c3d4-0009-4e5f-8a9b-000000000009"
    assert a["detail"]["eventBody"]["sessionId"] == b["detail"]["eventBody"]["sessionId"]
    assert GenesysKey().key_for(a) != GenesysKey().key_for(b)


def test_key_order_does_not_change_the_fingerprint():
    a = load_event("envelope_genesys_queue_conversation.json")
    reordered = json.loads(json.dumps(a, sort_keys=True))
    reordered["detail"] = dict(reversed(list(reordered["detail"].items())))
    reordered["detail"]["eventBody"] = dict(reversed(list(reordered["detail"]["eventBody"].items())))
    assert list(reordered["detail"]) != list(a["detail"])
    for strategy in (ContentFingerprint(), auto()):
        assert strategy.key_for(reordered) == strategy.key_for(a)


def test_business_key_bucket_floors_a_time_past_the_half_minute():
    start = load_event("envelope_genesys_customer_start.json")  # eventTime 09:00:00.123
    minute = BusinessKey(["detail.eventBody.conversationId"], time_expr="detail.eventBody.eventTime",
                         bucket_s=60)
    later = copy.deepcopy(start)
    later["detail"]["eventBody"]["eventTime"] += 40_000  # 09:00:40.123: same minute (round would not say so)
    assert minute.key_for(later) == minute.key_for(start)
    earlier = copy.deepcopy(start)
    earlier["detail"]["eventBody"]["eventTime"] -= 200  # 08:59:59.923: the minute before
    assert minute.key_for(earlier) != minute.key_for(start)


def test_auto_key_is_a_strategy_with_a_name():
    assert isinstance(auto(), AutoKey) and auto().name == "auto"


def test_an_agent_summary_going_back_to_an_earlier_state_is_a_new_notification():
    """Conversation summaries carry no time: 1, 0, 1 active calls must still be three notifications."""
    clock = ManualClock(1_795_942_800.0)
    dedup = Deduplicator(MemoryStore(clock=clock), window_s=3600, mode="sliding")
    first = load_event("envelope_genesys_conversation_summary.json")
    second = load_event("envelope_genesys_conversation_summary_next.json")
    third = copy.deepcopy(first)
    third["detail"]["timestamp"] = "2026-11-29T09:09:00.300Z"
    assert third["detail"]["eventBody"] == first["detail"]["eventBody"]
    handled = []
    for event in (first, second, third, copy.deepcopy(third)):
        dedup.process(event, handled.append)
        clock.advance(60)
    assert handled == [first, second, third]  # the last one is a copy of the third


def test_an_auto_strategy_crosses_to_another_process_with_its_configuration_and_fresh_counts():
    strategy = auto(nice_sources=("com.acme.nice",), nice_prefixes=("com.acme.cx.",))
    odd = {"source": "com.acme.nice", "detail-type": "x", "detail": {"unrelated": 1}}
    strategy.key_for(odd)  # a NICE source without a NICE field: keyed by content, counted
    assert strategy.fallbacks == {"com.acme.nice": 1}
    copied = pickle.loads(pickle.dumps(strategy))
    assert copied == strategy and copied.nice_sources == strategy.nice_sources
    assert copied.fallbacks == {}
    assert copied.key_for(odd) == strategy.key_for(odd)
    assert copied.fallbacks == {"com.acme.nice": 1}
