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
from tests.redis_server import RedisServer
from tests.test_cluster_failover import took_over
from tests.topologies import ClusterClient, ClusterSetup, server_version

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


def test_a_1_s_restart(single: RedisServer) -> None:
    db = Database()
    procs = Processes(single, db, "pubsub")
    procs.env["SGM_CHAOS_CACHESYNC"] = "1"
    counter = NodeCounter([single])
    writes: Writes | None = None
    try:
        procs.start("web")
        assert counter.subscribed[0].wait(10)
        reader = single.client()
        writes = Writes(procs.port, lambda key: reader.get(key))
        time.sleep(1.0)
        single.stop()
        time.sleep(1.0)
        single.start()
        back = time.monotonic()
        reader = single.client()
        time.sleep(RECOVERY + 3.0)
        writes.stop()
        time.sleep(1.0)
        output = procs.output()
    finally:
        if writes is not None:
            writes.stop()
        counter.stop()
        procs.stop_all()
        db.drop()
    lost, stale, line = _report(writes, counter.seen, back)
    print(f"\n[1 s restart of Redis under daphne] {line}")
    assert not lost, f"events lost {RECOVERY} s after Redis answered, at {lost}\n{output[-3000:]}"
    assert not stale, f"CacheSync writes missing {RECOVERY} s after Redis answered, at {stale}\n{output[-3000:]}"


def test_client_kill_of_every_client(single: RedisServer) -> None:
    """``CLIENT KILL`` of every normal and Pub/Sub connection (daphne's publisher, its pool, the counter's)."""
    db = Database()
    procs = Processes(single, db, "pubsub")
    procs.env["SGM_CHAOS_CACHESYNC"] = "1"
    counter = NodeCounter([single])
    writes: Writes | None = None
    killed = 0
    try:
        procs.start("web")
        assert counter.subscribed[0].wait(10)
        reader = single.client()
        writes = Writes(procs.port, lambda key: reader.get(key))
        time.sleep(1.0)
        for _round in range(3):
            killed += single.client_kill("normal") + single.client_kill("pubsub")
            back = time.monotonic()
            time.sleep(RECOVERY + 1.0)
        writes.stop()
        time.sleep(1.0)
        output = procs.output()
    finally:
        if writes is not None:
            writes.stop()
        counter.stop()
        procs.stop_all()
        db.drop()
    lost, stale, line = _report(writes, counter.seen, back)
    print(f"\n[CLIENT KILL of every client under daphne, 3 rounds, {killed} connections] last round: {line}")
    assert not lost, f"events lost {RECOVERY} s after the kill, at {lost}\n{output[-3000:]}"
    assert not stale, f"CacheSync writes missing {RECOVERY} s after the kill, at {stale}\n{output[-3000:]}"


def test_a_cluster_takeover() -> None:
    if server_version() < (7, 0):
        pytest.skip("the cluster harness needs redis-server >= 7")
    setup = ClusterSetup(replicas=1)
    victim = setup.nodes[0]
    db = Database()
    procs = Processes(setup.nodes[1], db, "pubsub", redis_url=setup.url())
    procs.env["SGM_CHAOS_CACHESYNC"] = "1"
    counter = NodeCounter([n for n in setup.nodes if n is not victim])
    writes: Writes | None = None
    try:
        procs.start("web")
        assert all(e.wait(10) for e in counter.subscribed)
        reader = ClusterClient(host="127.0.0.1", port=setup.nodes[1].port, socket_timeout=1)
        writes = Writes(procs.port, lambda key: reader.get(key))
        time.sleep(1.0)
        killed = time.monotonic()
        victim.kill()
        while not took_over(setup, victim.port):
            assert time.monotonic() < killed + 20, "the replica never took over"
            time.sleep(0.02)
        back = time.monotonic()
        time.sleep(RECOVERY + 3.0)
        writes.stop()
        time.sleep(1.0)
        output = procs.output()
    finally:
        if writes is not None:
            writes.stop()
        counter.stop()
        procs.stop_all()
        db.drop()
        setup.close()
    lost, stale, line = _report(writes, counter.seen, back)
    print(f"\n[kill -9 of a Cluster primary under daphne, taken over {back - killed:.1f} s later] {line}")
    assert not lost, f"events lost {RECOVERY} s after the takeover, at {lost}\n{output[-3000:]}"
    assert not stale, f"CacheSync writes missing {RECOVERY} s after the takeover, at {stale}\n{output[-3000:]}"
