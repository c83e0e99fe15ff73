"""Keys cached beside the dump: derived once per (dump, key strategy), reused until either changes.

``NAME.keys-<hash>.parquet`` holds one row per message (arrival time, key
code, ground truth when present) and ``NAME.keys-<hash>.json`` what it was
made from: the dump's identity (:meth:`Dump.identity`), the strategy spec, the
``dedup.keys`` source hash and the format version. Any difference means the
keys are derived again; the files are replaced atomically, so a reader never
sees half a cache. When the dump's directory is read-only the cache goes to
``dedup.traces.cache_dir()``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from dedup.columnar.derive import KeyColumns, derive_keys, strategy_spec
from dedup.columnar.dump import Dump
from dedup.columnar.engine import connect
from dedup.columnar.keysql import keys_source_sha256
from dedup.keys import KeyStrategy
from dedup.traces.cache import cache_dir

CACHE_VERSION = 1


def cache_paths(dump: Dump, strategy: KeyStrategy | str) -> tuple[Path, Path]:
    """Where the keys of ``dump`` under ``strategy`` are cached: the Parquet file and its description."""
    tag = hashlib.sha256(strategy_spec(strategy).encode()).hexdigest()[:12]
    directory = dump.path.parent if os.access(dump.path.parent, os.W_OK) else cache_dir() / "columnar"
    base = directory / f"{dump.path.name}.keys-{tag}"
    return base.with_name(base.name + ".parquet"), base.with_name(base.name + ".json")


def _description(dump: Dump, strategy: KeyStrategy | str) -> dict[str, Any]:
    return {"version": CACHE_VERSION, "dump": dump.identity(), "strategy": strategy_spec(strategy),
            "keys_sha256": keys_source_sha256()}


def cached_keys(dump: Dump | str | Path, strategy: KeyStrategy | str = "auto", *, progress: bool = False,
                con: Any = None, refresh: bool = False) -> KeyColumns:
    """The keys of ``dump`` under ``strategy``: from the cache when it is current, else derived and cached."""
    dump = dump if isinstance(dump, Dump) else Dump.of(dump)
    con = con or connect()
    data, meta = cache_paths(dump, strategy)
    wanted = _description(dump, strategy)
    if not refresh and data.exists() and meta.exists():
        stored = json.loads(meta.read_text())
        if {k: stored.get(k) for k in wanted} == wanted:
            return _read(con, data, stored)
    keys = derive_keys(dump, strategy, con=con, progress=progress)
    _write(con, keys, data, meta, wanted)
    return keys


def _write(con: Any, keys: KeyColumns, data: Path, meta: Path, description: dict[str, Any]) -> None:
    import pandas as pd

    data.parent.mkdir(parents=True, exist_ok=True)
    columns = {"arrival_ms": keys.arrival_ms, "key": keys.codes}
    if keys.has_truth:
        columns.update(logical_id=keys.logical_id, kind=keys.kind)
    frame = pd.DataFrame(columns)  # noqa: F841 - DuckDB reads the local by name
    tmp = data.with_name(f"{data.name}.{os.getpid()}.tmp")
    path = str(tmp).replace("'", "''")
    con.execute(f"COPY (SELECT * FROM frame) TO '{path}' (FORMAT parquet, COMPRESSION zstd)")
    tmp.replace(data)
    description = {**description, "strategy_name": keys.strategy, "messages": len(keys),
                   "unkeyed_reasons": keys.unkeyed_reasons, "python_rows": keys.python_rows}
    tmp_meta = meta.with_name(f"{meta.name}.{os.getpid()}.tmp")
    tmp_meta.write_text(json.dumps(description, indent=1))
    tmp_meta.replace(meta)


def _read(con: Any, data: Path, stored: dict[str, Any]) -> KeyColumns:
    """The cached columns, read one at a time: the peak is the keys plus one column, not twice the keys."""
    path = str(data).replace("'", "''")
    source = f"read_parquet('{path}')"
    names = [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()]

    def column(name: str) -> np.ndarray:
        return np.asarray(con.execute(f'SELECT "{name}" FROM {source}').fetchnumpy()[name])

    truth = "logical_id" in names
    return KeyColumns(
        stored["strategy"], column("arrival_ms"), column("key"), stored.get("unkeyed_reasons", {}),
        column("logical_id") if truth else None, column("kind") if truth else None,
        python_rows=stored.get("python_rows", 0),
    )
