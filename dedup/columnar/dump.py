"""A dump on disk: JSONL (plain, ``.gz``, ``.zst``) or Parquet, its identity and its ground truth.

A JSONL dump holds one EventBridge envelope a line. A Parquet dump holds the
envelope's JSON text in an ``envelope`` column, optionally beside
``arrival_ms`` and the ground-truth columns (``logical_id``, ``kind``,
``original_arrival_ms``). A JSONL dump's ground truth lives beside it in
``NAME.truth.parquet`` or ``NAME.truth.csv`` (the sidecar ``write_jsonl``
writes), one row per line.

:meth:`Dump.identity` is what the key cache checks: size, modification time
and a hash of the first MiB, so a replaced or rewritten dump is never read
through a stale cache.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dedup.traces.trace import TRUTH_COLUMNS

_HEAD_BYTES = 1 << 20
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
_COMPRESSIONS = {".gz": "gzip", ".zst": "zstd"}
#: The columns a dump's ground truth brings (arrival time first).
TRUTH_FIELDS = ("arrival_ms", *TRUTH_COLUMNS)


@dataclass(frozen=True)
class Dump:
    """A dump file and how it is read."""

    path: Path
    format: Literal["jsonl", "parquet"]
    compression: str | None = None

    @classmethod
    def of(cls, path: str | Path) -> Dump:
        """Recognise ``path`` by its name: ``*.parquet``, ``*.jsonl``, ``*.jsonl.gz``, ``*.jsonl.zst``."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no dump at {path}")
        if path.suffix == ".parquet":
            return cls(path, "parquet")
        compression = _COMPRESSIONS.get(path.suffix)
        inner = path.with_suffix("") if compression else path
        if inner.suffix not in _JSONL_SUFFIXES:
            raise ValueError(f"{path.name}: a dump is .parquet or .jsonl (optionally .gz or .zst)")
        return cls(path, "jsonl", compression)

    @property
    def stem(self) -> Path:
        """The path without its format suffixes (``trace.jsonl.gz`` -> ``trace``)."""
        path = self.path.with_suffix("") if self.compression else self.path
        return path.with_suffix("")

    def identity(self) -> dict[str, int | str]:
        """Size, modification time (ns) and SHA-256 of the first MiB: a change in any voids caches."""
        stat = self.path.stat()
        with self.path.open("rb") as f:
            head = hashlib.sha256(f.read(_HEAD_BYTES)).hexdigest()
        return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "head_sha256": head}

    @property
    def truth_target(self) -> Path:
        """Where a JSONL dump's ground truth is written: ``NAME.truth.parquet``."""
        return self.stem.with_name(self.stem.name + ".truth.parquet")

    def truth_sidecar(self) -> Path | None:
        """The JSONL dump's ground-truth file (``NAME.truth.parquet`` or ``NAME.truth.csv``), if any."""
        if self.format == "parquet":
            return None
        for suffix in (".truth.parquet", ".truth.csv"):
            candidate = self.stem.with_name(self.stem.name + suffix)
            if candidate.exists():
                return candidate
        return None

    def lines_sql(self) -> str:
        """A relation of one ``line`` (envelope JSON text, NULL for a blank line) per message, in order."""
        path = _quote(self.path)
        if self.format == "parquet":
            return f"(SELECT envelope AS line FROM read_parquet({path}))"
        compression = self.compression or "none"
        return (f"(SELECT line FROM read_csv({path}, columns = {{'line': 'VARCHAR'}}, delim = chr(1), "
                f"quote = '', escape = '', header = false, auto_detect = false, "
                f"compression = '{compression}'))")

    def truth_sql(self) -> str | None:
        """A relation of the ground-truth columns, one row per message in order, or None without truth."""
        if self.format == "parquet":
            return f"(SELECT * FROM read_parquet({_quote(self.path)}))"
        sidecar = self.truth_sidecar()
        if sidecar is None:
            return None
        reader = "read_parquet" if sidecar.suffix == ".parquet" else "read_csv"
        return f"(SELECT * FROM {reader}({_quote(sidecar)}))"


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"
