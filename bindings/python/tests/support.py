"""Typed helpers of the Python test suite (checked by `mypy --strict` in run-tests): private
redis-server processes on free loopback ports, a minimal RESP client that speaks to them
without any Redis library, and polling with a deadline."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Callable, List, Optional, Sequence, TypeVar, Union

T = TypeVar("T")

Reply = Union[None, int, bytes, str, List["Reply"]]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, what: str, deadline_s: float = 10.0, proc: Optional["subprocess.Popen[bytes]"] = None) -> None:
    """Waits until 127.0.0.1:``port`` accepts connections; fails after ``deadline_s`` or at
    once when ``proc`` exits."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} instead of listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {deadline_s} s")


def wait_until(check: Callable[[], Optional[T]], what: str, deadline_s: float = 10.0) -> T:
    """Polls ``check`` until it returns something other than None/False; fails with ``what``
    after ``deadline_s``."""
    end = time.monotonic() + deadline_s
    while True:
        v = check()
        if v is not None and v is not False:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")
        time.sleep(0.02)


class RedisServer:
    """A private redis-server (no persistence) on a free loopback port, stopped by PID."""

    def __init__(self, extra: Sequence[str] = ()) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is missing (apt-get install redis-server)")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="ck-py-redis-")
        self.proc: subprocess.Popen[bytes] = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", self.dir, *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, "redis-server", proc=self.proc)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self, *args: Union[str, bytes, int]) -> Reply:
        return resp_command(self.port, *args)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def _read_reply(f: "socket.SocketIO") -> Reply:
    line = b""
    while not line.endswith(b"\r\n"):
        c = f.read(1)
        if not c:
            raise ConnectionError("redis closed the connection")
        line += c
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(f"redis error: {rest.decode()}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = b""
        while len(data) < n + 2:
            chunk = f.read(n + 2 - len(data))
            if not chunk:
                raise ConnectionError("redis closed the connection")
            data += chunk
        return data[:-2]
    if kind == b"*":
        n = int(rest)
        if n < 0:
            return None
        return [_read_reply(f) for _ in range(n)]
    raise RuntimeError(f"unexpected RESP line {line!r}")


def resp_command(port: int, *args: Union[str, bytes, int]) -> Reply:
    """One command to redis on 127.0.0.1:``port`` over a fresh connection."""
    parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    msg = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(msg)
        f = s.makefile("rb")
        try:
            return _read_reply(f)  # type: ignore[arg-type]
        finally:
            f.close()


def rss_bytes() -> int:
    """This process's resident set size (Linux /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")
