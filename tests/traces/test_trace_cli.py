"""``dedup trace | sweep | analyze`` end to end, through the real entry point."""

from __future__ import annotations

import json

import pytest

from dedup.cli import main
from dedup.cli.traces import parse_duration
from dedup.errors import ConfigurationError


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
