"""The chaos run's ledger: what every consumer process did, in one SQLite file (WAL).

The handler's *effects* are recorded here, outside the dedup store, so that a
lost event or a double effect shows up however the store behaved (the store is
restarted mid-run and loses its data). Each process writes its own rows and
commits each one at once: a row written before a SIGKILL survives it.

Tables:

* ``calls``: one row per handler call: ``outcome`` is ``effect`` (the effect
  happened), ``transient`` or ``poison`` (the handler failed on purpose), with
  the times the batch's claim started and returned and the handler started and ended.
* ``receives``: every message a consumer received (message id, envelope id, receive count).
* ``dispositions``: what the consumer decided for each message of a settled batch.
* ``outages``: store outages a consumer met: a batch left undecided (``received`` > 0), or
  a store check before receiving that failed (``received`` = 0).
* ``ready``: consumer processes that are about to poll.
* ``faults``: the kills the processes inflicted on themselves (one per kill point and trigger
  key), with the batch's claim times.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT NOT NULL, envelope_id TEXT, pid INTEGER NOT NULL, outcome TEXT NOT NULL,
    claim_start_s REAL, claim_end_s REAL, start_s REAL NOT NULL, end_s REAL NOT NULL);
CREATE INDEX IF NOT EXISTS calls_key ON calls (key, outcome);
CREATE TABLE IF NOT EXISTS receives (
    message_id TEXT NOT NULL, envelope_id TEXT, receive_count INTEGER, pid INTEGER NOT NULL,
    at_s REAL NOT NULL);
CREATE TABLE IF NOT EXISTS dispositions (
    message_id TEXT NOT NULL, key TEXT, outcome TEXT NOT NULL, deleted INTEGER NOT NULL,
    pid INTEGER NOT NULL, at_s REAL NOT NULL);
CREATE TABLE IF NOT EXISTS outages (pid INTEGER NOT NULL, at_s REAL NOT NULL, received INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS ready (pid INTEGER NOT NULL, slot INTEGER NOT NULL, at_s REAL NOT NULL);
CREATE TABLE IF NOT EXISTS faults (
    pid INTEGER NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL, at_s REAL NOT NULL,
    claim_start_s REAL, claim_end_s REAL, UNIQUE (kind, key));
"""


@dataclass(frozen=True)
class Call:
    """One handler call as recorded."""

    key: str
    envelope_id: str | None
    pid: int
    outcome: str
    claim_start_s: float | None
    claim_end_s: float | None
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Receive:
    """One message received by one consumer."""

    message_id: str
    envelope_id: str | None
    receive_count: int | None
    pid: int
    at_s: float


@dataclass(frozen=True)
class Fault:
    """A kill a consumer process inflicted on itself (``kind`` is the kill point, ``key`` its trigger)."""

    pid: int
    kind: str
    key: str
    at_s: float
    claim_start_s: float | None
    claim_end_s: float | None


class Ledger:
    """One connection to the ledger file; use one per process (and per thread)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- writes (consumer processes) -------------------------------------------

    def record_call(self, call: Call) -> None:
        self._db.execute("INSERT INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (
            call.key, call.envelope_id, call.pid, call.outcome, call.claim_start_s, call.claim_end_s,
            call.start_s, call.end_s))

    def count_calls(self, key: str, outcome: str) -> int:
        """How many calls on ``key`` ended with ``outcome``, across all processes."""
        return self._db.execute("SELECT COUNT(*) FROM calls WHERE key = ? AND outcome = ?",
                                (key, outcome)).fetchone()[0]

    def record_receives(self, receives: Iterable[Receive]) -> None:
        self._db.executemany("INSERT INTO receives VALUES (?, ?, ?, ?, ?)", [
            (r.message_id, r.envelope_id, r.receive_count, r.pid, r.at_s) for r in receives])

    def record_dispositions(self, rows: Iterable[tuple[str, str | None, str, bool, int, float]]) -> None:
        """``(message_id, key, outcome, deleted, pid, at_s)`` rows."""
        self._db.executemany("INSERT INTO dispositions VALUES (?, ?, ?, ?, ?, ?)", rows)

    def record_outage(self, pid: int, at_s: float, received: int) -> None:
        self._db.execute("INSERT INTO outages VALUES (?, ?, ?)", (pid, at_s, received))

    def record_ready(self, pid: int, slot: int, at_s: float) -> None:
        self._db.execute("INSERT INTO ready VALUES (?, ?, ?)", (pid, slot, at_s))

    def record_fault(self, fault: Fault) -> bool:
        """Record ``fault`` unless its kind and key are recorded already (by any process): whether it was."""
        cursor = self._db.execute("INSERT OR IGNORE INTO faults VALUES (?, ?, ?, ?, ?, ?)", (
            fault.pid, fault.kind, fault.key, fault.at_s, fault.claim_start_s, fault.claim_end_s))
        return cursor.rowcount == 1

    # ---- reads (the analysis) ----------------------------------------------------

    def calls(self) -> list[Call]:
        return [Call(*row) for row in self._db.execute("SELECT * FROM calls ORDER BY start_s")]

    def receives(self) -> list[Receive]:
        return [Receive(*row) for row in self._db.execute("SELECT * FROM receives ORDER BY at_s")]

    def faults(self) -> list[Fault]:
        return [Fault(*row) for row in self._db.execute("SELECT * FROM faults ORDER BY at_s")]

    def ready_slots(self) -> int:
        """How many consumer slots have had a process ready to poll."""
        return self._db.execute("SELECT COUNT(DISTINCT slot) FROM ready").fetchone()[0]

    def fault_pids(self) -> set[int]:
        return {row[0] for row in self._db.execute("SELECT pid FROM faults")}

    def disposition_counts(self) -> dict[str, int]:
        """Messages by consumer outcome (``processed``, ``duplicate``, ``bad_input``, ...)."""
        return dict(self._db.execute("SELECT outcome, COUNT(*) FROM dispositions GROUP BY outcome"))

    def deletions(self) -> dict[str, int]:
        """Deleted messages by consumer outcome (only ``processed`` and ``duplicate`` may appear)."""
        return dict(self._db.execute(
            "SELECT outcome, COUNT(*) FROM dispositions WHERE deleted GROUP BY outcome"))

    def outage_batches(self) -> tuple[int, int]:
        """``(batches, failed store checks)`` while the store was down."""
        batches, checks = self._db.execute(
            "SELECT SUM(received > 0), SUM(received = 0) FROM outages").fetchone()
        return batches or 0, checks or 0
