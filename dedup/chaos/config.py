"""What a chaos run does (workload, faults, timing) and what each consumer process is told."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dedup.errors import ConfigurationError
from dedup.localredis import PERSISTENCE

log = logging.getLogger(__name__)

KILL_POINTS = ("after_claim", "mid_batch", "before_delete")
"""Where a consumer process SIGKILLs itself:

* ``after_claim``: the batch is claimed in the store, no handler has run;
* ``mid_batch``: right after a handler's effect, before the batch is completed
  (the one gap a dedup store cannot close: see :mod:`dedup.chaos`);
* ``before_delete``: the batch is handled and completed, its messages not yet deleted.
"""


@dataclass(frozen=True)
class ChaosConfig:
    """A seeded fault-injection run; :meth:`small` gives a run of well under a minute.

    Workload: ``events`` distinct logical events, plus ``publish_retry_rate`` x events
    publish retries and ``delivery_duplicate_rate`` x events delivery duplicates, plus
    ``poison_per_kind`` poison messages of each kind (not JSON; no dedup key; a handler
    that always fails), published in waves of ``wave_size`` while ``consumers``
    processes consume. ``transient`` events fail ``transient_failures`` times before
    succeeding; ``slow`` events take ``slow_s`` (above the visibility timeout: the
    heartbeat must cover them).

    Faults: ``kills_after_claim`` / ``kills_mid_batch`` / ``kills_before_delete``
    SIGKILLs, each triggered by its own good event (the first consumer to claim it / to
    record its effect / to delete its message dies, once), so every planned kill happens,
    ``redis_restarts`` crashes (SIGKILL) of the dedup Redis for ``outage_s`` each; it
    restarts with what ``redis_persistence`` (a key of
    :data:`dedup.localredis.PERSISTENCE`) kept: ``aof-always`` (the default, the
    recommended setting) keeps every acknowledged write, ``none`` loses them all.
    ``failovers`` instead runs Redis as a primary and a replica whose link lags by
    ``replication_delay_ms``: mid-run the replica is promoted and the old primary
    demoted with ``REPLICAOF`` while handlers run (its clients get READONLY for
    ``readonly_s``) before the endpoint flips to the new primary. ``wait_replicas``
    1 makes every complete wait for the replica's acknowledgement (``WAIT``); 0
    leaves replication asynchronous.

    Timing: ``visibility_timeout_s`` of the queue; ``lease_s``, how long a killed
    consumer's claims block their events (live consumers keep theirs alive, however
    long a batch runs); ``max_receive_count`` high enough that a message held by killed consumers'
    leases twice over (two kill triggers in one batch) is reclaimed before it is
    dead-lettered (a tighter limit dead-letters a good copy now and then on a slow
    machine); ``window_s`` longer than the run,
    so every duplicate arrives within the window.
    """

    events: int = 2_000
    consumers: int = 4
    seed: int = 7
    source: str = "mixed"
    wave_size: int = 250
    publish_retry_rate: float = 0.1
    delivery_duplicate_rate: float = 0.1
    poison_per_kind: int = 4
    transient: int = 40
    transient_failures: int = 1
    slow: int = 8
    slow_s: float = 3.0
    kills_after_claim: int = 3
    kills_mid_batch: int = 0
    kills_before_delete: int = 3
    redis_restarts: int = 1
    outage_s: float = 3.0
    redis_persistence: str = "aof-always"
    failovers: int = 0
    replication_delay_ms: float = 50.0
    readonly_s: float = 1.0
    wait_replicas: int = 0
    complete_within_s: float | None = 0.0
    visibility_timeout_s: int = 2
    lease_s: float = 10.0
    window_s: float = 3_600.0
    max_receive_count: int = 16
    settle_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        for name in ("events", "consumers", "wave_size", "visibility_timeout_s", "max_receive_count"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("poison_per_kind", "transient", "transient_failures", "slow", "kills_after_claim",
                     "kills_mid_batch", "kills_before_delete", "redis_restarts", "failovers",
                     "wait_replicas", "replication_delay_ms", "readonly_s"):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("publish_retry_rate", "delivery_duplicate_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigurationError(f"{name} must be within 0..1, got {getattr(self, name)}")
        if self.redis_persistence not in PERSISTENCE:
            raise ConfigurationError(f"redis_persistence must be one of {', '.join(PERSISTENCE)}, "
                                     f"got {self.redis_persistence!r}")
        if self.failovers and self.redis_restarts:
            raise ConfigurationError("a run either restarts Redis or fails it over, not both")
        if self.wait_replicas and not self.failovers:
            raise ConfigurationError("wait_replicas needs a replica: set failovers")
        if self.transient + self.slow + sum(self.kills.values()) > self.events:
            raise ConfigurationError("transient + slow events + kills cannot exceed events (each takes "
                                     "its own event)")
        if self.slow and self.slow_s <= self.visibility_timeout_s:
            raise ConfigurationError(f"slow_s ({self.slow_s}) must exceed visibility_timeout_s "
                                     f"({self.visibility_timeout_s}), or the heartbeat is not exercised")
        if self.complete_within_s is not None and self.complete_within_s < 0:
            raise ConfigurationError(f"complete_within_s must be >= 0, got {self.complete_within_s}")
        if self.window_s <= self.settle_timeout_s:
            raise ConfigurationError("window_s must exceed settle_timeout_s, so every duplicate arrives "
                                     "within the window")
        receives_while_held = self.lease_s / self.visibility_timeout_s
        if self.max_receive_count < 2 * (receives_while_held + 1) + 4:
            log.warning("max_receive_count %d leaves little room: a message held by a killed consumer's "
                        "lease is received about %d times before it can be claimed again (twice that "
                        "when two kills hit its batch), so good events may be dead-lettered",
                        self.max_receive_count, receives_while_held)

    @property
    def restart_loses_data(self) -> bool:
        """Whether a crash of the dedup Redis loses acknowledged writes under ``redis_persistence``."""
        return self.redis_persistence in ("none", "rdb")

    @property
    def publish_retries(self) -> int:
        return round(self.events * self.publish_retry_rate)

    @property
    def delivery_duplicates(self) -> int:
        return round(self.events * self.delivery_duplicate_rate)

    @property
    def kills(self) -> dict[str, int]:
        """Planned kills by kill point."""
        return {"after_claim": self.kills_after_claim, "mid_batch": self.kills_mid_batch,
                "before_delete": self.kills_before_delete}

    def replace(self, **changes: Any) -> ChaosConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def failover(cls, **changes: Any) -> ChaosConfig:
        """The failover scenario (:data:`FAILOVER`) with ``changes``."""
        return cls(**{**FAILOVER, **changes})

    @classmethod
    def small(cls, **changes: Any) -> ChaosConfig:
        """A run of a few hundred messages and every fault kind, for tests and notebooks."""
        base = cls(events=200, consumers=3, wave_size=100, poison_per_kind=1, transient=4, slow=2,
                   slow_s=1.5, kills_after_claim=1, kills_before_delete=1,
                   outage_s=1.5, visibility_timeout_s=1, lease_s=4.0, max_receive_count=14,
                   settle_timeout_s=120.0)
        return base.replace(**changes) if changes else base


FAILOVER: dict[str, Any] = {
    "failovers": 3, "redis_restarts": 0, "kills_after_claim": 0, "kills_before_delete": 0,
    "replication_delay_ms": 200.0, "complete_within_s": None,
}
"""What the failover scenario changes: three failovers (a replica 200 ms behind promoted, the
primary demoted) instead of the restart, no kills, and completions batched (the library default),
so that WAIT costs a replica round trip per batch, not per event."""


@dataclass(frozen=True)
class WorkerSpec:
    """Everything one consumer process needs, written as JSON by the parent."""

    slot: int
    endpoint_url: str
    region: str
    queue_url: str
    redis_url: str
    ledger_path: str
    visibility_timeout_s: int
    lease_s: float
    window_s: float
    slow_s: float
    transient_failures: int
    wait_replicas: int = 0
    complete_within_s: float | None = 0.0
    slow_keys: tuple[str, ...] = ()
    transient_keys: tuple[str, ...] = ()
    poison_keys: tuple[str, ...] = ()
    kill_keys: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # by kill point

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def load(cls, path: str | Path) -> WorkerSpec:
        raw = json.loads(Path(path).read_text())
        for name in ("slow_keys", "transient_keys", "poison_keys"):
            raw[name] = tuple(raw[name])
        raw["kill_keys"] = {point: tuple(keys) for point, keys in raw["kill_keys"].items()}
        return cls(**raw)
