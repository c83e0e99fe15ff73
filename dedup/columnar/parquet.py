"""A small Parquet writer for flat tables of required columns, a row group at a time, pages compressed apart.

DuckDB's writer takes about 2.5 s of CPU per million 800-byte envelopes on
this project's machines, and without pyarrow every string reaches it as a
Python object or through a CSV scan. Envelopes are rendered here straight
into Parquet's PLAIN layout (:func:`dedup.traces.envelope_text.render_lines`
with ``framing="parquet"``), so a row group is only compressed and framed:
its pages compress in parallel threads (zstd through the system's libzstd,
which releases the GIL; gzip, from the standard library, when libzstd is
missing) and the file is written in order.

Columns are ``string`` (BYTE_ARRAY, UTF-8), ``int64`` or ``int32``, all
REQUIRED and PLAIN-encoded; the footer is Thrift compact protocol, written
here (see parquet.thrift in apache/parquet-format). DuckDB reads the files
(tested).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gzip
import itertools
import struct
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np

ColumnType = Literal["string", "int64", "int32"]
#: Uncompressed bytes a data page holds at most (a row is never split; a single row may exceed it).
PAGE_BYTES = 1 << 20
#: zstd level: 1 compresses these envelopes better than the default 3 here, and faster.
ZSTD_LEVEL = 1

_MAGIC = b"PAR1"
_PHYSICAL = {"string": 6, "int64": 2, "int32": 1}  # BYTE_ARRAY, INT64, INT32
_ZSTD, _GZIP = 6, 2  # CompressionCodec
_PLAIN, _RLE = 0, 3  # Encoding
_REQUIRED, _UTF8 = 0, 0  # FieldRepetitionType, ConvertedType
# Thrift compact protocol types.
_T_I32, _T_I64, _T_BINARY, _T_LIST, _T_STRUCT = 5, 6, 8, 9, 12


# ---- compression -------------------------------------------------------------------------------------


class _Zstd:
    """libzstd through ctypes (which releases the GIL during the call), a context per thread."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        lib.ZSTD_compressBound.restype = ctypes.c_size_t
        lib.ZSTD_compressBound.argtypes = [ctypes.c_size_t]
        lib.ZSTD_createCCtx.restype = ctypes.c_void_p
        lib.ZSTD_compressCCtx.restype = ctypes.c_size_t
        lib.ZSTD_compressCCtx.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                                          ctypes.c_size_t, ctypes.c_int]
        lib.ZSTD_isError.restype = ctypes.c_uint
        lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
        self.local = threading.local()

    def compress(self, data: np.ndarray, level: int = ZSTD_LEVEL) -> bytes:
        """One zstd frame of ``data`` (a contiguous uint8 array)."""
        local = self.local
        if getattr(local, "context", None) is None:
            local.context = self.lib.ZSTD_createCCtx()  # one per thread, for the process's life
            local.out = ctypes.create_string_buffer(0)
        bound = self.lib.ZSTD_compressBound(data.nbytes)
        if len(local.out) < bound:
            local.out = ctypes.create_string_buffer(bound)
        size = self.lib.ZSTD_compressCCtx(local.context, local.out, bound, data.ctypes.data, data.nbytes,
                                          level)
        if self.lib.ZSTD_isError(size):
            raise RuntimeError(f"zstd failed compressing {data.nbytes} bytes")
        return ctypes.string_at(local.out, size)


@cache
def zstd() -> _Zstd | None:
    """The system's libzstd, or None when it cannot be loaded."""
    name = ctypes.util.find_library("zstd")
    try:
        return _Zstd(ctypes.CDLL(name or "libzstd.so.1"))
    except OSError:
        return None


def compress(data: np.ndarray, codec: int) -> bytes:
    if codec == _ZSTD:
        return zstd().compress(data)  # type: ignore[union-attr]
    return gzip.compress(data.tobytes(), compresslevel=1)


def default_codec() -> int:
    """zstd when libzstd loads, else gzip (slower, standard library)."""
    return _ZSTD if zstd() is not None else _GZIP


# ---- encoding values -----------------------------------------------------------------------------------


@dataclass
class ColumnChunk:
    """One column of one row group: its pages, each a page header and compressed data, ready to write."""

    pages: list[bytes]
    num_values: int
    uncompressed_bytes: int

    @property
    def compressed_bytes(self) -> int:
        return sum(len(p) for p in self.pages)


def plain_pages(values: np.ndarray, starts: np.ndarray, codec: int) -> ColumnChunk:
    """A column chunk of PLAIN-encoded ``values`` (uint8), row ``i`` at ``starts[i]:starts[i + 1]``.

    Pages break between rows near every :data:`PAGE_BYTES`.
    """
    rows = len(starts) - 1
    cuts = np.searchsorted(starts, np.arange(PAGE_BYTES, int(starts[-1]), PAGE_BYTES), side="left")
    bounds = np.unique(np.r_[0, cuts, rows])
    pages, total = [], 0
    for lo, hi in itertools.pairwise(bounds):
        data = values[starts[lo]:starts[hi]]
        body = compress(np.ascontiguousarray(data), codec)
        header = _struct([(1, _T_I32, 0), (2, _T_I32, data.nbytes), (3, _T_I32, len(body)),
                          (5, _T_STRUCT, _struct([(1, _T_I32, int(hi - lo)), (2, _T_I32, _PLAIN),
                                                  (3, _T_I32, _RLE), (4, _T_I32, _RLE)]))])
        pages.append(header + body)
        total += len(header) + data.nbytes
    return ColumnChunk(pages, rows, total)


def numbers(values: np.ndarray, kind: ColumnType, codec: int) -> ColumnChunk:
    """A column chunk of integers (little-endian PLAIN)."""
    data = np.ascontiguousarray(values, dtype="<i8" if kind == "int64" else "<i4").view(np.uint8)
    width = 8 if kind == "int64" else 4
    return plain_pages(data, np.arange(len(values) + 1, dtype=np.int64) * width, codec)


def strings(codes: np.ndarray, words: tuple[str, ...], codec: int) -> ColumnChunk:
    """A column chunk of ``words[codes[i]]`` (a small vocabulary, such as a categorical's)."""
    encoded = [w.encode("utf-8") for w in words]
    width = 4 + max(len(w) for w in encoded)
    table = np.zeros((len(words), width), dtype=np.uint8)
    used = np.zeros((len(words), width), dtype=bool)
    for k, w in enumerate(encoded):
        record = struct.pack("<I", len(w)) + w
        table[k, :len(record)] = np.frombuffer(record, dtype=np.uint8)
        used[k, :len(record)] = True
    lengths = np.array([4 + len(w) for w in encoded], dtype=np.int64)[codes]
    return plain_pages(table[codes][used[codes]], np.r_[0, np.cumsum(lengths)], codec)


# ---- the file --------------------------------------------------------------------------------------------


class ParquetWriter:
    """Write row groups of ``columns`` (name, type) to ``path``; :meth:`close` writes the footer."""

    def __init__(self, path: Path, columns: list[tuple[str, ColumnType]], codec: int) -> None:
        self.columns = columns
        self.codec = codec
        self.file: BinaryIO = path.open("wb")
        self.file.write(_MAGIC)
        self.row_groups: list[bytes] = []
        self.rows = 0

    def write_row_group(self, chunks: list[ColumnChunk]) -> None:
        """Append one row group: a chunk per column, in the columns' order, with equal row counts."""
        if len(chunks) != len(self.columns) or len({c.num_values for c in chunks}) != 1:
            raise ValueError("a row group needs one chunk per column, all of the same rows")
        metas, size = [], 0
        for (name, kind), chunk in zip(self.columns, chunks, strict=True):
            offset = self.file.tell()
            for page in chunk.pages:
                self.file.write(page)
            meta = _struct([(1, _T_I32, _PHYSICAL[kind]), (2, _T_LIST, (_T_I32, [_PLAIN])),
                            (3, _T_LIST, (_T_BINARY, [name.encode()])), (4, _T_I32, self.codec),
                            (5, _T_I64, chunk.num_values), (6, _T_I64, chunk.uncompressed_bytes),
                            (7, _T_I64, chunk.compressed_bytes), (9, _T_I64, offset)])
            metas.append(_struct([(2, _T_I64, offset), (3, _T_STRUCT, meta)]))
            size += chunk.uncompressed_bytes
        rows = chunks[0].num_values
        self.row_groups.append(_struct([(1, _T_LIST, (_T_STRUCT, metas)), (2, _T_I64, size),
                                        (3, _T_I64, rows)]))
        self.rows += rows

    def close(self) -> None:
        schema = [_struct([(4, _T_BINARY, b"schema"), (5, _T_I32, len(self.columns))])]
        for name, kind in self.columns:
            fields = [(1, _T_I32, _PHYSICAL[kind]), (3, _T_I32, _REQUIRED), (4, _T_BINARY, name.encode())]
            if kind == "string":
                fields += [(6, _T_I32, _UTF8), (10, _T_STRUCT, _struct([(1, _T_STRUCT, _struct([]))]))]
            schema.append(_struct(fields))
        footer = _struct([(1, _T_I32, 1), (2, _T_LIST, (_T_STRUCT, schema)), (3, _T_I64, self.rows),
                          (4, _T_LIST, (_T_STRUCT, self.row_groups)), (6, _T_BINARY, b"dedup")])
        self.file.write(footer + struct.pack("<I", len(footer)) + _MAGIC)
        self.file.close()


# ---- Thrift compact protocol -------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _zigzag(n: int) -> bytes:
    return _varint((n << 1) ^ (n >> 63))


def _value(kind: int, value: object) -> bytes:
    if kind in (_T_I32, _T_I64):
        return _zigzag(int(value))  # type: ignore[call-overload]
    if kind == _T_BINARY:
        return _varint(len(value)) + value  # type: ignore[arg-type, operator]
    if kind == _T_STRUCT:
        return value  # type: ignore[return-value]
    element, items = value  # type: ignore[misc]
    size = len(items)
    head = bytes([size << 4 | element]) if size < 15 else bytes([0xF0 | element]) + _varint(size)
    return head + b"".join(_value(element, item) for item in items)


def _struct(fields: list[tuple[int, int, object]]) -> bytes:
    """A struct of (field id, type, value), ids increasing; a struct value is already encoded."""
    out, last = bytearray(), 0
    for field_id, kind, value in fields:
        delta = field_id - last
        out += bytes([delta << 4 | kind]) if 0 < delta <= 15 else bytes([kind]) + _zigzag(field_id)
        out += _value(kind, value)
        last = field_id
    out.append(0)
    return bytes(out)
