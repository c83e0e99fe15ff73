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
    ("--redis-restarts", "redis_restarts", "stops and restarts of the dedup Redis (its data is lost)"),
    ("--outage-s", "outage_s", "how long Redis stays down each time"),
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
        "chaos", help="fault-injection run: consumer processes, SIGKILLs, a Redis restart, poison",
        description="Runs K consumer processes against a throwaway redis-server and an embedded moto "
        "server, publishes N events with duplicates, transient failures, slow handlers and poison, "
        "SIGKILLs consumers at chosen points and restarts Redis mid-run, then reconciles the handler's "
        "ledger: nothing lost, no duplicate within the window processed twice (doubles explained by "
        "the Redis restart's data loss are reported apart), every poison message in the DLQ. "
        "Exits 1 if an asserted property fails.")
    parser.add_argument("--small", action="store_true",
                        help="start from the small configuration (200 events, 3 consumers, < 1 min)")
    for option, name, text in _OPTIONS:
        default = getattr(defaults, name)
        parser.add_argument(option, dest=name, type=type(default), default=None,
                            help=f"{text} (default {default})")
    parser.add_argument("--keep", metavar="DIR", help="keep the ledger and the consumers' logs in DIR")
    parser.set_defaults(func=_chaos)


def _chaos(args: argparse.Namespace) -> int:
    from dedup.chaos import ChaosConfig, run_chaos

    changes: dict[str, Any] = {name: getattr(args, name) for _, name, _ in _OPTIONS
                               if getattr(args, name) is not None}
    config = (ChaosConfig.small() if args.small else ChaosConfig()).replace(**changes)
    report = run_chaos(config, work_dir=args.keep)
    print(report)
    return 0 if report.ok else 1
