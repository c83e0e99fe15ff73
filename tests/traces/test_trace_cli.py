"""``dedup trace | sweep | analyze`` end to end, through the real entry point."""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import pytest

from dedup.analysis import STORE_BYTES_PER_KEY, sweep
from dedup.cli import build_parser, main
from dedup.cli.traces import parse_duration
from dedup.errors import ConfigurationError
from dedup.traces import logical_events, read_jsonl


def test_trace_writes_jsonl_with_truth_then_sweep_and_analyze_read_it(tmp_path, capsys):
    path = tmp_path / "t.jsonl"
    assert main(["trace", "-n", "3000", "--seed", "4", "-o", str(path)]) == 0
    assert len(path.read_text().splitlines()) == 3000
    assert (tmp_path / "t.truth.csv").exists()
    assert "3,000 messages" in capsys.readouterr().out

    assert main(["sweep", "--trace", str(path), "--windows", "1s,1m,1h", "--key", "auto",
                 "--key", "envelope-id", "--csv", str(tmp_path / "s.csv"), "--target", "99"]) == 0
    out = capsys.readouterr().out
    assert "Recommendation" in out and "envelope-id (fixed): no window meets the target" in out
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 1 + 2 * 3

    assert main(["analyze", str(path), "--plot", str(tmp_path / "gaps.png")]) == 0
    out = capsys.readouterr().out
    assert "Key repeats" in out and "Ground truth found" in out
    assert (tmp_path / "gaps.png").stat().st_size > 0


def test_sweep_on_a_generated_trace_writes_figures(tmp_path, capsys):
    assert main(["sweep", "-n", "3000", "--mode", "sliding", "--windows", "30s,5m,6h",
                 "--plots", str(tmp_path)]) == 0
    assert "sliding window" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "caught_leaked.png", "duplicate_delays.png", "memory.png", "strategies.png"]


def test_trace_writes_the_readable_csv(tmp_path):
    assert main(["trace", "-n", "100", "--source", "nice", "-o", str(tmp_path / "t.csv")]) == 0
    assert (tmp_path / "t.csv").read_text().startswith("arrival,")


def test_analyze_reports_a_bad_line_and_its_number(tmp_path, capsys):
    path = tmp_path / "dump.jsonl"
    path.write_text(json.dumps({"source": "x", "time": "2024-03-04T00:00:00Z", "detail": {}}) + "\noops\n")
    assert main(["analyze", str(path)]) == 2
    assert "dump.jsonl:2" in capsys.readouterr().err
    assert main(["analyze", str(path), "--errors", "collect"]) == 0
    assert "line 2: JSON error" in capsys.readouterr().out


def test_unknown_output_format_is_a_clear_error(tmp_path, capsys):
    assert main(["trace", "-n", "10", "-o", str(tmp_path / "t.parquet")]) == 2
    assert ".jsonl or .csv" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "seconds"), [("30", 30), ("250ms", 0.25), ("5m", 300), ("1.5h", 5400),
                                               ("2d", 172_800)])
def test_durations_parse(text, seconds):
    assert parse_duration(text) == seconds


def test_a_bad_duration_is_refused():
    with pytest.raises(ConfigurationError, match="not a duration"):
        parse_duration("soon")


# ---- bring your own dump -------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = [ROOT / "data" / "sample_genesys.jsonl", ROOT / "data" / "sample_nice.jsonl"]


def _analyze_json(capsys, *args: str) -> dict:
    assert main(["analyze", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_analyze_json_recommends_a_key_mode_and_window_for_the_committed_samples(sample, capsys):
    report = _analyze_json(capsys, str(sample), "--ignore-truth")

    rec = report["recommendation"]
    assert {"key", "mode", "window_s", "live_keys", "memory_bytes", "why", "warnings"} <= set(rec)
    assert {"auto", "auto|fingerprint", "envelope-id"} <= {c["key"] for c in report["candidates"]}
    assert rec["covered_pct"] >= rec["target_pct"]
    # The smallest such window: a second shorter covers less of the chosen key's repeats.
    trace = read_jsonl(sample, truth=False)
    repeats = next(c["repeats"] for c in report["candidates"] if c["key"] == rec["key"])
    shorter = sweep(trace, rec["key"], [rec["window_s"] - 1], rec["mode"]).iloc[0]
    assert 100 * shorter["suppressed"] / repeats < rec["target_pct"]
    assert rec["memory_bytes"] == rec["live_keys"] * STORE_BYTES_PER_KEY["redis"]
    assert any("envelope-id" in line and "misses" in line for line in rec["why"]), rec["why"]


def test_analyze_prints_the_recommendation_with_its_reasons(capsys):
    assert main(["analyze", str(SAMPLES[0])]) == 0
    out = capsys.readouterr().out
    assert "Key repeats" in out and "Ground truth found" in out
    assert "Recommendation: key " in out and "Why:" in out


def _sqs_message(envelope: dict, sent_ms: int, message_id: str) -> dict:
    return {"MessageId": message_id, "ReceiptHandle": "rh", "Body": json.dumps(envelope),
            "Attributes": {"SentTimestamp": str(sent_ms), "ApproximateReceiveCount": "1"}}


def test_analyze_reads_gzipped_aws_cli_receive_message_output_and_warns_about_a_short_dump(tmp_path, capsys):
    envelopes = logical_events(6, source="genesys", seed=3)
    t0 = 1_709_510_400_000
    messages = [_sqs_message(e, t0 + 1000 * i, f"m{i}") for i, e in enumerate(envelopes)]
    # A publish retry of the first event (new envelope id), 40 s later; pretty-printed documents in a row,
    # as `aws sqs receive-message` appends them in a shell loop.
    messages.append(_sqs_message({**envelopes[0], "id": "republished"}, t0 + 40_000, "m-retry"))
    text = "".join(json.dumps({"Messages": messages[k:k + 3]}, indent=4) + "\n" for k in range(0, 7, 3))
    path = tmp_path / "dump.json.gz"
    path.write_bytes(gzip.compress(text.encode()))

    report = _analyze_json(capsys, str(path), "--key", "auto", "--key", "envelope-id")

    assert report["messages"] == 7 and report["arrival_from"] == "SentTimestamp"
    rec = report["recommendation"]
    assert rec["key"] == "auto", "only auto sees the re-publish"
    assert rec["window_s"] > 39, "the window covers the 40 s gap"
    assert any("spans" in w and "less than" in w for w in rec["warnings"]), rec["warnings"]


def test_analyze_warns_when_the_key_joins_messages_with_different_payloads(tmp_path, capsys):
    coarse = "business:detail.eventBody.conversationId"
    report = _analyze_json(capsys, str(SAMPLES[0]), "--ignore-truth", "--key", coarse)

    assert report["recommendation"]["key"] == coarse
    assert any("joins" in w and "payload differs" in w for w in report["recommendation"]["warnings"])


@pytest.mark.parametrize("command", [["analyze", "{missing}"], ["sweep", "--trace", "{missing}"],
                                     ["analyze", "{directory}"], ["analyze", "{garbled}"]])
def test_a_file_that_cannot_be_read_is_one_line_and_exit_2(command, tmp_path, capsys):
    garbled = tmp_path / "garbled.jsonl.gz"
    garbled.write_bytes(b"\x1f\x8bnot really gzip")
    paths = {"missing": tmp_path / "nosuch.jsonl", "directory": tmp_path, "garbled": garbled}

    assert main([part.format(**paths) for part in command]) == 2

    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("dedup: error: ") and "Traceback" not in err


def test_every_option_of_every_command_has_help_text():
    missing = []

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*path, name])
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), ["dedup"])
    assert missing == []
