"""Hostile events through the key strategies and the Deduplicator: clear errors, bounded keys, no crash."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from dedup import Deduplicator, MemoryStore, Outcome
from dedup.clock import ManualClock
from dedup.errors import MissingKeyError
from dedup.keys import KEY_STRATEGIES, derive_key
from dedup.stores.base import STORAGE_KEY_DIGEST_BYTES

TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=()), max_size=50) | st.sampled_from(
    ["", "\x00", "\ud800", "a" * 300_000, "${jndi:x}", "key\r\nSET x y", "*", "dedup:*"]
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)


class KeyRecordingStore(MemoryStore):
    """A MemoryStore that remembers every storage key it was asked to claim."""

    def __init__(self):
        super().__init__(clock=ManualClock())
        self.seen_storage_keys: list[str] = []

    def _claim(self, skeys, *args):
        self.seen_storage_keys += skeys
        return super()._claim(skeys, *args)


ID_FIELDS = st.sampled_from(["id", "participantId", "sessionId", "eventTime", "utteranceId", "ContactID"])


@st.composite
def envelopes(draw):
    """Envelope-shaped objects with hostile values where the keys look."""
    source = draw(st.sampled_from(["aws.partner/genesys.com/cloud/o/n", "com.nice.cxone.bridge", "x"])
                  | TEXT)
    body = draw(st.dictionaries(ID_FIELDS, JSON, max_size=4))
    detail = draw(st.sampled_from(["genesys", "nice", "raw"]))
    if detail == "genesys":
        payload = {"topicName": draw(TEXT | JSON), "eventBody": body}
    elif detail == "nice":
        payload = {"eventType": draw(JSON), "createdAt": draw(JSON), "payload": body}
    else:
        payload = draw(JSON)
    return {"id": draw(JSON), "source": source, "detail-type": draw(JSON), "detail": payload}


@settings(max_examples=300, deadline=None)
@given(event=envelopes() | JSON)
def test_any_event_gets_a_key_or_a_missing_key_error_naming_the_message(event):
    for name, make in KEY_STRATEGIES.items():
        try:
            key = derive_key(make(), event, "msg-hostile")
        except MissingKeyError as exc:
            assert exc.message_id == "msg-hostile"
            assert "msg-hostile" in str(exc)
            assert len(str(exc)) < 2_000, "an error must not echo a huge payload"
        else:
            assert isinstance(key, str) and key, name


@settings(max_examples=200, deadline=None)
@given(events=st.lists(envelopes() | JSON, min_size=1, max_size=10))
def test_a_hostile_batch_never_crashes_and_every_stored_key_is_bounded(events):
    store = KeyRecordingStore()
    dedup = Deduplicator(store)
    handled = []
    results = dedup.process_batch(events, handled.append, message_ids=[f"m{i}" for i in range(len(events))])
    assert len(results) == len(events)
    for result in results:
        if result.outcome is Outcome.MISSING_KEY:
            assert isinstance(result.error, MissingKeyError) and not result.outcome.acknowledge
    bound = len(store.prefix) + -(-STORAGE_KEY_DIGEST_BYTES * 4 // 3)
    assert all(len(skey) == bound for skey in store.seen_storage_keys)
    assert len(handled) == sum(r.outcome is Outcome.PROCESSED for r in results)


def test_an_event_near_the_sqs_size_limit_is_keyed_by_a_bounded_digest():
    huge = {"source": "com.example", "detail-type": "Big", "detail": {"blob": "x" * (1024 * 1024 - 200)}}
    assert len(json.dumps(huge)) < 1024 * 1024
    store = KeyRecordingStore()
    results = Deduplicator(store).process_batch([huge, huge], lambda e: None)
    assert [r.outcome for r in results] == [Outcome.PROCESSED, Outcome.DUPLICATE]
    assert {len(k) for k in store.seen_storage_keys} == {len(store.storage_key("x"))}
