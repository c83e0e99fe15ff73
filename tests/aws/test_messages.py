"""Parsing SQS bodies into EventBridge envelopes: bad input is named, never guessed at."""

from __future__ import annotations

import json

import pytest
from samples import load_event

from dedup.aws.messages import Message, decide, parse_body
from dedup.errors import BadMessageError
from dedup.service import Deduplicator, Outcome
from dedup.stores import MemoryStore


def test_an_eventbridge_body_parses_to_the_envelope_with_detail_as_an_object():
    message = load_event("sqs_message_genesys_customer_start.json")
    envelope = parse_body(message["Body"], message["MessageId"])
    assert envelope == load_event("envelope_genesys_customer_start.json")
    assert isinstance(envelope["detail"], dict)


@pytest.mark.parametrize(("body", "reason"), [
    ("<html>502 Bad Gateway</html>", "body is not JSON"),
    ("", "body is not JSON"),
    (json.dumps(json.dumps({"id": "x"})), "a JSON string (double-encoded?)"),
    ("[1, 2]", "JSON list, not an object"),
    ("null", "JSON NoneType, not an object"),
])
def test_a_body_that_is_not_a_json_object_names_the_message_and_the_reason(body, reason):
    with pytest.raises(BadMessageError) as caught:
        parse_body(body, "m-42")
    assert caught.value.message_id == "m-42"
    assert reason in caught.value.reason and "m-42" in str(caught.value)


def test_a_long_bad_body_is_quoted_only_in_part():
    with pytest.raises(BadMessageError) as caught:
        parse_body("x" * 10_000, "m-1")
    assert len(str(caught.value)) < 300


def test_decide_keeps_bad_bodies_out_of_the_store_and_unacknowledged():
    store = MemoryStore()
    good = load_event("sqs_message_genesys_customer_start.json")
    messages = [Message("bad", "{not json", 4), Message(good["MessageId"], good["Body"], 1)]
    dispositions = decide(Deduplicator(store), lambda event: None, messages)
    assert [d.message.message_id for d in dispositions] == ["bad", good["MessageId"]]
    assert dispositions[0].bad_input and not dispositions[0].acknowledge and dispositions[0].result is None
    assert dispositions[1].result.outcome is Outcome.PROCESSED and dispositions[1].acknowledge
    assert len(store) == 1  # only the good event was claimed
