"""Synthetic Genesys Cloud / NICE CXone event traces with duplicate ground truth.

* :func:`generate` builds a seeded trace (:class:`Trace`): contact-centre
  activity with a daily profile, published and delivered with the duplicate
  processes of :class:`Duplicates`, every row carrying its ground truth.
* :func:`logical_events` gives distinct envelopes for producers and demos.
* :func:`read_jsonl` / :func:`write_jsonl` move traces to and from JSONL, including
  SQS dumps of your own traffic (bring your own trace).
"""

from __future__ import annotations

from typing import Any

from dedup.traces.cache import cache_dir, cache_path
from dedup.traces.cache import cached_frame as _cached_frame
from dedup.traces.catalogue import GENESYS_SOURCE, KINDS, NICE_SOURCE
from dedup.traces.config import DAILY_PROFILE, DEFAULT_START_S, Duplicates, Source, TraceConfig
from dedup.traces.io import read_jsonl, truth_path, write_csv, write_jsonl
from dedup.traces.trace import TRUTH_COLUMNS, Keys, Trace

__all__ = [
    "DAILY_PROFILE",
    "DEFAULT_START_S",
    "GENESYS_SOURCE",
    "KINDS",
    "NICE_SOURCE",
    "TRUTH_COLUMNS",
    "Duplicates",
    "Keys",
    "Source",
    "Trace",
    "TraceConfig",
    "cache_dir",
    "cache_path",
    "generate",
    "logical_events",
    "read_jsonl",
    "truth_path",
    "write_csv",
    "write_jsonl",
]

NO_DUPLICATES = Duplicates(delivery_p=0.0, publish_p=0.0, late_p=0.0)


def generate(config: TraceConfig | None = None, /, *, cache: bool | None = None, **changes: Any) -> Trace:
    """A generated trace of ``config`` (default :class:`TraceConfig`) with ``changes`` applied.

    ``generate(n_events=1_000_000, source="mixed", seed=3)``. Traces of a
    million events or more are cached under ``data/cache/`` unless
    ``cache=False``; ``cache=True`` caches any size.
    """
    config = (config or TraceConfig()).replace(**changes) if changes else (config or TraceConfig())
    return Trace(_cached_frame(config, cache), config=config)


def logical_events(
    n: int, *, source: Source = "genesys", seed: int = 0, start_s: float | None = None
) -> list[dict[str, Any]]:
    """``n`` distinct EventBridge envelopes (``detail`` an object), in time order.

    No duplicates: no two share an envelope ``id`` or a ``dedup.keys.auto()``
    key. ``start_s`` defaults to :data:`DEFAULT_START_S`, so a seed always yields
    the same events.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    config = TraceConfig(
        n_events=n, source=source, seed=seed, duplicates=NO_DUPLICATES,
        start_s=DEFAULT_START_S if start_s is None else float(start_s),
    )
    return list(generate(config, cache=False).envelopes())
