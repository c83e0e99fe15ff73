"""JSONL in and out: round trips with ground truth, SQS dumps, and bad lines that are reported."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from samples import load_event
from trace_support import small_trace

from dedup.analysis import sweep
from dedup.errors import BadMessageError
from dedup.keys import epoch_ms
from dedup.traces import read_jsonl, truth_path, write_csv, write_jsonl


def test_jsonl_round_trip_keeps_envelopes_and_ground_truth(tmp_path):
    trace = small_trace("mixed", seed=4, n_events=1500)
    path = tmp_path / "trace.jsonl"
    sidecar = write_jsonl(trace, path)
    assert sidecar == truth_path(path) == tmp_path / "trace.truth.csv"
    lines = path.read_text().splitlines()
    assert len(lines) == len(trace)
    assert json.loads(lines[0]) == trace.envelope(0)
    loaded = read_jsonl(path)
    assert loaded.has_truth
    assert list(loaded.envelopes()) == list(trace.envelopes())
    for column in ("arrival_ms", "logical_id", "kind", "original_arrival_ms"):
        assert loaded.frame[column].tolist() == trace.frame[column].tolist()
    windows = [1.0, 45.0, 3600.0]
    pd.testing.assert_frame_equal(sweep(loaded, "auto", windows), sweep(trace, "auto", windows))


def test_without_truth_arrival_comes_from_the_envelope_time(tmp_path):
    trace = small_trace("genesys", seed=4, n_events=300)
    path = tmp_path / "plain.jsonl"
    assert write_jsonl(trace, path, truth=False) is None
    loaded = read_jsonl(path)
    assert not loaded.has_truth
    times = [epoch_ms(e["time"]) for e in trace.envelopes()]
    assert (loaded.arrival_ms == np.maximum.accumulate(times)).all()


def test_sqs_records_and_messages_are_unwrapped(tmp_path):
    lambda_event = load_event("lambda_sqs_event_mixed.json")
    message = load_event("sqs_message_genesys_customer_start.json")
    path = tmp_path / "dump.jsonl"
    lines = [lambda_event, message, json.loads(message["Body"]), message["Body"]]  # the last: a body string
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    records = lambda_event["Records"]
    bad = [k for k, r in enumerate(records, start=1) if not r["body"].startswith("{")]
    with pytest.raises(BadMessageError, match=rf"dump\.jsonl:1 record {bad[0]}.*not JSON"):
        read_jsonl(path)
    loaded = read_jsonl(path, errors="collect")
    assert [where for where, _ in loaded.rejected] == [f"1 record {k}" for k in bad]
    good = [r for k, r in enumerate(records, start=1) if k not in bad]
    assert len(loaded) == len(good) + 3
    assert list(loaded.envelopes())[: len(good)] == [json.loads(r["body"]) for r in good]
    assert loaded.envelope(len(good)) == loaded.envelope(len(good) + 1) == json.loads(message["Body"])
    assert loaded.frame["message_id"][0] == good[0]["messageId"]
    assert loaded.frame["arrival_ms"][0] == int(good[0]["attributes"]["SentTimestamp"])


def test_a_bad_line_is_reported_with_its_number(tmp_path):
    good = json.dumps(small_trace("genesys", n_events=5).envelope(0))
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([good, "{not json", json.dumps({"id": "x"}), good]) + "\n")
    with pytest.raises(BadMessageError, match=r"bad\.jsonl:2.*JSON") as error:
        read_jsonl(path)
    assert error.value.message_id == "bad.jsonl:2"
    loaded = read_jsonl(path, errors="collect")
    assert len(loaded) == 2
    assert [where for where, _ in loaded.rejected] == ["2", "3"]
    assert "not an EventBridge envelope" in loaded.rejected[1][1]


def test_a_truth_sidecar_that_does_not_match_is_refused(tmp_path):
    trace = small_trace("genesys", n_events=50)
    path = tmp_path / "t.jsonl"
    write_jsonl(trace, path)
    with path.open("a") as out:
        out.write(json.dumps(trace.envelope(0)) + "\n")
    with pytest.raises(ValueError, match="50 rows for 51 envelopes"):
        read_jsonl(path)


def test_csv_is_the_readable_table(tmp_path):
    trace = small_trace("nice", n_events=200)
    path = tmp_path / "t.csv"
    write_csv(trace, path)
    table = pd.read_csv(path)
    assert len(table) == 200
    assert table["envelope_id"].tolist() == [e["id"] for e in trace.envelopes()]
    assert {"arrival", "kind", "logical_id", "delay_s", "source", "detail_type"} <= set(table.columns)
