"""What every benchmark module shares: timing, and ratio tables against baselines.

A benchmark module is ``benchmarks/bench_<area>.py`` with a function
``run(quick: bool) -> list[Comparison]``. ``python -m benchmarks`` runs them all
in one process and prints every comparison side by side; ``--quick`` shrinks
sizes for a smoke run. Figures are measured, never asserted in tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Row:
    """One measured case: ``value`` in ``unit`` (higher is better unless ``lower_is_better``)."""

    name: str
    value: float
    unit: str = "events/s"
    lower_is_better: bool = False


@dataclass
class Comparison:
    """Cases measured side by side; ratios are taken against the row named ``baseline``.

    ``target`` is the goal in words (e.g. ">= 3x per-event SET NX") and ``met``
    whether this run met it (``None`` when there is no target).
    """

    title: str
    baseline: str
    rows: list[Row] = field(default_factory=list)
    target: str = ""
    met: bool | None = None

    def value(self, name: str) -> float:
        return next(r.value for r in self.rows if r.name == name)

    def ratio(self, name: str, baseline: str | None = None) -> float:
        """``name``'s value over the baseline's (inverted when lower is better)."""
        base = self.value(baseline or self.baseline)
        row = next(r for r in self.rows if r.name == name)
        if row.lower_is_better:
            return base / row.value if row.value else float("inf")
        return row.value / base if base else float("inf")

    def render(self) -> str:
        width = max(len(r.name) for r in self.rows)
        lines = [f"## {self.title}"]
        for r in self.rows:
            ratio = "baseline" if r.name == self.baseline else f"{self.ratio(r.name):8.2f}x"
            lines.append(f"  {r.name:<{width}}  {r.value:>14,.1f} {r.unit:<10} {ratio}")
        if self.target:
            verdict = {True: "MET", False: "NOT MET", None: ""}[self.met]
            lines.append(f"  target: {self.target}  {verdict}")
        return "\n".join(lines)


def rate(fn: Callable[[], int], *, min_time_s: float = 0.3, repeat: int = 3) -> float:
    """Best-of-``repeat`` throughput of ``fn``, which returns how many events it handled.

    Each repeat calls ``fn`` until ``min_time_s`` has passed.
    """
    best = 0.0
    for _ in range(repeat):
        count, start = 0, time.perf_counter()
        while True:
            count += fn()
            elapsed = time.perf_counter() - start
            if elapsed >= min_time_s:
                break
        best = max(best, count / elapsed)
    return best
