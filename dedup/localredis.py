"""Start and stop a throwaway local ``redis-server`` (or a Redis Cluster of them) on free loopback ports.

Used by the test session, the benchmarks, the chaos run and the production
notebook, so that "real Redis" always means a server this process started and
owns: never a server already listening on the machine (which may hold someone
else's data). Needs the ``redis-server`` binary (Debian package ``redis-server``), and
``redis-cli`` for a cluster (``redis-tools``).

A server persists what :data:`PERSISTENCE` names (nothing by default), can be a
replica of another (``replica_of``), and can be promoted or demoted with
``REPLICAOF``; :class:`LocalRedisFailover` pairs a primary and a replica behind a
switchable :class:`Endpoint` (the DNS name a managed Redis flips on failover).
"""

from __future__ import annotations

import contextlib
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
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


PERSISTENCE: dict[str, tuple[str, ...]] = {
    "none": ("--save", "", "--appendonly", "no"),
    "rdb": ("--save", "60 1", "--appendonly", "no"),
    "aof-everysec": ("--save", "", "--appendonly", "yes", "--appendfsync", "everysec"),
    "aof-always": ("--save", "", "--appendonly", "yes", "--appendfsync", "always"),
}
"""The persistence settings a :class:`LocalRedis` can run with, as ``redis-server`` arguments.

``none`` loses everything on a restart; ``rdb`` what was written since the last
snapshot (here: a minute, given one write); ``aof-everysec`` nothing on a process
crash, up to a second on a host crash; ``aof-always`` nothing acknowledged (each
write is fsynced before its reply).
"""


@dataclass
class LocalRedis:
    """One ``redis-server`` process bound to 127.0.0.1, persisting what ``persistence`` names.

    ``password`` turns on AUTH; ``cluster`` starts the node in cluster mode
    (a cluster still has to be formed across nodes). ``persistence`` is a key of
    :data:`PERSISTENCE` (default ``none``); the data directory outlives
    :meth:`stop` and :meth:`kill`, so a persisting server restarts with its data.
    ``replica_of`` starts the server as a replica of that port.
    ``start_timeout_s`` bounds the wait for the server to accept connections.
    """

    port: int = 0
    password: str | None = None
    cluster: bool = False
    start_timeout_s: float = 10.0
    extra_args: tuple[str, ...] = ()
    persistence: str = "none"
    replica_of: int | None = None
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
        if self.persistence not in PERSISTENCE:
            raise ConfigurationError(f"persistence must be one of {', '.join(PERSISTENCE)}, "
                                     f"got {self.persistence!r}")
        if not self.port:
            self.port = free_port()
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="dedup-redis-")
        args = [
            binary, "--bind", "127.0.0.1", "--port", str(self.port), *PERSISTENCE[self.persistence],
            "--dir", self._dir.name, "--daemonize", "no",
            "--logfile", str(Path(self._dir.name) / "redis.log"),
        ]
        if self.password:
            args += ["--requirepass", self.password, "--masterauth", self.password]
        if self.replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file",
                     str(Path(self._dir.name) / "nodes.conf"), "--cluster-node-timeout", "2000"]
        args += list(self.extra_args)
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_ready()
        return self

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL); without persistence its data is gone."""
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def kill(self) -> None:
        """Crash the server (SIGKILL: no shutdown save, no final fsync); keeps what it had persisted."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def restart(self) -> None:
        """Stop and start again on the same port (an outage; the data survives only if persisted)."""
        self.stop()
        self.start()

    def client(self, **options: object) -> redis.Redis:
        """A redis-py client of this server (close it after use)."""
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, **options)

    def promote(self) -> None:
        """``REPLICAOF NO ONE``: a replica becomes a primary, keeping the data it had received."""
        with self.client(socket_timeout=5) as c:
            c.execute_command("REPLICAOF", "NO", "ONE")
        self.replica_of = None

    def demote(self, primary_port: int) -> None:
        """``REPLICAOF``: this server becomes a read-only replica of ``primary_port`` (writes fail
        with READONLY) and drops what it holds for the primary's data."""
        with self.client(socket_timeout=5) as c:
            c.execute_command("REPLICAOF", "127.0.0.1", str(primary_port))
        self.replica_of = primary_port

    def wait_in_sync(self, timeout_s: float = 10.0) -> None:
        """Wait until this replica's link to its primary is up and its initial sync is done."""
        deadline = time.monotonic() + timeout_s
        with self.client(socket_timeout=5) as c:
            while time.monotonic() < deadline:
                info = c.info("replication")
                if info.get("master_link_status") == "up" and not info.get("master_sync_in_progress"):
                    return
                time.sleep(0.02)
        raise ConfigurationError(f"replica on port {self.port} did not sync with its primary in time")

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
                last = ([line.strip() for line in (err or tail).splitlines() if line.strip()] or ["?"])[-1]
                raise ConfigurationError(f"redis-server exited at start: {last}")
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


class Endpoint:
    """A TCP forwarder on 127.0.0.1 that can be pointed at another server: a failover's DNS flip.

    :meth:`switch` drops every open connection (as a managed Redis does on
    failover) and sends new ones to the new target. ``delay_ms`` delays every
    chunk by that much each way (a slow link, e.g. to lag a replica behind its
    primary). Runs on daemon threads of this process until :meth:`close`.
    """

    def __init__(self, target_port: int, *, delay_ms: float = 0.0) -> None:
        self.target_port = target_port
        self.delay_ms = delay_ms
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(128)
        self.port: int = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False
        threading.Thread(target=self._accept, name=f"endpoint-{self.port}", daemon=True).start()

    def switch(self, target_port: int) -> None:
        """Send new connections to ``target_port``; drop the open ones."""
        with self._lock:
            self.target_port = target_port
            sockets, self._open = self._open, set()
        for sock in sockets:
            _shut(sock)

    def close(self) -> None:
        """Stop accepting and drop every connection."""
        self._closed = True
        _shut(self._server)
        self.switch(self.target_port)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                _shut(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                src.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        delay_s = self.delay_ms / 1000
        chunks: queue.Queue[tuple[float, bytes]] = queue.Queue()
        if delay_s > 0:
            threading.Thread(target=_send_late, args=(chunks, dst), daemon=True).start()
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if delay_s > 0:
                    chunks.put((time.monotonic() + delay_s, data))
                else:
                    dst.sendall(data)
        chunks.put((0.0, b""))
        if delay_s <= 0:
            _shut(dst)
        _shut(src)


def _send_late(chunks: queue.Queue[tuple[float, bytes]], dst: socket.socket) -> None:
    """Send each chunk when it is due; an empty chunk ends the link."""
    with contextlib.suppress(OSError):
        while data := (item := chunks.get())[1]:
            time.sleep(max(0.0, item[0] - time.monotonic()))
            dst.sendall(data)
    _shut(dst)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


@dataclass
class LocalRedisFailover:
    """A primary and its replica behind one :class:`Endpoint`, and the failover that swaps them.

    Clients use :attr:`url` (the endpoint). ``replication_delay_ms`` lags the
    replica's link to the primary, so writes acknowledged by the primary reach the
    replica that much later: the writes a failover loses under asynchronous
    replication, unless they were acknowledged with ``WAIT``. ``persistence`` applies
    to both servers.
    """

    persistence: str = "none"
    replication_delay_ms: float = 0.0
    primary: LocalRedis = field(init=False)
    replica: LocalRedis = field(init=False)
    endpoint: Endpoint = field(init=False)
    _link: Endpoint | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.endpoint.port}/0"

    def start(self) -> LocalRedisFailover:
        """Start both servers, link the replica (through the lagging link) and wait for its sync."""
        self.primary = LocalRedis(persistence=self.persistence).start()
        try:
            self._link = Endpoint(self.primary.port, delay_ms=self.replication_delay_ms)
            self.replica = LocalRedis(persistence=self.persistence, replica_of=self._link.port).start()
            self.replica.wait_in_sync()
            self.endpoint = Endpoint(self.primary.port)
        except BaseException:
            self.close()
            raise
        return self

    def demote_primary(self) -> None:
        """An unplanned failover: cut the replica off (what was still on the lagging link is lost),
        demote the primary with ``REPLICAOF`` (its clients get READONLY on every write from now),
        then promote the replica. The endpoint still points at the demoted one: see :meth:`flip`.
        The pair can fail over again: the demoted server replicates the new primary, lagged alike."""
        if self._link is not None:
            self._link.close()  # the writes the replica has not received yet are gone
        self._link = Endpoint(self.replica.port, delay_ms=self.replication_delay_ms)
        self.primary.demote(self._link.port)  # it replicates the new primary over a lagging link too
        self.replica.promote()
        self.primary, self.replica = self.replica, self.primary

    def flip(self) -> None:
        """Point the endpoint at the current primary, dropping every open connection."""
        self.endpoint.switch(self.primary.port)

    def close(self) -> None:
        for part in ("endpoint", "_link"):
            if (ep := getattr(self, part, None)) is not None:
                ep.close()
        for part in ("primary", "replica"):
            if (server := getattr(self, part, None)) is not None:
                server.close()

    def __enter__(self) -> LocalRedisFailover:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


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
