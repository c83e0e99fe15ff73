"""Fault injection: many consumer processes, SIGKILLs, a Redis crash or failover, poison, slow handlers.

:func:`run_chaos` runs K real :class:`~dedup.aws.consumer.SQSConsumer` processes
against a throwaway ``redis-server`` (AOF ``appendfsync always``) and one moto HTTP
server, publishes a seeded workload with duplicates of both kinds, transient
failures and poison, and injects the faults of :class:`ChaosConfig`; the handler
records its effects in a ledger outside the dedup store. The :class:`ChaosReport`
reconciles them: nothing lost, no duplicate within the window processed twice (a
Redis crash explains a double only when its persistence setting loses writes; a
failover's doubles are counted apart), every poison message in the DLQ after
``maxReceiveCount``, and the heartbeat covering slow handlers.

One gap is inherent and measured, not hidden: a crash after a handler's effect
but before its completion (``kills_mid_batch``) re-runs that effect once the lease
lapses. The consumers complete each event as its handler returns, so each kill
repeats its own event only. Only an idempotent effect, or one committed together
with the dedup record, closes it.

``run_chaos(ChaosConfig.small())`` takes well under a minute; ``dedup chaos`` runs
the default (2,000 events, 4 consumers) in about two minutes.
"""

from __future__ import annotations

from typing import Any

from dedup.chaos.config import KILL_POINTS, ChaosConfig

__all__ = ["KILL_POINTS", "ChaosConfig", "ChaosReport", "run_chaos"]


def __getattr__(name: str) -> Any:
    """The report and the run load on first use: the ``dedup`` command builds its parser from the
    configuration alone, without the trace generator, boto3 or moto."""
    if name == "ChaosReport":
        from dedup.chaos.report import ChaosReport
        return ChaosReport
    if name == "run_chaos":
        from dedup.chaos.run import run_chaos
        return run_chaos
    raise AttributeError(f"module 'dedup.chaos' has no attribute {name!r}")
