"""``dedup aws-server | provision | teardown | produce | consume | demo``: the AWS path from a shell.

Every command takes ``--aws``: ``auto`` (the default, except for ``demo``) uses
``AWS_ENDPOINT_URL`` when it is set, else real AWS when a region and credentials
are configured, else an embedded moto server; ``embedded`` and ``real`` force one.
An embedded server lives only as long as its command, so for a multi-command session
run ``dedup aws-server`` in one terminal and export what it prints in another.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dedup.defaults import DEFAULT_KEY, DEFAULT_LEASE_S, DEFAULT_MODE, DEFAULT_WINDOW_S
from dedup.errors import ConfigurationError

log = logging.getLogger("dedup.cli.aws")
#: How long `consume` and `demo` wait for the window store to answer before they start.
STORE_CHECK_S = 4.0

SHARING = ("An embedded server stops when its command ends: to share one between commands, run "
           "`dedup aws-server` in a terminal, paste the `export` lines it prints into another, "
           "and every command there (with --aws auto) uses it.")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the AWS commands to the ``dedup`` parser."""
    _server_parser(subparsers)
    _provision_parser(subparsers)
    _teardown_parser(subparsers)
    _produce_parser(subparsers)
    _consume_parser(subparsers)
    _demo_parser(subparsers)


# ---- parsers ------------------------------------------------------------------


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the unset (``None``) and off (``False``) ones."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _command(subparsers: argparse._SubParsersAction, name: str, summary: str, details: str,
             func: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=summary, description=f"{summary}. {details}",
                                   formatter_class=_HelpFormatter)
    parser.set_defaults(func=func)
    return parser


def _aws_options(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    group = parser.add_argument_group("AWS target")
    group.add_argument("--aws", choices=("auto", "embedded", "real"), default=default,
                       help="auto: AWS_ENDPOINT_URL if set, else real AWS if a region and credentials "
                            "are configured, else an embedded moto server")
    group.add_argument("--region", help="AWS region (default: the configured one, or us-east-1 embedded)")


def _stack_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("stack")
    group.add_argument("--name", default="dedup",
                       help="stack name: queues NAME-events and NAME-events-dlq, rule NAME-contact-centre")
    group.add_argument("--bus", default=None,
                       help="event bus name (default NAME-bus; 'default' uses the account's default bus)")


def _dedup_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("dedup")
    group.add_argument("--store", default="memory",
                       help="window store: memory, fakeredis, redis://[:password@]host:port/db, "
                            "rediss://..., or another registered scheme")
    group.add_argument("--key", default=DEFAULT_KEY,
                       help="key strategy spec (auto, genesys, nice, envelope-id, fingerprint, business:..., "
                            "several joined by |)")
    group.add_argument("--window-s", type=float, default=DEFAULT_WINDOW_S, help="dedup window in seconds")
    group.add_argument("--lease-s", type=float, default=DEFAULT_LEASE_S,
                       help="claim lease in seconds: above the handler's longest run")
    group.add_argument("--mode", choices=("fixed", "sliding"), default=DEFAULT_MODE, help="window mode")


def _server_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = _command(subparsers, "aws-server", "serve an embedded AWS (moto) in the foreground",
                      "Prints the `export` lines that point boto3, the AWS CLI and the other dedup "
                      "commands at it; Ctrl-C stops it and its state is gone. " + SHARING, _serve)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--region", default="us-east-1", help="region the exported variables name")


def _provision_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = _command(subparsers, "provision", "create (or converge) bus, queue + DLQ, rule and policies",
                      "Idempotent: running it again changes nothing. With --store dynamodb://TABLE it also "
                      "creates the store's table (key pk, TTL on expires_at, on-demand billing). With "
                      "--emit-template FILE it writes the same stack as a CloudFormation template instead "
                      "(no AWS call), optionally with a Lambda consumer (--lambda-handler). " + SHARING,
                      _provision)
    _aws_options(parser)
    _stack_options(parser)
    _dedup_options(parser)
    parser.add_argument("--emit-template", metavar="FILE",
                        help="write the stack as a CloudFormation template (YAML) to FILE; create nothing")
    parser.add_argument("--lambda-handler", metavar="MODULE:FUNCTION",
                        help="template only: add a Lambda consumer running dedup.aws.lambda_handler with "
                             "DEDUP_HANDLER=MODULE:FUNCTION and the --store, --key, --window-s, --lease-s "
                             "and --mode settings; its timeout is --lease-s and the queue's visibility "
                             "timeout 6 × that")
    parser.add_argument("--max-receive-count", type=int, default=5,
                        help="receives before a message moves to the dead-letter queue")
    parser.add_argument("--visibility-timeout-s", type=int, default=30,
                        help="queue visibility timeout in seconds")
    parser.add_argument("--nice-source", action="append", dest="nice_sources", metavar="SOURCE",
                        help="NICE CXone bridge source to route (repeatable; default com.nice.cxone.bridge)")
    parser.add_argument("--print-policies", action="store_true",
                        help="also print the least-privilege IAM and queue policy documents")


def _teardown_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = _command(subparsers, "teardown", "remove what `provision` made",
                      "Works by name; a missing part is skipped. The default bus is never deleted.",
                      _teardown)
    _aws_options(parser)
    _stack_options(parser)
    parser.add_argument("--store", default=None, metavar="dynamodb://TABLE",
                        help="also delete the DynamoDB store's table that `provision --store` created")


def _produce_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = _command(subparsers, "produce", "publish synthetic Genesys / NICE events, with duplicates",
                      "Publishes N distinct events to the stack's bus, plus publish retries (the same entry "
                      "put again: new envelope id and time) and delivery duplicates (a delivered body sent "
                      "to the queue again). The same --seed gives the same events: a second run with it "
                      "publishes duplicates of the first. " + SHARING, _produce)
    _aws_options(parser)
    _stack_options(parser)
    _traffic_options(parser)


def _traffic_options(parser: argparse.ArgumentParser, events: int = 100, publish_retries: int = 0,
                     delivery_duplicates: int = 0) -> None:
    group = parser.add_argument_group("traffic")
    group.add_argument("--events", type=int, default=events, help="distinct logical events to publish")
    group.add_argument("--source", choices=("genesys", "nice", "mixed"), default="mixed",
                       help="which platform's events")
    group.add_argument("--seed", type=int, default=0,
                       help="seed of the events and of the injected duplicates")
    group.add_argument("--publish-retries", type=int, default=publish_retries,
                       help="extra PutEvents of already published events")
    group.add_argument("--delivery-duplicates", type=int, default=delivery_duplicates,
                       help="delivered bodies sent to the queue a second time")


def _consume_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = _command(subparsers, "consume", "consume the stack's queue through the Deduplicator",
                      "Deletes processed messages and completed duplicates only; failures, in-flight copies "
                      "and bad bodies return and reach the DLQ after maxReceiveCount. SIGTERM / Ctrl-C stop "
                      "after the current batch. " + SHARING, _consume)
    _aws_options(parser)
    _stack_options(parser)
    parser.add_argument("--queue-url", help="consume this queue instead of the stack's")
    _dedup_options(parser)
    parser.add_argument("--handler", metavar="MODULE:FUNCTION",
                        help="your handler, called with each new event (default: log it at DEBUG)")
    parser.add_argument("--max-messages", type=int, help="stop after receiving this many messages")
    parser.add_argument("--max-idle-s", type=float, help="stop after this long without a message")
    parser.add_argument("--wait-time-s", type=int, default=20, help="long-polling wait (0..20)")


def _demo_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = _command(subparsers, "demo", "end to end: provision, publish N events + M duplicates, consume",
                      "Starts the embedded AWS (unless --aws says otherwise), provisions the stack, "
                      "publishes N distinct events with M injected duplicates of both kinds in waves, "
                      "consumes them and checks that the counts reconcile exactly: processed = N, "
                      "duplicates dropped = M, lost = 0 (lost: never processed and gone from both the queue "
                      "and the DLQ; events still waiting there are counted apart). Exits 1 if they do not. "
                      "Removes the stack at the end unless --keep.", _demo)
    _aws_options(parser, default="embedded")
    _stack_options(parser)
    _traffic_options(parser, events=200, publish_retries=30, delivery_duplicates=20)
    _dedup_options(parser)
    parser.add_argument("--wave-size", type=int, default=50,
                        help="events per publish-then-consume wave (keeps the queue short)")
    parser.add_argument("--keep", action="store_true", help="do not remove the stack at the end")


# ---- commands -----------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from dedup.aws.embedded import EmbeddedAWS

    server = EmbeddedAWS(region=args.region, port=args.port).start()
    try:
        for name, value in server.environ().items():
            print(f"export {name}={value}")
        print(f"# embedded AWS on {server.endpoint_url}; Ctrl-C stops it", file=sys.stderr)
        sys.stdout.flush()
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _provision(args: argparse.Namespace) -> int:
    from dedup.aws.resources import LambdaConsumer
    from dedup.aws.stack import provision
    from dedup.aws.template import write_template

    table = _table_name(args.store)
    consumer = None
    if args.lambda_handler:
        if not args.emit_template:
            raise ConfigurationError("a Lambda consumer is written to the template only: "
                                     "add --emit-template FILE")
        if args.store in ("memory", "fakeredis"):
            raise ConfigurationError(f"--store {args.store} dedups within one Lambda container only: give "
                                     "the Lambda consumer a shared store (dynamodb://TABLE or redis://...)")
        consumer = LambdaConsumer(args.lambda_handler, store_url=None if table else args.store, key=args.key,
                                  window_s=args.window_s, lease_s=args.lease_s, mode=args.mode)
    config = _stack_config(args, max_receive_count=args.max_receive_count,
                           visibility_timeout_s=args.visibility_timeout_s,
                           nice_sources=tuple(args.nice_sources or ()), table_name=table,
                           lambda_consumer=consumer)
    if args.emit_template:
        path = write_template(config, args.emit_template)
        print(f"wrote {path}: the CloudFormation template of stack {args.name}"
              + (" with a Lambda consumer" if consumer else ""))
        return 0
    with _session(args) as aws:
        _warn_if_ephemeral(aws, "the stack")
        handles = provision(aws, config)
        print(_table(handles.as_dict().items(), title=f"stack {args.name} ({aws.describe()})"))
        if args.print_policies:
            print(json.dumps(handles.policies(), indent=2))
    return 0


def _teardown(args: argparse.Namespace) -> int:
    from dedup.aws.stack import teardown

    with _session(args) as aws:
        removed = teardown(aws, _stack_config(args, table_name=_table_name(args.store)))
    print("removed: " + (", ".join(removed) or "nothing (no such stack)"))
    return 0


def _table_name(store: str | None) -> str | None:
    """The table of a ``dynamodb://TABLE[?region=...]`` store, None for any other store."""
    from dedup.stores.dynamodb import table_of

    if not store or not store.startswith("dynamodb://"):
        return None
    return table_of(store)


def _produce(args: argparse.Namespace) -> int:
    from dedup.aws.producer import DuplicateInjector
    from dedup.aws.stack import find_stack
    from dedup.traces import logical_events

    with _session(args) as aws:
        handles = find_stack(aws, _stack_config(args))
        events = logical_events(args.events, source=args.source, seed=args.seed)
        injector = DuplicateInjector(seed=args.seed)
        bus_events = aws.client("events")
        sent = 0
        with _progress(len(events) + args.publish_retries, "publish") as bar:
            for wave, retries in _waves(events, args.publish_retries, 100, injector.rng):
                report = injector.publish(bus_events, handles.bus_name, wave, publish_retries=retries)
                sent += report.sent
                bar.update(len(report.event_ids))
        injector.duplicate_deliveries(aws.client("sqs"), handles.queue_url, args.delivery_duplicates)
    injected = injector.injected
    print(_table([("distinct events", len(events)), ("PutEvents entries accepted", sent),
                  ("publish retries injected", len(injected.publish_retry_ids)),
                  ("delivery duplicates injected", len(injected.delivery_duplicates)),
                  ("messages expected on the queue", sent + len(injected.delivery_duplicates))],
                 title=f"produced to bus {handles.bus_name}"))
    return 0 if sent == len(events) + args.publish_retries else 1


def _consume(args: argparse.Namespace) -> int:
    dedup = _deduplicator(args)  # first: an unreachable store is reported before anything else starts
    from dedup.aws.consumer import SQSConsumer
    from dedup.aws.lambda_handler import load_handler
    from dedup.aws.stack import find_stack

    with _session(args) as aws:
        sqs = aws.client("sqs")
        queue_url = args.queue_url or find_stack(aws, _stack_config(args)).queue_url
        handler = load_handler(args.handler) if args.handler else _log_event
        with _progress(args.max_messages, "consume") as bar:
            consumer = SQSConsumer(sqs, queue_url, dedup, handler, wait_time_s=args.wait_time_s,
                                   on_batch=lambda report: bar.update(report.received))
            stats = consumer.run(max_messages=args.max_messages, max_idle_s=args.max_idle_s)
    print(_table(stats.as_dict().items(), title=f"consumed {queue_url}"))
    return 0


def _demo(args: argparse.Namespace) -> int:
    if min(args.events, args.publish_retries, args.delivery_duplicates) < 0 or args.wave_size < 1:
        raise ConfigurationError("--events and the duplicate counts must be >= 0, --wave-size >= 1")
    if args.events == 0 and args.publish_retries + args.delivery_duplicates:
        raise ConfigurationError("duplicates need at least one event to copy")
    dedup = _deduplicator(args)  # first: an unreachable store is reported before anything else starts
    from dedup.aws.consumer import SQSConsumer
    from dedup.aws.producer import DuplicateInjector
    from dedup.aws.stack import provision, queue_depth, teardown
    from dedup.traces import logical_events

    events = logical_events(args.events, source=args.source, seed=args.seed)
    wanted = {dedup.key_of(e) for e in events}
    handled: Counter[str] = Counter()

    def handler(event: Mapping[str, Any]) -> None:
        handled[dedup.key_of(event)] += 1

    injector = DuplicateInjector(seed=args.seed)
    with _session(args) as aws:
        stack = _stack_config(args)
        handles = provision(aws, stack)
        sqs, bus_events = aws.client("sqs"), aws.client("events")
        total = args.events + args.publish_retries + args.delivery_duplicates
        sent = 0
        try:
            with _progress(total, "demo") as bar:
                consumer = SQSConsumer(sqs, handles.queue_url, dedup, handler, wait_time_s=1,
                                       on_batch=lambda report: bar.update(report.received))
                rng = random.Random(args.seed)
                deliveries = Counter(rng.randrange(_wave_count(events, args.wave_size))
                                     for _ in range(args.delivery_duplicates))
                waves = _waves(events, args.publish_retries, args.wave_size, rng)
                for n, (wave, retries) in enumerate(waves):
                    report = injector.publish(bus_events, handles.bus_name, wave, publish_retries=retries)
                    sent += report.sent
                    copies = injector.duplicate_deliveries(sqs, handles.queue_url, deliveries[n])
                    consumer.run(max_messages=report.sent + len(copies), max_idle_s=10)
            left, dead = queue_depth(sqs, handles.queue_url), queue_depth(sqs, handles.dlq_url)
            waiting = _keys_waiting(sqs, [handles.queue_url, handles.dlq_url], dedup.key_of)
        finally:
            if not args.keep:
                teardown(aws, stack)
    stats, injected = consumer.stats, injector.injected
    unprocessed = wanted - set(handled)
    lost = len(unprocessed - waiting)  # gone from the queue and the DLQ without being processed
    twice = sum(count - 1 for count in handled.values())
    rows = [
        ("distinct events published (N)", args.events),
        ("publish retries injected", len(injected.publish_retry_ids)),
        ("delivery duplicates injected", len(injected.delivery_duplicates)),
        ("duplicates injected (M)", injected.total),
        ("PutEvents entries accepted", sent),
        ("messages received", stats.received),
        ("processed", stats.processed),
        ("duplicates dropped", stats.duplicates),
        ("lost", lost),
        ("not processed yet (on queue or in DLQ)", len(unprocessed & waiting)),
        ("processed twice", twice),
        ("failed / in flight / bad input", f"{stats.failed} / {stats.in_flight} / {stats.bad_input}"),
        ("deleted", stats.deleted),
        ("left on queue / in DLQ", f"{left} / {dead}"),
    ]
    m = args.publish_retries + args.delivery_duplicates
    ok = (stats.processed == args.events and stats.duplicates == injected.total == m and not unprocessed
          and lost == twice == left == dead == 0 and stats.deleted == stats.received)
    print(_table(rows, title=f"demo on {aws.describe()}, store {dedup.store.describe()}, key {args.key}"))
    print(f"reconciled: processed = N = {args.events}, duplicates dropped = M = {injected.total}, lost = 0"
          if ok else "NOT RECONCILED: see the table above")
    return 0 if ok else 1


# ---- helpers ------------------------------------------------------------------


def _session(args: argparse.Namespace) -> Any:
    from dedup.aws.session import aws_session

    aws = aws_session(args.aws, region=args.region, export_env=True)
    log.info("AWS target: %s", aws.describe())
    return aws


def _warn_if_ephemeral(aws: Any, what: str) -> None:
    if aws.kind == "embedded":
        log.warning("%s lives on an embedded server that stops when this command ends. %s", what, SHARING)


def _stack_config(args: argparse.Namespace, **options: Any) -> Any:
    from dedup.aws.stack import StackConfig
    from dedup.keys import NICE_BRIDGE_SOURCE

    if "nice_sources" in options and not options["nice_sources"]:
        options["nice_sources"] = (NICE_BRIDGE_SOURCE,)
    return StackConfig(name=args.name, bus_name=args.bus, **options)


def _deduplicator(args: argparse.Namespace) -> Any:
    """The Deduplicator the options describe, its store checked to answer within :data:`STORE_CHECK_S`."""
    from dedup.service import Deduplicator
    from dedup.stores import open_store

    store = _reachable(lambda: open_store(args.store), args.store)
    return Deduplicator(store, key=args.key, window_s=args.window_s, lease_s=args.lease_s, mode=args.mode)


def _reachable(open_it: Any, spec: str) -> Any:
    """Open the store and ping it, giving up after :data:`STORE_CHECK_S` with one clear line.

    Without this a consumer would receive messages it cannot decide, and wait
    out the client's connection retries, before saying anything.
    """
    from dedup.errors import DedupError, StoreUnavailableError
    from dedup.stores.redis import redact_url

    result: dict[str, Any] = {}

    def attempt() -> None:
        try:
            store = open_it()
            store.ping()
            result["store"] = store
        except StoreUnavailableError as exc:
            result["error"] = exc.cause or exc
        except DedupError as exc:  # e.g. an unknown scheme: its own message says it all
            result["raise"] = exc
        except Exception as exc:  # reported in the one line, whatever the client raised
            result["error"] = f"{type(exc).__name__}: {exc}"

    worker = threading.Thread(target=attempt, name="store-check", daemon=True)
    worker.start()
    worker.join(STORE_CHECK_S)
    where = redact_url(spec)
    if "raise" in result:
        raise result["raise"]
    if worker.is_alive():
        raise ConfigurationError(f"window store {where} did not answer within {STORE_CHECK_S:g} s: "
                                 "check --store and that the server is up and reachable")
    if "error" in result:
        raise ConfigurationError(f"window store {where} cannot be reached ({result['error']}): "
                                 "check --store and that the server is up and reachable")
    return result["store"]


def _keys_waiting(sqs: Any, queue_urls: Sequence[str], key_of: Any) -> set[str]:
    """Keys of the messages still on these queues: read once each (hidden meanwhile), not deleted."""
    keys: set[str] = set()
    for url in queue_urls:
        while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60,
                                           WaitTimeSeconds=0).get("Messages", []):
            for message in batch:
                try:
                    keys.add(key_of(json.loads(message["Body"])))
                except Exception:  # a body that is not an envelope has no key to account for
                    continue
    return keys


def _log_event(event: Mapping[str, Any]) -> None:
    log.debug("event %s from %s: %s", event.get("id"), event.get("source"), event.get("detail-type"))


def _wave_count(events: Sequence[Any], wave_size: int) -> int:
    return max(1, -(-len(events) // wave_size))


def _waves(events: Sequence[Any], publish_retries: int, wave_size: int,
           rng: random.Random) -> list[tuple[Sequence[Any], int]]:
    """Split ``events`` into waves, spreading the publish retries over them at random."""
    count = _wave_count(events, wave_size)
    retries = Counter(rng.randrange(count) for _ in range(publish_retries))
    return [(events[i * wave_size:(i + 1) * wave_size], retries[i]) for i in range(count)]


def _progress(total: int | None, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="msg", disable=None, leave=False)


def _table(rows: Iterable[tuple[str, Any]], *, title: str) -> str:
    rows = [(str(k), str(v)) for k, v in rows]
    width = max([len(k) for k, _ in rows] + [0])
    lines = [title, "-" * max(len(title), width + 12)]
    lines += [f"{k:<{width}}  {v:>8}" if len(v) <= 8 else f"{k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)
