"""Attacks 11, 13 and 14: values planted in the cache, Redis frozen mid-fill, a lease left by a dead filler."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import pytest
from django.test import override_settings

from supergraph_messaging import CacheManager, redis_cache
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow

GARBAGE = [b"\xff\xfe", b'{"truncated": ', b"[" * 100_000, b"9" * 5000, b"not json at all", b""]


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_undecodable_cached_values_are_misses_overwritten(redis_conn: Any, caplog: Any, mode: str) -> None:
    calls: list[str] = []

    @redis_cache(key=f"planted:{mode}:{{x}}")
    def lookup(x: str) -> dict[str, str]:
        calls.append(x)
        return {"x": x}

    @redis_cache(key=f"planted:{mode}:{{x}}")
    async def alookup(x: str) -> dict[str, str]:
        calls.append(x)
        return {"x": x}

    raised = 0
    for i, garbage in enumerate(GARBAGE):
        key = f"planted:{mode}:{i}"
        redis_conn.set(key, garbage)
        try:
            result = lookup(str(i)) if mode == "sync" else await alookup(str(i))
        except Exception:
            raised += 1
            continue
        assert result == {"x": str(i)}
        assert redis_conn.get(key) == b'{"x":"%d"}' % i, "the planted value was not overwritten"
    print(f"\n[{mode}] calls raising on undecodable cached values: {raised} of {len(GARBAGE)}")
    assert raised == 0 and len(calls) == len(GARBAGE)
    assert sum("is not JSON" in r.getMessage() for r in caplog.records) == 1  # logged once
    redis_conn.set("planted:manager:k", b"\xff")
    assert CacheManager(prefix="planted:manager").get("k", "default") == "default"


def test_frozen_redis_during_a_fill_runs_the_function_once(own_redis: RedisServer) -> None:
    """Redis SIGSTOPped while a 1 s fill runs: the final write times out; the value is returned, computed once."""
    calls: list[int] = []

    @redis_cache(key="frozen:{x}")
    def slow(x: int) -> int:
        calls.append(x)
        assert own_redis.process is not None
        own_redis.process.send_signal(signal.SIGSTOP)
        time.sleep(1.0)
        return x

    with override_settings(SUPERGRAPH_MESSAGING={"REDIS_URL": own_redis.url, "SOCKET_TIMEOUT": 0.5}):
        started = time.monotonic()
        try:
            assert slow(3) == 3
        finally:
            assert own_redis.process is not None
            own_redis.process.send_signal(signal.SIGCONT)
        took = time.monotonic() - started
    print(f"\nfill with Redis frozen: {len(calls)} call(s) of the function, {took:.2f} s")
    assert calls == [3]


def test_a_lease_left_by_a_dead_filler_costs_waiters_a_short_wait(redis_conn: Any) -> None:
    calls: list[int] = []

    @redis_cache(key="orphan:{x}")
    def compute(x: int) -> int:
        calls.append(x)
        time.sleep(0.05)
        return x

    compute(0)  # this process has timed the function once (50 ms)
    redis_conn.set("orphan:1~lease", "a-filler-killed-mid-fill", px=10_000)  # LEASE_TTL is 10 s
    durations: list[float] = []

    def caller() -> None:
        started = time.monotonic()
        assert compute(1) == 1
        durations.append(time.monotonic() - started)

    threads = [threading.Thread(target=caller) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    print(f"\n5 callers behind a dead lease holder: slowest {max(durations):.2f} s (LEASE_TTL 10 s)")
    assert len(durations) == 5 and max(durations) < 1.0
