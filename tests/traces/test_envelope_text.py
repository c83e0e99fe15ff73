"""The compiled envelope text is render()'s envelopes, json.dumps'd, byte for byte."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dedup.traces import TraceConfig, envelope_text
from dedup.traces.catalogue import Event
from dedup.traces.envelope_text import render_lines
from dedup.traces.generate import generate_frame
from dedup.traces.render import render

# Between them, every event type the generator emits, in voice and chat, and both queue snapshots.
TRACES = [("genesys", 0, 60_000), ("nice", 1, 60_000), ("mixed", 2, 30_000), ("mixed", 15, 30_000)]


def dumps(frame, seed: int) -> list[str]:
    return [json.dumps(e, ensure_ascii=False, separators=(",", ":")) for e in render(frame, seed)]


def lines(frame, seed: int) -> list[str]:
    text, offsets = render_lines(frame, seed)
    assert offsets[0] == 0 and offsets[-1] == len(text) and len(offsets) == len(frame) + 1
    return bytes(text).decode("utf-8").split("\n")[:-1]


@pytest.fixture(scope="module")
def traces():
    return {(source, seed): generate_frame(TraceConfig(n_events=n, source=source, seed=seed))
            for source, seed, n in TRACES}


@pytest.mark.parametrize(("source", "seed"), [(s, seed) for s, seed, _ in TRACES])
def test_every_line_is_the_rendered_envelope_byte_for_byte(traces, source, seed):
    frame = traces[source, seed]
    assert lines(frame, seed) == dumps(frame, seed)


def test_the_traces_compared_cover_every_event_type_and_shape(traces):
    shapes = set()
    for frame in traces.values():
        media, ended = frame["media"].astype(str), frame["item"] == 1
        shapes |= set(zip(frame["event"].cat.codes, media, ended, strict=True))
    assert {event for event, _, _ in shapes} == set(Event)
    for event in (Event.CONTACT_CREATED, Event.CONTACT_STATE, Event.AGENT_ASSIGNED, Event.CONTACT_ENDED):
        assert {media for e, media, _ in shapes if e == event} == {"voice", "chat"}
    assert {(media, ended) for e, media, ended in shapes if e == Event.QUEUE_CONVERSATION} == {
        ("voice", False), ("voice", True), ("chat", False), ("chat", True)}


def test_arrow_framing_is_the_same_texts_back_to_back_with_int32_offsets(traces):
    frame = traces["mixed", 2].iloc[:500]
    plain, _ = render_lines(frame, 2)
    packed, offsets = render_lines(frame, 2, "arrow", np.zeros(10, dtype=np.uint8))  # too small: not used
    assert offsets.dtype == np.int32 and offsets[0] == 0 and offsets[-1] == len(packed)
    texts = [bytes(packed[lo:hi]) for lo, hi in itertools.pairwise(offsets)]
    assert b"\n".join(texts) + b"\n" == bytes(plain)


def test_arrow_framing_refuses_a_chunk_its_int32_offsets_could_not_address(traces, monkeypatch):
    monkeypatch.setattr(envelope_text, "_ARROW_STRING_BYTES", 1000)
    with pytest.raises(ValueError, match="2 GiB"):
        render_lines(traces["mixed", 2].iloc[:500], 2, "arrow")
    assert len(render_lines(traces["mixed", 2].iloc[:500], 2)[1]) == 501  # JSONL's offsets are int64


def test_a_chunk_renders_as_it_does_within_the_whole_trace(traces):
    frame = traces["mixed", 15]
    assert lines(frame.iloc[12_345:12_999], 15) == lines(frame, 15)[12_345:12_999]


def test_entity_numbers_past_int32_products_draw_what_render_draws(traces):
    # entity * 7919 wraps in int32 (as render's numpy arithmetic does) once a trace has ~300k conversations.
    frame = traces["mixed", 2].iloc[:3000].copy()
    frame["entity"] = frame["entity"] + np.int32(2_000_000)
    participant = frame["participant"]
    frame["participant"] = np.where(participant >= 0, participant + 8_000_000, -1).astype(np.int32)
    assert lines(frame, 2) == dumps(frame, 2)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**40), source=st.sampled_from(["genesys", "nice", "mixed"]),
       start_s=st.floats(0, 4e9), n=st.integers(0, 1500))
def test_any_seed_start_and_size_render_alike(seed, source, start_s, n):
    frame = generate_frame(TraceConfig(n_events=n, source=source, seed=seed, start_s=start_s))
    assert lines(frame, seed) == dumps(frame, seed)


def test_times_outside_four_digit_years_are_refused(traces):
    frame = traces["mixed", 2].iloc[:5].copy()
    frame["event_time_ms"] = 253_402_300_800_000
    with pytest.raises(ValueError, match="years 1000-9999"):
        render_lines(frame, 2)
