"""Large synthetic traces written straight to disk: Parquet or gzip JSONL, rendered on every core.

The trace is generated as a frame (:func:`dedup.traces.generate.generate_frame`,
vectorised) and rendered by :func:`dedup.traces.render.render` a chunk at a
time in a process pool, so the envelopes are exactly those of
``generate(config).envelopes()``. The ground truth goes beside a JSONL dump
(``NAME.truth.parquet``) or into the Parquet dump's own columns.

Before writing, the free space is checked against an estimate of what the
file needs (:data:`BYTES_PER_EVENT`); :class:`NotEnoughDiskError` says how
much is needed and how much is free instead of filling the disk.
"""

from __future__ import annotations

import gzip
import json
import multiprocessing
import os
import shutil
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from dedup.analysis import format_bytes
from dedup.columnar.dump import TRUTH_FIELDS, Dump
from dedup.columnar.engine import connect
from dedup.errors import DedupError
from dedup.traces.config import TraceConfig
from dedup.traces.generate import generate_frame
from dedup.traces.render import render
from dedup.traces.trace import progress_bar

#: Rows rendered per task.
CHUNK_ROWS = 50_000
#: Disk an event takes, by format (measured on generated mixed traces, with margin).
BYTES_PER_EVENT = {"jsonl": 900, "gzip": 160, "parquet": 150}


class NotEnoughDiskError(DedupError):
    """The disk lacks the space a trace would take."""

    def __init__(self, path: Path, needed: int, free: int):
        self.path = path
        self.needed = needed
        self.free = free
        super().__init__(f"not enough disk for {path.name}: it needs about {format_bytes(needed)}, "
                         f"{format_bytes(free)} is free on {path.parent}")


def write_trace(config: TraceConfig, path: str | Path, *, workers: int | None = None,
                progress: bool = False) -> Dump:
    """Write the trace of ``config`` to ``path`` (``.parquet``, ``.jsonl``, ``.jsonl.gz``) with its truth."""
    path = Path(path)
    fmt = "parquet" if path.suffix == ".parquet" else "gzip" if path.name.endswith(".jsonl.gz") else (
        "jsonl" if path.suffix == ".jsonl" else None)
    if fmt is None:
        raise ValueError(f"{path.name}: write .parquet, .jsonl or .jsonl.gz")
    path.parent.mkdir(parents=True, exist_ok=True)
    needed = config.n_events * BYTES_PER_EVENT[fmt] * (2 if fmt == "parquet" else 1)  # parquet: parts + file
    free = shutil.disk_usage(path.parent).free
    if needed > free:
        raise NotEnoughDiskError(path, needed, free)
    frame = generate_frame(config)
    bar = progress_bar(len(frame), progress, f"writing {path.name}")
    parts_dir = path.with_name(f"{path.name}.{os.getpid()}.parts")
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    context = multiprocessing.get_context("fork")  # no DuckDB connection is open yet: forking is safe
    with ProcessPoolExecutor(workers or os.cpu_count() or 1, mp_context=context) as pool:
        pending: deque = deque()
        parts: list[Path] = []
        if fmt == "parquet":
            parts_dir.mkdir()
        with tmp.open("wb") if fmt != "parquet" else _nothing() as out:
            for lo in range(0, len(frame), CHUNK_ROWS):
                chunk = frame.iloc[lo:lo + CHUNK_ROWS]
                part = parts_dir / f"{lo:012d}.parquet" if fmt == "parquet" else None
                pending.append((len(chunk), pool.submit(_render_chunk, chunk, config.seed, fmt, part)))
                if part:
                    parts.append(part)
                while len(pending) > 2 * (workers or os.cpu_count() or 1) or (
                        pending and lo + CHUNK_ROWS >= len(frame)):
                    rows, future = pending.popleft()
                    blob = future.result()
                    if out is not None:
                        out.write(blob)
                    bar.update(rows)
    bar.close()
    truth = frame[list(TRUTH_FIELDS)].copy()
    truth["kind"] = truth["kind"].astype(str)
    con = connect()
    if fmt == "parquet":
        _merge_parts(con, parts, truth, tmp)
        shutil.rmtree(parts_dir)
    else:
        _write_parquet(con, truth, Dump(path, "jsonl", "gzip" if fmt == "gzip" else None).truth_target)
    tmp.replace(path)
    return Dump.of(path)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _render_chunk(chunk: pd.DataFrame, seed: int, fmt: str, part: Path | None) -> bytes:
    """One chunk's envelopes as JSONL bytes (gzip member for ``gzip``), or a Parquet part at ``part``."""
    text = "".join(json.dumps(e, ensure_ascii=False, separators=(",", ":")) + "\n"
                   for e in render(chunk, seed))
    data = text.encode("utf-8")
    if fmt == "gzip":
        return gzip.compress(data, compresslevel=3)  # concatenated members are one gzip stream
    if fmt == "parquet":
        lines = pd.DataFrame({"envelope": text.splitlines()})  # noqa: F841 - read by DuckDB below
        con = connect(threads=1)
        con.execute(f"COPY (SELECT envelope FROM lines) TO '{_sql_path(part)}' "
                    "(FORMAT parquet, COMPRESSION zstd)")
        return b""
    return data


def _merge_parts(con: object, parts: list[Path], truth: pd.DataFrame, out: Path) -> None:
    files = ", ".join(f"'{_sql_path(p)}'" for p in parts)
    con.register("truth", truth)
    con.execute(f"COPY (SELECT * FROM read_parquet([{files}]) POSITIONAL JOIN truth) TO '{_sql_path(out)}' "
                f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 20000)")


def _write_parquet(con: object, frame: pd.DataFrame, out: Path) -> None:
    con.register("frame", frame)
    con.execute(f"COPY (SELECT * FROM frame) TO '{_sql_path(out)}' (FORMAT parquet, COMPRESSION zstd)")


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")
