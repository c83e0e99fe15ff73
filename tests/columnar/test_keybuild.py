"""The compiled key builder keys a line only as ``python_keys`` (``json.loads`` and the strategy) does."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_columnar_keys import (
    _ACTIVITY,
    _RAW_LINES,
    _genesys_line,
    _nice_line,
    _raw_keys,
    _vendor_events,
)

from dedup.canonical import canonical_json
from dedup.columnar import keybuild
from dedup.columnar.derive import python_keys
from dedup.errors import BadMessageError
from dedup.keys import auto
from dedup.traces import TraceConfig, generate


def test_the_key_builder_was_checked_against_the_keys_in_use():
    # As for the SQL: a changed strategy loses the builder (its rows go to SQL and Python) until the tests
    # here and in test_columnar_keys pass with it again and keybuild.VALIDATED holds the new source hash.
    for spec in ("envelope-id", "auto", "genesys", "nice"):
        assert keybuild.validated(spec), spec
    for spec in ("fingerprint", "auto:nice=com.acme.cxone", "business:id", auto()):
        assert not keybuild.validated(spec)


def _python_line(spec: str, line: str, need_time: bool) -> tuple[int, int, int] | None:
    """Digest halves and time python_keys gives ``line``, or None when it refuses the line."""
    try:
        hi, lo, t, _, blank = python_keys(spec, [line], np.zeros(1, np.int64), need_time)
    except BadMessageError:
        return None
    return None if blank[0] else (int(hi[0]), int(lo[0]), int(t[0]))


def _built_lines(lines: list[str | None], spec: str, need_time: bool) -> list[tuple[int, int, int] | None]:
    """What the builder gives each line: digest halves and time, or None where it leaves it to Python."""
    hi, lo, t, status = keybuild.build_keys(pa.array(lines, pa.string()), spec, need_time)
    built = [(int(hi[i]), int(lo[i]), int(t[i]) if need_time else None) for i in range(len(lines))]
    return [row if status[i] == keybuild.KEYED else None for i, row in enumerate(built)]


def _assert_built_as_python(lines: list[str], spec: str) -> int:
    """Every line the builder keys is keyed identically by python_keys (digest, and time when needed);
    returns how many it keyed."""
    keyed = 0
    for need_time in (True, False):
        for line, built in zip(lines, _built_lines(lines, spec, need_time), strict=True):
            if built is None:
                continue
            keyed += 1
            python = _python_line(spec, line, need_time)
            assert python is not None, line
            assert built == (python if need_time else (*python[:2], None)), line
    return keyed


_TRANSCRIPTION = "v2.conversations.c1.transcription"
#: Lines the builder must leave to Python (a string or number it would have to decode or write in canonical
#: form, a name repeated or escaped on the way to a field, a fingerprint, not JSON as json.loads reads it).
_UNCERTAIN_LINES = [
    _genesys_line('{"routingStatus": {"status": "I\\DLE", "startTime": 5}}'),
    _genesys_line('{"routingStatus": {"status": 1.5, "startTime": 5}}'),
    _genesys_line('{"routingStatus": {"status": -0, "startTime": 5}}'),
    _genesys_line('{"routingStatus": {"status": "x", "startTime": 5.0}}'),
    _genesys_line('{"routingStatus": {"status": "x", "startTime": 12345678901234567890}}'),
    _genesys_line('{"routingStatus": {"status": "x", "startTime": "1709510400"}}'),
    _genesys_line('{"routingStatus": {"status": "x", "startTime": "2024-02-30T00:00:00Z"}}'),
    _genesys_line('{"routingStatus": {"status": "x", "startTime": "2024-03-04T00:00:00.12Z"}}'),
    _genesys_line('{"routingStatus": {"status": [1], "startTime": 5}}'),
    _genesys_line('{"routingStatus": {"status": {}, "startTime": 5}}'),
    _genesys_line('{"routingStatus": {"status": "x", "startTime": 5}, "routingStatus": {}}'),
    _genesys_line('{"routingStatus": {"st\\u0061tus": "x", "startTime": 5}}'),
    _genesys_line('{"routingStatus": {"status": "x", "startTime": 5}}').replace('"v2.', '"\\u0076'),
    _genesys_line('{"transcripts": [{"utteranceId": 2.5}], "eventTime": 5}', _TRANSCRIPTION),
    _genesys_line('{"transcripts": [{"utteranceId": "a", "utteranceId": "b"}]}', _TRANSCRIPTION),
    _genesys_line('{"routingStatus": {"status": "x", "startTime": 5},}'),
    _genesys_line('{"routingStatus": {"status": "x", "startTime": 5}, "q": inf}'),
    _genesys_line('{"routingStatus": {"status": "x", "startTime": 5}, "q": "\u0001"}'),
    _genesys_line('{"routingStatus": {"status": "x", "startTime": 5}, "q": 01}'),
    _genesys_line('{"routingStatus": {"status": "x", "startTime": 5}, "q": "\\x"}'),
    _genesys_line('{"routingStatus": {"status": "x", "startTime": 5}}') + " x",
    _nice_line('{"ContactID": 1}', ', "createdAt": 1709510400, "eventType": "Dup"'),
    _nice_line('{"ContactID": 1, "createdAt": 5}').replace('"ContactStateChanged"', "0"),
    _nice_line('{"ContactID": 1, "createdAt": 5}').replace('"ContactStateChanged"', '""')
    .replace('"detail-type": "X"', '"detail-type": null'),
    "", "   ", "[1, 2]", "not json", '{"source": "x"}', "\ufeff" + _nice_line('{"ContactID": 1}'),
]
_FLOW = "v2.flows.f1"
#: Body fingerprints the builder must leave to Python (a value JCS writes differently from the line, a name
#: repeated or outside the BMP), or key (``auto``: also events of no vendor, by content).
_UNCERTAIN_FINGERPRINTS = [
    *(_genesys_line(body, _FLOW) for body in ['{"a": 1e5}', '{"a": 1.10}', '{"a": 0.00001}', '{"a": -0}',
                                              '{"a": 0.1234567890123456}', '{"a": NaN}', '{"a": 1, "a": 2}',
                                              '{"a": "x\\"y"}', '{"\\u0061": 1}', '{"😀": 1, "a": 2}']),
    _genesys_line('{"a": 1}', _FLOW, ', "timestamp": "2024-03-04"'),
    _genesys_line('{"a": 1}', _FLOW, ', "timestamp": 1.5'),
    _genesys_line('{"routingStatus": {"status": "x"}, "note": "t\\tx"}', detail_extra=', "timestamp": 5'),
]
_FINGERPRINTS = [
    _genesys_line('{"routingStatus": {"status": "x"}}'),
    _genesys_line('{"routingStatus": {"status": "x", "startTime": 5}}', _FLOW),
    _genesys_line('{"a": 1}', "v2.nope.u1", ', "timestamp": "2024-03-04T00:00:00.500Z"'),
    _genesys_line('{"b": [1, -2.5, 0.0001, 12345.678, true, null, {"z": "é", "a": []}, {}], "é": "x", '
                  '"A": 0, "€": {"y": 1, "x": 123456789012345678901234567890}}',
                  "v2.analytics.queues.q1.observations", ', "timestamp": 1709510400'),
    _genesys_line('{"routingStatus": {"status": "x"}, "note": "a b"}', detail_extra=', "timestamp": 5'),
    _nice_line('{"ContactID": 7}'),
    _nice_line('{"ContactID": 7, "Values": [0.5, {"b": 2, "a": 1}]}', ', "x": 0.25'),
    _nice_line('{"nothing": 1}'),
    _nice_line('{"ContactID": 1, "createdAt": 5}').replace('"com.nice.cxone.bridge"', '"com.nice.cxone.b.X"'),
    '{"source": 5, "time": 5, "detail": {"k": [1, 2]}}',
    '{"source": "other", "detail-type": "T", "time": "2024-03-04T00:00:00Z", "detail": {"x": {"y": [[]]}}}',
    '{"source": "aws.partner/genesys.com/x", "time": 5, "detail": {"eventBody": {}}}',
]
#: Plain lines of every family the builder must key itself (else it would be correct but useless).
_CERTAIN_LINES = [
    _genesys_line("{" + _ACTIVITY + "}"),
    _genesys_line('{"routingStatus": {"status": 7, "startTime": -5}}'),
    _genesys_line('{"routingStatus": {"status": true, "startTime": false}}'),
    _genesys_line('{"routingStatus": {"status": "é€😀", "startTime": "2024-03-04T00:00:00.123456-05:30"}}'),
    _genesys_line('{"routingStatus": {"status": null, "startTime": "1999-12-31T23:59:59"}}'),
    _genesys_line('{"routingStatus": {"status": "", "startTime": 99999999999, "x": [1.5, {"y": NaN}]}}'),
    _genesys_line('{"presenceDefinition": {"id": "p", "systemPresence": 3}, '
                  '"modifiedDate": "2024-03-04T00:00:00Z"}', "v2.users.u1.presence"),
    _genesys_line('{"transcripts": [{"utteranceId": "u1"}, 5, {"utteranceId": null}, {"utteranceId": 3}], '
                  '"communicationId": "c", "eventTime": 5}', "v2.conversations.c1.transcription"),
    _genesys_line('{"transcripts": [], "eventTime": 1709510534688}', "v2.conversations.c1.transcription"),
    _genesys_line('{"eventTime": 1709510534688, "participantId": "p"}',
                  "v2.detail.events.conversation.c1.customer.start"),
    _genesys_line('{"id": "a1", "eventTime": "2024-03-04T00:00:00Z"}', "v2.audits.entitytype.x.entityid.y"),
    _genesys_line("{" + _ACTIVITY + ', "note": "a \\"quoted\\" \\u00e9"}'),
    " \t" + _genesys_line("{" + _ACTIVITY + "}").replace(", ", " ,\n ") + " \r",
    _nice_line('{"ContactID": 1}', ', "createdAt": "2024-03-04T00:00:00Z"'),
    _nice_line('{"ContactID": 1, "eventId": null}', ', "eventId": "ev-9"'),
    _nice_line('{"messageId": "m", "interactionId": "i"}', ', "createdAt": 1709510400'),
    _nice_line('{"CurrentState": "Available", "AgentId": 7, "Type": "AgentState"}', ', "StartTimeUTC": 3')
    .replace('"ContactStateChanged"', '""'),
    _nice_line('"not an object"', ', "ContactID": 5, "createdAt": 1709510400'),
]


@pytest.mark.parametrize("spec", ["auto", "genesys", "nice", "envelope-id"])
def test_the_builder_keys_plain_lines_as_python_does_and_leaves_the_rest(spec):
    lines = _RAW_LINES + _UNCERTAIN_LINES + _CERTAIN_LINES + _UNCERTAIN_FINGERPRINTS + _FINGERPRINTS
    _assert_built_as_python(lines, spec)
    for need_time in (True, False):
        assert _built_lines([*_UNCERTAIN_LINES[-6:], None], spec, need_time) == [None] * 7
    vendor = {"auto": "", "genesys": "genesys", "nice": "cxone", "envelope-id": ""}[spec]
    certain = [line for line in _CERTAIN_LINES if vendor in line]
    assert None not in _built_lines(certain, spec, True)
    if spec != "envelope-id":  # its key reads the id alone
        uncertain = [line for line in _UNCERTAIN_LINES[:-6] + _UNCERTAIN_FINGERPRINTS if vendor in line]
        assert _built_lines(uncertain, spec, True) == [None] * len(uncertain)
    if spec == "auto":
        assert None not in _built_lines(_FINGERPRINTS, spec, True)


@pytest.mark.parametrize("spec", ["auto", "genesys", "nice", "envelope-id"])
@pytest.mark.parametrize(("source", "seed"), [("genesys", 1), ("nice", 2), ("mixed", 3), ("mixed", 15)])
def test_the_builder_keys_generated_traces_as_python_does(spec, source, seed):
    events = list(generate(TraceConfig(n_events=1500, source=source, seed=seed), cache=False).envelopes())
    lines = [json.dumps(e, ensure_ascii=seed % 2 == 0) for e in events]
    keyed = _assert_built_as_python(lines, spec)
    # Generated envelopes are plain: only rows without a key are left to Python.
    assert keyed == 2 * sum(raw is not None for raw in _raw_keys(events, spec))


#: JSON-significant text to insert or substitute: the builder must never key a line json.loads reads
#: differently, or refuses.
_MUTATIONS = st.sampled_from(['"', "\\", ",", ":", "{", "}", "[", "]", " ", "\t", "\n", "\x00", "\x1f",
                              "-", "0", "1", ".", "e", "E", "+", "NaN", "Infinity", "true", "null", "u", "é",
                              '"eventTime": 1,', '"status": "B",', '"detail": {},', '"\\u0041"', "\\u00"])


@settings(max_examples=300, deadline=None)
@given(base=st.sampled_from(_CERTAIN_LINES + _RAW_LINES[:10]), edits=st.lists(
    st.tuples(st.floats(0, 1), st.integers(0, 3), _MUTATIONS), min_size=1, max_size=3),
    spec=st.sampled_from(["auto", "envelope-id"]))
def test_the_builder_keys_a_mutated_line_only_as_json_loads_reads_it(base, edits, spec):
    line = base
    for where, cut, text in edits:
        at = int(where * len(line))
        line = line[:at] + text + line[at + cut:]
    _assert_built_as_python([line], spec)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=_vendor_events(), ascii_only=st.booleans(), indent=st.sampled_from([None, 1]))
def test_the_builder_keys_odd_field_values_as_python_does(events, ascii_only, indent):
    lines = [json.dumps(e, ensure_ascii=ascii_only, indent=indent).replace("\n", " ") for e in events]
    for spec in ("auto", "genesys", "nice"):
        _assert_built_as_python(lines, spec)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.floats(allow_nan=False, allow_infinity=False).map(repr),
                      st.from_regex(r"-?(0|[1-9][0-9]{0,17})\.[0-9]{1,18}", fullmatch=True)))
def test_a_float_is_written_as_its_own_text_only_where_canonical_json_writes_it_so(text):
    buf = np.frombuffer(text.encode(), np.uint8)
    if keybuild._plain_float(buf, 0, len(buf)):
        assert canonical_json(json.loads(text)) == text


def test_common_floats_are_written_as_their_own_text():
    for text in ("0.91", "-2.5", "0.0001", "12345.678", "99999999999999.9"):
        assert keybuild._plain_float(np.frombuffer(text.encode(), np.uint8), 0, len(text)), text


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_the_compiled_md5_gives_the_digest_halves_of_hashlib(data):
    value = int.from_bytes(hashlib.md5(data).digest(), "little")
    buf = np.frombuffer(data, np.uint8) if data else np.zeros(0, np.uint8)
    halves = keybuild._md5_halves(buf, 0, len(data), np.zeros(4, np.int64), np.zeros(128, np.uint8))
    assert halves == (value >> 65, value & ((1 << 63) - 1))


def test_a_chunk_keys_alike_on_several_threads_and_in_every_string_layout(monkeypatch):
    monkeypatch.setattr(keybuild, "_ROWS_A_THREAD", 100)
    lines = [json.dumps(e) for e in generate(TraceConfig(n_events=3000, source="mixed", seed=7),
                                             cache=False).envelopes()]
    lines += _UNCERTAIN_LINES + _FINGERPRINTS
    array = pa.array(lines, pa.string())
    one = keybuild.build_keys(array, "auto", True, threads=1)
    for threads in (2, 3):
        many = keybuild.build_keys(array, "auto", True, threads=threads)
        assert all((a == b).all() for a, b in zip(one, many, strict=True))
    for other in (array.cast(pa.large_string()), pa.chunked_array([array[:100], array[100:]])):
        assert all((a == b).all() for a, b in zip(one, keybuild.build_keys(other, "auto", True), strict=True))
