"""``dedup chaos``: the fault-injection run (``make chaos``), with its report and a pass/fail exit code."""

from __future__ import annotations

import argparse
from typing import Any

# (option, ChaosConfig field, help); the defaults come from ChaosConfig (or ChaosConfig.small()).
_OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("--events", "events", "distinct logical events (N)"),
    ("--consumers", "consumers", "consumer processes (K)"),
    ("--seed", "seed", "seed of the workload and of the fault plan"),
    ("--wave-size", "wave_size", "events per publish wave (keeps moto's queue short)"),
    ("--publish-retry-rate", "publish_retry_rate", "publish retries per event"),
    ("--delivery-duplicate-rate", "delivery_duplicate_rate", "delivery duplicates per event"),
    ("--poison-per-kind", "poison_per_kind", "poison messages of each kind (not JSON, keyless, failing)"),
    ("--transient", "transient", "events whose handler fails once before succeeding"),
    ("--slow", "slow", "events whose handler outlasts the visibility timeout"),
    ("--slow-s", "slow_s", "duration of a slow handler"),
    ("--kills-after-claim", "kills_after_claim", "SIGKILLs after a batch is claimed, before its handlers"),
    ("--kills-mid-batch", "kills_mid_batch",
     "SIGKILLs after a handler's effect, before the batch is completed (the inherent gap: re-runs effects)"),
    ("--kills-before-delete", "kills_before_delete",
     "SIGKILLs after a batch is completed, before its delete"),
    ("--redis-restarts", "redis_restarts", "crashes (SIGKILL) and restarts of the dedup Redis"),
    ("--outage-s", "outage_s", "how long Redis stays down each time"),
    ("--redis-persistence", "redis_persistence",
     "what the dedup Redis persists: none, rdb, aof-everysec or aof-always (then a restart must lose "
     "nothing)"),
    ("--replication-delay-ms", "replication_delay_ms", "lag of the replica's link (with --failover)"),
    ("--complete-within-s", "complete_within_s",
     "the consumers' Deduplicator setting: 0 completes each event as its handler returns"),
    ("--readonly-s", "readonly_s", "how long the demoted primary answers READONLY before the endpoint flips "
     "(with --failover)"),
    ("--visibility-timeout-s", "visibility_timeout_s", "visibility timeout of the queue"),
    ("--lease-s", "lease_s", "dedup claim lease"),
    ("--max-receive-count", "max_receive_count", "receives before a message is dead-lettered"),
    ("--settle-timeout-s", "settle_timeout_s", "longest wait for the queue to drain"),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``dedup chaos`` to the ``dedup`` parser."""
    from dedup.chaos import ChaosConfig

    defaults = ChaosConfig()
    parser = subparsers.add_parser(
        "chaos", help="fault-injection run: consumer processes, SIGKILLs, a Redis crash or failover, poison",
        description="Runs K consumer processes against a throwaway redis-server (AOF, appendfsync "
        "always) and an embedded moto server, publishes N events with duplicates, transient failures, "
        "slow handlers and poison, SIGKILLs consumers at chosen points and crashes Redis mid-run (or, "
        "with --failover, fails it over to a lagging replica), then reconciles the handler's ledger: "
        "nothing lost, no duplicate within the window processed twice (at most one per mid-batch "
        "kill; a failover's doubles counted apart), every poison message in the DLQ. "
        "Exits 1 if an asserted property fails.")
    parser.add_argument("--small", action="store_true",
                        help="start from the small configuration (200 events, 3 consumers, < 1 min)")
    parser.add_argument("--failover", action="store_true",
                        help="the failover scenario instead of the restart: three times a lagging replica "
                        "promoted and the primary demoted with REPLICAOF mid-run; run twice (asynchronous "
                        "completes, then completes acknowledged by the replica with WAIT), one report each")
    for option, name, text in _OPTIONS:
        default = getattr(defaults, name)
        parser.add_argument(option, dest=name, type=type(default), default=None,
                            help=f"{text} (default {default})")
    parser.add_argument("--keep", metavar="DIR", help="keep the ledger and the consumers' logs in DIR")
    parser.set_defaults(func=_chaos)


def _chaos(args: argparse.Namespace) -> int:
    from dedup.chaos import ChaosConfig

    changes: dict[str, Any] = {name: getattr(args, name) for _, name, _ in _OPTIONS
                               if getattr(args, name) is not None}
    config = (ChaosConfig.small() if args.small else ChaosConfig()).replace(**changes)
    _check_store_starts(config)
    from dedup.chaos import run_chaos
    from dedup.chaos.config import FAILOVER
    from dedup.chaos.report import CAUSE_FAILOVER

    if not args.failover:
        report = run_chaos(config, work_dir=args.keep)
        print(report)
        return 0 if report.ok else 1
    base = config.replace(**{**FAILOVER, **changes})
    reports = []
    for wait_replicas in (0, 1):
        keep = f"{args.keep}/wait-{wait_replicas}" if args.keep else None
        run = base.replace(wait_replicas=wait_replicas)
        reports.append(run_chaos(run, work_dir=keep))
        print(reports[-1], end="\n\n", flush=True)
    print("failover doubles (asynchronous replication): "
          + ", ".join(f"{'WAIT-acknowledged' if r.config.wait_replicas else 'asynchronous'} completes "
                      f"{r.extra_effects.get(CAUSE_FAILOVER, 0)}" for r in reports))
    return 0 if all(r.ok for r in reports) else 1


def _check_store_starts(config: Any) -> None:
    """Start and stop a redis-server as the run will, before loading the rest: a store that cannot
    start is one line at once (a ConfigurationError), not a failure after moto and the workload."""
    from dedup.localredis import LocalRedis

    with LocalRedis(persistence=config.redis_persistence, start_timeout_s=4.0):
        pass
