"""Start and stop a throwaway local ``redis-server`` on a free loopback port.

Used by the test session, the benchmarks, the chaos run and the production
notebook, so that "real Redis" always means a server this process started and
owns: never a server already listening on the machine (which may hold someone
else's data). Needs the ``redis-server`` binary (Debian package ``redis-server``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from dedup.errors import ConfigurationError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def redis_server_binary() -> str | None:
    """The path of ``redis-server``, or ``None`` when it is not installed."""
    return shutil.which("redis-server")


@dataclass
class LocalRedis:
    """One ``redis-server`` process bound to 127.0.0.1, persisting nothing.

    ``password`` turns on AUTH; ``cluster`` starts the node in cluster mode
    (a cluster still has to be formed across nodes). ``start_timeout_s`` bounds
    the wait for the server to accept connections.
    """

    port: int = 0
    password: str | None = None
    cluster: bool = False
    start_timeout_s: float = 10.0
    extra_args: tuple[str, ...] = ()
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _dir: tempfile.TemporaryDirectory | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        """``redis://`` URL of the server, with the password when there is one."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> LocalRedis:
        """Start the server and wait until it answers PING."""
        binary = redis_server_binary()
        if binary is None:
            raise ConfigurationError(
                "redis-server is not installed (Debian: apt-get install redis-server)"
            )
        if not self.port:
            self.port = free_port()
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="dedup-redis-")
        args = [
            binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
            "--appendonly", "no", "--dir", self._dir.name, "--daemonize", "no",
            "--logfile", str(Path(self._dir.name) / "redis.log"),
        ]
        if self.password:
            args += ["--requirepass", self.password]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file",
                     str(Path(self._dir.name) / "nodes.conf"), "--cluster-node-timeout", "2000"]
        args += list(self.extra_args)
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_ready()
        return self

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL); its data is gone."""
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def restart(self) -> None:
        """Stop and start again on the same port (an outage; the data is lost)."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                log = Path(self._dir.name, "redis.log") if self._dir else None
                tail = log.read_text()[-500:] if log and log.exists() else ""
                raise ConfigurationError(f"redis-server exited at start: {err or tail}")
            if self._ping():
                return
            time.sleep(0.02)
        self.stop()
        raise ConfigurationError(f"redis-server did not answer on port {self.port} in time")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
        except OSError:
            return False
        # Both +PONG and -NOAUTH mean the server is up and serving.
        return reply.startswith((b"+PONG", b"-NOAUTH"))
