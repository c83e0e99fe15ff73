"""Figures of the window-tuning analytics, as matplotlib :class:`~matplotlib.figure.Figure` objects.

Every function builds its figure with the object-oriented API (no ``pyplot``
state, safe under the Agg backend and in threads) and returns it: show it in
a notebook, or ``fig.savefig(path)``. Windows are drawn on a log axis labelled
in seconds, minutes, hours and days.

A bare ``Figure`` has no image form of its own: Jupyter shows its text
(``<Figure size ...>``) unless pyplot's inline backend happens to be set up.
So the figures made here are :class:`InlineFigure` objects, which display as
a PNG wherever IPython shows them (a cell's value, ``display``, an ipywidgets
``Output``), and :func:`png_bundle` turns any figure into that display form.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

from dedup.extras import needs_extras

with needs_extras():  # figures need dedup[workbench]; say so in one line
    import numpy as np
    import pandas as pd
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter, FuncFormatter, NullFormatter

from dedup.analysis import duration_label

_DURATION_TICKS_S = (1, 10, 60, 600, 3600, 6 * 3600, 86_400, 7 * 86_400)
_KIND_COLOURS = {"delivery": "tab:blue", "publish": "tab:orange", "late": "tab:red"}
#: Resolution of figures shown inline (and saved by the workbench).
INLINE_DPI = 110


def png_bundle(fig: Figure, *, dpi: float = INLINE_DPI) -> dict[str, str]:
    """``fig`` as a Jupyter display bundle: the PNG (base64) and a one-line text naming it.

    The text replaces matplotlib's ``<Figure size ...>``: it says what the
    figure shows, for a reader without images (a terminal, a diff).
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return {"image/png": base64.b64encode(buffer.getvalue()).decode("ascii"),
            "text/plain": f"[figure: {figure_title(fig)}]"}


def figure_title(fig: Figure) -> str:
    """The figure's suptitle, else its axes titles joined, else ``untitled``."""
    suptitle = fig.get_suptitle()
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    return suptitle or " | ".join(titles) or "untitled"


class InlineFigure(Figure):
    """A :class:`~matplotlib.figure.Figure` that IPython displays as a PNG image."""

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return png_bundle(self)


def _window_axis(ax, label: str = "Dedup window") -> None:
    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    ticks = [t for t in (0.001, 0.01, 0.1, *_DURATION_TICKS_S) if lo <= t <= hi]
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: duration_label(x)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"{label} (log scale)")
    ax.grid(True, which="major", alpha=0.3)


def _by_key(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    keys = frame["key"].unique() if "key" in frame.columns else ["trace"]
    return [(str(k), frame[frame["key"] == k].sort_values("window_s") if "key" in frame.columns else frame)
            for k in keys]


def caught_and_leaked(sweeps: pd.DataFrame, *, target_caught_pct: float | None = 99.9) -> Figure:
    """Duplicates caught (%) and events processed twice or wrongly dropped, against the window.

    ``sweeps``: :func:`dedup.analysis.sweep` output (several keys concatenated
    are drawn as one line each).
    """
    fig = InlineFigure(figsize=(11, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    for i, (key, rows) in enumerate(_by_key(sweeps)):
        colour = f"C{i}"
        left.plot(rows["window_s"], rows["caught_pct"], color=colour, marker=".", label=key)
        right.plot(rows["window_s"], rows["leaked"], color=colour)
        right.plot(rows["window_s"], rows["false_drops"], color=colour, linestyle="--")
    if target_caught_pct is not None:
        left.axhline(target_caught_pct, color="grey", linestyle=":", label=f"target {target_caught_pct:g}%")
    left.set_title("Duplicates caught")
    left.set_ylabel("Caught / keyed duplicates (%)")
    left.set_ylim(top=100.5)
    right.set_title("Dedup failures")
    right.set_ylabel("Messages (symlog scale)")
    right.set_yscale("symlog", linthresh=1)
    right.plot([], [], color="black", label="leaked (processed twice)")
    right.plot([], [], color="black", linestyle="--", label="false drops (distinct events suppressed)")
    left.legend(fontsize="small", title="key strategy")
    right.legend(fontsize="small", title="line style (colour: key)")
    for ax in (left, right):
        _window_axis(ax)
    fig.suptitle(f"Caught and leaked duplicates vs window ({_mode_text(sweeps)})")
    return fig


def memory(sweeps: pd.DataFrame, *, store: str = "redis") -> Figure:
    """Peak and mean store memory (and live keys) against the window."""
    fig = InlineFigure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.subplots()
    for i, (key, rows) in enumerate(_by_key(sweeps)):
        ax.plot(rows["window_s"], rows["peak_memory_bytes"], color=f"C{i}", marker=".", label=f"{key}: peak")
        ax.plot(rows["window_s"], rows["mean_memory_bytes"], color=f"C{i}", linestyle="--",
                label=f"{key}: mean")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(EngFormatter(unit="B"))
    ax.set_ylabel(f"Estimated {store} memory (bytes, log scale)")
    ax.set_title(f"Store memory vs window ({_mode_text(sweeps)})")
    _window_axis(ax)
    ax.legend(fontsize="small")
    return fig


def duplicate_delays(delays: pd.DataFrame, *, windows_s: Sequence[float] = ()) -> Figure:
    """How long after the original each kind of duplicate arrives (log-spaced histogram).

    ``delays``: :func:`dedup.analysis.duplicate_delays` output; ``windows_s``
    are drawn as vertical lines (e.g. a recommended window).
    """
    fig = InlineFigure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    positive = delays["delay_s"][delays["delay_s"] > 0]
    lo = max(float(positive.min()), 1e-3) if len(positive) else 1e-3
    hi = max(float(delays["delay_s"].max()), lo * 10) if len(delays) else 1.0
    bins = np.geomspace(lo, hi * 1.01, 60)
    for kind, rows in delays.groupby("kind", observed=True):
        ax.hist(rows["delay_s"].clip(lower=lo), bins=bins, alpha=0.6, color=_KIND_COLOURS.get(str(kind)),
                label=f"{kind} ({len(rows):,})")
    for w in windows_s:
        ax.axvline(w, color="black", linestyle=":", label=f"window {duration_label(w)}")
    ax.set_yscale("log")
    ax.set_ylabel("Duplicate messages (log scale)")
    ax.set_title("Delay of duplicates after their original's arrival")
    _window_axis(ax, "Delay after the original")
    ax.legend(fontsize="small")
    return fig


def strategy_comparison(table: pd.DataFrame) -> Figure:
    """Key strategies side by side: caught %, failures, and memory at a common window.

    ``table``: :func:`dedup.analysis.compare_strategies` output.
    """
    fig = InlineFigure(figsize=(12, 4.2), layout="constrained")
    axes = fig.subplots(1, 3)
    labels = table["key"].astype(str).tolist()
    x = np.arange(len(labels))
    colours = [f"C{i}" for i in range(len(labels))]
    axes[0].bar(x, table["caught_pct"], color=colours)
    axes[0].set_ylabel("Caught / keyed duplicates (%)")
    axes[0].set_title("Duplicates caught")
    axes[0].set_ylim(0, 105)
    width = 0.4
    axes[1].bar(x - width / 2, table["leaked"], width, label="leaked (processed twice)", color="tab:red")
    axes[1].bar(x + width / 2, table["false_drops"], width, label="false drops", color="tab:purple")
    axes[1].set_yscale("symlog", linthresh=1)
    axes[1].set_ylabel("Messages (symlog scale)")
    axes[1].set_title("Dedup failures")
    axes[1].legend(fontsize="small")
    axes[2].bar(x, table["peak_memory_bytes"], color=colours)
    axes[2].yaxis.set_major_formatter(EngFormatter(unit="B"))
    axes[2].set_ylabel("Peak store memory (bytes)")
    axes[2].set_title("Memory")
    for ax in axes:
        ax.set_xticks(x, labels, rotation=15)
        ax.set_xlabel("Key strategy")
        ax.grid(True, axis="y", alpha=0.3)
    window = table["window_s"].iloc[0] if len(table) else float("nan")
    fig.suptitle(f"Key strategies at a {duration_label(window)} window ({_mode_text(table)})")
    return fig


def repeat_gaps(gaps_s: Mapping[str, np.ndarray]) -> Figure:
    """Cumulative share of key repeats by gap since the previous sighting, per key strategy.

    Read it as: a sliding window of x catches y% of the repeats of that key.
    """
    fig = InlineFigure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.subplots()
    for i, (label, gaps) in enumerate(gaps_s.items()):
        gaps = np.sort(np.asarray(gaps, dtype=float))
        if len(gaps):
            share = 100.0 * np.arange(1, len(gaps) + 1) / len(gaps)
            ax.step(np.maximum(gaps, 1e-3), share, where="post", color=f"C{i}",
                    label=f"{label} ({len(gaps):,})")
    ax.set_ylabel("Repeats within the gap (%)")
    ax.set_ylim(0, 101)
    ax.set_title("Gaps between repeated keys")
    _window_axis(ax, "Gap since the key's previous sighting")
    ax.legend(fontsize="small", title="key (repeats)")
    return fig


def _mode_text(frame: pd.DataFrame) -> str:
    modes = sorted(frame["mode"].unique()) if "mode" in frame.columns and len(frame) else []
    return f"{'/'.join(modes)} window" if modes else "window"


def window_sensitivity(table: pd.DataFrame) -> Figure:
    """The recommended window against the assumed late-duplicate share, one line per longest delay.

    ``table``: :func:`dedup.analysis.window_sensitivity` output.
    """
    fig = InlineFigure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.subplots()
    for i, (late_max_s, rows) in enumerate(table.groupby("late_max_s")):
        rows = rows.sort_values("late_p")
        ax.plot(100 * rows["late_p"], rows["recommended_window_s"] / 3600, color=f"C{i}", marker="o",
                label=f"late copies up to {duration_label(float(late_max_s))}")
    shares = sorted(table["late_p"].unique())
    ax.set_xscale("log")
    ax.set_xticks([100 * p for p in shares], [f"{100 * p:g}%" for p in shares])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(bottom=0)
    ax.set_xlabel("Assumed late-duplicate share (% of events, log scale)")
    ax.set_ylabel("Recommended window (hours)")
    ax.set_title("The recommended window rests on the assumed late tail")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="small", title="assumed delay range")
    return fig
