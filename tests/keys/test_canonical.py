"""Canonical JSON per RFC 8785 (JCS) and timestamp normalisation."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dedup.canonical import TimestampError, canonical_json, epoch_ms


@pytest.mark.parametrize(("a", "b"),
                         [(1, 1.0), (10.0, 10), (-0.0, 0), ({"n": 2.0}, {"n": 2}), ([1e2], [100])])
def test_numbers_are_written_by_value(a, b):
    assert canonical_json(a) == canonical_json(b)


@pytest.mark.parametrize(("value", "text"), [
    # RFC 8785 appendix B / ECMAScript Number.prototype.toString
    (1e-7, "1e-7"), (0.000001, "0.000001"), (1e21, "1e+21"), (1e20, "100000000000000000000"),
    (123.456, "123.456"), (1.5, "1.5"), (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e+308"), (2.0**60, "1152921504606847000"),
    (0.1 + 0.2, "0.30000000000000004"), (1e-5, "0.00001"), (4.5e15, "4500000000000000"),
])
def test_doubles_are_written_as_ecmascript_does(value, text):
    assert canonical_json(value) == text
    assert canonical_json(-value) == "-" + text


def test_integers_beyond_2_53_stay_exact_so_distinct_ids_stay_distinct():
    assert canonical_json(2**53 + 1) == "9007199254740993"
    assert canonical_json(2**53 + 1) != canonical_json(2**53)
    assert canonical_json(2**60) != canonical_json(2.0**60)  # documented: int and double beyond 2**53 differ


def test_members_are_sorted_by_utf16_code_units_with_no_whitespace():
    value = {"\U0001f600": 1, "\ufb01": 2, "b": [1, {"y": 1, "x": 2}], "a": "é\n\u2028"}
    # U+1F600 is the surrogate pair D83D DE00, which sorts before U+FB01 in UTF-16.
    assert canonical_json(value) == '{"a":"é\\n\u2028","b":[1,{"x":2,"y":1}],"\U0001f600":1,"\ufb01":2}'


def test_non_finite_numbers_still_key():
    assert canonical_json([math.nan, math.inf, -math.inf]) == "[NaN,Infinity,-Infinity]"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.text() | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


def _shuffle(node, rng):
    if isinstance(node, dict):
        items = list(node.items())
        rng.shuffle(items)
        return {k: _shuffle(v, rng) for k, v in items}
    if isinstance(node, list):
        return [_shuffle(v, rng) for v in node]
    if isinstance(node, float) and node.is_integer() and abs(node) < 2**53:
        return int(node) if rng.random() < 0.5 else node
    return node


@settings(max_examples=300, deadline=None)
@given(json_values, st.integers(0, 2**32), st.sampled_from([None, 1, "  "]))
def test_property_reserialising_keeps_the_canonical_text(value, seed, indent):
    again = json.loads(json.dumps(_shuffle(value, random.Random(seed)), indent=indent))
    assert canonical_json(again) == canonical_json(value)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_property_canonical_text_parses_back_to_the_same_value(value):
    text = canonical_json(value)
    assert _numbers_equal(json.loads(text), value)


def _numbers_equal(a, b):
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_numbers_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_numbers_equal, a, b))
    if isinstance(b, float):  # a double written as integer digits parses back to the same double
        return float(a) == b
    return a == b


@pytest.mark.parametrize(("value", "expected"), [
    (1795942800, 1795942800000), (1795942800123, 1795942800123), (1795942800.5, 1795942800500),
    ("1795942800123", 1795942800123), ("1795942800", 1795942800000), (" 1795942800.123 ", 1795942800123),
    (1795942800123.0, 1795942800123), ("2026-11-29T09:00:00Z", 1795942800000),
    ("2026-11-29T10:00:00.123+01:00", 1795942800123), ("2026-11-29T04:30:00.123-04:30", 1795942800123),
    ("2026-11-29T09:00:00.123", 1795942800123), ("2026-11-29T09:00:00.123999Z", 1795942800123),
    ("2026-11-29 09:00:00.123z", 1795942800123),
])
def test_timestamps_as_epoch_s_ms_numeric_text_or_iso_with_offsets(value, expected):
    assert epoch_ms(value) == expected


@pytest.mark.parametrize("value", ["yesterday", "", True, None, {"t": 1}, math.nan, "NaN"])
def test_non_timestamps_say_why(value):
    with pytest.raises(TimestampError, match="timestamp"):
        epoch_ms(value)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 4_000_000_000_000))
def test_property_every_form_of_one_instant_is_one_number(ms):
    import datetime as dt

    iso = dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")
    forms = [ms, str(ms), iso, iso.replace("+00:00", "Z")] if ms >= 10**11 else [iso]
    assert {epoch_ms(f) for f in forms} == {ms}
