"""Security: least privilege checked against what the code calls, Redis AUTH and TLS by URL at
the consumer level, and no credential in any log line.

``tests/aws/test_iam.py`` checks the documents themselves (no wildcards, exact rule
condition); here they are checked against the calls the consumer and the producer really
make, and against the ARNs the services report for a provisioned stack.
``tests/stores/test_redis_store.py`` checks the store's AUTH error; here the consumer's.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws.aws_support import RecordingSleep, until

from dedup.aws.consumer import SQSConsumer
from dedup.aws.iam import CONSUMER_ACTIONS, PRODUCER_ACTIONS
from dedup.aws.producer import DuplicateInjector
from dedup.aws.session import aws_session
from dedup.cli import main
from dedup.localredis import LocalRedis, free_port
from dedup.service import Deduplicator
from dedup.stores import MemoryStore, RedisStore
from dedup.traces import logical_events

pytestmark = pytest.mark.aws

# The IAM action each API operation is authorised as (the batch APIs as their single forms).
OPERATION_ACTIONS = {
    "DeleteMessageBatch": "sqs:DeleteMessage",
    "ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
}
REDIS_PASSWORD = "r3dis-Pw-9f2c41"
FAKE_KEY_ID = "AKIAZ7QW3EXAMPLE4KEY"  # real-looking, not real: moto accepts any credentials
FAKE_SECRET = "q8Vd2T/xZk4mW9rYb+N1hLc5JpEaUo7GsKfR3tIy"  # 40 characters, like an AWS secret key


def recorded_operations(client: Any) -> list[tuple[str, dict[str, Any]]]:
    """Every operation ``client`` calls from now on, with its parameters (botocore's event hook)."""
    calls: list[tuple[str, dict[str, Any]]] = []
    client.meta.events.register("before-parameter-build",
                                lambda model, params, **kw: calls.append((model.name, dict(params))))
    return calls


def allows(policy: dict[str, Any], action: str, resource: str) -> bool:
    """Whether an Allow statement names exactly ``action`` on exactly ``resource``."""
    return any(st["Effect"] == "Allow" and action in st["Action"] and st["Resource"] == resource
               for st in policy["Statement"])


def pause() -> None:
    """A short bounded pause between two looks at a condition."""
    threading.Event().wait(0.05)


def test_the_least_privilege_documents_allow_exactly_what_the_consumer_and_producer_call(stack):
    h, policies = stack.handles, stack.handles.policies()
    events, sqs = stack.aws.client("events"), stack.aws.client("sqs")
    published, consumed = recorded_operations(events), recorded_operations(sqs)
    DuplicateInjector().publish(events, h.bus_name, logical_events(3, source="genesys", seed=8))

    def handler_outlasting_a_heartbeat(event: dict[str, Any]) -> None:
        until(lambda: any(op == "ChangeMessageVisibilityBatch" for op, _ in consumed), pause)

    consumer = SQSConsumer(sqs, h.queue_url, Deduplicator(MemoryStore()), handler_outlasting_a_heartbeat,
                           wait_time_s=1, heartbeat_interval_s=0.1)
    until(lambda: stack.depth() == 0, lambda: consumer.poll_once(wait_time_s=1))

    used = {(OPERATION_ACTIONS.get(op, f"sqs:{op}"), {h.queue_url: h.queue_arn}[params["QueueUrl"]])
            for op, params in consumed}
    assert {action for action, _ in used} == set(CONSUMER_ACTIONS)  # every grant is used, none is missing
    assert all(allows(policies["consumer"], action, arn) for action, arn in used), used
    put = {(f"events:{op}", {h.bus_name: h.bus_arn}[entry["EventBusName"]])
           for op, params in published for entry in params["Entries"]}
    assert {action for action, _ in put} == set(PRODUCER_ACTIONS)
    assert all(allows(policies["producer"], action, arn) for action, arn in put), put


def test_queue_policies_pin_the_rule_arn_that_eventbridge_reports_and_documents_name_only_stack_arns(stack):
    h, sqs, events = stack.handles, stack.sqs, stack.events
    rule_arn = events.describe_rule(Name=h.rule_name, EventBusName=h.bus_name)["Arn"]
    bus_arn = events.describe_event_bus(Name=h.bus_name)["Arn"]
    for url in (h.queue_url, h.dlq_url):
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn", "Policy"])["Attributes"]
        (statement,) = json.loads(attrs["Policy"])["Statement"]
        assert statement["Resource"] == attrs["QueueArn"]
        assert statement["Action"] == "sqs:SendMessage"
        assert statement["Principal"] == {"Service": "events.amazonaws.com"}
        assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": rule_arn}}
    queue_arn = sqs.get_queue_attributes(QueueUrl=h.queue_url, AttributeNames=["QueueArn"])["Attributes"]
    assert {st["Resource"] for st in h.policies()["consumer"]["Statement"]} == {queue_arn["QueueArn"]}
    assert {st["Resource"] for st in h.policies()["producer"]["Statement"]} == {bus_arn}


# ---- Redis AUTH and TLS, configured by URL ------------------------------------------------------


@pytest.fixture
def protected_redis() -> Iterator[LocalRedis]:
    with LocalRedis(password=REDIS_PASSWORD) as server:
        yield server


def published_stack(stack, n: int = 3):
    events = logical_events(n, source="nice", seed=9)
    DuplicateInjector().publish(stack.events, stack.handles.bus_name, events)
    until(lambda: stack.depth() == n, pause)
    return stack


def consume_once(stack, store_url: str) -> tuple[Any, list[Any]]:
    """One batch received (messages left alone by an earlier attempt return after 1 s) and settled."""
    handled: list[Any] = []
    consumer = SQSConsumer(stack.sqs, stack.handles.queue_url, Deduplicator(RedisStore(store_url)),
                           handled.append, wait_time_s=1, sleep=RecordingSleep())
    reports = []
    until(lambda: bool(reports) and reports[-1].received > 0,
          lambda: reports.append(consumer.poll_once(wait_time_s=1)))
    return reports[-1], handled


@pytest.mark.redis
@pytest.mark.parametrize(("credentials", "reason"), [
    ("wrong-pw", "invalid username-password pair"),
    ("", "must be called with the client already authenticated"),  # redis-py opens with HELLO
])
def test_a_wrong_or_missing_redis_password_is_a_clear_error_and_deletes_nothing(
        patient_stack, protected_redis, credentials, reason, caplog):
    stack = published_stack(patient_stack)
    auth = f":{credentials}@" if credentials else ""
    with caplog.at_level(logging.ERROR):
        report, handled = consume_once(stack, f"redis://{auth}127.0.0.1:{protected_redis.port}/0")
    error = str(report.store_outage)
    assert reason in error.lower() and f"127.0.0.1:{protected_redis.port}" in error
    assert report.received == 3 and report.deleted == () and handled == []
    assert stack.depth() == 3  # nothing deleted: every message comes back
    logged = caplog.text
    assert reason in logged.lower() and REDIS_PASSWORD not in logged and "wrong-pw" not in logged
    report, handled = consume_once(stack, protected_redis.url)  # the right password works
    assert report.store_outage is None and len(handled) == len(report.deleted) == 3


def _tls_files(directory: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1, as PEM files."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject: str, key: Any, issuer: str, issuer_key: Any, ca: bool) -> Any:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(hours=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            import ipaddress

            san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
            builder = builder.add_extension(san, critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    files = {"ca": directory / "ca.pem", "cert": directory / "server.pem", "key": directory / "server.key"}
    files["ca"].write_bytes(certificate("dedup test CA", ca_key, "dedup test CA", ca_key, True)
                            .public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(certificate("127.0.0.1", server_key, "dedup test CA", ca_key, False)
                              .public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(server_key.private_bytes(serialization.Encoding.PEM,
                                                      serialization.PrivateFormat.TraditionalOpenSSL,
                                                      serialization.NoEncryption()))
    return files


@pytest.mark.redis
def test_tls_and_auth_are_configured_by_the_rediss_url_and_a_bad_tls_setup_deletes_nothing(
        patient_stack, tmp_path):
    files = _tls_files(tmp_path)
    tls_port = free_port()
    tls = ("--tls-port", str(tls_port), "--tls-cert-file", str(files["cert"]), "--tls-key-file",
           str(files["key"]), "--tls-ca-cert-file", str(files["ca"]), "--tls-auth-clients", "no")
    stack = published_stack(patient_stack)
    with LocalRedis(password=REDIS_PASSWORD, extra_args=tls):
        base = f"127.0.0.1:{tls_port}/0"
        for url, reason in ((f"rediss://:{REDIS_PASSWORD}@{base}", "certificate verify failed"),
                            (f"redis://:{REDIS_PASSWORD}@{base}", "")):
            report, handled = consume_once(stack, url)  # no trusted CA / no TLS at all
            assert report.store_outage is not None and reason in str(report.store_outage)
            assert report.deleted == () and handled == [] and stack.depth() == 3
            assert REDIS_PASSWORD not in str(report.store_outage)
        trusted = f"rediss://:{REDIS_PASSWORD}@{base}?ssl_ca_certs={files['ca']}"
        report, handled = consume_once(stack, trusted)
        assert report.store_outage is None and len(handled) == len(report.deleted) == 3
        assert stack.dlq_depth() == 0


# ---- no credentials in logs --------------------------------------------------------------------


@pytest.mark.redis
def test_debug_logs_of_producer_consumer_and_cli_hold_neither_the_aws_secret_nor_the_redis_password(
        stack, protected_redis, monkeypatch, caplog, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL", stack.aws.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", stack.aws.region)
    for name in ("", "botocore", "boto3", "urllib3", "dedup"):
        caplog.set_level(logging.DEBUG, logger=name or None)
    url_forms = [protected_redis.url,  # redis://:PASSWORD@host:port/0
                 f"redis://127.0.0.1:{protected_redis.port}/0?password={REDIS_PASSWORD}"]

    aws = aws_session("auto")  # credentials from the environment, as in production
    DuplicateInjector().publish(aws.client("events"), stack.handles.bus_name, logical_events(4, seed=10))
    for url in url_forms:  # a batch processed, then the same store down: its URL is logged
        consumer = SQSConsumer(aws.client("sqs"), stack.handles.queue_url, Deduplicator(RedisStore(url)),
                               lambda event: None, wait_time_s=1, sleep=RecordingSleep())
        until(lambda c=consumer: c.poll_once(max_messages=2, wait_time_s=1).deleted != (), pause)
        protected_redis.stop()
        DuplicateInjector().publish(aws.client("events"), stack.handles.bus_name, logical_events(1, seed=11))
        until(lambda c=consumer: c.poll_once(wait_time_s=1).store_outage is not None, pause)
        protected_redis.start()
    name = stack.config.name
    assert main(["-v", "produce", "--aws", "auto", "--name", name, "--events", "2", "--seed", "12"]) == 0
    assert main(["-v", "consume", "--aws", "auto", "--name", name, "--store", url_forms[1],
                 "--max-idle-s", "2", "--wait-time-s", "1"]) == 0

    out = capsys.readouterr()
    text = "\n".join([caplog.text, out.out, out.err])
    assert FAKE_SECRET not in text
    assert REDIS_PASSWORD not in text
    # Controls: the capture saw signed requests and the store's URL in the outage errors.
    assert f"Credential={FAKE_KEY_ID}/" in caplog.text
    assert "redis at redis://:***@127.0.0.1" in caplog.text and "?password=***" in caplog.text
