"""Reconcile a chaos run: what was published, what the handler did, what is in the DLQ.

Definitions (the ledger is the ground truth of effects):

* **lost**: a unique logical event with no effect that is not in the DLQ either.
* **double-processed**: a logical event with more than one effect. Every extra
  effect is attributed to the first cause that explains it, else it is *unexplained*:

  - *crash between effect and completion*: the earlier effect is the one whose
    process was SIGKILLed (``mid_batch``) right after it, before it was completed;
    the claim lapsed with its lease and a redelivery ran the handler again. Events
    the batch had finished before are completed already, so each such kill explains
    one extra effect, of its own trigger event. No dedup store can close this gap:
    only an effect that is idempotent, or committed in one transaction with the dedup
    record, can.
  - *Redis data loss (restart without persistence)*: only when the run's Redis
    persists nothing a crash keeps (``none``, ``rdb``): the earlier effect's claim
    returned before the dedup Redis died, and the later effect's claim started after
    it was restarted, empty. With AOF a restart explains nothing: every double is
    unexplained.
  - *failover (asynchronous replication)*: the earlier effect's claim returned
    before the endpoint flipped to the promoted replica, the later one's started
    after the failover began: the replica had not received the record yet (or a
    write reached the old primary after the promotion). ``WAIT``-acknowledged
    completes remove the lost completions.

  The window (``window_s``) outlasts the run, so every duplicate arrives within it:
  an *unexplained* extra effect is a duplicate the window should have caught.
"""

from __future__ import annotations

import collections
import itertools
from dataclasses import dataclass, field
from typing import Any

from dedup.aws.messages import parse_body
from dedup.chaos.config import KILL_POINTS, ChaosConfig
from dedup.chaos.ledger import Call, Fault, Ledger, Receive
from dedup.chaos.workload import KEY_SPEC, NOT_JSON_MARKER, POISON_MARKER, Workload
from dedup.errors import BadMessageError, MissingKeyError
from dedup.keys import derive_key, key_strategy

POISON_KINDS = ("not_json", "keyless", "handler")
CAUSE_REDIS = "Redis data loss (restart without persistence)"
CAUSE_FAILOVER = "failover (asynchronous replication)"
CAUSE_CRASH = "crash between effect and completion"
CAUSE_NONE = "unexplained"
DECISIONS = ("processed", "duplicate", "in_flight", "failed", "bad_input")


@dataclass
class Published:
    """What the run put on the bus and the queue."""

    accepted: int = 0  # PutEvents entries accepted for the good events and their publish retries
    failed: int = 0  # entries EventBridge never accepted
    publish_retries: int = 0
    delivery_duplicates: int = 0
    poison_message_ids: dict[str, list[str]] = field(default_factory=lambda: collections.defaultdict(list))
    poison_envelope_ids: dict[str, list[str]] = field(default_factory=lambda: collections.defaultdict(list))

    def poison_count(self, kind: str) -> int:
        return len(self.poison_message_ids.get(kind, ())) + len(self.poison_envelope_ids.get(kind, ()))


@dataclass(frozen=True)
class Restart:
    """One stop and restart of the dedup Redis (epoch seconds)."""

    stop_begin_s: float
    stop_end_s: float
    restart_s: float
    up_s: float


@dataclass(frozen=True)
class Failover:
    """One failover of the dedup Redis (epoch seconds): replica promoted and primary demoted at
    ``begin_s`` .. ``demoted_s``, the endpoint flipped to the new primary at ``flipped_s``."""

    begin_s: float
    demoted_s: float
    flipped_s: float


@dataclass(frozen=True)
class ChaosReport:
    """The figures of one chaos run; ``ok`` when every asserted property holds."""

    config: ChaosConfig
    wall_time_s: float
    published: Published
    unique_events: int
    effects: int
    processed_events: int
    lost: tuple[str, ...]
    double_processed: int  # events with more than one effect
    extra_effects: dict[str, int]  # by cause
    unexpected_effects: int  # effects on poison or unknown keys
    dead_letters: dict[str, int]  # by kind: not_json, keyless, handler, good, unknown
    poison_missing: tuple[str, ...]  # poison messages sent that are not in the DLQ
    poison_min_receive_count: int | None
    faults: dict[str, int]
    kills_planned: dict[str, int]
    slow_calls: int
    slow_rereceived: int  # slow messages received again, after their visibility could lapse, mid-handler
    concurrent_deliveries: int  # messages handed to two consumers at once (the claim makes one IN_FLIGHT)
    decisions: dict[str, int]
    deletions: dict[str, int]  # deleted messages by consumer outcome
    receives: int
    unexpected_exits: tuple[str, ...]
    settled: bool
    left_on_queue: int
    work_dir: str | None = None

    @property
    def unexplained_extra_effects(self) -> int:
        return self.extra_effects.get(CAUSE_NONE, 0)

    @property
    def doubles_allowed(self) -> int:
        """Double-processed events the faults can explain: one per kill between effect and completion,
        and those explained by data loss the run's Redis setting allows."""
        return (self.config.kills_mid_batch + self.extra_effects.get(CAUSE_REDIS, 0)
                + self.extra_effects.get(CAUSE_FAILOVER, 0))

    @property
    def deleted_unchecked(self) -> int:
        """Messages deleted although they were neither processed nor a completed duplicate."""
        return sum(n for outcome, n in self.deletions.items() if outcome not in ("processed", "duplicate"))

    @property
    def failures(self) -> list[str]:
        """The asserted properties that do not hold (empty when the run is ``ok``)."""
        c = self.config
        checks = [
            (not self.lost, f"{len(self.lost)} events lost: {list(self.lost)[:5]}"),
            (self.unexplained_extra_effects == 0,
             f"{self.unexplained_extra_effects} extra effects of duplicates within the window"),
            (self.double_processed <= self.doubles_allowed,
             f"{self.double_processed} events processed twice, more than the {self.doubles_allowed} the "
             f"faults explain"),
            (not self.poison_missing, f"poison not dead-lettered: {list(self.poison_missing)[:5]}"),
            (self.poison_min_receive_count is None or self.poison_min_receive_count >= c.max_receive_count,
             f"poison dead-lettered after {self.poison_min_receive_count} receives, "
             f"before maxReceiveCount {c.max_receive_count}"),
            (self.unexpected_effects == 0, f"{self.unexpected_effects} effects on poison or unknown events"),
            (self.deleted_unchecked == 0, f"{self.deleted_unchecked} messages deleted without being "
                                          f"processed or found a duplicate: {self.deletions}"),
            (self.slow_rereceived == 0,
             f"{self.slow_rereceived} slow messages were received again while their handler ran"),
            (not self.unexpected_exits, f"{len(self.unexpected_exits)} unexpected consumer exits"),
            (self.settled, f"the queue did not drain within {c.settle_timeout_s} s "
                           f"({self.left_on_queue} messages left)"),
        ]
        return [message for ok, message in checks if not ok]

    @property
    def ok(self) -> bool:
        return not self.failures

    def rows(self) -> list[tuple[str, Any]]:
        """The report as (label, value) rows, sections marked by a ``None`` value."""
        c, p = self.config, self.published
        poison_sent = {kind: p.poison_count(kind) for kind in POISON_KINDS}
        rows: list[tuple[str, Any]] = [
            ("workload", None),
            ("unique logical events (N)", self.unique_events),
            ("consumer processes (K)", c.consumers),
            ("PutEvents entries accepted", p.accepted),
            ("  of which publish retries", p.publish_retries),
            ("delivery duplicates injected", p.delivery_duplicates),
            ("poison sent (not JSON / keyless / failing)", _slash(poison_sent.values())),
            ("messages published in all",
             p.accepted + p.delivery_duplicates + sum(poison_sent.values())),
            ("faults injected", None),
            *((f"SIGKILL {point.replace('_', ' ')}", f"{self.faults.get('kill_' + point, 0)} of "
               f"{self.kills_planned.get(point, 0)} planned") for point in KILL_POINTS),
            ("consumer respawns", self.faults.get("respawns", 0)),
            *([(f"Redis crash + restart (persistence {c.redis_persistence})",
                self.faults.get("redis_restarts", 0))] if c.redis_restarts else []),
            *([(f"Redis failover (replica lag {c.replication_delay_ms:g} ms, "
                f"{'WAIT-acknowledged' if c.wait_replicas else 'asynchronous'} completes)",
                self.faults.get("failovers", 0))] if c.failovers else []),
            ("  batches left undecided while it was down", self.faults.get("outage_batches", 0)),
            ("  store checks that failed (nothing received)", self.faults.get("outage_checks", 0)),
            ("transient handler failures", self.faults.get("transient_failures", 0)),
            ("poison handler failures", self.faults.get("poison_failures", 0)),
            (f"slow handlers ({c.slow_s:g} s > visibility {c.visibility_timeout_s} s)", self.slow_calls),
            ("outcome", None),
            ("effects recorded", self.effects),
            ("events processed", self.processed_events),
            ("lost (asserted 0)", len(self.lost)),
            (f"double-processed events (asserted <= {self.doubles_allowed})", self.double_processed),
            (f"  extra effects, {CAUSE_NONE} (asserted 0)", self.unexplained_extra_effects),
            (f"  extra effects, {CAUSE_CRASH} (<= {c.kills_mid_batch} kills)",
             self.extra_effects.get(CAUSE_CRASH, 0)),
            (f"  extra effects, {CAUSE_REDIS}", self.extra_effects.get(CAUSE_REDIS, 0)),
            (f"  extra effects, {CAUSE_FAILOVER}", self.extra_effects.get(CAUSE_FAILOVER, 0)),
            ("effects on poison (asserted 0)", self.unexpected_effects),
            ("in the DLQ", sum(self.dead_letters.values())),
            ("  poison (not JSON / keyless / failing)",
             _slash(self.dead_letters.get(k, 0) for k in POISON_KINDS)),
            ("  good events", self.dead_letters.get("good", 0)),
            ("poison missing from the DLQ (asserted 0)", len(self.poison_missing)),
            ("poison receives before the DLQ (min)",
             f"{self.poison_min_receive_count} (maxReceiveCount {c.max_receive_count})"),
            ("slow messages re-received mid-handler (asserted 0)", self.slow_rereceived),
            ("messages delivered to two consumers at once", self.concurrent_deliveries),
            ("consumer", None),
            ("messages received", self.receives),
            ("decisions (processed / duplicate / in flight / failed / bad input)",
             _slash(self.decisions.get(k, 0) for k in DECISIONS)),
            ("messages deleted (processed / duplicate)",
             _slash(self.deletions.get(k, 0) for k in ("processed", "duplicate"))),
            ("  deleted without being checked (asserted 0)", self.deleted_unchecked),
            ("unexpected consumer exits (asserted 0)", len(self.unexpected_exits)),
            ("queue drained (asserted)", f"{self.settled} ({self.left_on_queue} left)"),
            ("wall time", f"{self.wall_time_s:.1f} s"),
        ]
        return rows

    def __str__(self) -> str:
        width = max(len(label) for label, _ in self.rows())
        lines = []
        for label, value in self.rows():
            if value is None:
                lines.append(f"\n{label.upper()}\n{'-' * (width + 14)}")
            else:
                lines.append(f"{label:<{width}}  {value}")
        failures = self.failures
        verdict = "FAILED:\n  " + "\n  ".join(failures) if failures else "OK: every asserted property holds"
        title = (f"chaos run: N={self.unique_events}, K={self.config.consumers}, seed {self.config.seed}"
                 + (f", ledger and logs in {self.work_dir}" if self.work_dir else ""))
        return "\n".join([title, *lines, "", verdict])


def analyse(*, config: ChaosConfig, workload: Workload, ledger: Ledger, published: Published,
            dead_letters: list[dict[str, Any]], restarts: tuple[Restart, ...],
            failovers: tuple[Failover, ...] = (),
            unexpected_exits: tuple[str, ...], settled: bool, left_on_queue: int, wall_time_s: float,
            work_dir: str | None) -> ChaosReport:
    """Reconcile the ledger, the DLQ and what was published into a :class:`ChaosReport`."""
    good = set(workload.good_keys)
    calls = ledger.calls()
    faults = ledger.faults()
    effects: dict[str, list[Call]] = collections.defaultdict(list)
    for call in calls:
        if call.outcome == "effect":
            effects[call.key].append(call)
    restarts = restarts if config.restart_loses_data else ()  # with AOF a restart explains nothing
    extra = collections.Counter(_cause(a, b, faults, restarts, failovers)
                                for key in good for a, b in itertools.pairwise(effects[key]))
    dead_kinds, dead_good, poison_missing, min_count = _dead_letters(dead_letters, workload, published)
    fault_counts = collections.Counter(f"kill_{f.kind}" for f in faults)
    outage_batches, outage_checks = ledger.outage_batches()
    fault_counts.update({
        "respawns": len(faults) + len(unexpected_exits),
        "redis_restarts": len(restarts) if config.restart_loses_data else config.redis_restarts,
        "failovers": len(failovers),
        "outage_batches": outage_batches,
        "outage_checks": outage_checks,
        "transient_failures": sum(c.outcome == "transient" for c in calls),
        "poison_failures": sum(c.outcome == "poison" for c in calls),
    })
    slow = set(workload.slow_keys)
    slow_calls = [c for c in calls if c.outcome == "effect" and c.key in slow]
    receives = ledger.receives()
    return ChaosReport(
        config=config,
        wall_time_s=wall_time_s,
        published=published,
        unique_events=len(good),
        effects=sum(len(effects[k]) for k in good),
        processed_events=sum(1 for k in good if effects[k]),
        lost=tuple(sorted(k for k in good if not effects[k] and k not in dead_good)),
        double_processed=sum(1 for k in good if len(effects[k]) > 1),
        extra_effects=dict(extra),
        unexpected_effects=sum(len(v) for k, v in effects.items() if k not in good),
        dead_letters=dict(dead_kinds),
        poison_missing=tuple(poison_missing),
        poison_min_receive_count=min_count,
        faults=dict(fault_counts),
        kills_planned=config.kills,
        slow_calls=len(slow_calls),
        slow_rereceived=_rereceived(slow_calls, receives, config.visibility_timeout_s),
        concurrent_deliveries=_concurrent_deliveries(receives, config.visibility_timeout_s),
        decisions=ledger.disposition_counts(),
        deletions=ledger.deletions(),
        receives=len(receives),
        unexpected_exits=unexpected_exits,
        settled=settled,
        left_on_queue=left_on_queue,
        work_dir=work_dir,
    )


def _cause(first: Call, second: Call, faults: list[Fault], restarts: tuple[Restart, ...],
           failovers: tuple[Failover, ...]) -> str:
    """Why ``second`` ran although ``first`` had already had its effect.

    The crash comes first: it alone re-runs the effect, whether or not Redis lost data later.
    ``restarts`` holds only restarts that lost data.
    """
    for f in faults:
        if f.kind == "mid_batch" and f.pid == first.pid and f.key == first.key:
            return CAUSE_CRASH
    if first.claim_end_s is None or second.claim_start_s is None:
        return CAUSE_NONE
    for r in restarts:
        if first.claim_end_s <= r.stop_end_s and second.claim_start_s >= r.restart_s:
            return CAUSE_REDIS
    for fo in failovers:
        if first.claim_end_s <= fo.flipped_s and second.claim_start_s >= fo.begin_s:
            return CAUSE_FAILOVER
    return CAUSE_NONE


def _dead_letters(messages: list[dict[str, Any]], workload: Workload, published: Published
                  ) -> tuple[collections.Counter[str], set[str], list[str], int | None]:
    """DLQ messages by kind, the good keys among them, the poison not among them, and the
    lowest receive count of a poison message."""
    strategy = key_strategy(KEY_SPEC)
    good, poison_keys = set(workload.good_keys), set(workload.handler_poison_keys)
    kinds: collections.Counter[str] = collections.Counter()
    dead_good: set[str] = set()
    message_ids: set[str] = set()
    envelope_ids: set[str] = set()
    poison_counts: list[int] = []
    for m in messages:
        body, count = m.get("Body", ""), int(m.get("Attributes", {}).get("ApproximateReceiveCount", 0))
        message_ids.add(m["MessageId"])
        kind = "unknown"
        try:
            event = parse_body(body, m["MessageId"])
        except BadMessageError:
            kind = "not_json" if NOT_JSON_MARKER in body else "unknown"
        else:
            envelope_ids.add(str(event.get("id")))
            detail = event.get("detail")
            if isinstance(detail, str) and detail.startswith(POISON_MARKER):
                kind = "keyless"
            else:
                try:
                    key = derive_key(strategy, event)
                except MissingKeyError:
                    key = ""
                if key in poison_keys:
                    kind = "handler"
                elif key in good:
                    kind = "good"
                    dead_good.add(key)
        kinds[kind] += 1
        if kind in POISON_KINDS:
            poison_counts.append(count)
    missing = [f"{kind} message {i}" for kind, ids in published.poison_message_ids.items()
               for i in ids if i not in message_ids]
    missing += [f"{kind} event {i}" for kind, ids in published.poison_envelope_ids.items()
                for i in ids if i not in envelope_ids]
    return kinds, dead_good, missing, min(poison_counts, default=None)


def _rereceived(slow_calls: list[Call], receives: list[Receive], visibility_timeout_s: float) -> int:
    """Slow calls whose message was received again while the handler ran, late enough that its
    visibility timeout could have lapsed: the heartbeat did not cover the handler.

    A copy received within moments of the first is a concurrent delivery, not a lapse (see
    :func:`_concurrent_deliveries`); both lead to IN_FLIGHT, never to a second effect.
    """
    earliest_lapse_s = visibility_timeout_s - _lapse_tolerance_s(visibility_timeout_s)
    by_message: dict[str, list[float]] = collections.defaultdict(list)
    for r in receives:
        by_message[r.message_id].append(r.at_s)
    count = 0
    for call in slow_calls:
        mine = [r for r in receives if r.pid == call.pid and r.envelope_id == call.envelope_id
                and r.at_s <= call.start_s]
        if not mine:
            continue
        taken = max(mine, key=lambda r: r.at_s)
        if any(taken.at_s + earliest_lapse_s <= t < call.end_s for t in by_message[taken.message_id]):
            count += 1
    return count


def _concurrent_deliveries(receives: list[Receive], visibility_timeout_s: float) -> int:
    """Messages received by two consumers too close together for a lapsed visibility timeout."""
    window_s = visibility_timeout_s - _lapse_tolerance_s(visibility_timeout_s)
    by_message: dict[str, list[Receive]] = collections.defaultdict(list)
    for r in receives:
        by_message[r.message_id].append(r)
    return sum(1 for taken in by_message.values()
               if any(b.pid != a.pid and 0 <= b.at_s - a.at_s < window_s
                      for a, b in itertools.pairwise(sorted(taken, key=lambda r: r.at_s))))


def _lapse_tolerance_s(visibility_timeout_s: float) -> float:
    """Slack for the delay between SQS marking a receive and the consumer recording it."""
    return min(0.5, visibility_timeout_s / 2)

def _slash(values: Any) -> str:
    return " / ".join(str(v) for v in values)

