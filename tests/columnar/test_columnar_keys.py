"""The columnar scan keys every message exactly as ``dedup.keys.derive_key`` does, on every dump format."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from samples import EVENTS_DIR

from dedup.columnar import Dump, derive, derive_keys, keybuild
from dedup.columnar.derive import number_keys
from dedup.columnar.keysql import key_layers, validated
from dedup.columnar.write import write_trace
from dedup.errors import BadMessageError, MissingKeyError
from dedup.keys import NoKey, auto, derive_key, epoch_ms, key_strategy
from dedup.traces import TraceConfig, generate

STRATEGIES = ["auto", "genesys", "nice", "envelope-id", "fingerprint",
              "business:detail.eventBody.conversationId"]


def _samples() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(EVENTS_DIR.glob("envelope_*.json"))]


_STAMPS = [1709510470, 1709510470292, 99_999_999_999, 100_000_000_000, 1.7e12, -5, 1709510470.2925,
           "1709510470", "1709510470292", "2024-03-04T00:01:10Z", "2024-03-04T00:01:10.292Z",
           "2024-03-04T00:01:10.292123+02:00", "2024-03-04T00:01:10.999999Z", "2024-03-04T00:01:10",
           "1969-12-31T23:59:59.9995Z", "2024-02-30T00:00:00Z", "2024-03-04 00:01:10Z",
           " 2024-03-04T00:01:10Z", "2024-03-04T24:00:00Z", "2024-03-04T00:01:60Z", "2024-03-04T00:01:10.29Z",
           "0999-03-04T00:01:10Z", "2024-03-04t00:01:10z"]


def _tricky(events: list[dict]) -> list[dict]:
    """The samples with values the SQL must hand to Python, or must key exactly like Python."""
    out = []
    genesys = next(e for e in events if "eventTime" in e["detail"].get("eventBody", {}))
    transcript = next(e for e in events if "transcripts" in e["detail"].get("eventBody", {}))
    nice = next(e for e in events if "payload" in e["detail"])

    def variant(base: dict, path: list[str], value: object) -> None:
        event = copy.deepcopy(base)
        node = event
        for part in path[:-1]:
            node = node[part]
        if value is KeyError:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
        out.append(event)

    body = ["detail", "eventBody"]
    for value in [1.5, 1e3, True, None, "", 0, -7, 12345678901234567890, "é\u00e9", "a\"b", "a\\b", [1], {}]:
        variant(genesys, [*body, "participantId"], value)
        variant(nice, ["detail", "payload", "ContactID"], value)
        variant(nice, ["detail", "eventType"], value)
        variant(genesys, ["detail", "topicName"], value)
        variant(genesys, ["source"], value)
    for stamp in [*_STAMPS, "", None, True, KeyError]:
        variant(genesys, [*body, "eventTime"], stamp)
        variant(nice, ["detail", "createdAt"], stamp)
    variant(nice, ["detail", "eventId"], "evt-1")
    variant(nice, ["detail", "eventId"], 17)
    variant(nice, ["detail-type"], KeyError)
    variant(nice, ["source"], "com.NİCE.bridge")
    variant(nice, ["source"], "com.CXONE.bridge")
    for transcripts in [[], [{"utteranceId": "u1"}, {"utteranceId": "u2"}],
                        [5, {"x": 1}, {"utteranceId": None}], [{"utteranceId": 3}], [{"utteranceId": 2.5}],
                        [{"utteranceId": ""}], "nope", {}]:
        variant(transcript, [*body, "transcripts"], transcripts)
    variant(transcript, [*body, "utteranceId"], "top")
    variant(genesys, ["detail", "eventBody"], [1, 2])
    variant(genesys, ["detail"], "text")
    return out


def _raw_keys(events: list[dict], spec: str) -> list[str | None]:
    strategy = key_strategy(spec)
    raw: list[str | None] = []
    for event in events:
        try:
            raw.append(derive_key(strategy, event))
        except MissingKeyError:
            raw.append(None)
    return raw


def _expected(events: list[dict], spec: str) -> np.ndarray:
    hi, lo = np.full(len(events), -1, np.int64), np.full(len(events), -1, np.int64)
    for i, raw in enumerate(_raw_keys(events, spec)):
        if raw is None:
            continue
        value = int.from_bytes(hashlib.md5(raw.encode("utf-8", "surrogatepass")).digest(), "little")
        hi[i], lo[i] = value >> 65, value & ((1 << 63) - 1)
    return number_keys(hi, lo)


def _write_jsonl(path, events: list[dict]) -> None:
    path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events), encoding="utf-8")


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal keys in one are equal keys in the other, and the same messages have none."""
    if not ((a < 0) == (b < 0)).all():
        return False
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    pairs = np.unique(np.stack([ia.ravel(), ib.ravel()]), axis=1)
    return pairs.shape[1] == len(np.unique(ia)) == len(np.unique(ib))


@pytest.fixture(autouse=True, params=["build", "sql"])
def fast_path(request, monkeypatch) -> str:
    """Every test here holds with the compiled key builder and with the SQL fast path alone."""
    monkeypatch.setattr(derive, "BUILD", request.param == "build")
    return request.param


def test_the_sql_fast_paths_were_checked_against_the_keys_in_use():
    # A changed strategy loses its SQL fast path (its rows are keyed in Python: exact, slower) until the
    # tests here pass with it again and VALIDATED holds the new source hash.
    for path in ("envelope-id", "time", "auto", "genesys", "nice"):
        assert validated(path), path
    for spec in ("envelope-id", "auto", "genesys", "nice"):
        assert key_layers(spec) is not None
    assert key_layers("fingerprint") is None and key_layers("auto:nice=com.acme.cxone") is None


@pytest.mark.parametrize("spec", STRATEGIES)
def test_when_samples_and_tricky_values_are_keyed_then_keys_equal_derive_key(tmp_path, spec):
    events = _samples()
    events += _tricky(events)
    path = tmp_path / "samples.jsonl"
    _write_jsonl(path, events)
    keys = derive_keys(Dump.of(path), spec)
    assert (keys.codes == _expected(events, spec)).all()


def _python_rows(events: list[dict], spec: str, fast_path: str) -> int:
    """The rows of generated (plain) envelopes a fast path leaves to Python: those without a key; for the
    SQL also body fingerprints."""
    raw = _raw_keys(events, spec)
    if fast_path == "build" and keybuild.validated(spec):
        return sum(key is None for key in raw)
    return sum(key is None or key.startswith("fp:") or "|body=" in key for key in raw)


@pytest.mark.parametrize("spec", STRATEGIES)
@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".parquet"])
def test_when_a_generated_trace_is_keyed_from_disk_then_keys_equal_derive_key(tmp_path, spec, suffix,
                                                                              fast_path):
    config = TraceConfig(n_events=4000, source="mixed", seed=5)
    dump = write_trace(config, tmp_path / f"trace{suffix}", workers=1)
    keys = derive_keys(dump, spec)
    events = list(generate(config, cache=False).envelopes())
    assert (keys.codes == _expected(events, spec)).all()
    assert keys.has_truth
    if key_layers(spec) is not None:
        assert keys.python_rows == _python_rows(events, spec, fast_path)


@pytest.mark.parametrize("spec", ["auto", "genesys", "nice"])
@pytest.mark.parametrize(("source", "seed"), [("genesys", 1), ("genesys", 15), ("nice", 2), ("nice", 15),
                                              ("mixed", 3), ("mixed", 15)])
def test_vendor_keys_of_generated_traces_of_every_source_equal_derive_key(tmp_path, spec, source, seed,
                                                                          fast_path):
    config = TraceConfig(n_events=3000, source=source, seed=seed)
    dump = write_trace(config, tmp_path / "trace.parquet", workers=1)
    keys = derive_keys(dump, spec)
    events = list(generate(config, cache=False).envelopes())
    assert (keys.codes == _expected(events, spec)).all()
    assert keys.python_rows == _python_rows(events, spec, fast_path)


def test_a_configured_strategy_object_is_keyed_in_worker_processes_like_its_spec(tmp_path, monkeypatch):
    # A strategy object (not a spec string) has no SQL form: every row goes to the process pool,
    # which must receive the strategy itself (AutoKey holds a lock and counts it does not send).
    monkeypatch.setattr(derive, "POOL_MIN_ROWS", 1)
    config = TraceConfig(n_events=3000, source="mixed", seed=4)
    dump = write_trace(config, tmp_path / "trace.parquet", workers=1)
    keys = derive_keys(dump, auto(), workers=2)
    assert keys.python_rows == len(keys) == 3000
    assert (keys.codes == derive_keys(dump, "auto").codes).all()


def test_when_a_line_is_not_an_envelope_then_the_error_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps(_samples()[0])
    path.write_text(f"{good}\n{good}\n[1, 2]\n")
    with pytest.raises(BadMessageError, match="line 3"):
        derive_keys(Dump.of(path), "auto")
    path.write_text(f"{good}\nnot json\n")
    with pytest.raises(BadMessageError, match=r"line 2.*JSON"):
        derive_keys(Dump.of(path), "envelope-id")


def test_without_ground_truth_arrival_is_epoch_ms_of_every_usable_envelope_time(tmp_path):
    stamps = []
    for stamp in _STAMPS:
        try:
            stamps.append((stamp, epoch_ms(stamp)))
        except NoKey:
            continue
    events = []
    for stamp, _ in sorted(stamps, key=lambda s: s[1]):
        event = copy.deepcopy(_samples()[0])
        event["time"] = stamp
        events.append(event)
    path = tmp_path / "times.jsonl"
    _write_jsonl(path, events)
    keys = derive_keys(Dump.of(path), "envelope-id")
    assert keys.arrival_ms.tolist() == sorted(ms for _, ms in stamps)


def test_without_ground_truth_arrival_is_the_envelope_time_made_non_decreasing(tmp_path):
    events = [copy.deepcopy(_samples()[0]) for _ in range(3)]
    for event, stamp in zip(events, ["2024-03-04T10:00:05Z", "2024-03-04T10:00:01Z", "2024-03-04T10:00:09Z"],
                            strict=True):
        event["time"] = stamp
    path = tmp_path / "dump.jsonl"
    _write_jsonl(path, events)
    keys = derive_keys(Dump.of(path), "auto")
    assert not keys.has_truth
    base = 1709546400000
    assert keys.arrival_ms.tolist() == [base + 5000, base + 5000, base + 9000]


def test_when_two_keys_share_the_top_digest_bits_then_they_are_numbered_apart():
    hi = np.array([5, 5, -1, 7, 5])
    lo = np.array([1, 2, -1, 3, 1])
    codes = number_keys(hi, lo)
    assert codes[2] == -1
    assert codes[0] == codes[4] != codes[1]
    assert len({codes[0], codes[1], codes[3]}) == 3


@pytest.mark.skipif(shutil.which("zstd") is None, reason="needs the zstd command to compress the dump")
def test_a_zstd_dump_keys_like_its_plain_jsonl(tmp_path):
    dump = write_trace(TraceConfig(n_events=2000, source="genesys", seed=8), tmp_path / "t.jsonl", workers=1)
    subprocess.run(["zstd", "-q", str(dump.path), "-o", str(tmp_path / "t.jsonl.zst")], check=True)
    plain, packed = (derive_keys(Dump.of(p), "envelope-id") for p in (dump.path, tmp_path / "t.jsonl.zst"))
    assert Dump.of(tmp_path / "t.jsonl.zst").compression == "zstd"
    assert (plain.codes == packed.codes).all() and (plain.arrival_ms == packed.arrival_ms).all()
    assert packed.has_truth  # t.truth.parquet serves both


def _lines_keys(tmp_path, lines: list[str], spec: str) -> np.ndarray:
    path = tmp_path / "lines.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return derive_keys(Dump.of(path), spec).codes


def _genesys_line(body: str, topic: str = "v2.users.u1.activity", detail_extra: str = "") -> str:
    return ('{"id": "e1", "source": "aws.partner/genesys.com/cloud/o/i", "time": "2024-03-04T00:00:01Z", '
            f'"detail": {{"topicName": "{topic}", "eventBody": {body}{detail_extra}}}}}')


def _nice_line(payload: str, detail_extra: str = "") -> str:
    return ('{"id": "e2", "source": "com.nice.cxone.bridge", "detail-type": "X", '
            '"time": "2024-03-04T00:00:01Z", '
            f'"detail": {{"eventType": "ContactStateChanged", "payload": {payload}{detail_extra}}}}}')


_ACTIVITY = '"routingStatus": {"status": "IDLE", "startTime": "2024-03-04T00:00:00.000Z"}'
#: Lines json.loads reads differently from a first-match JSON reader (a name repeated in an object: the last
#: counts), or that take the other branches of the SQL: each must key exactly as derive_key does.
_RAW_LINES = [
    _genesys_line("{" + _ACTIVITY + "}"),
    _genesys_line("{" + _ACTIVITY + ', "routingStatus": {"status": "BUSY"}}'),
    _genesys_line('{"routingStatus": {"status": "IDLE", "status": "BUSY", "startTime": 1709510400}}'),
    _genesys_line('{"eventTime": 1709510534688, "eventTime": 1709510534689, "participantId": "p"}',
                  "v2.detail.events.conversation.c1.customer.start"),
    _genesys_line('{"eventTime": 1709510534688, "participantId": "p"}',
                  "v2.detail.events.conversation.c1.acw",
                  ', "topicName": "v2.detail.events.conversation.c1.customer.end"'),
    '{"time": 5, "source": "aws.partner/genesys.com/x", "source": "elsewhere", '
    '"detail": {"topicName": "v2.audits.x", "eventBody": {"id": "a1", "eventTime": "2024-03-04T00:00:00Z"}}}',
    _genesys_line('{"transcripts": [{"utteranceId": "u1", "utteranceId": "u2"}], "eventTime": 5}',
                  "v2.conversations.c1.transcription"),
    _genesys_line('{"transcripts": [{"utteranceId": "u1"}, {"x": {"utteranceId": "n"}}, 7], '
                  '"eventTime": 5}', "v2.conversations.c1.transcription"),
    _genesys_line('{"transcripts": [{"utteranceId": "a,b"}, {"utteranceId": "c"}], "communicationId": 12}',
                  "v2.conversations.c1.transcription"),
    _genesys_line('{"transcripts": [{"utteranceId": "\\u00e9\\"x"}]}', "v2.conversations.c1.transcription"),
    _genesys_line('{"id": "a\\u0041", "eventTime": "2024-03-04T00:00:00+01:00"}', "v2.audits.x\\u0041"),
    _genesys_line('{"eventTime": 1709510534688, "event\\u0054ime": 1709510534689, "participantId": "p"}',
                  "v2.detail.events.conversation.c1.customer.start"),
    _genesys_line('{"event\\u0054ime": 1709510534689, "p\\u0061rticipantId": "p"}',
                  "v2.detail.events.conversation.c1.customer.start"),
    _genesys_line('{"presence": {"presenceDefinition": {"id": "p", "id": "q"}, '
                  '"modifiedDate": 1709510400000}}'),
    _genesys_line('{"outOfOffice": {"active": true}, '
                  '"dateActiveQueuesChanged": "2024-03-04T00:00:00.123456Z"}'),
    _genesys_line('{"routingStatus": {"status": 1.0, "startTime": 1e3}}'),
    _genesys_line('{"routingStatus": {"status": -0, "startTime": 123456789012345678901234567890}}'),
    _nice_line('{"ContactID": 1, "ContactID": 2}', ', "createdAt": "2024-03-04T00:00:00Z"'),
    _nice_line('{"ContactID": 1}', ', "createdAt": "2024-03-04T00:00:00Z", "createdAt": 1709510400'),
    _nice_line('{"ContactID": 1, "eventId": null}', ', "eventId": "ev-9"'),
    _nice_line('{"ContactID": 1, "eventId": ""}', ', "eventId": "ev-9", "createdAt": 1709510400'),
    _nice_line('"not an object"', ', "ContactID": 5, "createdAt": 1709510400'),
    _nice_line('{"messageId": "m", "interactionId": "i"}', ', "createdAt": 1709510400'),
    _nice_line('{"CurrentState": "Available", "AgentId": 7, "Type": "AgentState"}', ', "StartTimeUTC": 3'),
    _nice_line('{"sessionId": "s", "EndTimeUTC": "2024-03-04T00:00:00Z"}')
    .replace('"ContactStateChanged"', '""'),
    _nice_line('{"ContactID": 1, "createdAt": 5}').replace('"ContactStateChanged"', "7"),
    _nice_line('{"state": "x", "createdAt": 5}', ', "eventType": "Dup"'),
    '{"id": "e3", "id": "e4", "source": "x", "detail": {}, "time": 5}',
    # Only the names read must not repeat (others may, in an object read for few names); a line repeating a
    # read one (at any depth, escaped, or with space before its colon) goes to Python.
    _genesys_line("{" + _ACTIVITY + ', "x": 1, "x": 2}', detail_extra=', "y": [], "y": {}'),
    _genesys_line('{"presence": {"presenceDefinition": {"id": "p"}}, "presence": {"modifiedDate": 5}}'),
    _genesys_line('{"routingStatus": {"status": "IDLE", "status" : "BUSY", "startTime": 1709510400}}'),
    _genesys_line('{"routingStatus": {"status": "IDLE", "st\\u0061tus": "BUSY", "startTime": 5}}'),
    _genesys_line('{"routingStatus": {"status": "IDLE", "note": "\\"status\\": 1", "startTime": 5}}'),
    _genesys_line("{" + _ACTIVITY + "}", detail_extra=', "eventBody": {"routingStatus": {"status": "B"}}'),
    _genesys_line('{"transcripts": [{"utteranceId": "u1", "utteranceId" : "u2"}], "communicationId": "c"}',
                  "v2.conversations.c1.transcription"),
    _nice_line('{"ContactID": 1}', ', "payload": {"ContactID": 2}'),
    _nice_line('{"ContactID": 1, "x": 1, "x": 2}', ', "createdAt": 1709510400, "z": 1, "z": 2'),
    _nice_line('{"ContactID": 1, "Type": "A", "Type": "B"}', ', "createdAt": 1709510400'),
    _nice_line('{"ContactID": 1}', ', "createdAt": 1709510400, "event\\u0054ype": "Other"'),
    # NaN and Infinity json.loads reads too; inf or nan inside a string is text.
    _genesys_line("{" + _ACTIVITY + ', "q": [NaN, -Infinity], "r": {"s": Infinity}}'),
    _genesys_line("{" + _ACTIVITY + ', "q": ": inf, nan", "r": "[-nan]"}'),
    '{"id": "e5", "source": "x", "detail": {}, "time": 5}',
]


@pytest.mark.parametrize("spec", ["auto", "genesys", "nice", "envelope-id"])
def test_lines_with_repeated_names_and_odd_values_key_as_json_loads_reads_them(tmp_path, spec):
    events = [json.loads(line) for line in _RAW_LINES]
    assert (_lines_keys(tmp_path, _RAW_LINES, spec) == _expected(events, spec)).all()


@pytest.mark.parametrize("spec", ["auto", "genesys", "nice", "envelope-id"])
def test_a_repeated_envelope_time_gives_the_arrival_json_loads_reads(tmp_path, spec):
    lines = [_genesys_line("{" + _ACTIVITY + "}"),
             _nice_line('{"ContactID": 1}', ', "createdAt": 1709510400')]
    lines = [line.replace('"time": "2024-03-04T00:00:01Z"', '"time": 1709510400, "time": 1709510401')
             for line in lines]
    path = tmp_path / "lines.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    assert derive_keys(Dump.of(path), spec).arrival_ms.tolist() == [1709510401000, 1709510401000]


@pytest.mark.parametrize("spec", ["auto", "envelope-id"])
@pytest.mark.parametrize("line", [
    _genesys_line("{" + _ACTIVITY + ",}"), _genesys_line("{" + _ACTIVITY + ', "q": [1, ]}'),
    _genesys_line("{" + _ACTIVITY + ', "q": inf}'), _genesys_line("{" + _ACTIVITY + ', "q": -nan}'),
    _genesys_line("{" + _ACTIVITY + ', "q": [1,\t]}'), _genesys_line("{" + _ACTIVITY + ', "q": [ +inf]}'),
    _genesys_line("{" + _ACTIVITY + ', "q": [1, NAN]}'), _genesys_line("{" + _ACTIVITY + ', "q":\tInf}'),
])
def test_a_line_json_loads_refuses_is_a_bad_message_even_where_duckdb_reads_it(tmp_path, spec, line):
    with pytest.raises(BadMessageError, match="line 2"):
        _lines_keys(tmp_path, [_RAW_LINES[0], line], spec)


_JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0.0, -0.0, 1.0, 1.5, 1e21, 1e-7, 2.0**60, 1709510470.5]),
    st.text(max_size=8), st.sampled_from(["", "a\"b", "a\\b", "é", "\u2028", "\U0001f600", "x\ny", "id-1"]),
)
_JSON_VALUES = st.one_of(
    _JSON_SCALARS, st.lists(_JSON_SCALARS, max_size=3),
    st.dictionaries(st.sampled_from(["utteranceId", "a", "id"]), _JSON_SCALARS, max_size=2))
_ZONES = st.sampled_from([None, dt.UTC, dt.timezone(dt.timedelta(hours=-5))])
_TIMES = st.one_of(st.sampled_from(_STAMPS), st.integers(min_value=-(10**14), max_value=10**14),
                   st.datetimes(timezones=_ZONES).map(lambda d: d.isoformat()))


@st.composite
def _vendor_events(draw: st.DrawFn) -> list[dict]:
    """Sample envelopes with some of their family's fields (and names around them) set to odd values."""
    events = []
    for base in draw(st.lists(st.sampled_from(_samples()), min_size=1, max_size=12)):
        event = copy.deepcopy(base)
        detail = event["detail"]
        body = detail.get("eventBody", detail.get("payload", detail))
        names = sorted(set(body) | {"eventTime", "ContactID", "createdAt", "state", "eventId", "transcripts"})
        for name in draw(st.lists(st.sampled_from(names), max_size=3)):
            time_like = "Time" in name or "Date" in name or name in ("createdAt", "timestamp")
            value = draw(_TIMES if time_like and draw(st.booleans()) else _JSON_VALUES)
            if name == "transcripts" and draw(st.booleans()):
                value = draw(st.lists(st.dictionaries(st.just("utteranceId"), _JSON_SCALARS), max_size=3))
            draw(st.sampled_from([body, detail]))[name] = value
        events.append(event)
    return events


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(events=_vendor_events(), ascii_only=st.booleans())
def test_vendor_keys_of_odd_field_values_equal_derive_key(tmp_path, events, ascii_only):
    lines = [json.dumps(e, ensure_ascii=ascii_only) for e in events]
    for spec in ("auto", "nice"):
        assert (_lines_keys(tmp_path, lines, spec) == _expected(events, spec)).all()

