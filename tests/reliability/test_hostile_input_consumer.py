"""Hostile SQS bodies through the consumer loop: a clear per-message error, no crash, nothing
deleted silently, every stored key bounded.

The bulk runs through ``SQSConsumer.poll_once`` over an in-memory SQS double (and the
Lambda entry on the same batch); a few real round trips through moto's HTTP server
follow, including bodies near the 1 MiB limit and poison reaching the DLQ. The event-level
strategies come from ``test_hostile_input_core`` (keys and the Deduplicator).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

from aws.aws_support import RecordingSleep, until
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from samples import load_event
from test_hostile_input_core import JSON, TEXT, KeyRecordingStore, envelopes

from dedup.aws.consumer import SQSConsumer
from dedup.aws.lambda_handler import handle_sqs_event
from dedup.aws.messages import MAX_BODY_DEPTH
from dedup.errors import BadMessageError, MissingKeyError
from dedup.service import Deduplicator, Outcome
from dedup.stores.base import STORAGE_KEY_DIGEST_BYTES

SQS_MAX_BODY_BYTES = 1024 * 1024
ERROR_MAX_CHARS = 2_000  # an error names the message and the reason; it never echoes a huge body
GENESYS = load_event("envelope_genesys_customer_start.json")
NICE = load_event("envelope_nice_contact_active.json")
# Characters that are hostile in ids: controls, lone surrogates, private use, unassigned, format chars.
WEIRD_TEXT = st.text(st.characters(categories=["Cc", "Cs", "Co", "Cn", "Cf", "Zl", "Zp"]), min_size=1,
                     max_size=20) | st.sampled_from(["\x00", "\ud800", "\udfff", "\u202e", "\ufeff", "\r\n"])


def _genesys(**body_changes: Any) -> dict[str, Any]:
    event = json.loads(json.dumps(GENESYS))
    body = event["detail"]["eventBody"]
    for name, value in body_changes.items():
        if value is _MISSING:
            body.pop(name, None)
        else:
            body[name] = value
    return event


_MISSING = object()


def _nested(depth: int, container: str) -> str:
    return "[" * depth + "]" * depth if container == "[" else '{"a":' * depth + "1" + "}" * depth


def _padded(event: dict[str, Any], total_bytes: int) -> str:
    """``event`` as JSON with a filler field making the body ``total_bytes`` long."""
    event = {**event, "detail": {**event["detail"], "filler": ""}}
    room = total_bytes - len(json.dumps(event).encode())
    event["detail"]["filler"] = "x" * max(0, room)
    return json.dumps(event)


@st.composite
def hostile_bodies(draw) -> tuple[str, str]:
    """``(kind, body)``: a body an SQS queue may carry, mostly hostile."""
    kind = draw(st.sampled_from([
        "not_json", "json_scalar", "json_array", "double_encoded", "envelope_fuzz", "deep_nesting",
        "missing_or_empty_ids", "wrong_types", "huge_id", "weird_chars_in_ids", "near_1mib",
    ]))
    ascii_only = draw(st.booleans())
    if kind == "not_json":
        body = draw(st.sampled_from(["", " ", "<html>502 Bad Gateway</html>", "{", '{"id": ', "\ufeff{}",
                                     "{'single': 'quotes'}", "1" * 5_000, "[1,]", "nul"])
                    | st.text(max_size=100).filter(lambda t: not _parses(t)))
    elif kind == "json_scalar":
        body = json.dumps(draw(st.none() | st.booleans() | st.integers() | st.floats() | TEXT))
    elif kind == "json_array":
        body = json.dumps(draw(st.lists(JSON, max_size=5)))
    elif kind == "double_encoded":
        body = json.dumps(json.dumps(draw(st.sampled_from([GENESYS, NICE]))))
    elif kind == "envelope_fuzz":
        body = json.dumps(draw(envelopes()), ensure_ascii=ascii_only)
    elif kind == "deep_nesting":
        depth = draw(st.sampled_from([MAX_BODY_DEPTH + 1, 1_000, 10_000, 20_000])
                     | st.integers(MAX_BODY_DEPTH - 2, 3_000))
        nest = _nested(depth, draw(st.sampled_from(["[", "{"])))
        body = draw(st.sampled_from([
            nest, f'{{"source": "x", "detail": {nest}}}',
            f'{{"id": {nest}, "source": "{GENESYS["source"]}", "detail": {json.dumps(GENESYS["detail"])}}}',
        ]))
    elif kind == "missing_or_empty_ids":
        fields = draw(st.sets(st.sampled_from(["eventTime", "id", "participantId", "sessionId"]), min_size=1))
        value = draw(st.sampled_from([_MISSING, "", None]))
        body = json.dumps(_genesys(**dict.fromkeys(fields, value)))
    elif kind == "wrong_types":
        field = draw(st.sampled_from(["eventTime", "participantId", "id", "sessionId", "utteranceId"]))
        body = json.dumps(_genesys(**{field: draw(JSON)}), ensure_ascii=ascii_only)
    elif kind == "huge_id":
        size = draw(st.integers(1, SQS_MAX_BODY_BYTES - 2_000))
        body = json.dumps(_genesys(participantId="p" * size))
    elif kind == "weird_chars_in_ids":
        fields = draw(st.sets(st.sampled_from(["participantId", "sessionId", "id"]), min_size=1))
        weird = {f: draw(WEIRD_TEXT) for f in fields}
        body = json.dumps(_genesys(**weird), ensure_ascii=ascii_only)
    else:  # near_1mib: a keyed event, a keyless one, or not JSON at all
        shape = draw(st.sampled_from(["keyed", "keyless", "not_json"]))
        size = SQS_MAX_BODY_BYTES - draw(st.integers(0, 4_096))
        if shape == "not_json":
            body = "<" + "x" * (size - 1)
        else:
            body = _padded(GENESYS if shape == "keyed" else _genesys(eventTime=_MISSING), size)
    return kind, body


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


class FakeSQS:
    """An in-memory SQS queue: one receive returns every message, deletes remove them."""

    def __init__(self, bodies: list[str]) -> None:
        self.messages = {f"msg-{i}": body for i, body in enumerate(bodies)}
        self.deleted: list[str] = []

    def get_queue_attributes(self, **kwargs: Any) -> dict[str, Any]:
        redrive = {"deadLetterTargetArn": "arn:aws:sqs:us-east-1:123456789012:dlq", "maxReceiveCount": 3}
        return {"Attributes": {"VisibilityTimeout": "30", "RedrivePolicy": json.dumps(redrive)}}

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        return {"Messages": [{"MessageId": mid, "ReceiptHandle": f"rh-{mid}", "Body": body,
                              "Attributes": {"ApproximateReceiveCount": "1"}}
                             for mid, body in self.messages.items()]}

    def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:
        for entry in Entries:
            mid = entry["ReceiptHandle"].removeprefix("rh-")
            del self.messages[mid]
            self.deleted.append(mid)
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}

    def change_message_visibility_batch(self, **kwargs: Any) -> dict[str, Any]:
        return {"Successful": [{"Id": e["Id"]} for e in kwargs["Entries"]], "Failed": []}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def error_log() -> Iterator[list[str]]:
    """The ERROR messages logged by dedup inside the block (hypothesis forbids caplog here)."""
    handler, logger = _Records(), logging.getLogger("dedup")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def _storage_key_length(store: KeyRecordingStore) -> int:
    return len(store.prefix) + -(-STORAGE_KEY_DIGEST_BYTES * 4 // 3)


@settings(max_examples=250, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=st.lists(hostile_bodies(), min_size=1, max_size=8))
@example(batch=[
    ("deep_nesting", _nested(10_000, "[")),
    ("deep_nesting", '{"detail": ' + _nested(995, "{") + "}"),
    ("weird_chars_in_ids", json.dumps(_genesys(participantId="\ud800\x00"), ensure_ascii=False)),
    ("near_1mib", _padded(GENESYS, SQS_MAX_BODY_BYTES)),
    ("json_scalar", '"\\ud800"'),
])
def test_hostile_bodies_get_a_clear_error_per_message_and_only_checked_messages_are_deleted(batch):
    for kind, _ in batch:
        event(f"kind: {kind}")
    bodies = [body for _, body in batch]
    sqs, store = FakeSQS(bodies), KeyRecordingStore()
    dedup = Deduplicator(store)
    handled: list[str] = []
    consumer = SQSConsumer(sqs, "https://sqs.example/queue", dedup, lambda e: handled.append(dedup.key_of(e)),
                           wait_time_s=0, sleep=RecordingSleep())
    with error_log() as errors:
        report = consumer.poll_once()

    assert [d.message.message_id for d in report.dispositions] == [f"msg-{i}" for i in range(len(bodies))]
    assert report.store_outage is None
    acknowledged = [d.message.message_id for d in report.dispositions if d.acknowledge]
    assert sorted(sqs.deleted) == sorted(acknowledged) == sorted(report.deleted)
    for d in report.dispositions:
        mid = d.message.message_id
        if d.acknowledge:
            assert d.result.outcome in (Outcome.PROCESSED, Outcome.DUPLICATE)
            continue
        # Not deleted: it stays on the queue, is retried and reaches the DLQ; the error says why.
        assert d.bad_input and mid in sqs.messages
        error = d.bad or d.result.error
        assert isinstance(error, BadMessageError | MissingKeyError) and error.message_id == mid
        assert (error.reason if isinstance(error, BadMessageError) else error.reasons[0])
        assert mid in str(error) and len(str(error)) < ERROR_MAX_CHARS
        assert any(mid in line for line in errors), f"no error logged for {mid}"
    assert len(handled) == sum(d.result is not None and d.result.outcome is Outcome.PROCESSED
                               for d in report.dispositions)
    assert {len(k) for k in store.seen_storage_keys} <= {_storage_key_length(store)}

    # The Lambda entry decides the same batch the same way: it reports every unacknowledged record.
    records = [{"messageId": f"msg-{i}", "body": body} for i, body in enumerate(bodies)]
    failures = handle_sqs_event({"Records": records}, Deduplicator(KeyRecordingStore()), lambda e: None)
    unacknowledged = {d.message.message_id for d in report.dispositions if not d.acknowledge}
    assert {f["itemIdentifier"] for f in failures["batchItemFailures"]} == unacknowledged


# ---- real round trips through moto's HTTP server ---------------------------------------------


def test_hostile_bodies_over_moto_reach_the_dlq_untouched_while_good_ones_are_processed(stack, caplog):
    # auto keys any object detail (by content when no field identifies it): keyless means detail is not one.
    keyless_weird = {**GENESYS, "id": "\x00\ud800\u202e\x1b[31m", "detail": "\x00\ud800 not an object"}
    hostile = {
        "not JSON": "<html>502 Bad Gateway</html>",
        "10k levels deep": _nested(10_000, "["),
        "a JSON array": "[1, 2, 3]",
        "double-encoded": json.dumps(json.dumps(GENESYS)),
        "keyless, control characters and a lone surrogate in ids": json.dumps(keyless_weird),
        "near 1 MiB, not JSON": "<" + "x" * (SQS_MAX_BODY_BYTES - 1_024),
    }
    good = {
        "lone surrogate in an id": json.dumps(_genesys(participantId="p-\ud800-\x07")),
        "no eventTime, keyed by content": json.dumps(_genesys(eventTime=_MISSING, sessionId="")),
        "near 1 MiB, keyed": _padded(NICE, SQS_MAX_BODY_BYTES - 1_024),
    }
    ids = {stack.send_raw(body): name for name, body in {**hostile, **good}.items()}
    assert len(ids) == len(hostile) + len(good)
    store = KeyRecordingStore()
    dedup = Deduplicator(store)
    handled: list[str] = []
    consumer = SQSConsumer(stack.sqs, stack.handles.queue_url, dedup, lambda e: handled.append(e["id"]),
                           wait_time_s=1, sleep=RecordingSleep())
    with caplog.at_level(logging.ERROR):
        until(lambda: stack.depth() == 0, lambda: consumer.poll_once(wait_time_s=1))

    dead = {m["MessageId"]: m["Body"] for m in stack.drain(stack.handles.dlq_url)}
    assert sorted(ids[m] for m in dead) == sorted(hostile)  # the very messages, bodies intact
    assert all(dead[m] == hostile[ids[m]] for m in dead)
    assert consumer.stats.processed == len(good) == len(handled) and consumer.stats.deleted == len(good)
    receives = stack.config.max_receive_count
    assert consumer.stats.bad_input == len(hostile) * receives
    for message_id in dead:  # named, with a reason, at every receive
        lines = [r.getMessage() for r in caplog.records if message_id in r.getMessage()]
        assert len(lines) == receives, (ids[message_id], lines)
        assert all(len(line) < ERROR_MAX_CHARS + 200 for line in lines)
    assert {len(k) for k in store.seen_storage_keys} == {_storage_key_length(store)}
