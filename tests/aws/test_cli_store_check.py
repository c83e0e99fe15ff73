"""`dedup consume` and `dedup demo` against a window store they cannot use, and what the demo calls lost."""

from __future__ import annotations

import json
import socket
import time

import pytest

from dedup.cli import aws as aws_cli
from dedup.cli import main


def _refused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("command", [["consume", "--aws", "embedded", "--max-idle-s", "1"],
                                     ["demo", "--events", "5"]])
def test_when_the_store_refuses_connections_then_one_line_names_it_and_nothing_starts(command, capsys):
    url = f"redis://127.0.0.1:{_refused_port()}/0"
    started = time.monotonic()

    assert main([*command, "--store", url]) == 2

    elapsed_s = time.monotonic() - started
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"dedup: error: window store {url} cannot be reached")
    assert "Connection refused" in err or "connecting" in err
    assert elapsed_s < aws_cli.STORE_CHECK_S + 1, "given up at once, not after the client's retries"


def test_when_the_store_accepts_but_never_answers_then_the_check_gives_up_after_its_deadline(
    monkeypatch, capsys
):
    monkeypatch.setattr(aws_cli, "STORE_CHECK_S", 0.5)
    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        started = time.monotonic()

        assert main(["demo", "--events", "5", "--store", url]) == 2

        elapsed_s = time.monotonic() - started
    err = capsys.readouterr().err.strip()
    assert err == (f"dedup: error: window store {url} did not answer within 0.5 s: "
                   "check --store and that the server is up and reachable")
    assert elapsed_s < 2.5


class _Queues:
    """Two queues' bodies as SQS hands them out: each message once while it stays hidden."""

    def __init__(self, bodies: dict[str, list[str]]) -> None:
        self.bodies = {url: list(b) for url, b in bodies.items()}
        self.deleted = 0

    def receive_message(self, *, QueueUrl, MaxNumberOfMessages, VisibilityTimeout, WaitTimeSeconds):
        assert VisibilityTimeout > 0, "read messages are hidden, so each is read once"
        batch, self.bodies[QueueUrl] = (self.bodies[QueueUrl][:MaxNumberOfMessages],
                                        self.bodies[QueueUrl][MaxNumberOfMessages:])
        return {"Messages": [{"Body": b, "ReceiptHandle": "rh"} for b in batch]}

    def delete_message(self, **_kwargs):
        self.deleted += 1


def test_the_demo_counts_as_lost_only_events_gone_from_both_queue_and_dlq():
    queue = [json.dumps({"k": f"q{i}"}) for i in range(12)]
    dlq = [json.dumps({"k": "d0"}), "this is not an envelope"]
    sqs = _Queues({"queue": queue, "dlq": dlq})

    waiting = aws_cli._keys_waiting(sqs, ["queue", "dlq"], lambda event: event["k"])

    assert waiting == {*(f"q{i}" for i in range(12)), "d0"}
    assert sqs.deleted == 0, "reading what waits deletes nothing"
    unprocessed = {"q3", "d0", "gone"}
    assert unprocessed - waiting == {"gone"}, "only an event in neither queue is lost"
