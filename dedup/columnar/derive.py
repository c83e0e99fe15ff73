"""Keys of every message of a dump, derived in one streamed pass: compiled or SQL where certain, else Python.

A compiled loop (:mod:`dedup.columnar.keybuild`) parses each line once and
builds the raw key where it is certain; a strategy it does not cover is built
in DuckDB's scan (all cores) with :mod:`dedup.columnar.keysql`. Rows neither
is certain of, and every row of a strategy without a fast path, are keyed by the real strategy
(:func:`dedup.keys.derive_key` semantics) in a process pool. Either way a key
is identified by the MD5 of its raw key string, so both paths give the same
identity to the same key; a message is never keyed by a guess.

Keys are numbered by the top 63 bits of that digest; two distinct keys that
share them (odds about n²/2⁶⁴) are detected and renumbered exactly.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import tempfile
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dedup.columnar import kernels, keybuild
from dedup.columnar.dump import TRUTH_FIELDS, Dump
from dedup.columnar.engine import connect
from dedup.columnar.keybuild import MASK63, NO_TIME
from dedup.columnar.keysql import PATHS, key_layers, time_sql, used_paths
from dedup.errors import BadMessageError
from dedup.keys import KeyStrategy, NoKey, epoch_ms, key_strategy
from dedup.traces.catalogue import KINDS
from dedup.traces.trace import progress_bar

#: Rows read back from the scan at a time (their lines for Python must fit DuckDB's memory limit).
CHUNK_ROWS = 200_000
#: Whether the strategies :mod:`dedup.columnar.keybuild` covers are keyed by it (else by the SQL).
BUILD = True
#: Below this many rows for Python, keying stays in this process (a pool costs more to start).
POOL_MIN_ROWS = 50_000
_PY_BATCH = 20_000


@dataclass
class KeyColumns:
    """One strategy's keys of a dump, row-aligned with its messages (in file order).

    ``codes[i]`` identifies message ``i``'s raw key (equal keys, equal codes,
    non-negative) or is -1 when the strategy yields none; ``arrival_ms`` is the
    truth's arrival time, else the envelope ``time`` made non-decreasing.
    ``logical_id`` and ``kind`` (codes into ``KINDS``) are the ground truth, or None.
    """

    strategy: str
    arrival_ms: np.ndarray
    codes: np.ndarray
    unkeyed_reasons: dict[str, int] = field(default_factory=dict)
    logical_id: np.ndarray | None = None
    kind: np.ndarray | None = None
    #: Messages keyed by the Python strategy (the rest were keyed in SQL).
    python_rows: int = 0

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def has_truth(self) -> bool:
        return self.logical_id is not None

    @property
    def unkeyed(self) -> int:
        return int((self.codes < 0).sum())


def strategy_spec(strategy: KeyStrategy | str) -> str:
    """The text that names a strategy in caches: its spec string, or its class and fields."""
    return strategy.strip() if isinstance(strategy, str) else f"{type(strategy).__name__}:{strategy!r}"


def derive_keys(dump: Dump, strategy: KeyStrategy | str = "auto", *, con: Any = None, progress: bool = False,
                workers: int | None = None) -> KeyColumns:
    """Every message's key under ``strategy``, with arrival times and ground truth (see :class:`KeyColumns`).

    Raises :class:`~dedup.errors.BadMessageError` naming the line of the first
    message that is not an EventBridge envelope (nothing is skipped silently).
    """
    con = con or connect()
    truth = _read_truth(con, dump)
    fast = key_layers(strategy)
    need_time = truth is None
    python_rows = []
    reasons: Counter[str] = Counter()
    total = _count(con, dump)
    # Filled a chunk at a time; sized by the Parquet metadata (a JSONL dump's grow as they fill).
    columns = {name: np.empty(total, np.int64) for name in ("hi", "lo", "t")[:3 if need_time else 2]}
    bar = progress_bar(total, progress, f"keys {strategy_spec(strategy)[:30]}")
    built = BUILD and keybuild.validated(strategy)
    chunks = _built_scan(con, dump, strategy, need_time) if built else _scan(con, dump, fast, need_time)
    with _PythonKeyer(strategy, workers, total if fast is None and not built else 0) as keyer:
        offset = 0
        for chunk in chunks:
            hi = chunk["hi"]
            if built and offset == 0:  # the builder's share of Python rows: a pool pays off beyond a few
                keyer.expected_rows = len(chunk["python_rows"]) * total // max(len(hi), 1)
            keyer.submit(offset + chunk["python_rows"], chunk["python_lines"], need_time)
            for name, column in columns.items():
                if offset + len(hi) > len(column):
                    columns[name] = column = _grown(column, offset + len(hi))
                column[offset:offset + len(hi)] = chunk[name]
            offset += len(hi)
            for rows, result in keyer.done():
                python_rows.append((rows, result))
            bar.update(len(hi))
        for rows, result in keyer.finish():
            python_rows.append((rows, result))
    bar.close()
    hi, lo, t = (columns[name][:offset] if name in columns else None for name in ("hi", "lo", "t"))
    blank = np.zeros(len(hi), dtype=bool)
    for rows, (r_hi, r_lo, r_t, r_reason, r_blank) in python_rows:
        hi[rows], lo[rows] = r_hi, r_lo
        if t is not None:
            t[rows] = np.where(r_t != NO_TIME, r_t, t[rows])
        blank[rows] = r_blank
        reasons.update(r_reason)
    if blank.any():
        keep = ~blank
        hi, lo, t = hi[keep], lo[keep], t[keep] if t is not None else None
    if truth is not None:
        if len(truth["arrival_ms"]) != len(hi):
            raise ValueError(f"{dump.path.name}: the ground truth has {len(truth['arrival_ms'])} rows "
                             f"for {len(hi)} messages")
        arrival = truth["arrival_ms"].astype(np.int64)
    else:
        arrival = np.maximum.accumulate(t) if len(t) else t.copy()
    return KeyColumns(strategy_spec(strategy), arrival, number_keys(hi, lo), dict(reasons),
                      truth["logical_id"] if truth else None, truth["kind"] if truth else None,
                      python_rows=sum(len(rows) for rows, _ in python_rows))


def _grown(column: np.ndarray, rows: int) -> np.ndarray:
    grown = np.empty(max(rows, 2 * len(column)), np.int64)
    grown[:len(column)] = column
    return grown


def number_keys(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Key codes from digests (``hi`` -1 = no key): ``hi`` itself unless two keys share it, then dense."""
    if not kernels.digests_collide(np.argsort(hi), hi, lo):
        return hi
    # A 63-bit collision between distinct keys: number (hi, lo) pairs densely instead.
    keyed = hi >= 0
    pairs = np.lexsort((lo, hi))
    first = np.r_[True, (hi[pairs][1:] != hi[pairs][:-1]) | (lo[pairs][1:] != lo[pairs][:-1])]
    codes = np.empty(len(hi), np.int64)
    codes[pairs] = np.cumsum(first) - 1
    return np.where(keyed, codes, -1)


# ---- the scan ---------------------------------------------------------------------


def _count(con: Any, dump: Dump) -> int:
    if dump.format == "parquet":
        path = str(dump.path).replace("'", "''")
        rows = con.execute(f"SELECT sum(num_rows) FROM parquet_file_metadata('{path}')").fetchone()[0]
        return int(rows or 0)
    return 0  # unknown without reading the file: the bar counts up without a total


def _scan(con: Any, dump: Dump, fast: list[str] | None, need_time: bool) -> Iterator[dict[str, Any]]:
    """Chunks of: digest halves of the SQL key (-1 when none), envelope time, the line for Python.

    The scan is written to a temporary Parquet file first (DuckDB streams a
    COPY within its memory limit, spilling if it must), then read back a range
    of rows at a time, so no step holds the dump.
    """
    layers = fast or ["NULL::VARCHAR AS k"]
    t = (time_sql() or "NULL") if need_time else "NULL"
    used = used_paths(layers, t) or {"id": PATHS["id"]}
    extracted = ", ".join(f"x[{i + 1}]::VARCHAR AS {name}" for i, name in enumerate(used))
    paths = ", ".join("'" + p.replace("'", "''") + "'" for p in used.values())
    relation = (f"(SELECT line, {extracted} FROM (SELECT line, try(json_extract(line, [{paths}])) AS x "
                f"FROM {dump.lines_sql()}))")
    for layer in layers:
        relation = f"(SELECT *, {layer} FROM {relation})"
    sql = f"""
        WITH keyed AS (SELECT line, k, ({t})::BIGINT AS t FROM {relation})
        SELECT coalesce((md5_number(k) >> 65)::BIGINT, -1) AS hi,
               coalesce((md5_number(k) & {MASK63}::UHUGEINT)::BIGINT, -1) AS lo,
               coalesce(t, {NO_TIME}) AS t,
               CASE WHEN k IS NULL {"OR t IS NULL" if need_time else ""} THEN coalesce(line, '') END AS line
        FROM keyed"""
    with tempfile.TemporaryDirectory(dir=_spill_dir(con)) as tmp:
        scanned = (Path(tmp) / "scan.parquet").as_posix().replace("'", "''")
        con.execute(f"COPY ({sql}) TO '{scanned}' (FORMAT parquet, COMPRESSION snappy)")
        source = f"read_parquet('{scanned}', file_row_number = true)"
        total = int(con.execute(f"SELECT count(*) FROM {source}").fetchone()[0])
        for lo in range(0, total, CHUNK_ROWS):
            where = f"WHERE file_row_number >= {lo} AND file_row_number < {lo + CHUNK_ROWS}"
            chunk = con.execute(f"SELECT hi, lo, t FROM {source} {where}").fetchnumpy()
            python = con.execute(f"SELECT file_row_number, line FROM {source} {where} AND line IS NOT NULL "
                                 "ORDER BY file_row_number").fetchnumpy()
            yield {"hi": np.asarray(chunk["hi"], np.int64), "lo": np.asarray(chunk["lo"], np.int64),
                   "t": np.asarray(chunk["t"], np.int64),
                   "python_rows": np.asarray(python["file_row_number"], np.int64) - lo,
                   "python_lines": list(python["line"])}


def _built_scan(con: Any, dump: Dump, spec: str, need_time: bool) -> Iterator[dict[str, Any]]:
    """The chunks of :func:`_scan`, keyed by :mod:`dedup.columnar.keybuild` from the dump's lines as Arrow
    buffers; the rows it is not certain of carry their line for Python."""
    reader = con.cursor().sql(f"SELECT line FROM {dump.lines_sql()}").to_arrow_reader(CHUNK_ROWS)
    for batch in reader:
        lines = batch.column(0)
        hi, lo, t, status = keybuild.build_keys(lines, spec, need_time)
        rows = np.flatnonzero(status != keybuild.KEYED)
        python_lines = [line or "" for line in lines.take(rows).to_pylist()]
        yield {"hi": hi, "lo": lo, "t": t, "python_rows": rows, "python_lines": python_lines}


def _spill_dir(con: Any) -> str:
    return str(con.execute("SELECT current_setting('temp_directory')").fetchone()[0])


def _read_truth(con: Any, dump: Dump) -> dict[str, np.ndarray] | None:
    sql = dump.truth_sql()
    if sql is None:
        return None
    columns = [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {sql}").fetchall()]
    if dump.format == "parquet" and "logical_id" not in columns and "arrival_ms" not in columns:
        return None
    missing = [c for c in TRUTH_FIELDS if c not in columns]
    if missing:
        raise ValueError(f"{dump.path.name}: the ground truth lacks column(s) {', '.join(missing)}")
    kinds = ", ".join(f"'{k}'" for k in KINDS)
    frame = con.execute(
        f"SELECT arrival_ms::BIGINT AS arrival_ms, logical_id::BIGINT AS logical_id, "
        f"coalesce(list_position([{kinds}], kind::VARCHAR), 0)::TINYINT - 1 AS kind FROM {sql}"
    ).fetchnumpy()
    if (frame["kind"] < 0).any():
        raise ValueError(f"{dump.path.name}: ground-truth kind must be one of {', '.join(KINDS)}")
    return {name: np.asarray(frame[name]) for name in ("arrival_ms", "logical_id", "kind")}


# ---- rows keyed by the real strategy ---------------------------------------------


class _PythonKeyer:
    """Keys lines with the real strategy: inline for a few rows, in a process pool for many."""

    def __init__(self, strategy: KeyStrategy | str, workers: int | None, expected_rows: int) -> None:
        self.strategy = strategy
        self.workers = workers or os.cpu_count() or 1
        self.pool: ProcessPoolExecutor | None = None
        self.pending: deque[tuple[np.ndarray, Future | tuple]] = deque()
        self.expected_rows = expected_rows

    def __enter__(self) -> _PythonKeyer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def submit(self, rows: np.ndarray, lines: list[str], need_time: bool) -> None:
        for lo in range(0, len(rows), _PY_BATCH):
            batch_rows, batch = rows[lo:lo + _PY_BATCH], lines[lo:lo + _PY_BATCH]
            if self.pool is None and (len(rows) >= POOL_MIN_ROWS or self.expected_rows >= POOL_MIN_ROWS):
                # spawn: forking beside DuckDB's running threads is unsafe.
                self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
            if self.pool is None:
                self.pending.append((batch_rows, python_keys(self.strategy, batch, batch_rows, need_time)))
            else:
                self.pending.append((batch_rows, self.pool.submit(python_keys, self.strategy, batch,
                                                                  batch_rows, need_time)))

    def done(self) -> Iterator[tuple[np.ndarray, tuple]]:
        """Finished batches in order, leaving at most two per worker in flight (bounded memory)."""
        while self.pending and (not isinstance(self.pending[0][1], Future) or self.pending[0][1].done()
                                or len(self.pending) > 2 * self.workers):
            rows, result = self.pending.popleft()
            yield rows, result.result() if isinstance(result, Future) else result

    def finish(self) -> Iterator[tuple[np.ndarray, tuple]]:
        while self.pending:
            rows, result = self.pending.popleft()
            yield rows, result.result() if isinstance(result, Future) else result


_STRATEGIES: dict[str, KeyStrategy] = {}


def python_keys(strategy: KeyStrategy | str, lines: list[str], rows: np.ndarray, need_time: bool
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Counter[str], np.ndarray]:
    """Digest halves (-1: no key), envelope time, unkeyed reasons and blank flags of ``lines``.

    ``rows`` are the lines' positions in the dump (errors name the line). With
    ``need_time`` (no ground truth), an envelope without a usable ``time`` is a
    bad message, as in :func:`dedup.traces.read_jsonl`.
    """
    if isinstance(strategy, str):
        strategy = _STRATEGIES.setdefault(strategy, key_strategy(strategy))
    n = len(lines)
    hi, lo, t = np.full(n, -1, np.int64), np.full(n, -1, np.int64), np.full(n, NO_TIME, np.int64)
    blank = np.zeros(n, dtype=bool)
    reasons: Counter[str] = Counter()
    for j, line in enumerate(lines):
        if not line.strip():
            blank[j] = True
            continue
        where = f"line {int(rows[j]) + 1}"
        event = _envelope(line, where)
        try:
            t[j] = epoch_ms(event.get("time"))
        except NoKey as exc:
            if need_time:
                raise BadMessageError(where, f"envelope 'time' is unusable: {exc.reason}") from None
        try:
            raw = strategy.key_for(event)
        except NoKey as exc:
            reasons[exc.reason] += 1
            continue
        except RecursionError:
            reasons["event nests too deeply to key"] += 1
            continue
        value = int.from_bytes(hashlib.md5(raw.encode("utf-8", "surrogatepass")).digest(), "little")
        hi[j], lo[j] = value >> 65, value & MASK63
    return hi, lo, t, reasons, blank


def _envelope(line: str, where: str) -> Mapping[str, Any]:
    try:
        event = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadMessageError(where, f"JSON error: {exc}") from None
    if not isinstance(event, Mapping) or "source" not in event or "detail" not in event:
        raise BadMessageError(where,
                              "not an EventBridge envelope (no 'source' or 'detail'); "
                              "SQS and Lambda dumps are read in memory: dedup.traces.read_jsonl, "
                              "dedup analyze --engine memory")
    return event
