"""Decide where AWS calls go: an embedded moto server, an endpoint override, or real AWS.

Every AWS-facing component takes boto3 clients made by an :class:`AwsSession`, so the
same code runs offline and against a real account; only this decision differs.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Literal

from dedup.aws.embedded import DEFAULT_REGION, TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY, EmbeddedAWS
from dedup.errors import ConfigurationError

log = logging.getLogger(__name__)

Mode = Literal["auto", "embedded", "real"]
MODES: tuple[str, ...] = ("auto", "embedded", "real")


class AwsSession:
    """Makes boto3 clients for one target; ``kind`` is ``embedded``, ``endpoint`` or ``real``.

    Close it (or use it as a context manager) to stop an embedded server it started.
    """

    def __init__(
        self,
        kind: str,
        region: str,
        *,
        endpoint_url: str | None = None,
        credentials: tuple[str, str] | None = None,
        embedded: EmbeddedAWS | None = None,
        boto_session: Any = None,
    ) -> None:
        self.kind = kind
        self.region = region
        self.endpoint_url = endpoint_url
        self.embedded = embedded
        self._credentials = credentials
        self._boto_session = boto_session

    def client(self, service: str, **kwargs: Any) -> Any:
        """A boto3 client for ``service`` on this target."""
        import boto3
        from botocore.config import Config

        options: dict[str, Any] = {"region_name": self.region}
        if self.endpoint_url:
            options["endpoint_url"] = self.endpoint_url
        else:
            # Real AWS: a stray AWS_ENDPOINT_URL must not silently redirect the calls.
            options["config"] = Config(ignore_configured_endpoint_urls=True)
        if self._credentials:
            options["aws_access_key_id"], options["aws_secret_access_key"] = self._credentials
        options.update(kwargs)
        session = self._boto_session or boto3
        return session.client(service, **options)

    def describe(self) -> str:
        """One line saying where calls go, for logs and error messages."""
        if self.kind == "real":
            return f"real AWS, region {self.region}"
        what = "embedded moto server" if self.kind == "embedded" else "endpoint override"
        return f"{what} {self.endpoint_url}, region {self.region}"

    def close(self) -> None:
        """Stop the embedded server this session started, if any."""
        if self.embedded is not None:
            self.embedded.stop()

    def __enter__(self) -> AwsSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AwsSession({self.describe()})"


def aws_session(mode: str = "auto", *, region: str | None = None, export_env: bool = False) -> AwsSession:
    """Pick the AWS target.

    - ``embedded``: start an :class:`EmbeddedAWS` (stopped by ``close()``); with
      ``export_env`` its endpoint and test credentials are also set in ``os.environ``
      (until ``close()``) for code that builds its own clients, e.g. a DynamoDB store.
    - ``real``: the default boto3 credential chain and region; a :class:`ConfigurationError`
      naming what to set when either is missing. ``AWS_ENDPOINT_URL`` is ignored.
    - ``auto``: ``AWS_ENDPOINT_URL`` when set (e.g. a ``dedup aws-server`` in another
      terminal); else real AWS when a region and credentials are configured; else embedded.
    """
    if mode not in MODES:
        raise ConfigurationError(f"unknown AWS mode {mode!r}: expected one of {', '.join(MODES)}")
    if mode == "embedded":
        return _embedded(region, export_env)
    if mode == "real":
        if os.environ.get("AWS_ENDPOINT_URL"):
            log.warning("AWS mode is 'real': ignoring AWS_ENDPOINT_URL=%s", os.environ["AWS_ENDPOINT_URL"])
        return _real(region)
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        return _endpoint(endpoint, region)
    boto_session = _boto_session(region)
    if boto_session.region_name and _credentials(boto_session) is not None:
        return _real(region, boto_session)
    log.info("no AWS_ENDPOINT_URL and no region + credentials configured: using an embedded moto server")
    return _embedded(region, export_env)


def _embedded(region: str | None, export_env: bool) -> AwsSession:
    server = EmbeddedAWS(region=region or DEFAULT_REGION, export_env=export_env).start()
    return AwsSession(
        "embedded",
        server.region,
        endpoint_url=server.endpoint_url,
        credentials=(TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY),
        embedded=server,
    )


def _endpoint(endpoint: str, region: str | None) -> AwsSession:
    boto_session = _boto_session(region)
    # Local emulators accept any credentials; fall back to the test ones when none are set.
    credentials = None if _credentials(boto_session) is not None else (
        TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY)
    return AwsSession(
        "endpoint",
        boto_session.region_name or DEFAULT_REGION,
        endpoint_url=endpoint,
        credentials=credentials,
        boto_session=boto_session,
    )


def _real(region: str | None, boto_session: Any = None) -> AwsSession:
    boto_session = boto_session or _boto_session(region)
    if not boto_session.region_name:
        raise ConfigurationError(
            "real AWS needs a region: set AWS_DEFAULT_REGION (or AWS_REGION), pass --region, "
            "or configure one in the AWS profile"
        )
    if _credentials(boto_session) is None:
        raise ConfigurationError(
            "real AWS needs credentials and none were found: set AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run on a role; or use --aws embedded"
        )
    return AwsSession("real", boto_session.region_name, boto_session=boto_session)


def _boto_session(region: str | None) -> Any:
    import boto3
    from botocore.exceptions import BotoCoreError

    try:
        return boto3.Session(region_name=region)
    except BotoCoreError as exc:  # e.g. AWS_PROFILE names a profile that does not exist
        raise ConfigurationError(f"the AWS configuration cannot be loaded: {exc}") from exc


def _credentials(boto_session: Any) -> Any:
    """The resolved credentials, or ``None``; a broken credential source is a clear error."""
    from botocore.exceptions import BotoCoreError

    try:
        return boto_session.get_credentials()
    except (BotoCoreError, ValueError) as exc:  # ValueError: e.g. a malformed container credentials URI
        raise ConfigurationError(f"the AWS credentials cannot be resolved: {exc}") from exc
