"""A trace: delivered messages in arrival order, ground truth when known, envelopes on demand.

A generated trace keeps a compact frame (see :data:`FRAME_COLUMNS` and
``data/README.md``) and renders envelopes only when asked; a loaded trace
(``Trace.from_jsonl``, bring your own) holds the parsed envelopes it read.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from dedup.keys import KeyStrategy, NoKey, key_strategy
from dedup.traces.config import TraceConfig
from dedup.traces.render import PUBLISHES_PER_EVENT, render

#: Ground-truth columns; a trace has all of them or none.
TRUTH_COLUMNS = ("logical_id", "kind", "original_arrival_ms")
_CHUNK_ROWS = 20_000


@dataclass(frozen=True)
class Keys:
    """The raw keys one strategy gives a trace's messages, factorised.

    ``codes[i]`` numbers message ``i``'s raw key (equal keys, equal codes) or
    is -1 when the strategy yields none; ``raw[code]`` is the key string the
    store would hash. ``unkeyed_reasons`` counts why messages got no key.
    """

    strategy: str
    codes: np.ndarray
    raw: list[str]
    unkeyed_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def unkeyed(self) -> int:
        return int((self.codes < 0).sum())

    def key(self, i: int) -> str | None:
        """Message ``i``'s raw key, or None."""
        code = int(self.codes[i])
        return self.raw[code] if code >= 0 else None


class Trace:
    """Delivered messages in arrival order (``frame``, one row each), with envelopes on demand."""

    def __init__(
        self,
        frame: pd.DataFrame,
        *,
        config: TraceConfig | None = None,
        envelopes: Sequence[Mapping[str, Any]] | None = None,
        rejected: Sequence[tuple[str, str]] = (),
    ) -> None:
        if (config is None) == (envelopes is None):
            raise ValueError("a trace is either generated (config) or loaded (envelopes)")
        if envelopes is not None and len(envelopes) != len(frame):
            raise ValueError(f"{len(envelopes)} envelopes for {len(frame)} rows")
        arrival = frame["arrival_ms"].to_numpy()
        if len(arrival) > 1 and (np.diff(arrival) < 0).any():
            raise ValueError("a trace's rows must be in arrival order (arrival_ms non-decreasing)")
        present = [c for c in TRUTH_COLUMNS if c in frame.columns]
        if present and len(present) != len(TRUTH_COLUMNS):
            raise ValueError(
                f"ground truth needs all of {', '.join(TRUTH_COLUMNS)}; got {', '.join(present)}"
            )
        self.frame = frame.reset_index(drop=True)
        self.config = config
        self._envelopes = list(envelopes) if envelopes is not None else None
        #: Messages of a loaded file that were not envelopes: (line, or "line record k"; reason).
        self.rejected = list(rejected)
        self._keys: dict[str, Keys] = {}

    # ---- shape ---------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        origin = f"generated {self.config.source} seed={self.config.seed}" if self.config else "loaded"
        truth = "with" if self.has_truth else "without"
        return f"<Trace {len(self)} messages, {origin}, {truth} ground truth>"

    @property
    def has_truth(self) -> bool:
        """Whether every row says which logical event it carries and how it came to be."""
        return TRUTH_COLUMNS[0] in self.frame.columns

    @property
    def arrival_ms(self) -> np.ndarray:
        return self.frame["arrival_ms"].to_numpy()

    def head(self, n: int) -> Trace:
        """The first ``n`` arrivals as a trace (ground truth stays consistent: originals come first)."""
        envelopes = self._envelopes[:n] if self._envelopes is not None else None
        return Trace(self.frame.iloc[:n], config=self.config, envelopes=envelopes)

    # ---- envelopes -------------------------------------------------------------

    def envelopes(self, start: int = 0, stop: int | None = None) -> Iterator[dict[str, Any]]:
        """The envelopes of rows ``start:stop``, rendered a chunk at a time."""
        stop = len(self) if stop is None else min(stop, len(self))
        if self._envelopes is not None:
            yield from self._envelopes[start:stop]
            return
        for lo in range(start, stop, _CHUNK_ROWS):
            yield from render(self.frame.iloc[lo:min(lo + _CHUNK_ROWS, stop)], self.config.seed)

    def envelope(self, i: int) -> dict[str, Any]:
        """Row ``i``'s envelope."""
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} is outside a trace of {len(self)} messages")
        return next(self.envelopes(i, i + 1))

    # ---- keys --------------------------------------------------------------------

    def keys(self, *strategies: KeyStrategy | str, progress: bool = False) -> list[Keys]:
        """Each strategy's raw keys for every message, computed with the strategy itself.

        A generated trace renders and keys each distinct envelope once (an SQS
        redelivery repeats an envelope exactly, so it repeats its key), and
        renders once for all the strategies asked for together. Results are
        cached per strategy spec.
        """
        specs = [s if isinstance(s, str) else _spec_of(s) for s in strategies]
        todo = {
            spec: key_strategy(s) for spec, s in zip(specs, strategies, strict=True) if spec not in self._keys
        }
        if todo:
            for spec, keys in zip(todo, self._derive(list(todo.values()), progress), strict=True):
                self._keys[spec] = keys
        return [self._keys[spec] for spec in specs]

    def _derive(self, strategies: list[KeyStrategy], progress: bool) -> list[Keys]:
        if self._envelopes is None:
            frame = self.frame
            envelope_no = frame["logical_id"].to_numpy().astype(np.int64) * PUBLISHES_PER_EVENT + frame[
                "publish_no"].to_numpy()
            first_rows, inverse = _first_occurrences(envelope_no)
        else:
            first_rows, inverse = np.arange(len(self)), np.arange(len(self))
        tables: list[dict[str, int]] = [{} for _ in strategies]
        reasons: list[dict[str, int]] = [{} for _ in strategies]
        # Per distinct envelope: its key code, or -(1 + reason number) when it has no key.
        rep_codes = np.full((len(strategies), len(first_rows)), -1, dtype=np.int64)
        bar = progress_bar(len(first_rows), progress, "keying")
        for lo in range(0, len(first_rows), _CHUNK_ROWS):
            rows = first_rows[lo:lo + _CHUNK_ROWS]
            chunk = (render(self.frame.iloc[rows], self.config.seed) if self._envelopes is None
                     else self._envelopes[lo:lo + _CHUNK_ROWS])
            for s, strategy in enumerate(strategies):
                table, why, out = tables[s], reasons[s], rep_codes[s]
                for j, event in enumerate(chunk):
                    try:
                        out[lo + j] = table.setdefault(strategy.key_for(event), len(table))
                    except NoKey as exc:
                        out[lo + j] = -1 - why.setdefault(exc.reason, len(why))
            bar.update(len(rows))
        bar.close()
        result = []
        for s, strategy in enumerate(strategies):
            codes = rep_codes[s][inverse]
            counts = np.bincount(-1 - codes[codes < 0], minlength=len(reasons[s]))
            unkeyed = {reason: int(counts[n]) for reason, n in reasons[s].items()}
            result.append(Keys(strategy.name, np.maximum(codes, -1), list(tables[s]), unkeyed))
        return result

    # ---- views ---------------------------------------------------------------------

    def table(self) -> pd.DataFrame:
        """A readable copy of the frame: times as ISO text, the envelope id and source added."""
        out = self.frame.copy()
        out.insert(0, "arrival", pd.to_datetime(out["arrival_ms"], unit="ms", utc=True))
        heads = [(e["id"], e["source"], e.get("detail-type")) for e in self.envelopes()]
        out["envelope_id"] = [h[0] for h in heads]
        out["source"] = [h[1] for h in heads]
        out["detail_type"] = [h[2] for h in heads]
        if self.has_truth:
            out["delay_s"] = (out["arrival_ms"] - out["original_arrival_ms"]) / 1000
        return out


def _spec_of(strategy: KeyStrategy) -> str:
    return f"{type(strategy).__name__}:{strategy!r}"


def _first_occurrences(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows where each distinct value first occurs (in row order), and each row's index into them."""
    _, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order], rank[inverse.ravel()]


def progress_bar(total: int, enabled: bool, desc: str, unit: str = "msg") -> Any:
    """A tqdm bar (stderr), or a disabled one with the same interface."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, disable=not enabled)
