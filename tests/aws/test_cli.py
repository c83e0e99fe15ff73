"""The AWS commands of ``dedup``: help, the shared-server workflow, and the reconciling demo."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from aws_support import row

from dedup.cli import main

pytestmark = pytest.mark.aws

COMMANDS = ("aws-server", "provision", "teardown", "produce", "consume", "demo")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert f"usage: dedup {command}" in text
    if command != "aws-server":
        assert "--aws {auto,embedded,real}" in text
    if command in ("provision", "produce", "consume", "aws-server"):
        assert "dedup aws-server" in text  # how separate commands share one embedded server


def test_the_readme_demo_reconciles_exactly():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    done = subprocess.run([sys.executable, "-m", "dedup", "demo"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert row(out, "distinct events published (N)") == "200"
    assert row(out, "duplicates injected (M)") == "50"
    assert row(out, "processed") == "200"
    assert row(out, "duplicates dropped") == "50"
    assert row(out, "lost") == "0"
    assert row(out, "left on queue / in DLQ") == "0 / 0"
    assert "reconciled: processed = N = 200, duplicates dropped = M = 50, lost = 0" in out


def test_the_demo_fails_when_the_key_misses_publish_retries(capsys):
    code = main(["demo", "--name", "envelope-demo", "--events", "20", "--publish-retries", "4",
                 "--delivery-duplicates", "3", "--wave-size", "10", "--key", "envelope-id"])
    out = capsys.readouterr().out
    assert code == 1
    assert row(out, "processed") == "24"  # every publish retry got a new envelope id: processed again
    assert row(out, "duplicates dropped") == "3"  # only the delivery duplicates were caught
    assert "NOT RECONCILED" in out


def test_separate_commands_share_one_server_through_aws_endpoint_url(aws, monkeypatch, capsys):
    for name, value in aws.environ().items():
        monkeypatch.setenv(name, value)
    assert main(["provision", "--name", "shared", "--print-policies"]) == 0
    out = capsys.readouterr().out
    assert row(out, "queue_name") == "shared-events" and '"events:PutEvents"' in out
    assert main(["produce", "--name", "shared", "--events", "12", "--publish-retries", "3",
                 "--delivery-duplicates", "2", "--seed", "4"]) == 0
    assert row(capsys.readouterr().out, "messages expected on the queue") == "17"
    assert main(["consume", "--name", "shared", "--max-idle-s", "1", "--wait-time-s", "1"]) == 0
    out = capsys.readouterr().out
    assert (row(out, "received"), row(out, "processed"), row(out, "duplicates")) == ("17", "12", "5")
    assert main(["teardown", "--name", "shared"]) == 0
    assert "queue shared-events-dlq" in capsys.readouterr().out


def test_consuming_a_stack_that_was_never_provisioned_is_a_clear_error(aws, monkeypatch, capsys):
    for name, value in aws.environ().items():
        monkeypatch.setenv(name, value)
    assert main(["consume", "--name", "missing", "--max-idle-s", "1"]) == 2
    err = capsys.readouterr().err
    assert "missing-events does not exist" in err and aws.endpoint_url in err
