"""Large synthetic traces written straight to disk: Parquet, or JSONL (plain, gzip or zstd).

The trace is generated as a frame (:func:`dedup.traces.generate.generate_frame`,
vectorised) and its envelopes are written as text a row group at a time by a
compiled loop (:func:`dedup.traces.envelope_text.render_lines`), on every core:
the lines are byte for byte ``json.dumps`` of ``generate(config).envelopes()``.
A Parquet dump (:mod:`dedup.columnar.parquet`) holds the envelope text in an
``envelope`` column beside the ground truth (``arrival_ms`` and
:data:`~dedup.traces.trace.TRUTH_COLUMNS`); a JSONL dump gets the truth beside
it (``NAME.truth.parquet``).

Before writing, the free space is checked against an estimate of what the
files need (:data:`BYTES_PER_EVENT`, measured); :class:`NotEnoughDiskError`
says how much is needed and how much is free instead of filling the disk.
Likewise the memory the generator needs at its peak
(:data:`GENERATION_BYTES_PER_EVENT`: the whole trace is generated at once, so a
100M-event trace needs about 20 GB) is checked against what the system has
available: :class:`NotEnoughMemoryError` instead of an out-of-memory kill.
"""

from __future__ import annotations

import gzip
import os
import shutil
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from dedup.analysis import format_bytes
from dedup.columnar import parquet
from dedup.columnar.dump import TRUTH_FIELDS, Dump
from dedup.errors import DedupError
from dedup.traces.catalogue import KINDS
from dedup.traces.config import TraceConfig
from dedup.traces.envelope_text import buffer_bytes, render_lines
from dedup.traces.generate import generate_frame
from dedup.traces.trace import progress_bar

#: Rows per row group (Parquet) or compressed block (JSONL).
CHUNK_ROWS = 65_536
#: Disk an event takes, by format, ground truth included (mixed traces: 828, 157, 90 and 96; with margin).
BYTES_PER_EVENT = {"jsonl": 900, "gzip": 180, "zstd": 110, "parquet": 120}
#: Memory writing a trace takes at its peak, per event: the generator's (182 B measured), the process's,
#: the row groups in flight (peak RSS 1.8 GB writing 10M mixed events).
GENERATION_BYTES_PER_EVENT = 200
_TRUTH_TYPE: dict[str, parquet.ColumnType] = {
    "arrival_ms": "int64", "logical_id": "int32", "kind": "string", "original_arrival_ms": "int64"}
_TRUTH_TYPES = [(name, _TRUTH_TYPE[name]) for name in TRUTH_FIELDS]
_COMPRESSION = {"gzip": "gzip", "zstd": "zstd"}


class NotEnoughDiskError(DedupError):
    """The disk lacks the space a trace would take."""

    def __init__(self, path: Path, needed: int, free: int):
        self.path = path
        self.needed = needed
        self.free = free
        super().__init__(f"not enough disk for {path.name}: it needs about {format_bytes(needed)}, "
                         f"{format_bytes(free)} is free on {path.parent}")


class NotEnoughMemoryError(DedupError):
    """The system lacks the memory generating a trace would take."""

    def __init__(self, n_events: int, needed: int, available: int):
        self.needed = needed
        self.available = available
        super().__init__(f"not enough memory to generate {n_events:,} events: it needs about "
                         f"{format_bytes(needed)}, {format_bytes(available)} is available")


def available_memory() -> int | None:
    """Bytes of memory the system can still give (Linux ``MemAvailable``), or None when unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _dump_format(path: Path) -> str:
    """``parquet``, ``jsonl``, ``gzip`` (``.jsonl.gz``) or ``zstd`` (``.jsonl.zst``), by the name."""
    name = path.name
    fmt = ("parquet" if name.endswith(".parquet") else "gzip" if name.endswith(".jsonl.gz")
           else "zstd" if name.endswith(".jsonl.zst") else "jsonl" if name.endswith(".jsonl") else None)
    if fmt is None:
        raise ValueError(f"{name}: write .parquet, .jsonl, .jsonl.gz or .jsonl.zst")
    if fmt == "zstd" and parquet.zstd() is None:
        raise ValueError(f"{name}: writing zstd needs libzstd, which is not installed; write .jsonl.gz")
    return fmt


def write_trace(config: TraceConfig, path: str | Path, *, workers: int | None = None,
                progress: bool = False) -> Dump:
    """Write the trace of ``config`` to ``path`` (``.parquet``, ``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``)
    with its ground truth, using ``workers`` threads (default: every core)."""
    path = Path(path)
    fmt = _dump_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    needed = config.n_events * BYTES_PER_EVENT[fmt]
    free = shutil.disk_usage(path.parent).free
    if needed > free:
        raise NotEnoughDiskError(path, needed, free)
    memory = available_memory()
    if memory is not None and config.n_events * GENERATION_BYTES_PER_EVENT > memory:
        raise NotEnoughMemoryError(config.n_events, config.n_events * GENERATION_BYTES_PER_EVENT, memory)
    frame = generate_frame(config)
    codec = parquet.default_codec()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    truth_tmp = (tmp.with_name(tmp.name + ".truth") if fmt != "parquet" else None)
    columns = [("envelope", "string"), *_TRUTH_TYPES] if fmt == "parquet" else _TRUTH_TYPES
    workers = workers or os.cpu_count() or 1
    buffers = threading.local()

    def encode(lo: int) -> tuple[bytes | None, list[parquet.ColumnChunk]]:
        chunk = frame.iloc[lo:lo + CHUNK_ROWS]
        if getattr(buffers, "array", None) is None:
            buffers.array = np.empty(buffer_bytes(CHUNK_ROWS), dtype=np.uint8)
        text, offsets = render_lines(chunk, config.seed, "parquet" if fmt == "parquet" else "jsonl",
                                     buffers.array)
        truth = _truth_chunks(chunk, codec)
        if fmt == "parquet":
            return None, [parquet.plain_pages(text, offsets, codec), *truth]
        return _jsonl_block(text, fmt), truth

    bar = progress_bar(len(frame), progress, f"writing {path.name}")
    try:
        table = parquet.ParquetWriter(tmp if fmt == "parquet" else truth_tmp, columns, codec)  # type: ignore[arg-type]
        with ThreadPoolExecutor(workers) as pool, (tmp.open("wb") if fmt != "parquet" else _nothing()) as out:
            pending: deque[tuple[int, Future]] = deque()
            for lo in [*range(0, len(frame), CHUNK_ROWS), None]:
                if lo is not None:
                    pending.append((min(CHUNK_ROWS, len(frame) - lo), pool.submit(encode, lo)))
                while pending and (len(pending) > workers + 1 or lo is None):
                    rows, future = pending.popleft()
                    blob, chunks = future.result()
                    if out is not None:
                        out.write(blob)
                    table.write_row_group(chunks)
                    bar.update(rows)
            if out is not None and len(frame) == 0:  # an empty stream is still a gzip or zstd stream
                out.write(_jsonl_block(np.zeros(0, dtype=np.uint8), fmt))
        table.close()
    except BaseException:
        for leftover in (tmp, truth_tmp):
            if leftover is not None:
                leftover.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    if truth_tmp is not None:
        truth_tmp.replace(Dump(path, "jsonl", _COMPRESSION.get(fmt)).truth_target)
    tmp.replace(path)
    return Dump.of(path)


def _jsonl_block(text: np.ndarray, fmt: str) -> bytes:
    """JSONL bytes as the format stores them: plain, a gzip member or a zstd frame (either concatenates)."""
    if fmt == "gzip":
        return gzip.compress(text, compresslevel=1)
    if fmt == "zstd":
        return parquet.zstd().compress(text)  # type: ignore[union-attr]
    return text.tobytes()


def _truth_chunks(chunk: pd.DataFrame, codec: int) -> list[parquet.ColumnChunk]:
    """The ground-truth columns of a chunk of the frame, encoded."""
    return [parquet.strings(chunk["kind"].cat.codes.to_numpy(), KINDS, codec) if kind == "string"
            else parquet.numbers(chunk[name].to_numpy(), kind, codec) for name, kind in _TRUTH_TYPES]


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
