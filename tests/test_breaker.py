from __future__ import annotations

import asyncio
import logging
import statistics
import time
from typing import Any

import pytest
from django.test import override_settings

from supergraph_messaging import redis_cache
from tests.redis_server import RedisServer


def _outage_warnings(caplog: pytest.LogCaptureFixture) -> int:
    return sum("unreachable" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_fail_open_with_breaker(own_redis: RedisServer, caplog: pytest.LogCaptureFixture,
                                      mode: str) -> None:
    source = {"AA": 1}

    def compute(mac: str) -> dict[str, Any]:
        return {"mac": mac, "v": source[mac]}

    if mode == "sync":
        @redis_cache(key="br:{mac}")
        def lookup(mac: str) -> dict[str, Any]:
            return compute(mac)

        async def call(mac: str) -> Any:
            return lookup(mac)
    else:
        @redis_cache(key="br:{mac}")
        async def alookup(mac: str) -> dict[str, Any]:
            return compute(mac)

        async def call(mac: str) -> Any:
            return await alookup(mac)

    conn = own_redis.client()
    settings = {"REDIS_URL": own_redis.url, "BREAKER_INTERVAL": 0.3}
    with override_settings(SUPERGRAPH_MESSAGING=settings), caplog.at_level(logging.INFO, "supergraph_messaging"):
        assert await call("AA") == {"mac": "AA", "v": 1}
        assert conn.exists("br:AA")
        for outage in (1, 2):
            own_redis.stop()
            extra: list[float] = []
            for i in range(300):
                source["AA"] = outage * 1000 + i
                t0 = time.perf_counter()
                result = await call("AA")
                t1 = time.perf_counter()
                compute("AA")
                t2 = time.perf_counter()
                extra.append((t1 - t0) - (t2 - t1))
                assert result == {"mac": "AA", "v": outage * 1000 + i}  # correct, never stale
            median_ms = statistics.median(extra) * 1000
            print(f"\n[{mode}] outage {outage}: extra delay per call median {median_ms:.3f} ms, "
                  f"max {max(extra) * 1000:.1f} ms over {len(extra)} calls")
            assert median_ms <= 5
            assert _outage_warnings(caplog) == outage  # one warning per outage, not per call
            own_redis.start()
            time.sleep(0.35)  # one breaker interval
            source["AA"] = 5
            await call("AA")  # the probe: Redis is back
            assert await call("AA") == {"mac": "AA", "v": 5}
            assert conn.get("br:AA") is not None, "caching did not resume"
            conn.delete("br:AA")


# -- the function's own errors are never blamed on Redis ---------------------------------
async def test_function_raising_connection_refused_runs_once_and_breaker_stays_closed(
        redis_conn: Any, caplog: pytest.LogCaptureFixture) -> None:
    from supergraph_messaging.connection import get_redis_client

    calls: list[str] = []

    @redis_cache(key="own:{mac}")
    def lookup(mac: str) -> dict[str, Any]:
        calls.append(mac)
        raise ConnectionRefusedError("[Errno 111] the access_control service is down")

    @redis_cache(key="aown:{mac}")
    async def alookup(mac: str) -> dict[str, Any]:
        calls.append("a" + mac)
        await asyncio.wait_for(asyncio.sleep(1), timeout=0.001)  # the service timed out
        return {}

    with caplog.at_level(logging.INFO, "supergraph_messaging"):
        with pytest.raises(ConnectionRefusedError):
            lookup("AA")
        with pytest.raises(TimeoutError):
            await alookup("AA")
    assert calls == ["AA", "aAA"], "the function ran more than once"
    breaker = get_redis_client().breaker
    assert not breaker.failing and breaker.failures == 0
    assert _outage_warnings(caplog) == 0
    assert not redis_conn.exists("own:AA~lease", "aown:AA~lease")  # the leases were given back
    calls.clear()
    with pytest.raises(ConnectionRefusedError):
        lookup("BB")
    assert calls == ["BB"]  # the next call went through the cache again, not around it
    assert get_redis_client().breaker.allow()


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_redis_lost_during_the_fill_never_reruns_the_function(own_redis: RedisServer, mode: str) -> None:
    calls: list[int] = []

    def compute(x: int) -> int:
        calls.append(x)
        own_redis.kill()  # Redis goes away while the function runs: the final write fails
        return x * 10

    if mode == "sync":
        @redis_cache(key="lost:{x}")
        def f(x: int) -> int:
            return compute(x)

        async def call(x: int) -> Any:
            return f(x)
    else:
        @redis_cache(key="alost:{x}")
        async def af(x: int) -> int:
            return compute(x)

        async def call(x: int) -> Any:
            return await af(x)

    with override_settings(SUPERGRAPH_MESSAGING={"REDIS_URL": own_redis.url}):
        assert await call(4) == 40
    assert calls == [4]
