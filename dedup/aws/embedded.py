"""An AWS that runs inside this process: moto's HTTP server on a loopback port.

The tests, the notebooks and ``dedup aws demo`` talk to it through boto3 exactly as
they would talk to AWS (HTTP, signed requests, real client retries), only the
endpoint differs. moto's state is process-wide: do not enter ``moto.mock_aws`` in
a process that serves an ``EmbeddedAWS`` (it wipes the server's state), and do not
leave ``AWS_ENDPOINT_URL`` set when using ``mock_aws``.
"""

from __future__ import annotations

import contextlib
import logging
import urllib.request
from collections.abc import Mapping
from typing import Any

from dedup.environ import overridden
from dedup.errors import ConfigurationError

TEST_ACCESS_KEY_ID = "testing"
TEST_SECRET_ACCESS_KEY = "testing"  # moto accepts any credentials; these are the conventional fakes
DEFAULT_REGION = "us-east-1"


class EmbeddedAWS:
    """moto's ``ThreadedMotoServer`` on 127.0.0.1, with boto3 clients pointed at it.

    ``port=0`` (the default) lets the operating system pick a free port at bind time,
    so there is no window in which another process can take it. ``export_env=True``
    sets ``AWS_ENDPOINT_URL`` and test credentials in ``os.environ`` while the server
    runs (for code that builds its own clients) and restores them on ``stop()``.
    """

    def __init__(self, *, region: str = DEFAULT_REGION, port: int = 0, export_env: bool = False) -> None:
        self.region = region
        self._requested_port = port
        self._export_env = export_env
        self._server: Any = None
        self._port: int | None = None
        self._env = contextlib.ExitStack()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the running server."""
        if self._port is None:
            raise ConfigurationError("the embedded AWS server is not running: call start() first")
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> EmbeddedAWS:
        """Start the server (about a second from a fresh interpreter); idempotent."""
        if self._server is not None:
            return self
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:
            raise ConfigurationError("the embedded AWS needs moto[server] installed") from exc
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        _serialise_sqs_deletes()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=self._requested_port, verbose=False)
        server.start()
        self._server = server
        self._port = int(server.get_host_and_port()[1])
        if self._export_env:
            self._env.enter_context(self.exported())
        return self

    def stop(self) -> None:
        """Stop the server (its state is gone) and restore any exported variables."""
        self._env.close()
        if self._server is not None:
            self._server.stop()
            self._server = None
            self._port = None

    def reset(self) -> None:
        """Forget every resource (queues, buses, rules, tables) without restarting."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def environ(self) -> dict[str, str]:
        """The variables that point boto3 (and the AWS CLI) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": TEST_SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": self.region,
        }

    def exported(self) -> contextlib.AbstractContextManager[Mapping[str, str]]:
        """Set :meth:`environ` in ``os.environ`` for the ``with`` block, then restore it."""
        return overridden(self.environ())

    def client(self, service: str, **kwargs: Any) -> Any:
        """A boto3 client for ``service`` on this server, with test credentials."""
        import boto3

        options: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "region_name": self.region,
            "aws_access_key_id": TEST_ACCESS_KEY_ID,
            "aws_secret_access_key": TEST_SECRET_ACCESS_KEY,
        }
        options.update(kwargs)
        return boto3.client(service, **options)

    def __enter__(self) -> EmbeddedAWS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.endpoint_url if self._port is not None else "stopped"
        return f"EmbeddedAWS({where}, region={self.region})"


def _serialise_sqs_deletes() -> None:
    """Make moto's SQS delete hold the queue's lock, as its send already does; idempotent.

    moto 5.2's ``Queue.delete_message`` rebuilds the queue's message list without the
    lock ``add_message`` appends under, so a message sent while another consumer
    deletes can vanish: never received, never dead-lettered (seen once in five
    full chaos runs). The embedded AWS must not lose what real SQS keeps.
    """
    from moto.sqs.models import Queue

    delete = Queue.delete_message
    if getattr(delete, "_dedup_serialised", False):
        return

    def delete_message(self: Any, receipt_handle: str) -> None:
        with self._messages_lock:
            delete(self, receipt_handle)

    delete_message._dedup_serialised = True  # type: ignore[attr-defined]
    Queue.delete_message = delete_message
