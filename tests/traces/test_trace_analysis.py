"""Recommendations, strategy comparison, and the duplicate structure of a trace without ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from trace_support import KEYS, small_trace

from dedup.analysis import (
    DEFAULT_WINDOWS_S,
    compare_strategies,
    duplicate_delays,
    meets,
    recommend,
    repeat_gaps,
    repeat_structure,
    sweep,
)
from dedup.traces import read_jsonl, write_jsonl


def test_recommendation_is_the_smallest_swept_window_meeting_the_target():
    trace = small_trace("genesys", seed=2, n_events=20_000)
    rec = recommend(trace, "auto", target_caught_pct=99.0)
    assert rec.met and rec.metrics["caught_pct"] >= 99.0 and rec.metrics["false_drops"] == 0
    smaller = [w for w in DEFAULT_WINDOWS_S if w < rec.window_s]
    assert not meets(sweep(trace, "auto", smaller), 99.0, 0).any()
    assert sweep(trace, "auto", [rec.window_s]).iloc[0].to_dict() == rec.metrics


def test_an_unreachable_target_says_how_close_it_got():
    rec = recommend(small_trace("genesys", seed=2), "envelope-id")
    assert not rec.met and rec.window_s is None
    assert "best caught" in rec.reason and "no window meets" in str(rec)


def test_recommend_needs_ground_truth(tmp_path):
    path = tmp_path / "t.jsonl"
    write_jsonl(small_trace(n_events=100), path, truth=False)
    with pytest.raises(ValueError, match="ground truth"):
        recommend(read_jsonl(path))


def test_strategy_comparison_puts_every_key_at_the_first_ones_recommended_window():
    trace = small_trace("genesys", seed=3, n_events=10_000)
    keys = {"auto": "auto", "envelope-id": "envelope-id"}
    table = compare_strategies(trace, keys, target_caught_pct=99.0).set_index("key")
    rec = recommend(trace, "auto", target_caught_pct=99.0)
    assert (table["window_s"] == rec.window_s).all()
    assert table.loc["auto", "recommended_window_s"] == rec.window_s
    assert np.isnan(table.loc["envelope-id", "recommended_window_s"])
    assert table.loc["envelope-id", "leaked"] > table.loc["auto", "leaked"]


def test_strategy_comparison_falls_back_to_five_minutes_when_the_first_key_cannot_meet_the_target():
    table = compare_strategies(small_trace("genesys", seed=3), KEYS)
    assert (table["window_s"] == 300.0).all()


def test_repeat_structure_of_a_trace_without_truth_matches_what_generated_it(tmp_path):
    trace = small_trace("mixed", seed=6, n_events=10_000)
    path = tmp_path / "dump.jsonl"
    write_jsonl(trace, path, truth=False)
    table = repeat_structure(read_jsonl(path), list(KEYS.values())).set_index("key")
    f = trace.frame
    envelope_seen_before = f.duplicated(["logical_id", "publish_no"])
    by_id = table.loc["envelope-id"]
    assert by_id["repeats"] == envelope_seen_before.sum() > 0
    assert by_id["same_payload"] == by_id["repeats"]  # redeliveries are identical envelopes
    (auto_keys,) = trace.keys("auto")
    keyed_copies = ((f["kind"] != "original") & (auto_keys.codes >= 0)).sum()
    assert table.loc["auto", "repeats"] == keyed_copies
    coarse = table.loc[KEYS["conversationId"]]
    assert coarse["other_payload"] > coarse["same_payload"]  # distinct events collide on the coarse key


def test_gaps_of_envelope_id_repeats_are_sqs_redeliveries_or_late_retries():
    trace = small_trace("genesys", seed=6, n_events=10_000)
    gaps = repeat_gaps(trace, "envelope-id")
    assert len(gaps) > 0 and gaps.min() >= trace.config.duplicates.visibility_timeout_s


def test_duplicate_delays_by_kind():
    delays = duplicate_delays(small_trace("genesys", seed=6, n_events=10_000))
    median = delays.groupby("kind", observed=True)["delay_s"].median()
    assert median["publish"] < 10 < median["delivery"] < 60 < median["late"]
    assert np.isfinite(delays["delay_s"]).all()
