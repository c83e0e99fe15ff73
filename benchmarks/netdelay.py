"""A loopback TCP proxy that delays every chunk it forwards, to measure behind network latency.

On loopback a Redis round trip costs tens of microseconds, as much as the
work on either side; a real network (an ElastiCache node in another zone)
costs hundreds, and batching pays in proportion. :class:`DelayProxy` runs the
proxy in a child process (``python -m benchmarks.netdelay LISTEN TARGET
ONE_WAY_US``), bound to 127.0.0.1 only, and stops it on exit. Each line the
proxy reads on its standard input is a new one-way delay in microseconds
(:meth:`DelayProxy.set_delay`), applied to every chunk forwarded after it.
"""

from __future__ import annotations

import contextlib
import ctypes
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from dedup.localredis import free_port


@dataclass
class DelayProxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target_port``, ``one_way_us`` late each way."""

    target_port: int
    one_way_us: int
    port: int = 0
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)

    def __enter__(self) -> DelayProxy:
        self.port = self.port or free_port()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.netdelay", str(self.port), str(self.target_port),
             str(self.one_way_us)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        if self._proc.stdout is None or self._proc.stdout.readline().strip() != b"ready":
            self.__exit__()
            raise RuntimeError("the delay proxy did not start")
        return self

    def set_delay(self, one_way_us: int) -> None:
        """Delay every chunk forwarded from now on by ``one_way_us`` (the proxy applies it at once)."""
        if self._proc is None or self._proc.stdin is None:
            raise RuntimeError("the delay proxy is not running")
        self._proc.stdin.write(b"%d\n" % one_way_us)
        self._proc.stdin.flush()
        if self._proc.stdout is None or self._proc.stdout.readline().strip() != b"set":
            raise RuntimeError("the delay proxy did not take the new delay")
        self.one_way_us = one_way_us

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=5)
            self._proc = None


def _pump(src: socket.socket, dst: socket.socket, one_way_s: list[float]) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            time.sleep(one_way_s[0])
            dst.sendall(data)
    for sock in (src, dst):  # one side closed or failed: close the other
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


# prctl option: the slack the kernel may add to this thread's timers, in ns (Linux default 50 us).
PR_SET_TIMERSLACK = 29


def _tighten_timer_slack() -> None:
    """Let sleeps end within 1 ns of their deadline instead of up to 50 us late (Linux only).

    Threads inherit the slack of the thread creating them, so the pumps started
    after this call all sleep to the microsecond: every contender's round trips,
    and the PING that calibrates the delay and sets the limit, are delayed alike.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)


def _read_delays(one_way_s: list[float]) -> None:
    """Take each line of standard input as the new one-way delay in microseconds; answer ``set``."""
    for line in sys.stdin:
        one_way_s[0] = int(line) / 1e6
        print("set", flush=True)


def serve(port: int, target_port: int, one_way_us: int) -> None:
    """Accept on 127.0.0.1:``port`` forever; one thread per direction per connection."""
    _tighten_timer_slack()
    one_way_s = [one_way_us / 1e6]  # shared by every pump, replaced by _read_delays
    threading.Thread(target=_read_delays, args=(one_way_s,), daemon=True).start()
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(64)
    print("ready", flush=True)
    while True:
        client, _addr = server.accept()
        upstream = socket.create_connection(("127.0.0.1", target_port))
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pump, args=(src, dst, one_way_s), daemon=True).start()


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
