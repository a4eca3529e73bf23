"""How soon a running daphne publishes and writes its cache again after Redis comes back.

daphne serves ``POST /chaos/rows/<row>/`` (a row's version bumped and ``publish_event``, delivery
``pubsub``); a ``CacheSync`` mirrors the row in ``chaos:sync:row<row>``, written after the commit,
before the response. A writer posts every 50 ms throughout, and after each 200 reads the key straight
from Redis. A counter subscribed on the surviving nodes sees the events. The faults: a 1 s stop of a
single Redis, ``CLIENT KILL`` of every client (3 rounds), and kill -9 of a Cluster primary (3 primaries,
1 replica each). Checked: from 2 s after
Redis answers again (the replica took over), every event arrives and every CacheSync write is there;
the first write that worked again is printed.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.durability.harness import Database, Processes
from tests.durability.test_failover import NodeCounter
from tests.redis.test_cluster_failover import took_over
from tests.support.redis_server import RedisServer
from tests.support.topologies import ClusterClient, ClusterSetup, server_version

pytestmark = pytest.mark.slow

#: The issue's bound: publishing and CacheSync work again within this many seconds of Redis answering.
RECOVERY = 2.0


class Writes:
    """One POST every 50 ms; for each: when it began, its (row, version), and whether the CacheSync key
    held that version right after the response."""

    def __init__(self, port: int, read: Any) -> None:
        self.base = f"http://127.0.0.1:{port}/chaos/rows"
        self.read = read  # key -> bytes | None, straight from Redis
        self.done: list[tuple[float, tuple[int, int], bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            row = n % 10
            n += 1
            began = time.monotonic()
            try:
                with urllib.request.urlopen(urllib.request.Request(f"{self.base}/{row}/", method="POST"),
                                            timeout=10) as response:
                    version = int(json.loads(response.read())["version"])
            except OSError:
                continue
            try:
                raw = self.read(f"chaos:sync:row{row}")
                cached = raw is not None and json.loads(raw).get("complex_id") == version
            except (redis.RedisError, OSError):
                cached = False
            self.done.append((began, (row, version), cached))
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


def _report(writes: Writes, seen: set[tuple[int, int]], back: float) -> tuple[list[float], list[float], str]:
    """Seconds after ``back`` of the events lost and the cache writes missing from ``back + RECOVERY`` on,
    and a line saying when each worked again."""
    after = [(began - back, key, cached) for began, key, cached in writes.done if began >= back]
    lost = [round(t, 2) for t, key, _ in after if t >= RECOVERY and key not in seen]
    stale = [round(t, 2) for t, _, cached in after if t >= RECOVERY and not cached]

    def since(ok: list[bool]) -> str:
        times = [t for t, *_ in after]
        for i in range(len(ok)):
            if all(ok[i:]):
                return f"{times[i]:.2f} s" if times else "n/a"
        return "never"

    line = (f"events arrive again from {since([k in seen for _, k, _ in after])}, CacheSync writes from "
            f"{since([c for *_, c in after])} after Redis answered ({len(after)} writes since)")
    return lost, stale, line


@pytest.fixture
def single() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.close()


class Run:
    """daphne with the CacheSync, a counter on ``counted`` nodes and the writer, running until the block ends;
    then ``check`` compares what was written with what arrived."""

    def __init__(self, server: RedisServer, counted: list[RedisServer], read: Any,
                 redis_url: str | None = None) -> None:
        self.db = Database()
        self.procs = Processes(server, self.db, "pubsub", redis_url=redis_url)
        self.procs.env["SGM_CHAOS_CACHESYNC"] = "1"
        self.counter = NodeCounter(counted)
        self.read = read
        self.writes: Writes | None = None
        self.output = ""

    def __enter__(self) -> Run:
        try:
            self.procs.start("web")
            assert all(e.wait(10) for e in self.counter.subscribed)
            self.writes = Writes(self.procs.port, self.read)
            time.sleep(1.0)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.writes is not None:
            self.writes.stop()
        if not self.output:
            time.sleep(1.0)  # the last events arrive
            self.output = self.procs.output()
        self.counter.stop()
        self.procs.stop_all()
        self.db.drop()

    def check(self, title: str, back: float, since: str) -> None:
        assert self.writes is not None
        lost, stale, line = _report(self.writes, self.counter.seen, back)
        print(f"\n[{title}] {line}")
        assert not lost, f"events lost {RECOVERY} s after {since}, at {lost}\n{self.output[-3000:]}"
        assert not stale, f"CacheSync writes missing {RECOVERY} s after {since}, at {stale}\n{self.output[-3000:]}"


def test_a_1_s_restart(single: RedisServer) -> None:
    reader = single.client()
    with Run(single, [single], lambda key: reader.get(key)) as run:
        single.stop()
        time.sleep(1.0)
        single.start()
        back = time.monotonic()
        time.sleep(RECOVERY + 3.0)
    run.check("1 s restart of Redis under daphne", back, "Redis answered")


def test_client_kill_of_every_client(single: RedisServer) -> None:
    """``CLIENT KILL`` of every normal and Pub/Sub connection (daphne's publisher, its pool, the counter's)."""
    reader = single.client()
    killed = 0
    with Run(single, [single], lambda key: reader.get(key)) as run:
        for _round in range(3):
            killed += single.client_kill("normal") + single.client_kill("pubsub")
            back = time.monotonic()
            time.sleep(RECOVERY + 1.0)
    run.check(f"CLIENT KILL of every client under daphne, 3 rounds, {killed} connections; last round", back,
              "the kill")


def test_a_cluster_takeover() -> None:
    if server_version() < (7, 0):
        pytest.skip("the cluster harness needs redis-server >= 7")
    setup = ClusterSetup(replicas=1)
    victim = setup.nodes[0]
    try:
        reader = ClusterClient(host="127.0.0.1", port=setup.nodes[1].port, socket_timeout=1)
        with Run(setup.nodes[1], [n for n in setup.nodes if n is not victim], lambda key: reader.get(key),
                 redis_url=setup.url()) as run:
            killed = time.monotonic()
            victim.kill()
            while not took_over(setup, victim.port):
                assert time.monotonic() < killed + 20, "the replica never took over"
                time.sleep(0.02)
            back = time.monotonic()
            time.sleep(RECOVERY + 3.0)
    finally:
        setup.close()
    run.check(f"kill -9 of a Cluster primary under daphne, taken over {back - killed:.1f} s later", back,
              "the takeover")
