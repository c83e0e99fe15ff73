"""Start and stop a throwaway local ``redis-server`` (or a Redis Cluster of them) on free loopback ports.

Used by the test session, the benchmarks, the chaos run and the production
notebook, so that "real Redis" always means a server this process started and
owns: never a server already listening on the machine (which may hold someone
else's data). Needs the ``redis-server`` binary (Debian package ``redis-server``), and
``redis-cli`` for a cluster (``redis-tools``).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

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


def redis_cli_binary() -> str | None:
    """The path of ``redis-cli``, or ``None`` when it is not installed."""
    return shutil.which("redis-cli")


@dataclass
class LocalRedisCluster:
    """A Redis Cluster of ``masters`` primaries (no replicas) on free loopback ports.

    Each node is a :class:`LocalRedis` started with ``cluster=True``; the
    cluster is formed with ``redis-cli --cluster create`` (Debian package
    ``redis-tools``) and :meth:`start` returns once every node reports
    ``cluster_state:ok``. Without replicas, stopping one primary
    (:meth:`stop_node`) makes its slots unreachable and, once the others mark it
    failed, the whole cluster refuses commands: the outage the stores must
    survive by failing closed.
    """

    masters: int = 3
    start_timeout_s: float = 20.0
    #: How long a silent node takes to be marked failed (then the whole cluster refuses commands).
    node_timeout_ms: int = 2000
    nodes: list[LocalRedis] = field(default_factory=list, init=False)

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every node, for ``redis.cluster.ClusterNode``."""
        return [("127.0.0.1", node.port) for node in self.nodes]

    @property
    def url(self) -> str:
        """``redis+cluster://`` URL of the first node (the store discovers the others)."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> LocalRedisCluster:
        """Start the nodes, form the cluster and wait until it serves every slot."""
        if self.masters < 3:
            raise ConfigurationError(f"a Redis Cluster needs at least 3 masters, got {self.masters}")
        cli = redis_cli_binary()
        if cli is None:
            raise ConfigurationError("redis-cli is not installed (Debian: apt-get install redis-tools)")
        deadline = time.monotonic() + self.start_timeout_s
        try:
            for _ in range(self.masters):
                # An explicit bus port: the default (port + 10000) may be taken or above 65535.
                args = ("--cluster-port", str(free_port()),
                        "--cluster-node-timeout", str(self.node_timeout_ms))
                self.nodes.append(LocalRedis(cluster=True, extra_args=args).start())
            create = subprocess.run(
                [cli, "--cluster", "create", *(f"{h}:{p}" for h, p in self.startup_nodes),
                 "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True, text=True, timeout=max(1.0, deadline - time.monotonic()),
            )
            if create.returncode != 0:
                raise ConfigurationError(
                    f"redis-cli --cluster create failed: {(create.stdout + create.stderr)[-500:]}"
                )
            self._wait_ok(deadline)
        except BaseException:
            self.close()
            raise
        return self

    def stop_node(self, index: int) -> None:
        """Stop node ``index`` (an outage of its slots; its data is lost)."""
        self.nodes[index].stop()

    def pause_node(self, index: int) -> None:
        """Freeze node ``index`` (SIGSTOP): it accepts connections but answers nothing, like a hung host."""
        self._process(index).send_signal(signal.SIGSTOP)

    def resume_node(self, index: int) -> None:
        """Let a paused node run again (SIGCONT); it then executes what it was sent meanwhile."""
        self._process(index).send_signal(signal.SIGCONT)

    def cluster_states(self) -> list[str]:
        """``cluster_state`` as reported by each running node, in node order."""
        return [self._state(node) for node in self.nodes if node.running]

    def close(self) -> None:
        """Stop every node (paused ones too) and remove their directories."""
        for index, node in enumerate(self.nodes):
            if node.running:
                self.resume_node(index)  # a stopped process ignores SIGTERM until continued
            node.close()
        self.nodes.clear()

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wait_ok(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if all(state == "ok" for state in self.cluster_states()):
                return
            time.sleep(0.05)
        raise ConfigurationError(f"the local Redis Cluster did not reach cluster_state:ok: "
                                 f"{self.cluster_states()}")

    def _process(self, index: int) -> subprocess.Popen:
        proc = self.nodes[index]._proc
        if proc is None:
            raise ConfigurationError(f"node {index} of the local Redis Cluster is not running")
        return proc

    @staticmethod
    def _state(node: LocalRedis) -> str:
        try:
            with redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=1.0) as client:
                return str(client.cluster("INFO").get("cluster_state", "unknown"))
        except redis.exceptions.RedisError as exc:
            return f"unreachable ({exc})"
