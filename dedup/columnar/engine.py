"""The embedded DuckDB connection every columnar step runs on: thread count, memory cap, spill directory.

DuckDB streams a dump through its scan and spills sorts and aggregates to
``temp_directory`` beyond ``memory_limit``, so the memory a dump costs is bounded
by settings, not by its size.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from dedup.columnar.keysql import MACROS

#: DuckDB's own memory cap by default; numpy arrays of the sweep come on top.
DEFAULT_MEMORY_LIMIT = "1GB"


def connect(*, threads: int | None = None, memory_limit: str = DEFAULT_MEMORY_LIMIT,
            temp_directory: str | None = None) -> Any:
    """An in-memory DuckDB connection using ``threads`` cores (default all), capped at ``memory_limit``."""
    import duckdb

    con = duckdb.connect(":memory:")
    con.execute(f"SET threads = {int(threads or os.cpu_count() or 1)}")
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute(f"SET temp_directory = '{temp_directory or tempfile.gettempdir()}'")
    con.execute("SET preserve_insertion_order = true")  # rows come back in file order
    con.execute("SET TimeZone = 'UTC'")  # naive ISO timestamps are UTC, as in dedup.keys.epoch_ms
    con.execute("SET enable_progress_bar = false")  # callers show tqdm bars
    for macro in MACROS:
        con.execute(macro)
    return con
