"""The issue's "done when", computed on the default Genesys trace (nothing here is hard-coded).

* envelope-id keys leak every producer re-publish (a new envelope id each time);
* a conversationId-only key drops distinct events of a conversation (false drops);
* the default Genesys strategy at the recommended window catches >= 99.9% of the
  duplicates it can key, with zero false drops.
"""

from __future__ import annotations

import pytest
from trace_support import KEYS

from dedup.analysis import PROCESSED, outcomes, recommend, replay, sweep

WINDOWS_S = [1.0, 60.0, 300.0, 3600.0, 86_400.0]


@pytest.mark.parametrize("window_s", WINDOWS_S)
def test_envelope_id_keys_leak_every_publish_duplicate(default_trace, window_s):
    publish = (default_trace.frame["kind"] == "publish").to_numpy()
    assert publish.sum() > 0
    result = outcomes(default_trace, KEYS["envelope-id"], window_s)
    assert (result[publish] == PROCESSED).all()
    assert sweep(default_trace, KEYS["envelope-id"], [window_s]).iloc[0]["leaked"] >= publish.sum()


@pytest.mark.parametrize("window_s", WINDOWS_S)
def test_a_conversation_id_only_key_causes_false_drops(default_trace, window_s):
    row = sweep(default_trace, KEYS["conversationId"], [window_s]).iloc[0]
    assert row["false_drops"] > 0


@pytest.mark.parametrize("key", ["auto", "genesys"])
def test_the_genesys_strategy_at_the_recommended_window_catches_999_permille_without_false_drops(
    default_trace, key
):
    rec = recommend(default_trace, key, target_caught_pct=99.9, max_false_drops=0)
    assert rec.met, rec.reason
    assert rec.metrics["caught_pct"] >= 99.9
    assert rec.metrics["false_drops"] == 0
    assert rec.metrics["caught"] > 0


def test_the_recommendation_holds_in_a_replay_through_the_real_deduplicator(default_trace):
    rec = recommend(default_trace, "auto")
    assert replay(default_trace, "auto", rec.window_s).metrics == rec.metrics
