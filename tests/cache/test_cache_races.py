"""Correctness under concurrency: stale sets and stampedes, with real Redis."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from supergraph_messaging import CacheManager, redis_cache
from tests.conftest import ROOT, subprocess_env

KEY = "race:item"


class Source:
    def __init__(self) -> None:
        self.value = 0
        self.lock = threading.Lock()

    def read(self) -> int:
        with self.lock:
            return self.value

    def bump(self) -> None:
        with self.lock:
            self.value += 1


def run_harness(
    get: Callable[[], int], invalidate: Callable[[], None], source: Source, conn: Any,
    rounds: int, readers: int = 4, reads: int = 20, writes: int = 5, settled: Callable[[], int] | None = None,
) -> tuple[int, int]:
    """Returns (operations, stale rounds): after each quiescent round, cache == source (and ``settled()``,
    a read through the cache, == source)?"""
    operations = stale = 0
    for _ in range(rounds):
        def reader() -> None:
            for _ in range(reads):
                get()

        def writer() -> None:
            for _ in range(writes):
                time.sleep(random.uniform(0, 0.002))
                source.bump()
                invalidate()

        threads = [threading.Thread(target=reader) for _ in range(readers)] + [threading.Thread(target=writer)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        operations += readers * reads + writes
        raw = conn.get(KEY)
        if (raw is not None and int(raw) != source.read()) or (settled is not None and settled() != source.read()):
            stale += 1
    return operations, stale


@pytest.mark.slow
@pytest.mark.topology("single", "cluster")  # on a Cluster the lease is tagged into its key's slot
def test_stale_set_race_leases_vs_plain_cache(redis_conn: Any, topology: str) -> None:
    source = Source()

    @redis_cache(key=KEY)
    def leased() -> int:
        value = source.read()
        time.sleep(random.uniform(0, 0.001))  # the injected delay: read source ... write cache
        return value

    ops, stale = run_harness(leased, leased.invalidate, source, redis_conn, rounds=120)

    plain_source = Source()
    manager = CacheManager()

    def plain() -> int:
        cached = manager.get(KEY)
        if cached is not None:
            return int(cached)
        value = plain_source.read()
        time.sleep(random.uniform(0, 0.001))
        manager.set(KEY, value)
        return value

    redis_conn.delete(KEY)
    plain_ops, plain_stale = run_harness(
        plain, lambda: manager.invalidate(KEY), plain_source, redis_conn, rounds=120
    )
    print(f"\nstale rounds: leased {stale} of 120 ({ops} ops); plain get/compute/set {plain_stale} "
          f"of 120 ({plain_ops} ops)")
    assert ops >= 10_000
    assert stale == 0
    assert plain_stale > 0, "the harness failed to provoke the race it guards against"


@pytest.mark.slow
@pytest.mark.topology("single")
def test_stale_set_race_with_the_near_cache(redis_conn: Any) -> None:
    """The same race with local=True: neither Redis nor this process's memory keeps a value older than the
    last invalidation (a fill that read the source before it is kept nowhere)."""
    from supergraph_messaging.cache.near import near_cache
    from supergraph_messaging.redis.client import get_redis_client
    from tests.conftest import wait_for

    source = Source()

    @redis_cache(key=KEY, local=True)
    def leased() -> int:
        value = source.read()
        time.sleep(random.uniform(0, 0.001))
        return value

    cache = near_cache(get_redis_client())
    wait_for(lambda: cache.watching, timeout=5)
    ops, stale = run_harness(leased, leased.invalidate, source, redis_conn, rounds=120, settled=leased)
    print(f"\nstale rounds with the near cache: {stale} of 120 ({ops} ops; copies kept {len(cache)}, "
          f"invalidations received {cache.invalidations})")
    assert ops >= 10_000
    assert stale == 0


def test_stampede_threads_compute_once(redis_conn: Any) -> None:
    calls: list[int] = []
    barrier = threading.Barrier(50)

    @redis_cache(key="stampede:threads")
    def slow() -> dict[str, int]:
        calls.append(1)
        time.sleep(0.3)
        return {"v": 42}

    results: list[Any] = []

    def run() -> None:
        barrier.wait()
        results.append(slow())

    threads = [threading.Thread(target=run) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert results == [{"v": 42}] * 50


async def test_stampede_tasks_compute_once(redis_conn: Any) -> None:
    calls: list[int] = []

    @redis_cache(key="stampede:tasks")
    async def slow() -> dict[str, int]:
        calls.append(1)
        await asyncio.sleep(0.3)
        return {"v": 7}

    results = await asyncio.gather(*(slow() for _ in range(50)))
    assert len(calls) == 1
    assert results == [{"v": 7}] * 50


def test_stampede_two_processes_compute_once(redis_conn: Any) -> None:
    start_at = time.time() + 3.0
    procs = [
        subprocess.Popen([sys.executable, "-m", "tests.support.stampede_worker", str(start_at)],
                         cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=30)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert int(redis_conn.get("stampede:calls")) == 1
    assert all(out.strip() == "25 ok" for out in outputs), outputs
