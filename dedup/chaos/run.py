"""The parent of a chaos run: servers, stack, consumer processes, waves of traffic, faults, report.

It starts a throwaway ``redis-server`` (the dedup store; crashed and restarted
mid-run, or a primary and replica failed over mid-run) and,
unless given one, an embedded moto server; provisions a stack with a short
visibility timeout; spawns the consumer processes (``dedup.chaos.worker``), each
with its kill plan, and respawns them when they kill themselves; publishes the
workload in waves while they consume, so moto's queue stays short (its cost grows
with the backlog); then waits until the queue is empty, stops the consumers and
reads the dead-letter queue and the ledger into a :class:`~dedup.chaos.report.ChaosReport`.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dedup
from dedup.aws.embedded import EmbeddedAWS
from dedup.aws.producer import DuplicateInjector, put_events, to_entry
from dedup.aws.stack import StackConfig, StackHandles, provision, queue_depth, teardown
from dedup.chaos.config import ChaosConfig, WorkerSpec
from dedup.chaos.ledger import Ledger
from dedup.chaos.report import ChaosReport, Failover, Published, Restart, analyse
from dedup.chaos.workload import Workload, build_workload
from dedup.clock import SYSTEM_CLOCK
from dedup.errors import ConfigurationError
from dedup.localredis import LocalRedis, LocalRedisFailover

log = logging.getLogger(__name__)

CHUNK_EVENTS = 50  # events published between two delivery-duplicate peeks
POLL_S = 0.2  # how often the parent looks at the queue and the consumer processes
START_TIMEOUT_S = 60.0  # for every consumer process to be ready to poll
STOP_TIMEOUT_S = 15.0  # SIGTERM lets a consumer finish its batch; then SIGKILL
MAX_UNEXPECTED_EXITS = 10  # beyond this a consumer is crash-looping: stop the run
REDIS_START_TIMEOUT_S = 4.0  # a store that cannot start is reported within 5 s


def run_chaos(config: ChaosConfig | None = None, *, aws: EmbeddedAWS | None = None,
              work_dir: str | Path | None = None, **changes: Any) -> ChaosReport:
    """Run the fault-injection scenario of ``config`` (default :class:`ChaosConfig`) and report.

    ``run_chaos(ChaosConfig.small())`` finishes in well under a minute. ``aws`` reuses a
    running :class:`EmbeddedAWS` (the stack is torn down afterwards); by default the run
    starts and stops its own. ``work_dir`` keeps the ledger and the consumers' logs
    there; by default they go to a temporary directory that is removed.
    """
    config = (config or ChaosConfig()).replace(**changes) if changes else (config or ChaosConfig())
    with _ChaosRun(config, aws, work_dir) as run:
        return run.execute()


class _ChaosRun:
    def __init__(self, config: ChaosConfig, aws: EmbeddedAWS | None, work_dir: str | Path | None) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self._own_aws = aws is None
        self.aws = aws or EmbeddedAWS()
        self._keep_dir = work_dir is not None
        self.dir = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="dedup-chaos-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.redis = LocalRedis(persistence=config.redis_persistence, start_timeout_s=REDIS_START_TIMEOUT_S)
        self.pair: LocalRedisFailover | None = None
        self.failovers: list[Failover] = []
        self.workload: Workload | None = None
        self.sqs: Any = None
        self.events: Any = None
        self.ledger: Ledger | None = None
        self.stack: StackConfig | None = None
        self.handles: StackHandles | None = None
        self.procs: dict[int, subprocess.Popen] = {}
        self.unexpected_exits: list[str] = []
        self.restarts: list[Restart] = []
        self._spawned = 0
        self._stopping = False

    # ---- lifecycle ------------------------------------------------------------

    def __enter__(self) -> _ChaosRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_consumers()
        if self.ledger is not None:
            self.ledger.close()
        self.redis.close()
        if self.pair is not None:
            self.pair.close()
        if self._own_aws:
            self.aws.stop()
        elif self.stack is not None:
            teardown(self.aws, self.stack)
        if not self._keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def execute(self) -> ChaosReport:
        config = self.config
        started_s = time.monotonic()
        # The store first: if it cannot start, that is said at once (before moto and the workload).
        if config.failovers:
            self.pair = LocalRedisFailover(persistence=config.redis_persistence,
                                           replication_delay_ms=config.replication_delay_ms).start()
        else:
            self.redis.start()
        self.workload = workload = build_workload(config)
        self.aws.start()
        self.stack = StackConfig(name=f"chaos-{uuid.uuid4().hex[:8]}",
                                 visibility_timeout_s=config.visibility_timeout_s,
                                 max_receive_count=config.max_receive_count, receive_wait_s=0)
        self.handles = provision(self.aws, self.stack)
        self.sqs, self.events = self.aws.client("sqs"), self.aws.client("events")
        ledger = self.ledger = Ledger(self.dir / "ledger.sqlite")
        log.info("chaos run: %d events, %d consumers, seed %d, faults planned: kills %s, "
                 "%d Redis restart(s) (persistence %s), %d failover(s); work dir %s", config.events,
                 config.consumers, config.seed, config.kills, config.redis_restarts, config.redis_persistence,
                 config.failovers, self.dir)
        for slot in range(config.consumers):
            self._spawn(slot)
        # Traffic starts once every consumer polls, so that each meets enough of it to hit its kill point.
        if not self._wait(lambda: ledger.ready_slots() == config.consumers, START_TIMEOUT_S):
            raise ConfigurationError(f"the consumer processes did not start within {START_TIMEOUT_S} s: "
                                     f"see the worker logs in {self.dir}")
        published = self._publish_in_waves(workload)
        settled = self._wait(lambda: self._depth() == 0, config.settle_timeout_s)
        left = self._depth()
        self._stop_consumers()
        dead = self._dead_letters()
        return analyse(
            config=config, workload=workload, ledger=ledger, published=published,
            dead_letters=dead, restarts=tuple(self.restarts), failovers=tuple(self.failovers),
            unexpected_exits=tuple(self.unexpected_exits),
            settled=settled, left_on_queue=left, wall_time_s=time.monotonic() - started_s,
            work_dir=str(self.dir) if self._keep_dir else None,
        )

    # ---- traffic ----------------------------------------------------------------

    def _publish_in_waves(self, workload: Workload) -> Published:
        """Publish in chunks of :data:`CHUNK_EVENTS`, waiting after every wave until the queue is
        below half a wave.

        Publish retries come from one injector; delivery duplicates from another, whose peek
        runs while its chunk is published, receiving alongside the consumers as a second
        delivery would (the consumers take a message as soon as it arrives: a peek after the
        publish finds nothing left). Poison goes last, after the last peek, so that no delivery
        duplicate copies a poison message.
        """
        config, handles = self.config, self.handles
        assert handles is not None
        size = min(CHUNK_EVENTS, config.wave_size)
        chunks = math.ceil(config.events / size)
        per_wave = max(1, config.wave_size // size)
        retries = collections.Counter(self.rng.randrange(chunks) for _ in range(config.publish_retries))
        copies = collections.Counter(self.rng.randrange(chunks) for _ in range(config.delivery_duplicates))
        store_faults = config.redis_restarts + config.failovers
        fault_after = collections.Counter((r + 1) * chunks // (store_faults + 1) for r in range(store_faults))
        publisher = DuplicateInjector(seed=config.seed)
        copier = DuplicateInjector(seed=config.seed + 1)
        peeker_sqs = self.aws.client("sqs")
        published = Published()
        pending = 0  # delivery duplicates still to inject (a peek found nothing to copy)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="chaos-peek") as pool:
            for c in range(chunks):
                pending += copies[c]
                peek = pool.submit(self._copy_deliveries, copier, peeker_sqs, pending)
                chunk = workload.good[c * size:(c + 1) * size]
                # A Redis crash comes just before a chunk is published, so its messages reach the
                # consumers while the store is down, however fast they drained the last one; a
                # failover comes mid-wave, while the consumers work on the chunk.
                crashed = fault_after[c] > 0 and not config.failovers
                with self._redis_crashed() if crashed else contextlib.nullcontext():
                    report = publisher.publish(self.events, handles.bus_name, chunk,
                                               publish_retries=retries[c])
                published.accepted += report.sent
                published.failed += len(report.failed)
                pending = peek.result()
                for _ in range(fault_after[c] - crashed):
                    self._fail_over() if config.failovers else self._restart_redis()
                if (c + 1) % per_wave == 0 or c == chunks - 1:
                    self._wait(lambda: self._depth() <= config.wave_size // 2, config.settle_timeout_s)
                    log.info("published %d of %d events; queue depth %d",
                             min((c + 1) * size, config.events), config.events, self._depth())
        self._publish_poison(workload, published)
        published.publish_retries = len(publisher.injected.publish_retry_ids)
        published.delivery_duplicates = len(copier.injected.delivery_duplicates)
        return published

    def _copy_deliveries(self, injector: DuplicateInjector, sqs: Any, count: int) -> int:
        """Inject ``count`` delivery duplicates; return how many are left for the next chunk."""
        if not count:
            return 0
        assert self.handles is not None
        try:
            injector.duplicate_deliveries(sqs, self.handles.queue_url, count, hold_s=30)
        except ConfigurationError:  # nothing was left to peek at
            return count
        return 0

    def _publish_poison(self, workload: Workload, published: Published) -> None:
        assert self.handles is not None
        # Not JSON, and keyless (a detail that is not an object, which EventBridge itself refuses):
        # written to the queue directly, as a misbehaving bridge would.
        keyless = [json.dumps(e) for e in workload.keyless]
        for kind, bodies in (("not_json", workload.not_json), ("keyless", keyless)):
            for body in bodies:
                sent = self.sqs.send_message(QueueUrl=self.handles.queue_url, MessageBody=body)
                published.poison_message_ids[kind].append(sent["MessageId"])
        if workload.handler_poison:
            entries = [to_entry(e, self.handles.bus_name) for e in workload.handler_poison]
            report = put_events(self.events, entries)
            published.poison_envelope_ids["handler"] += [i for i in report.event_ids if i is not None]
            published.failed += len(report.failed)

    # ---- faults -----------------------------------------------------------------

    def _restart_redis(self) -> None:
        """Crash the dedup Redis (SIGKILL) and start it again after ``outage_s``, with what it persisted."""
        with self._redis_crashed():
            pass

    @contextlib.contextmanager
    def _redis_crashed(self) -> Iterator[None]:
        """Crash the dedup Redis (SIGKILL) on entry; on exit, once ``outage_s`` has passed since the
        crash, start it again with what it persisted."""
        stop_begin_s = SYSTEM_CLOCK.now_s()
        self.redis.kill()
        stop_end_s = SYSTEM_CLOCK.now_s()
        log.info("Redis crashed (persistence %s); restarting in %.1f s", self.config.redis_persistence,
                 self.config.outage_s)
        deadline = time.monotonic() + self.config.outage_s
        try:
            yield
        finally:
            self._wait(lambda: time.monotonic() >= deadline, self.config.outage_s + 1)
            restart_s = SYSTEM_CLOCK.now_s()
            self.redis.start()
            self.restarts.append(Restart(stop_begin_s, stop_end_s, restart_s, SYSTEM_CLOCK.now_s()))
            log.info("Redis restarted after %.1f s", restart_s - stop_begin_s)

    def _fail_over(self) -> None:
        """Fail Redis over while handlers run: the replica cut off and promoted, the primary demoted with
        REPLICAOF (its clients get READONLY for ``readonly_s``), then the endpoint flips to the new one."""
        assert self.pair is not None
        begin_s = SYSTEM_CLOCK.now_s()
        self.pair.demote_primary()
        demoted_s = SYSTEM_CLOCK.now_s()
        log.info("Redis failover: replica promoted, old primary demoted (READONLY); flipping in %.1f s",
                 self.config.readonly_s)
        deadline = time.monotonic() + self.config.readonly_s
        self._wait(lambda: time.monotonic() >= deadline, self.config.readonly_s + 1)
        self.pair.flip()
        self.failovers.append(Failover(begin_s, demoted_s, SYSTEM_CLOCK.now_s()))
        log.info("Redis endpoint flipped to the new primary")

    # ---- consumer processes -----------------------------------------------------

    def _spawn(self, slot: int) -> None:
        workload = self.workload
        assert self.handles is not None and self.ledger is not None and workload is not None
        spec = WorkerSpec(
            slot=slot, endpoint_url=self.aws.endpoint_url, region=self.aws.region,
            queue_url=self.handles.queue_url, redis_url=self.pair.url if self.pair else self.redis.url,
            ledger_path=str(self.ledger.path), wait_replicas=self.config.wait_replicas,
            complete_within_s=self.config.complete_within_s,
            visibility_timeout_s=self.config.visibility_timeout_s, lease_s=self.config.lease_s,
            window_s=self.config.window_s, slow_s=self.config.slow_s,
            transient_failures=self.config.transient_failures, slow_keys=workload.slow_keys,
            transient_keys=workload.transient_keys, poison_keys=workload.handler_poison_keys,
            kill_keys=workload.kill_keys,
        )
        self._spawned += 1
        path = self.dir / f"worker-{slot}-{self._spawned}.json"
        spec.dump(path)
        with open(self.dir / f"worker-{slot}.log", "ab") as log_file:
            self.procs[slot] = subprocess.Popen([sys.executable, "-m", "dedup.chaos.worker", str(path)],
                                                stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                                                env=_worker_env())

    def _check_consumers(self) -> None:
        """Respawn consumers that killed themselves as planned; note any other exit."""
        assert self.ledger is not None
        for slot, proc in list(self.procs.items()):
            code = proc.poll()
            if code is None or self._stopping:
                continue
            planned = code == -signal.SIGKILL and proc.pid in self.ledger.fault_pids()
            if not planned:
                lines = (self.dir / f"worker-{slot}.log").read_text(errors="replace").splitlines()
                tail = "\n".join(lines[-6:])
                self.unexpected_exits.append(
                    f"consumer slot {slot} (pid {proc.pid}) exited with {code}: {tail}")
                log.error("%s", self.unexpected_exits[-1])
                if len(self.unexpected_exits) > MAX_UNEXPECTED_EXITS:
                    raise ConfigurationError(
                        f"consumer processes keep dying; the last: {self.unexpected_exits[-1]}")
            self._spawn(slot)

    def _stop_consumers(self) -> None:
        self._stopping = True
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # ---- queues -----------------------------------------------------------------

    def _wait(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Poll ``condition`` (respawning consumers meanwhile) until it holds or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_consumers()
            if condition():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL_S)

    def _depth(self, queue_url: str | None = None) -> int:
        assert self.handles is not None
        return queue_depth(self.sqs, queue_url or self.handles.queue_url)

    def _dead_letters(self) -> list[dict[str, Any]]:
        """Every message on the DLQ (received, kept invisible, not deleted)."""
        assert self.handles is not None
        dead: list[dict[str, Any]] = []
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=self.handles.dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                VisibilityTimeout=600, MessageSystemAttributeNames=["ApproximateReceiveCount"],
            ).get("Messages", [])
            if not batch:
                return dead
            dead += batch


def _worker_env() -> dict[str, str]:
    """The parent's environment without AWS settings (the spec names the endpoint), with dedup importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    root = str(Path(dedup.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env
