"""What every benchmark module shares: timing, and side-by-side tables against baselines.

A benchmark module is ``benchmarks/bench_<area>.py`` with a function
``run(quick: bool) -> list[Comparison]``. ``python -m benchmarks`` runs them all
in one process and prints every comparison as a table, each target under it
with this run's figure and whether it was met; ``--quick`` shrinks sizes for a
smoke run. Figures are measured, never asserted in tests.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Row:
    """One measured case: ``value`` in ``unit`` (higher is better unless ``lower_is_better``).

    ``extra`` holds further figures of the case by column heading (``None``: not measured).
    """

    name: str
    value: float
    unit: str = "events/s"
    lower_is_better: bool = False
    extra: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    """A goal in words, what this run measured against it, and whether that meets it."""

    goal: str
    figure: str
    met: bool

    def render(self) -> str:
        return f"  target: {self.goal}: {self.figure}  {'met' if self.met else 'NOT met'}"


@dataclass
class Comparison:
    """Cases measured side by side; ratios are taken against the row named ``baseline``."""

    title: str
    baseline: str
    rows: list[Row] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)

    def value(self, name: str) -> float:
        return next(r.value for r in self.rows if r.name == name)

    def ratio(self, name: str, baseline: str | None = None) -> float:
        """``name``'s value over the baseline's (inverted when lower is better)."""
        base = self.value(baseline or self.baseline)
        row = next(r for r in self.rows if r.name == name)
        if row.lower_is_better:
            return base / row.value if row.value else float("inf")
        return row.value / base if base else float("inf")

    def target_ratio(self, name: str, at_least: float, baseline: str | None = None,
                     goal: str = "") -> Target:
        """Add (and return) the target ``name`` >= ``at_least`` x ``baseline`` (default: the table's)."""
        ratio = self.ratio(name, baseline)
        target = Target(goal or f"{name} >= {at_least:g}x {baseline or self.baseline}",
                        f"{ratio:.2f}x", ratio >= at_least)
        self.targets.append(target)
        return target

    def render(self) -> str:
        headings = list(dict.fromkeys(h for r in self.rows for h in r.extra))
        table = [["", "", "vs baseline", *headings]]
        for r in self.rows:
            ratio = "baseline" if r.name == self.baseline else f"{self.ratio(r.name):.2f}x"
            table.append([r.name, f"{_figure(r.value)} {r.unit}", ratio,
                          *(_figure(r.extra.get(h)) for h in headings)])
        widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
        lines = [f"## {self.title}"]
        for line in table:
            cells = [line[0].ljust(widths[0])]
            cells += [c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)]
            lines.append("  " + "  ".join(cells).rstrip())
        lines += [t.render() for t in self.targets]
        return "\n".join(lines)


def _figure(value: float | None) -> str:
    """A figure with as many decimals as its size needs."""
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def run_for(fn: Callable[[], int], *, min_time_s: float) -> tuple[int, float]:
    """Call ``fn`` (it returns how many events it handled) for ``min_time_s``: (events, seconds)."""
    count, start = 0, time.perf_counter()
    while True:
        count += fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time_s:
            return count, elapsed


def rate(fn: Callable[[], int], *, min_time_s: float = 0.3) -> float:
    """Events/s of ``fn`` called for ``min_time_s`` (see :func:`run_for`)."""
    count, seconds = run_for(fn, min_time_s=min_time_s)
    return count / seconds


def interleaved(contenders: dict[str, Callable[[], float]], rounds: int,
                before_round: Callable[[], object] | None = None) -> dict[str, float]:
    """Median of each contender's figure over ``rounds`` rounds, contenders alternated within a round.

    Each round runs every contender once, starting one further along than the round
    before, so a machine whose load drifts (or a contender that warms the next)
    hurts every contender alike. ``before_round`` runs, untimed, before each round
    (the Redis benchmark re-calibrates its delaying proxy there).
    """
    names = list(contenders)
    figures: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        if before_round is not None:
            before_round()
        for name in names[i % len(names):] + names[:i % len(names)]:
            figures[name].append(contenders[name]())
    return {name: statistics.median(values) for name, values in figures.items()}
