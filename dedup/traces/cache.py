"""On-disk cache of large generated traces (``data/cache/``, gitignored).

A trace is a pure function of its :class:`TraceConfig`, so the cache is keyed
by a hash of the config and of :data:`GENERATOR_VERSION` (bump it whenever
the generator's output changes, so stale files are never read).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from dedup.traces.config import TraceConfig
from dedup.traces.generate import generate_frame

GENERATOR_VERSION = 3
#: Traces at least this long are cached by default.
CACHE_MIN_EVENTS = 1_000_000


def cache_dir() -> Path:
    """``$DEDUP_TRACE_CACHE``, else ``data/cache`` of the source checkout, else ``~/.cache/dedup``."""
    if os.environ.get("DEDUP_TRACE_CACHE"):
        return Path(os.environ["DEDUP_TRACE_CACHE"])
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").exists():
        return repo / "data" / "cache"
    return Path.home() / ".cache" / "dedup" / "traces"


def cache_path(config: TraceConfig) -> Path:
    """The file a trace of ``config`` is cached in."""
    digest = hashlib.sha256(f"{GENERATOR_VERSION}:{config!r}".encode()).hexdigest()[:16]
    return cache_dir() / f"trace-{config.source}-{config.n_events}-{digest}.pkl"


def cached_frame(config: TraceConfig, cache: bool | None = None) -> pd.DataFrame:
    """The trace frame of ``config``: read from the cache, or generated (and cached when asked)."""
    use = config.n_events >= CACHE_MIN_EVENTS if cache is None else cache
    if not use:
        return generate_frame(config)
    path = cache_path(config)
    if path.exists():
        return pd.read_pickle(path)
    frame = generate_frame(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # two processes may generate the same trace
    frame.to_pickle(tmp)
    tmp.replace(path)  # atomic: a reader never sees half a file
    return frame
