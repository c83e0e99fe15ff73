"""One consumer process of a chaos run: ``python -m dedup.chaos.worker SPEC.json``.

A real :class:`~dedup.aws.consumer.SQSConsumer` on the run's moto server and
Redis, with three hooks the parent arms through the spec (trigger keys by kill
point: "the first process to reach point P with event K SIGKILLs itself", once
across all processes, decided by the ledger):

* the store's ``claim`` (``after_claim``: the batch is claimed, no handler ran),
* the handler, after its effect (``mid_batch``: effects recorded, batch not completed),
* the SQS client's ``delete_message_batch`` (``before_delete``: completed, not deleted).

Every good event is eventually claimed, handled and deleted, so every planned kill happens.

The handler records its effects in the :class:`~dedup.chaos.ledger.Ledger`, fails
on purpose for transient and poison events, and sleeps past the visibility
timeout for slow ones.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from dedup.aws.backoff import Backoff
from dedup.aws.consumer import BatchReport, SQSConsumer
from dedup.aws.embedded import TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY
from dedup.aws.messages import envelope_id, parse_body
from dedup.aws.session import AwsSession
from dedup.chaos.config import WorkerSpec
from dedup.chaos.ledger import Call, Fault, Ledger, Receive
from dedup.clock import SYSTEM_CLOCK
from dedup.errors import BadMessageError, MissingKeyError
from dedup.service import Deduplicator
from dedup.stores.base import Claim, ClaimStatus
from dedup.stores.redis import RedisStore

log = logging.getLogger(__name__)

OUTAGE_BACKOFF = Backoff(base_delay_ms=200.0, max_delay_ms=1_000.0)
STORE_PREFIX = "chaos:"


class InjectedFailure(RuntimeError):
    """A handler failure the chaos run asked for (transient or poison)."""


class KillSwitch:
    """SIGKILLs this process when it reaches a kill point with that point's trigger key, unless
    some process already did (the ledger records each fault once, before the kill)."""

    def __init__(self, kill_keys: Mapping[str, Sequence[str]], ledger: Ledger) -> None:
        self.kill_keys = {point: frozenset(keys) for point, keys in kill_keys.items()}
        self.ledger = ledger
        # When the batch being handled was claimed (set by the store, read by the handler and the fault).
        self.claim_s: tuple[float | None, float | None] = (None, None)

    def hit(self, point: str, keys: Iterable[str | None]) -> None:
        triggers = self.kill_keys.get(point, frozenset())
        for key in keys:
            if key in triggers and self.ledger.record_fault(
                    Fault(os.getpid(), point, key, SYSTEM_CLOCK.now_s(), *self.claim_s)):
                os.kill(os.getpid(), signal.SIGKILL)


class HookedRedisStore(RedisStore):
    """A RedisStore that notes when each batch was claimed and can die right after a claim."""

    def __init__(self, url: str, kill_switch: KillSwitch, **options: Any) -> None:
        super().__init__(url, prefix=STORE_PREFIX, **options)
        self.kill_switch = kill_switch

    @classmethod
    def is_outage(cls, exc: BaseException) -> bool:
        # A WAIT blocked when its primary is demoted answers UNBLOCKED: an outage like READONLY.
        # RedisStore does not list it yet (noted for the core in NOTES-for-h1-core.md); without it
        # every such WAIT would kill its consumer in the failover scenario with replicas_acked.
        return super().is_outage(exc) or str(exc).startswith("UNBLOCKED")

    def claim(self, keys: Sequence[str], lease_s: float, *, fingerprints: Sequence[str] | None = None,
              slide_s: float | None = None) -> list[Claim]:
        start_s = SYSTEM_CLOCK.now_s()
        claims = super().claim(keys, lease_s, fingerprints=fingerprints, slide_s=slide_s)
        self.kill_switch.claim_s = (start_s, SYSTEM_CLOCK.now_s())
        self.kill_switch.hit("after_claim", (k for k, c in zip(keys, claims, strict=True)
                                             if c.status is ClaimStatus.CLAIMED))
        return claims


class HookedSQS:
    """Forwards to a boto3 SQS client; records receives and can die before a delete."""

    def __init__(self, client: Any, ledger: Ledger, kill_switch: KillSwitch, dedup: Deduplicator) -> None:
        self._client = client
        self._ledger = ledger
        self._kill_switch = kill_switch
        self._dedup = dedup
        # Receipt handle -> dedup key, for the batch last received: the consumer deletes a batch's
        # messages before it receives the next, and a message it keeps comes back with a new handle.
        self._keys: dict[str, str | None] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        response = self._client.receive_message(**kwargs)
        messages = response.get("Messages", [])
        now_s, pid = SYSTEM_CLOCK.now_s(), os.getpid()
        self._ledger.record_receives(
            Receive(m["MessageId"], envelope_id(m.get("Body", "")),
                    int(m.get("Attributes", {}).get("ApproximateReceiveCount", 0)) or None, pid, now_s)
            for m in messages)
        self._keys = {m["ReceiptHandle"]: self._key_of(m.get("Body", "")) for m in messages}
        return response

    def delete_message_batch(self, **kwargs: Any) -> dict[str, Any]:
        self._kill_switch.hit("before_delete", [self._keys.get(e["ReceiptHandle"])
                                                for e in kwargs.get("Entries", [])])
        return self._client.delete_message_batch(**kwargs)

    def _key_of(self, body: str) -> str | None:
        try:
            return self._dedup.key_of(parse_body(body))
        except (BadMessageError, MissingKeyError):  # poison: never a trigger; the consumer reports it
            return None


class ChaosHandler:
    """The handler under test: records one effect per successful call, fails or lags on purpose."""

    def __init__(self, dedup: Deduplicator, ledger: Ledger, spec: WorkerSpec,
                 kill_switch: KillSwitch) -> None:
        self.dedup = dedup
        self.ledger = ledger
        self.spec = spec
        self.kill_switch = kill_switch
        self._slow = frozenset(spec.slow_keys)
        self._transient = frozenset(spec.transient_keys)
        self._poison = frozenset(spec.poison_keys)

    def __call__(self, event: Mapping[str, Any]) -> None:
        start_s = SYSTEM_CLOCK.now_s()
        key = self.dedup.key_of(event)
        if key in self._poison:
            self._record(key, event, "poison", start_s)
            raise InjectedFailure(f"poison event {key}: this handler always fails on it")
        failures = self.ledger.count_calls(key, "transient") if key in self._transient else None
        if failures is not None and failures < self.spec.transient_failures:
            self._record(key, event, "transient", start_s)
            raise InjectedFailure(f"transient failure on {key} (injected; a later attempt succeeds)")
        if key in self._slow:
            time.sleep(self.spec.slow_s)  # the fault itself: a handler slower than the visibility timeout
        self._record(key, event, "effect", start_s)
        self.kill_switch.hit("mid_batch", (key,))

    def _record(self, key: str, event: Mapping[str, Any], outcome: str, start_s: float) -> None:
        event_id = event.get("id") if isinstance(event.get("id"), str) else None
        self.ledger.record_call(Call(key, event_id, os.getpid(), outcome,
                                     *self.kill_switch.claim_s, start_s, SYSTEM_CLOCK.now_s()))


def _dispositions_recorder(ledger: Ledger) -> Callable[[BatchReport], None]:
    def record(report: BatchReport) -> None:
        now_s, pid = SYSTEM_CLOCK.now_s(), os.getpid()
        if report.store_outage is not None:
            ledger.record_outage(pid, now_s, report.received)
        deleted = set(report.deleted)
        ledger.record_dispositions(
            (d.message.message_id, d.result.key if d.result else None,
             "bad_input" if d.bad_input else d.result.outcome.value,  # type: ignore[union-attr]
             d.message.message_id in deleted, pid, now_s)
            for d in report.dispositions)
    return record


def run_worker(spec: WorkerSpec) -> None:
    """Consume until SIGTERM (or until a planned SIGKILL)."""
    ledger = Ledger(spec.ledger_path)
    kill_switch = KillSwitch(spec.kill_keys, ledger)
    store = HookedRedisStore(spec.redis_url, kill_switch, replicas_acked=spec.wait_replicas)
    dedup = Deduplicator(store, key="auto", window_s=spec.window_s, lease_s=spec.lease_s,
                         complete_within_s=spec.complete_within_s)
    aws = AwsSession("endpoint", spec.region, endpoint_url=spec.endpoint_url,
                     credentials=(TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY))
    sqs = HookedSQS(aws.client("sqs"), ledger, kill_switch, dedup)
    consumer = SQSConsumer(sqs, spec.queue_url, dedup, ChaosHandler(dedup, ledger, spec, kill_switch),
                           wait_time_s=1, visibility_timeout_s=spec.visibility_timeout_s,
                           outage_backoff=OUTAGE_BACKOFF, on_batch=_dispositions_recorder(ledger))
    log.info("consumer slot %d (pid %d) started; kill triggers: %s", spec.slot, os.getpid(),
             {point: len(keys) for point, keys in spec.kill_keys.items()})
    ledger.record_ready(os.getpid(), spec.slot, SYSTEM_CLOCK.now_s())
    try:
        stats = consumer.run()
        log.info("consumer slot %d stopped: %s", spec.slot, stats.as_dict())
    finally:
        store.close()
        ledger.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m dedup.chaos.worker SPEC.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    run_worker(WorkerSpec.load(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
