"""The durability harness's parts: its own database, the web (daphne), the worker, the relay, the clients.

Every process is real and separate, as in production: daphne serves the
write endpoint (``/chaos/rows/<row>/``: a row's version bumped and
``publish_event`` in one transaction) and the cached read; ``messaging_listen
--no-relay`` runs the ``once=True`` handler and the cache invalidation;
two ``messaging_listen --relay-only`` relay the outbox (one at a time: the
other stands by). The database is a fresh
PostgreSQL database when PostgreSQL answers on 127.0.0.1:5432, else a SQLite
file; the checker reads it with plain SQL.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from tests.conftest import ROOT
from tests.support.redis_server import RedisServer, free_port

ROWS = 50
WRITERS = 8
READERS = 2


def _postgres() -> Any:
    """A connection to the machine's PostgreSQL, or None."""
    try:
        import psycopg
    except ImportError:
        return None
    try:
        return psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True,
                               connect_timeout=2)
    except psycopg.Error:
        return None


class Database:
    """A database of the harness's own, migrated by ``manage.py migrate``."""

    def __init__(self) -> None:
        # SGM_CHAOS_DB=sqlite runs on SQLite even where PostgreSQL answers.
        self._admin = None if os.environ.get("SGM_CHAOS_DB") == "sqlite" else _postgres()
        if self._admin is not None:
            self.vendor = "postgresql"
            self.name = f"sgm_chaos_{os.getpid()}_{random.randrange(1 << 30)}"
            self._admin.execute(f'CREATE DATABASE "{self.name}"')
            self.env = {"SGM_TEST_PG_DB": self.name}
        else:
            self.vendor = "sqlite"
            self._dir = tempfile.mkdtemp(prefix="sgm-chaos-")
            self.name = os.path.join(self._dir, "chaos.sqlite3")
            # 8 writer threads in one process take the write lock up front (no upgrade deadlocks).
            self.env = {"SGM_TEST_DB_NAME": self.name}
        subprocess.run([sys.executable, str(ROOT / "manage.py"), "migrate", "-v0"], cwd=ROOT, check=True,
                       env=process_env(self.env))

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        if self.vendor == "postgresql":
            import psycopg

            with psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={self.name}") as conn:
                return list(conn.execute(sql).fetchall())
        import sqlite3

        with contextlib.closing(sqlite3.connect(self.name, timeout=20)) as conn:
            return list(conn.execute(sql).fetchall())

    def drop(self) -> None:
        if self._admin is not None:
            self._admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            self._admin.close()
        else:
            import shutil

            shutil.rmtree(self._dir, ignore_errors=True)


def process_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SGM_TEST_DB_NAME", None)
    env.update({"DJANGO_SETTINGS_MODULE": "tests.support.settings", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
                **extra})
    return env


class Processes:
    """daphne, the worker and the relay, each restartable (the web on the same port)."""

    def __init__(self, redis: RedisServer, db: Database, delivery: str, redis_url: str | None = None) -> None:
        """``redis_url``: a Sentinel or Cluster URL the processes use instead of ``redis`` (whose port stays
        the test settings' own)."""
        self.redis = redis
        self.delivery = delivery
        self.env = {**db.env, "SGM_TEST_REDIS_PORT": str(redis.port), "SGM_DELIVERY": delivery,
                    "SGM_CLAIM_IDLE": "1", "SGM_CONSUMER": "chaos-worker",
                    **({"SGM_REDIS_URL": redis_url} if redis_url else {})}
        self.port = free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - every process writes here until stop_all

    def _spawn(self, name: str, *args: str) -> None:
        self.procs[name] = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=process_env(self.env),
                                            stdout=self.log, stderr=subprocess.STDOUT)

    def start(self, name: str) -> None:
        manage = str(ROOT / "manage.py")
        if name == "web":
            self._spawn(name, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "tests.support.asgi:application")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                    return
                time.sleep(0.05)
            raise RuntimeError("daphne did not start")
        if name == "worker":
            self._spawn(name, manage, "messaging_listen", *(["--no-relay"] if self.delivery == "durable" else []))
        elif name.startswith("relay"):
            self._spawn(name, manage, "messaging_listen", "--relay-only")

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.kill()
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.log.close()

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")


class Clients:
    """8 writer threads (about 150 writes/s in all, each op retried until the web answers 200) and
    2 reader threads filling the cache."""

    def __init__(self, port: int, ops: int) -> None:
        self.base = f"http://127.0.0.1:{port}/chaos/rows"
        self._ops = iter(range(ops))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.retries = 0
        self.writers = [threading.Thread(target=self._write, daemon=True) for _ in range(WRITERS)]
        self.readers = [threading.Thread(target=self._read, daemon=True) for _ in range(READERS)]

    def start(self) -> None:
        for thread in itertools.chain(self.writers, self.readers):
            thread.start()

    def _next_op(self) -> int | None:
        with self._lock:
            return next(self._ops, None)

    def _write(self) -> None:
        while (op := self._next_op()) is not None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(urllib.request.Request(f"{self.base}/{op % ROWS}/", method="POST"),
                                                timeout=10) as response:
                        response.read()
                    break
                except OSError:  # the web is down, or answered 5xx (URLError, HTTPError)
                    with self._lock:
                        self.retries += 1
                    time.sleep(0.05)
            time.sleep(0.045)

    def _read(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError), urllib.request.urlopen(
                    f"{self.base}/{random.randrange(ROWS)}/", timeout=5) as response:
                response.read()
            time.sleep(0.01)

    def writing(self) -> bool:
        return any(thread.is_alive() for thread in self.writers)

    def stop(self) -> None:
        self._stop.set()
        for thread in self.readers:
            thread.join(10)
