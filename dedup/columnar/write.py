"""Large synthetic traces written straight to disk: Parquet, or JSONL (plain, gzip or zstd).

The trace is generated an epoch at a time (:func:`dedup.traces.generate.generate_chunks`,
vectorised; the next epoch on a thread of its own while this one is written),
and its envelopes are written as text a row group at a time by a compiled loop
(:func:`dedup.traces.envelope_text.render_lines`), on every core: the lines are
byte for byte ``json.dumps`` of ``generate(config).envelopes()``.
A Parquet dump holds the envelope text in an ``envelope`` column beside the
ground truth (``arrival_ms`` and :data:`~dedup.traces.trace.TRUTH_COLUMNS`); a
JSONL dump gets the truth beside it (``NAME.truth.parquet``).

Parquet is written by pyarrow (:class:`pyarrow.parquet.ParquetWriter`, zstd
level 1, a row group per chunk): the standard writer, with the Arrow schema
and statistics (of the truth columns: min/max of JSON text would prune
nothing and cost a tenth of the write), that Spark, Athena, DuckDB and pandas
read. It writes at
speed because the renderer lays the text out as an Arrow ``string`` array
(values back to back, int32 offsets), which becomes a ``pa.Array`` without a
copy. pyarrow's writer compresses in the calling thread while the next row
groups render on the others, and sets the pace: per event (CPU, a 100M mixed
trace) it takes 1.43 µs of the 2.5 µs, generation 0.52 and rendering 0.51 (since then a 10M trace
takes 1.9 µs in all, Parquet or zstd JSONL alike: two cores write at most about 1M events/s, of which
zstd level 1 alone takes 0.8-1 µs). JSONL blocks are compressed on the rendering
threads with pyarrow's codecs (gzip members or zstd frames, which concatenate
into one valid stream).

Before writing, the free space is checked against an estimate of what the
files need (:data:`BYTES_PER_EVENT`, measured); :class:`NotEnoughDiskError`
says how much is needed and how much is free instead of filling the disk.
Likewise the memory writing needs at its peak (:func:`memory_needed`: two
epochs of the generator and the row groups in flight, whatever the trace's
length) is checked against what the system has available:
:class:`NotEnoughMemoryError` instead of an out-of-memory kill.
"""

from __future__ import annotations

import os
import queue
import shutil
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, nullcontext
from itertools import chain
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dedup.analysis import format_bytes
from dedup.columnar.dump import TRUTH_FIELDS, Dump
from dedup.errors import DedupError
from dedup.traces.catalogue import KINDS
from dedup.traces.config import TraceConfig
from dedup.traces.envelope_text import buffer_bytes, render_lines
from dedup.traces.generate import EPOCH_ROWS, generate_chunks
from dedup.traces.trace import progress_bar

#: Rows per row group (Parquet) or compressed block (JSONL).
CHUNK_ROWS = 65_536
#: Uncompressed bytes of a Parquet data page (pyarrow's default).
PAGE_BYTES = 1 << 20
#: zstd level: 1 compresses these envelopes better than the default 3 here, and faster; gzip's 1 likewise.
#: The fast levels trade disk for the writer's CPU (min of 4 runs, Parquet, per event): 1 takes 1.14 µs
#: and 95 B, -1 1.08 µs and 148 B, -3 0.88 µs and 153 B (no compression: 0.78 µs, 846 B).
COMPRESSION_LEVEL = 1
#: Disk an event takes, by format, ground truth included (mixed traces: 828, 157, 90 and 95; with margin).
BYTES_PER_EVENT = {"jsonl": 900, "gzip": 180, "zstd": 110, "parquet": 120}
#: Memory an epoch of the generator takes at its peak, per message (see :func:`memory_needed`).
GENERATION_BYTES_PER_EVENT = 200
#: The process's own: Python, numpy, pandas, pyarrow, numba and the compiled renderer.
PROCESS_BYTES = 300_000_000
_TRUTH_TYPE = {"arrival_ms": pa.int64(), "logical_id": pa.int32(),
               "kind": pa.dictionary(pa.int8(), pa.string()), "original_arrival_ms": pa.int64()}
_TRUTH_SCHEMA = pa.schema([pa.field(name, _TRUTH_TYPE[name], nullable=False) for name in TRUTH_FIELDS])
_DUMP_SCHEMA = pa.schema([pa.field("envelope", pa.string(), nullable=False), *_TRUTH_SCHEMA])
_COMPRESSION = {"gzip": "gzip", "zstd": "zstd"}
_KINDS = pa.array(KINDS)


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
    return fmt


def write_trace(config: TraceConfig, path: str | Path, *, workers: int | None = None,
                progress: bool = False) -> Dump:
    """Write the trace of ``config`` to ``path`` (``.parquet``, ``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``)
    with its ground truth, rendering on ``workers`` threads (default: every core)."""
    path = Path(path)
    fmt = _dump_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    needed = config.n_events * BYTES_PER_EVENT[fmt]
    free = shutil.disk_usage(path.parent).free
    if needed > free:
        raise NotEnoughDiskError(path, needed, free)
    workers = workers or os.cpu_count() or 1
    memory, needed = available_memory(), memory_needed(config, workers)
    if memory is not None and needed > memory:
        raise NotEnoughMemoryError(config.n_events, needed, memory)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    truth_tmp = (tmp.with_name(tmp.name + ".truth") if fmt != "parquet" else None)
    # Render buffers, reused once their row group is written (a pa.Array made from one refers to it until
    # the writer has encoded its pages, and a JSONL block until it is written).
    free_buffers: queue.SimpleQueue[np.ndarray] = queue.SimpleQueue()

    def encode(chunk: pd.DataFrame) -> tuple[np.ndarray, pa.Table, pa.Buffer | np.ndarray | None]:
        try:
            buffer = free_buffers.get_nowait()
        except queue.Empty:
            buffer = np.empty(buffer_bytes(CHUNK_ROWS), dtype=np.uint8)
        text, offsets = render_lines(chunk, config.seed, "arrow" if fmt == "parquet" else "jsonl", buffer)
        truth = _truth_table(chunk)
        if fmt == "parquet":
            envelope = pa.Array.from_buffers(pa.string(), len(chunk), [None, pa.py_buffer(offsets),
                                                                       pa.py_buffer(text)])
            return buffer, truth.add_column(0, _DUMP_SCHEMA.field("envelope"), envelope), None
        return buffer, truth, _codec(fmt).compress(text) if fmt in _COMPRESSION else text

    bar = progress_bar(config.n_events, progress, f"writing {path.name}")
    try:
        with (ThreadPoolExecutor(workers) as pool,
              pq.ParquetWriter(tmp if fmt == "parquet" else truth_tmp,
                               _DUMP_SCHEMA if fmt == "parquet" else _TRUTH_SCHEMA, compression="zstd",
                               compression_level=COMPRESSION_LEVEL, use_dictionary=["kind"],
                               write_statistics=list(TRUTH_FIELDS), data_page_size=PAGE_BYTES) as table,
              tmp.open("wb") if fmt != "parquet" else nullcontext() as out,
              closing(_row_groups(config)) as chunks):
            pending: deque[tuple[int, Future]] = deque()
            for chunk in chain(chunks, [None]):
                if chunk is not None:
                    pending.append((len(chunk), pool.submit(encode, chunk)))
                while pending and (len(pending) > workers + 1 or chunk is None):
                    rows, future = pending.popleft()
                    buffer, group, block = future.result()
                    table.write_table(group, row_group_size=rows)
                    if out is not None:
                        out.write(block)
                    free_buffers.put(buffer)
                    bar.update(rows)
            if fmt in _COMPRESSION and config.n_events == 0:  # an empty stream is still a gzip or zstd stream
                out.write(_codec(fmt).compress(b""))
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


def memory_needed(config: TraceConfig, workers: int) -> int:
    """Bytes writing the trace of ``config`` on ``workers`` threads takes at its peak: the epoch being
    written and the next being generated, and the row groups in flight; at most, whatever ``n_events``."""
    generating = 2 * min(config.n_events, EPOCH_ROWS) * GENERATION_BYTES_PER_EVENT
    return generating + (workers + 2) * buffer_bytes(CHUNK_ROWS) + PROCESS_BYTES


def _row_groups(config: TraceConfig) -> Iterator[pd.DataFrame]:
    """The trace of ``config`` in chunks of :data:`CHUNK_ROWS` rows (the last may be shorter), generating
    the next epoch on a thread of its own while the rows of this one are handed out."""
    epochs = generate_chunks(config)
    rest = None
    with ThreadPoolExecutor(1, thread_name_prefix="generate") as ahead:
        following = ahead.submit(next, epochs, None)
        while (epoch := following.result()) is not None:
            following = ahead.submit(next, epochs, None)
            start = 0
            if rest is not None:  # joined to the head of this epoch only: copying all of it costs page faults
                start = min(CHUNK_ROWS - len(rest), len(epoch))
                rest = pd.concat([rest, epoch.iloc[:start]], ignore_index=True)
                if len(rest) < CHUNK_ROWS:
                    continue
                yield rest
            whole = start + (len(epoch) - start) // CHUNK_ROWS * CHUNK_ROWS
            for lo in range(start, whole, CHUNK_ROWS):
                yield epoch.iloc[lo:lo + CHUNK_ROWS]
            rest = epoch.iloc[whole:] if whole < len(epoch) else None
    if rest is not None:
        yield rest


def _codec(fmt: str) -> pa.Codec:
    """A fresh codec: pyarrow's gzip codec keeps its stream in the object, so threads may not share one."""
    return pa.Codec(_COMPRESSION[fmt], compression_level=COMPRESSION_LEVEL)


def _truth_table(chunk: pd.DataFrame) -> pa.Table:
    """The ground-truth columns of a chunk of the frame, as Arrow arrays over its numpy columns."""
    columns = [pa.DictionaryArray.from_arrays(chunk["kind"].cat.codes.to_numpy(), _KINDS) if name == "kind"
               else pa.array(chunk[name].to_numpy(), _TRUTH_TYPE[name]) for name in TRUTH_FIELDS]
    return pa.Table.from_arrays(columns, schema=_TRUTH_SCHEMA)
