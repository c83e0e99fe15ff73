"""Figures: returned (never shown), titled, axes labelled with units, legends, and they render."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from matplotlib.figure import Figure
from trace_support import KEYS, small_trace

from dedup import plots
from dedup.analysis import DEFAULT_WINDOWS_S, compare_strategies, duplicate_delays, repeat_gaps, sweep


@pytest.fixture(scope="module")
def trace():
    return small_trace("genesys", seed=5, n_events=8000)


@pytest.fixture(scope="module")
def sweeps(trace):
    return pd.concat([sweep(trace, k, DEFAULT_WINDOWS_S[::3]).assign(key=label) for label, k in KEYS.items()])


def _check(fig: Figure, axes: int) -> None:
    assert isinstance(fig, Figure)
    assert len(fig.axes) == axes
    for ax in fig.axes:
        assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    assert any(ax.get_legend() is not None for ax in fig.axes)
    png = io.BytesIO()
    fig.savefig(png, format="png")
    assert png.getvalue().startswith(b"\x89PNG")


def test_caught_and_leaked_has_a_line_per_key(sweeps):
    fig = plots.caught_and_leaked(sweeps)
    _check(fig, 2)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert set(KEYS) <= set(labels)
    assert "(log scale)" in fig.axes[0].get_xlabel()


def test_memory_is_in_bytes(sweeps):
    fig = plots.memory(sweeps, store="redis")
    _check(fig, 1)
    assert "bytes" in fig.axes[0].get_ylabel()


def test_duplicate_delays_mark_the_window(trace):
    fig = plots.duplicate_delays(duplicate_delays(trace), windows_s=[300.0])
    _check(fig, 1)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "window 5 min" in labels and any(label.startswith("publish") for label in labels)


def test_strategy_comparison_has_a_bar_per_key(trace):
    fig = plots.strategy_comparison(compare_strategies(trace, KEYS))
    _check(fig, 3)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == list(KEYS)


def test_repeat_gaps_draws_each_key(trace):
    fig = plots.repeat_gaps({label: repeat_gaps(trace, k) for label, k in KEYS.items()})
    _check(fig, 1)


@pytest.mark.parametrize(("seconds", "text"), [(0.25, "250 ms"), (45, "45 s"), (600, "10 min"),
                                               (5400, "1.5 h"), (172_800, "2 d")])
def test_durations_read_naturally(seconds, text):
    assert plots.duration_label(seconds) == text
