"""The embedded AWS (moto's HTTP server) and the choice between it, an endpoint and real AWS."""

from __future__ import annotations

import os
import urllib.parse

import pytest

from dedup.aws.embedded import EmbeddedAWS
from dedup.aws.session import aws_session
from dedup.errors import ConfigurationError

pytestmark = pytest.mark.aws

AWS_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE")


@pytest.fixture
def no_aws_config(monkeypatch, tmp_path):
    """An environment with no AWS configuration at all (and no instance metadata lookups)."""
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)


def test_server_listens_on_loopback_only(embedded_aws):
    url = urllib.parse.urlsplit(embedded_aws.endpoint_url)
    assert url.hostname == "127.0.0.1"
    assert url.port and url.port != 5000  # never moto's default 0.0.0.0:5000


def test_reset_forgets_every_resource(aws):
    sqs = aws.client("sqs")
    sqs.create_queue(QueueName="to-be-forgotten")
    assert sqs.list_queues().get("QueueUrls")
    aws.reset()
    assert not sqs.list_queues().get("QueueUrls")


def test_exported_sets_the_variables_for_the_block_and_restores_them(embedded_aws, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with embedded_aws.exported() as env:
        assert os.environ["AWS_ENDPOINT_URL"] == embedded_aws.endpoint_url == env["AWS_ENDPOINT_URL"]
        assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"
        assert os.environ["AWS_DEFAULT_REGION"] == "us-east-1"
    assert "AWS_ENDPOINT_URL" not in os.environ
    assert os.environ["AWS_DEFAULT_REGION"] == "eu-west-3"


def test_a_stopped_server_has_no_endpoint():
    server = EmbeddedAWS()
    with pytest.raises(ConfigurationError, match="not running"):
        _ = server.endpoint_url


def test_auto_uses_aws_endpoint_url_when_set(embedded_aws, no_aws_config, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", embedded_aws.endpoint_url)
    with aws_session("auto") as session:
        assert session.kind == "endpoint"
        assert session.embedded is None
        sqs = session.client("sqs")
        url = sqs.create_queue(QueueName="via-endpoint")["QueueUrl"]
        assert url.startswith(embedded_aws.endpoint_url)
        sqs.delete_queue(QueueUrl=url)


def test_auto_without_any_configuration_starts_an_embedded_server(no_aws_config, embedded_aws):
    with aws_session("auto") as session:
        assert session.kind == "embedded"
        assert session.endpoint_url != embedded_aws.endpoint_url
        assert session.client("sqs").list_queues()["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert not session.embedded.running


def test_auto_with_region_and_credentials_means_real_aws(no_aws_config, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    session = aws_session("auto")
    assert session.kind == "real"
    assert session.client("sqs").meta.endpoint_url == "https://sqs.eu-central-1.amazonaws.com"


def test_real_ignores_a_leftover_endpoint_override(no_aws_config, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    session = aws_session("real")
    assert session.client("events").meta.endpoint_url == "https://events.us-west-2.amazonaws.com"


def test_real_without_a_region_is_a_clear_error(no_aws_config, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    with pytest.raises(ConfigurationError, match=r"needs a region.*AWS_DEFAULT_REGION"):
        aws_session("real")


def test_real_without_credentials_is_a_clear_error(no_aws_config, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with pytest.raises(ConfigurationError, match=r"needs credentials.*--aws embedded"):
        aws_session("real")


def test_an_unknown_profile_is_a_clear_error(no_aws_config, monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(ConfigurationError, match="no-such-profile"):
        aws_session("real")


def test_an_unknown_mode_is_a_clear_error():
    with pytest.raises(ConfigurationError, match="unknown AWS mode 'cloud'"):
        aws_session("cloud")


def test_a_broken_credential_source_is_a_clear_error(no_aws_config, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://example.com/creds")
    with pytest.raises(ConfigurationError, match="credentials cannot be resolved"):
        aws_session("real")
