"""A real `redis-server` for tests, as the Scala tests start one (scala/src/test/scala/tally/online/RedisServer.scala):
on 127.0.0.1, a free port, its own temporary folder, no persistence; ready once it answered PING; stopped with
SIGTERM and its folder removed. A machine without redis-server fails the tests that need it, saying how to
install it: the Redis tests are never skipped."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def binary() -> str:
    found = shutil.which("redis-server") or next(
        (str(p) for d in ("/usr/bin", "/usr/sbin", "/usr/local/bin") if (p := Path(d, "redis-server")).is_file()), None)
    if not found:
        raise AssertionError("redis-server is not installed, and the Redis online-store tests need a real one: run "
                             "`make setup` (it installs the Debian package redis-server), or `apt-get install redis-server`")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    def __init__(self, port: int, folder: Path, process: subprocess.Popen):
        self.port, self.folder, self.process = port, folder, process

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def command(self, *args: str | bytes):
        """One command over RESP (no client library in the test environment): bulk strings as bytes, arrays as
        lists, integers as int; an error reply raises."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
            s.sendall(b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in parts))
            return _reply(s.makefile("rb"))

    def stop(self) -> None:
        self.process.terminate()  # SIGTERM: redis-server shuts down at once (nothing to save)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def _reply(f):
    line = f.readline()
    kind, rest = line[:1], line[1:-2]
    if kind == b"-":
        raise AssertionError(f"redis: {rest.decode()}")
    if kind == b":":
        return int(rest)
    if kind == b"+":
        return rest
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_reply(f) for _ in range(n)]
    raise AssertionError(f"redis: unexpected reply {line!r}")


def start() -> RedisServer:
    """A ready server; a port taken between the probe and redis-server's bind is retried."""
    why = ""
    for _ in range(5):
        port, folder = free_port(), Path(tempfile.mkdtemp(prefix="tally-redis-"))
        process = subprocess.Popen([binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
                                    "--save", "", "--appendonly", "no", "--daemonize", "no",
                                    "--logfile", str(folder / "redis.log")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        server = RedisServer(port, folder, process)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            if ping(port):
                return server
            time.sleep(0.02)
        log = folder / "redis.log"
        why = log.read_text() if log.is_file() else ""
        server.stop()
    raise AssertionError(f"redis-server did not start after 5 tries: {why[-500:]}")
